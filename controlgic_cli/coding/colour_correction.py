"""The colour-correction record (CORR, format version 6; docs/format.md §15).

The network's errors have a low-frequency part: whole regions a few levels
too dark, a flat saturated colour decoded with the wrong hue. A grid of
per-channel offsets, one per block of 16 to 128 pixels, interpolated
bilinearly and added to the decoded image, removes most of it for a few
hundred bytes. The encoder knows both images, so it fits the grid and sends
it; its size is a fixed share of the rest of the file (`budget_bytes`), which
keeps the size of every file known before the decoder runs.

Record layout (all in the record's `length` bytes):
  byte 0   log2 of the block size, 4..7 (16..128 px), or 0: no correction
  byte 1   step, 1..255: the offsets are multiples of it
  byte 2   channel count, 1 (grey: one grid for all three) or 3 (R, G, B)
  byte 3   Exp-Golomb order k (0..3) of each channel, two bits each, R first
  then, per channel, the grid row by row: each value minus its MED
  prediction (JPEG-LS's median edge detector over left, top and top-left,
  0 outside the grid) as a signed Exp-Golomb code of order k, MSB first;
  then zero bits to the end of the record.

Offsets are integers times the step, and the interpolation is done in integers,
so every decoder adds exactly the same values, on a crop as on the whole image.
This module needs only numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import FormatError

BLOCK_SHIFTS = (4, 5, 6, 7)  # 16..128 px
STEPS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
MAX_ORDER = 3
REFINEMENTS = 2
_HEAD_SIZE = 4
_MAX_PREFIX = 24  # no offset of a valid grid needs a longer Exp-Golomb prefix
_BAND_ROWS = 256  # rows of the image corrected at a time, to bound the integer work arrays
BUDGET_PERCENT = 2


def budget_bytes(other_bytes):
    """The record's size for a file whose other parts (header, masks, streams, other records) take
    `other_bytes`: 2 % of them, at least 32 bytes. Works on numpy integer arrays too (rate control).

    A share rather than a fixed size: a token's bytes are worth more at low
    rates, where the correction should take less of them (docs/format.md §15).
    """
    return np.maximum(32, (other_bytes * BUDGET_PERCENT + 99) // 100)


# ----- the grid and its interpolation -------------------------------------------------------------


@dataclass(frozen=True)
class Correction:
    """A decoded record: offsets of `step` levels times `grid` (cells_y, cells_x, 3) at the centres of
    block x block cells."""

    grid: np.ndarray
    step: int
    block: int


def _grid_shape(width: int, height: int, block: int) -> tuple[int, int]:
    return -(-height // block), -(-width // block)


def _axis_weights(start: int, stop: int, block: int, cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For pixels start..stop-1 along one axis: the two grid cells around each pixel centre and the weight
    of the second, in units of 1 / (2 * block). Cell j's centre is at pixel (j + 0.5) * block - 0.5."""
    position = 2 * np.arange(start, stop, dtype=np.int64) + 1 - block  # (2 * pixel + 1 - block) / (2 * block)
    first = position // (2 * block)
    weight = position - first * 2 * block
    return np.clip(first, 0, cells - 1), np.clip(first + 1, 0, cells - 1), weight


def offsets(grid: np.ndarray, step: int, block: int, rows: slice, columns: slice) -> np.ndarray:
    """The integer offsets (rows, columns, channels) the grid adds to those pixels (round half up).

    int32 is exact here: |q| x step <= 255, so 2 x step x total <= 2 x (2 x 128)^2 x 255, about 3.3e7.
    """
    cells_y, cells_x, _ = grid.shape
    denominator = (2 * block) ** 2
    y0, y1, wy = _axis_weights(rows.start, rows.stop, block, cells_y)
    x0, x1, wx = _axis_weights(columns.start, columns.stop, block, cells_x)
    grid, wx, wy = grid.astype(np.int32), wx.astype(np.int32), wy.astype(np.int32)
    along_x = grid[:, x0] * (2 * block - wx)[None, :, None] + grid[:, x1] * wx[None, :, None]
    total = along_x[y0] * (2 * block - wy)[:, None, None] + along_x[y1] * wy[:, None, None]
    return (2 * step * total + denominator) // (2 * denominator)


def apply(rgb: np.ndarray, correction: Correction, top: int = 0, left: int = 0) -> np.ndarray:
    """Add the correction to a decoded uint8 (h, w, 3) region whose first pixel is (top, left) in the image."""
    out = np.empty_like(rgb)
    height, width = rgb.shape[:2]
    for band in range(0, height, _BAND_ROWS):
        stop = min(height, band + _BAND_ROWS)
        rows, columns = slice(top + band, top + stop), slice(left, left + width)
        shift = offsets(correction.grid, correction.step, correction.block, rows, columns)
        out[band:stop] = np.clip(rgb[band:stop].astype(np.int32) + shift, 0, 255)
    return out


# ----- bits ---------------------------------------------------------------------------------------


def _med_prediction(grid: np.ndarray) -> np.ndarray:
    """JPEG-LS's median edge detector, from the left, top and top-left values (0 outside the grid)."""
    padded = np.pad(grid, ((1, 0), (1, 0)))
    left, top, top_left = padded[1:, :-1], padded[:-1, 1:], padded[:-1, :-1]
    low, high = np.minimum(left, top), np.maximum(left, top)
    return np.where(top_left >= high, low, np.where(top_left <= low, high, left + top - top_left))


def _signed_to_unsigned(values: np.ndarray) -> np.ndarray:
    return np.where(values > 0, 2 * values - 1, -2 * values)


def _exp_golomb_bits(unsigned: np.ndarray, order: int) -> int:
    shifted = unsigned + (1 << order)
    return int((2 * _bit_length(shifted) - 1 - order).sum())


def _bit_length(values: np.ndarray) -> np.ndarray:
    return np.floor(np.log2(values.astype(np.float64))).astype(np.int64) + 1


def _coded_size(grid: np.ndarray) -> tuple[int, list[int]]:
    """Bytes of the record holding this grid (without padding), and the Exp-Golomb order of each channel."""
    bits, orders = 0, []
    for channel in range(grid.shape[2]):
        unsigned = _signed_to_unsigned(grid[..., channel] - _med_prediction(grid[..., channel]))
        channel_bits, order = min((_exp_golomb_bits(unsigned, k), k) for k in range(MAX_ORDER + 1))
        bits += channel_bits
        orders.append(order)
    return _HEAD_SIZE + -(-bits // 8), orders


def pack(grid: np.ndarray, step: int, block: int, size: int) -> bytes:
    """The record of exactly `size` bytes for an integer grid (cells_y, cells_x, 1 or 3)."""
    coded_size, orders = _coded_size(grid)
    if coded_size > size:
        raise ValueError(f"the grid needs {coded_size} bytes, more than the {size} given")
    pieces = []
    for channel, order in enumerate(orders):
        unsigned = _signed_to_unsigned(grid[..., channel] - _med_prediction(grid[..., channel]))
        for value in unsigned.ravel().tolist():
            shifted = value + (1 << order)
            pieces.append("0" * (shifted.bit_length() - 1 - order) + format(shifted, "b"))
    bits = "".join(pieces)
    bits += "0" * (-len(bits) % 8)
    body = int(bits, 2).to_bytes(len(bits) // 8, "big") if bits else b""
    order_byte = sum(order << (2 * channel) for channel, order in enumerate(orders))
    head = bytes([block.bit_length() - 1, step, grid.shape[2], order_byte])
    return (head + body).ljust(size, b"\0")


def no_correction(size: int) -> bytes:
    """A record of `size` bytes that changes nothing."""
    return bytes(size)


def unpack(data: bytes, width: int, height: int) -> Correction | None:
    """Record bytes -> the correction of a width x height image, or None for a record that changes nothing.

    Untrusted input: every field, every code and the padding is checked, and
    every offset must lie within -255..255.
    """
    if len(data) < _HEAD_SIZE:
        raise FormatError(f"invalid .cgic colour correction: {len(data)} bytes, shorter than its head")
    shift, step, channels, order_byte = data[:_HEAD_SIZE]
    if shift == 0:
        if any(data):
            raise FormatError("invalid .cgic colour correction: an empty correction must be all zero bytes")
        return None
    if shift not in BLOCK_SHIFTS or step == 0 or channels not in (1, 3) or order_byte >> (2 * channels):
        raise FormatError(
            f"invalid .cgic colour correction: block 2^{shift}, step {step}, {channels} channels, orders "
            f"0x{order_byte:02x}"
        )
    block = 1 << shift
    cells_y, cells_x = _grid_shape(width, height, block)
    count = cells_y * cells_x
    body = data[_HEAD_SIZE:]
    if count * channels > 8 * len(body):
        raise FormatError("invalid .cgic colour correction: too short for its grid")
    bits = format(int.from_bytes(body, "big"), "b").zfill(8 * len(body)) if body else ""
    position = 0
    grid = np.zeros((cells_y, cells_x, channels), dtype=np.int64)
    limit = 255 // step
    for channel in range(channels):
        order = (order_byte >> (2 * channel)) & 3
        residuals = np.empty(count, dtype=np.int64)
        for index in range(count):
            one = bits.find("1", position, position + _MAX_PREFIX + 1)
            if one < 0:
                raise FormatError("invalid .cgic colour correction: a damaged or truncated code")
            prefix = one - position
            end = one + prefix + order + 1
            if end > len(bits):
                raise FormatError("invalid .cgic colour correction: a code runs past the record")
            value = int(bits[one:end], 2) - (1 << order)
            residuals[index] = (value + 1) // 2 if value % 2 else -(value // 2)
            position = end
        grid[..., channel] = _undo_prediction(residuals.reshape(cells_y, cells_x), limit)
    if "1" in bits[position:]:
        raise FormatError("invalid .cgic colour correction: bits after the grid")
    if channels == 1:
        grid = np.repeat(grid, 3, axis=2)
    return Correction(grid, step, block)


def _undo_prediction(residuals: np.ndarray, limit: int) -> np.ndarray:
    """Rebuild a grid from its MED residuals, row by row (each row depends on the one above)."""
    rows, columns = residuals.shape
    # Python lists: this loop runs once per cell, and numpy's per-element access would dominate it.
    above = [0] * (columns + 1)
    grid = []
    for residual_row in residuals.tolist():
        row = [0]
        for x, residual in enumerate(residual_row):
            left, top, top_left = row[x], above[x + 1], above[x]
            low, high = min(left, top), max(left, top)
            prediction = low if top_left >= high else high if top_left <= low else left + top - top_left
            value = prediction + residual
            if abs(value) > limit:
                raise FormatError(f"invalid .cgic colour correction: an offset beyond 255 levels ({value} steps)")
            row.append(value)
        grid.append(row[1:])
        above = row
    return np.array(grid, dtype=np.int64).reshape(rows, columns)


# ----- the encoder's choice -----------------------------------------------------------------------


def fit(target: np.ndarray, decoded: np.ndarray, size: int, channels: int = 3) -> tuple[bytes, np.ndarray]:
    """The record of `size` bytes that brings `decoded` closest to `target` (both uint8 (H, W, 3)), and
    `decoded` with it applied.

    For each block size, the finest step whose grid of block means fits the
    budget; of those, the one with the smallest squared error after
    correction, or no correction when none helps. That grid is then refined
    (REFINEMENTS times) by adding the block means of the error left after
    correcting, which makes up for the interpolation and for the values
    clipped at 0 and 255 (a flat pure colour's noise is half clipped). Grey
    images (channels=1) send one grid for all three channels.
    """
    smallest = 1 << BLOCK_SHIFTS[0]
    cell_sums, cell_counts = _cell_sums(target.astype(np.int32) - decoded, smallest, channels)
    best_error = _squared_error(target, decoded)
    best = None
    for shift in BLOCK_SHIFTS:
        block = 1 << shift
        # Sums of larger cells from those of the smallest: one pass over the pixels, the same integers.
        sums, counts = (_pooled(totals, block // smallest) for totals in (cell_sums, cell_counts))
        means = sums / counts
        for step in STEPS:
            grid = _quantised(means, step)
            if _coded_size(grid)[0] > size:
                continue
            corrected = apply(decoded, Correction(_three_channels(grid), step, block))
            error = _squared_error(target, corrected)
            if error < best_error:
                best_error, best = error, (grid, step, block, corrected)
            break
    if best is None:
        return no_correction(size), decoded
    grid, step, block, corrected = best
    for _ in range(REFINEMENTS):
        residual = _cell_means(target.astype(np.int32) - corrected, block, channels)
        # Larger offsets may need a coarser step to fit.
        fitting = (
            (refined, coarser)
            for coarser in STEPS[STEPS.index(step) :]
            if _coded_size(refined := _quantised(grid * step + residual, coarser))[0] <= size
        )
        refined, refined_step = next(fitting, (None, step))
        if refined is None:
            break
        refined_image = apply(decoded, Correction(_three_channels(refined), refined_step, block))
        error = _squared_error(target, refined_image)
        if error >= best_error:
            break
        grid, step, corrected, best_error = refined, refined_step, refined_image, error
    return pack(grid, step, block, size), corrected


def _three_channels(grid: np.ndarray) -> np.ndarray:
    return np.repeat(grid, 3, axis=2) if grid.shape[2] == 1 else grid


def _quantised(offsets: np.ndarray, step: int) -> np.ndarray:
    """Offsets in levels -> whole steps, within what a record may hold (|q| x step <= 255)."""
    return np.clip(np.round(offsets / step), -(255 // step), 255 // step).astype(np.int64)


def _cell_sums(difference: np.ndarray, block: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Sums over each block x block cell of an integer (H, W, 3) array, per channel or (channels=1) over all
    three, and the number of values in each (edge cells hold fewer pixels); both int64 (cells_y, cells_x, 1 or 3)."""
    height, width = difference.shape[:2]
    if channels == 1:
        difference = difference.sum(axis=2, keepdims=True)
    row_starts, column_starts = np.arange(0, height, block), np.arange(0, width, block)
    sums = np.add.reduceat(np.add.reduceat(difference, row_starts, axis=0, dtype=np.int64), column_starts, axis=1)
    counts = np.minimum(block, height - row_starts)[:, None] * np.minimum(block, width - column_starts)[None, :]
    return sums, (counts * (3 if channels == 1 else 1))[..., None].astype(np.int64)


def _pooled(totals: np.ndarray, factor: int) -> np.ndarray:
    """Totals of factor x factor groups of cells (the last row and column of groups may hold fewer)."""
    cells_y, cells_x, channels = totals.shape
    padded = np.zeros((-(-cells_y // factor) * factor, -(-cells_x // factor) * factor, channels), totals.dtype)
    padded[:cells_y, :cells_x] = totals
    return padded.reshape(padded.shape[0] // factor, factor, padded.shape[1] // factor, factor, channels).sum(
        axis=(1, 3)
    )


def _cell_means(difference: np.ndarray, block: int, channels: int) -> np.ndarray:
    """Mean of each block x block cell (see _cell_sums). Integer sums, so the means do not depend on
    summation order."""
    sums, counts = _cell_sums(difference, block, channels)
    return sums / counts


def _squared_error(target: np.ndarray, image: np.ndarray) -> int:
    return int(np.square(target.astype(np.int32) - image).sum(dtype=np.int64))
