"""The mask section in the two forms a .cgic file can use, and its exact size along a rate path.

Plain bits (format versions 1 and 2): one bit per coarse cell, then one per
medium cell outside the coarse cells (entropy_coder.pack_masks).

Grouped masks (version 3): the masks are far from random. Coarse cells come
in flat regions, and a released coarse cell's four medium cells are mostly
all medium or all fine. So the coarse bits are sent four at a time, one
symbol per 2x2 block of coarse cells, and the medium bits as one symbol per
non-coarse coarse cell (its four medium cells), each symbol with a static
canonical Huffman code whose counts are fixed by the format
(docs/format.md §12.3). On Kodak this makes the mask section 23-58 %
smaller at the ratio presets (docs/benchmarks.md).

Bit order in a symbol: 8 x top-left + 4 x top-right + 2 x bottom-left + bottom-right.
This module must not import torch.
"""

from __future__ import annotations

import numpy as np

from ..errors import FormatError, OptionsError
from .entropy_coder import IndexCoder, pack_masks, unpack_masks
from .index_coding import constant_pieces, interval_totals

# Part of the format (docs/format.md §12.3): the symbols of the planner's masks over the 804
# training photos at the six ratio presets and six random ratios each, +1 per symbol.
COARSE_GROUP_COUNTS = (
    1320461, 42940, 48663, 41472, 53369, 29181, 9271, 21608,
    63748, 9062, 52733, 20300, 76007, 23201, 22878, 176874,
)  # fmt: skip
MEDIUM_GROUP_COUNTS = (
    2243789, 135528, 136023, 151428, 140737, 117950, 43125, 116856,
    138987, 43533, 116926, 116765, 158749, 121261, 118682, 2209296,
)  # fmt: skip

_GROUP_WEIGHTS = np.array([8, 4, 2, 1])
COARSE_CELL = 16  # pixels per side of a coarse cell, one bit of the coarse mask


def _blocks(grid: np.ndarray) -> np.ndarray:
    """(h, w, ...) -> (ceil(h/2) * ceil(w/2), 4, ...): each 2x2 block's cells in symbol bit order.

    Cells beyond an odd edge are filled with zeros.
    """
    height, width = grid.shape[:2]
    padded = np.zeros((height + height % 2, width + width % 2, *grid.shape[2:]), grid.dtype)
    padded[:height, :width] = grid
    blocks = padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2, *grid.shape[2:])
    return np.moveaxis(blocks, 2, 1).reshape(-1, 4, *grid.shape[2:])


def _children(medium_grid: np.ndarray) -> np.ndarray:
    """(2 h16, 2 w16) -> (h16 * w16, 4): each coarse cell's four medium cells in symbol bit order."""
    h8, w8 = medium_grid.shape
    return medium_grid.reshape(h8 // 2, 2, w8 // 2, 2).transpose(0, 2, 1, 3).reshape(-1, 4)


class BitMasks:
    """Versions 1 and 2: the masks as plain bits."""

    def pack(self, coarse: np.ndarray, medium: np.ndarray) -> bytes:
        return pack_masks(coarse, medium)

    def unpack(self, data: bytes, h16: int, w16: int) -> tuple[np.ndarray, np.ndarray]:
        return unpack_masks(data, h16, w16)

    def bytes_over_time(self, released_at: np.ndarray, fine_from: np.ndarray, times: int) -> np.ndarray:
        """Section bytes at every time 0..times, when coarse cell c is released at released_at[c]
        and medium cell m goes fine at fine_from[m] (both in 0..times + 1)."""
        released = np.bincount(released_at.ravel(), minlength=times + 2)[: times + 1]
        bits = released_at.size + 4 * np.cumsum(released)
        return -(-bits // 8)


class GroupedMasks(BitMasks):
    """Version 3: 2x2 groups of coarse bits and each released cell's four medium bits, Huffman-coded."""

    def __init__(self):
        self.coarse_coder = IndexCoder(COARSE_GROUP_COUNTS, "coarse mask stream")
        self.medium_coder = IndexCoder(MEDIUM_GROUP_COUNTS, "medium mask stream")

    @staticmethod
    def symbols(coarse: np.ndarray, medium: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(coarse symbols per 2x2 block, medium symbols per non-coarse cell), both in raster order."""
        coarse_symbols = _blocks(coarse.astype(np.int64)) @ _GROUP_WEIGHTS
        medium_symbols = (_children(medium.astype(np.int64)) @ _GROUP_WEIGHTS)[~coarse.ravel()]
        return coarse_symbols, medium_symbols

    def pack(self, coarse: np.ndarray, medium: np.ndarray) -> bytes:
        pack_masks(coarse, medium)  # the same checks of shapes and overlap
        coarse_symbols, medium_symbols = self.symbols(coarse, medium)
        return self.coarse_coder.encode(coarse_symbols) + self.medium_coder.encode(medium_symbols)

    def unpack(self, data: bytes, h16: int, w16: int) -> tuple[np.ndarray, np.ndarray]:
        if h16 < 1 or w16 < 1:
            raise OptionsError(f"mask grid must be at least 1x1, got {h16}x{w16}")
        block_count = -(-h16 // 2) * -(-w16 // 2)
        coarse_symbols, used = self.coarse_coder.decode_head(data, block_count)
        bits = (np.asarray(coarse_symbols, np.int64)[:, None] & _GROUP_WEIGHTS) > 0
        grid = bits.reshape(-(-h16 // 2), -(-w16 // 2), 2, 2).transpose(0, 2, 1, 3).reshape(2 * -(-h16 // 2), -1)
        if grid[h16:].any() or grid[:, w16:].any():
            raise FormatError("mask section marks coarse cells outside the image: the file is damaged")
        coarse = np.ascontiguousarray(grid[:h16, :w16])
        medium_symbols = self.medium_coder.decode(data[used:], int(np.count_nonzero(~coarse)))
        children = np.zeros((h16 * w16, 4), bool)
        children[~coarse.ravel()] = (np.asarray(medium_symbols, np.int64)[:, None] & _GROUP_WEIGHTS) > 0
        medium = children.reshape(h16, w16, 2, 2).transpose(0, 2, 1, 3).reshape(2 * h16, 2 * w16)
        return coarse, np.ascontiguousarray(medium)

    def bytes_over_time(self, released_at: np.ndarray, fine_from: np.ndarray, times: int) -> np.ndarray:
        # A block's coarse symbol changes when one of its cells is released (cells beyond the
        # edge count as released from the start); a cell's medium symbol exists from its release
        # and changes when one of its medium cells goes fine.
        blocks = _blocks(released_at)
        coarse_bits = self._piecewise_bits(
            np.zeros(len(blocks), np.int64),
            np.full(len(blocks), times + 1),
            blocks,
            self.coarse_coder.code_lengths,
            times,
        )
        medium_bits = self._piecewise_bits(
            released_at.ravel(),
            np.full(released_at.size, times + 1),
            _children(fine_from),
            self.medium_coder.code_lengths,
            times,
        )
        return -(-coarse_bits // 8) + -(-medium_bits // 8)

    @staticmethod
    def _piecewise_bits(
        start: np.ndarray, end: np.ndarray, switch: np.ndarray, lengths: np.ndarray, times: int
    ) -> np.ndarray:
        """Bits at every time of symbols sent during [start, end), whose bit k is 1 while t < switch[:, k]."""
        moments, ends = constant_pieces(start[:, None], end[:, None], switch)
        symbols = (moments[:, :, None] < switch[:, None, :]).astype(np.int64) @ _GROUP_WEIGHTS
        costs = lengths[symbols].astype(np.float64)
        return interval_totals(moments.ravel(), ends.ravel(), costs.ravel(), times)


# The mask coding of a file, by whether its masks are grouped (format version 3 and later).
MASK_CODINGS = {False: BitMasks(), True: GroupedMasks()}


def unpack_file_masks(data: bytes, width: int, height: int, grouped: bool) -> tuple[np.ndarray, np.ndarray]:
    """The coarse and medium masks of a width x height file's mask section; FormatError if it is damaged."""
    return MASK_CODINGS[grouped].unpack(data, -(-height // COARSE_CELL), -(-width // COARSE_CELL))
