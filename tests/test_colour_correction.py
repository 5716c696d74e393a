"""The colour-correction record (coding/colour_correction.py, format version 6)."""

from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlgic_cli.api import Codec
from controlgic_cli.coding import colour_correction as cc
from controlgic_cli.coding.container import (
    FORMAT_VERSION_CORRECTED,
    CgicSections,
    pack_file,
    parse_file,
)
from controlgic_cli.errors import FormatError, OptionsError
from controlgic_cli.options import EncodeOptions
from controlgic_cli.tiling import TileSpec

from .conftest import synthetic_photo


def drifted(target: np.ndarray, seed: int = 0) -> np.ndarray:
    """`target` as a decoder might return it: a smooth colour drift plus fine noise."""
    height, width = target.shape[:2]
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width] / max(height, width)
    drift = np.stack([30 * xx - 10, 20 * yy, -25 * xx * yy + 5], axis=2)
    noise = rng.integers(-4, 5, target.shape)
    return np.clip(target + drift + noise, 0, 255).astype(np.uint8)


def squared_error(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.square(a.astype(np.int64) - b).sum())


@pytest.mark.parametrize(("height", "width"), [(1, 1), (37, 53), (130, 200)])
def test_the_fitted_record_round_trips_and_lowers_the_error(height, width):
    target = synthetic_photo(height, width, seed=3)
    decoded = drifted(target)
    size = max(32, width * height // 400)
    record, corrected = cc.fit(target, decoded, size)
    assert len(record) == size
    correction = cc.unpack(record, width, height)
    if height > 1:
        assert correction is not None
        assert squared_error(target, corrected) < 0.5 * squared_error(target, decoded)
    applied = decoded if correction is None else cc.apply(decoded, correction)
    np.testing.assert_array_equal(applied, corrected)  # the decoder adds what the encoder measured


def test_a_crop_gets_the_pixels_of_the_whole_image():
    target = synthetic_photo(150, 260, seed=5)
    decoded = drifted(target, seed=1)
    record, whole = cc.fit(target, decoded, 100)
    correction = cc.unpack(record, 260, 150)
    for top, left, bottom, right in [(0, 0, 150, 260), (37, 51, 149, 230), (100, 255, 101, 256)]:
        part = cc.apply(decoded[top:bottom, left:right], correction, top, left)
        np.testing.assert_array_equal(part, whole[top:bottom, left:right])


def test_the_worked_example_of_the_format_spec():
    """docs/format.md §15's example record, byte for byte, and what it does to a 16x16 image."""
    record = bytes.fromhex("04 04 03 05 6e 00 00 00")
    assert cc.pack(np.array([[[-2, 1, 0]]]), step=4, block=16, size=8) == record
    correction = cc.unpack(record, 16, 16)
    grey = np.full((16, 16, 3), 100, np.uint8)
    assert (cc.apply(grey, correction).reshape(-1, 3) == (92, 104, 100)).all()
    spec = (Path(__file__).resolve().parents[1] / "docs" / "format.md").read_text(encoding="utf-8")
    assert "04 04 03 05 6e 00 00 00" in spec


def test_tall_images_are_corrected_band_by_band_as_in_one_piece():
    rng = np.random.default_rng(1)
    grid = rng.integers(-40, 41, (-(-600 // 16), 3, 3))
    correction = cc.Correction(grid, step=3, block=16)
    decoded = rng.integers(0, 256, (600, 40, 3), dtype=np.uint8)
    whole = np.clip(decoded + cc.offsets(grid, 3, 16, slice(0, 600), slice(0, 40)), 0, 255)
    np.testing.assert_array_equal(cc.apply(decoded, correction), whole)  # 600 rows: three bands of 256


def test_the_offsets_interpolate_between_cell_centres():
    grid = np.zeros((2, 2, 3), np.int64)
    grid[:, 1] = 4  # the right column of cells: +4 steps
    correction = cc.Correction(grid, step=2, block=16)
    row = cc.offsets(grid, 2, 16, slice(0, 1), slice(0, 32))[0, :, 0]
    # Centres at pixels 7.5 and 23.5: 0 up to the first, 8 from the second, linear (rounded) between.
    assert row[:8].tolist() == [0] * 8 and row[24:].tolist() == [8] * 8
    assert row[15].item() == 4 and row[16].item() == 4 and (np.diff(row) >= 0).all()
    flat = np.full((32, 32, 3), 250, np.uint8)
    assert cc.apply(flat, correction)[:, 24:].max() == 255  # clipped, not wrapped


def test_grey_images_send_one_grid_for_all_channels():
    grey = np.repeat(synthetic_photo(64, 64, seed=2)[..., :1], 3, axis=2)
    decoded = drifted(grey)
    record, corrected = cc.fit(grey, decoded, 32, channels=1)
    assert record[2] == 1
    grid = cc.unpack(record, 64, 64).grid
    assert (grid == grid[..., :1]).all()


def test_noise_alone_gets_no_correction():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    # Zero-mean noise on every 16x16 cell: no offset lowers the error.
    noise = np.tile(np.array([[-3, 3], [3, -3]]), (24, 24))[..., None]
    decoded = np.clip(target.astype(np.int64) + noise, 0, 255).astype(np.uint8)
    decoded[(target < 3) | (target > 252)] = target[(target < 3) | (target > 252)]
    record, corrected = cc.fit(target, decoded, 32)
    assert record == cc.no_correction(32) and cc.unpack(record, 48, 48) is None
    np.testing.assert_array_equal(corrected, decoded)


def valid_record() -> bytes:
    target = synthetic_photo(40, 40, seed=4)
    return cc.fit(target, drifted(target), 64)[0]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda r: r[:3], "shorter than its head"),
        (lambda r: bytes([3]) + r[1:], "block 2"),
        (lambda r: r[:1] + bytes([0]) + r[2:], "step 0"),
        (lambda r: r[:2] + bytes([2]) + r[3:], "2 channels"),
        (lambda r: r[:-1] + b"\x01", "bits after the grid"),
        (lambda r: bytes(3) + b"\x01" + bytes(len(r) - 4), "all zero bytes"),
        (lambda r: r[:4] + bytes(len(r) - 4), "damaged or truncated"),
        (lambda r: r[:6], "too short|runs past|damaged or truncated"),
    ],
)
def test_damaged_records_are_refused(damage, message):
    record = valid_record()
    assert cc.unpack(record, 40, 40) is not None
    with pytest.raises(FormatError, match=message):
        cc.unpack(damage(record), 40, 40)


def test_offsets_beyond_255_levels_are_refused():
    grid = np.zeros((1, 1, 1), np.int64)
    grid[0, 0, 0] = 200
    record = cc.pack(grid, 2, 16, 16)  # 400 levels: a grid the encoder never writes
    with pytest.raises(FormatError, match="beyond 255"):
        cc.unpack(record, 16, 16)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=80), st.integers(1, 90), st.integers(1, 90))
def test_any_bytes_give_a_correction_or_a_format_error(data, width, height):
    try:
        correction = cc.unpack(data, width, height)
    except FormatError:
        return
    if correction is not None:
        assert np.abs(correction.grid * correction.step).max(initial=0) <= 255
        shifted = cc.apply(np.full((height, width, 3), 128, np.uint8), correction)
        assert shifted.shape == (height, width, 3)


# ----- in the container and the codec ------------------------------------------------------------


def test_version_6_needs_its_record_and_rank_coded_streams(tiny_rank_weights):
    codec = Codec(tiny_rank_weights, device="cpu")
    data = codec.encode(synthetic_photo(32, 48, seed=1)).data
    header, sections = parse_file(data)
    assert data[4] == FORMAT_VERSION_CORRECTED
    # The record is 2 % of the rest of the file, at least 32 bytes.
    assert len(sections.correction) == cc.budget_bytes(len(data) - 8 - len(sections.correction)) == 32
    without = pack_file(header, dataclasses.replace(sections, correction=b""))
    assert without[4] == 3  # the same streams without a record are version 3
    forged = bytearray(without)
    forged[4] = FORMAT_VERSION_CORRECTED
    forged[56:60] = zlib.crc32(forged[:56]).to_bytes(4, "little")
    with pytest.raises(FormatError, match="version 6 without its colour-correction record"):
        parse_file(bytes(forged))
    with pytest.raises(OptionsError, match="needs version 6"):
        pack_file(header, dataclasses.replace(sections, rank_coded=False))
    assert isinstance(sections, CgicSections)


def test_the_codec_decodes_what_the_encoder_measured(tiny_rank_weights):
    codec = Codec(tiny_rank_weights, device="cpu")
    image = synthetic_photo(48, 80, seed=6)
    result = codec.encode_to_target(image, target_psnr=20.0)
    assert result.psnr == pytest.approx(codec.measure_psnr(codec.analyse(image).source, result.data))
    off = codec.encode_with(image, EncodeOptions(target_size=len(result.data), colour_correction=False))
    assert off.data[4] == 3 and len(off.data) <= len(result.data)
    crop = codec.decode_array(result.data, crop=(10, 5, 40, 30))[0]
    np.testing.assert_array_equal(crop, codec.decode_array(result.data)[0][5:35, 10:50])


def test_the_budget_is_two_percent_of_the_rest_of_the_file():
    assert cc.budget_bytes(0) == cc.budget_bytes(1600) == 32
    assert cc.budget_bytes(1601) == 33 and cc.budget_bytes(20_000) == 400
    np.testing.assert_array_equal(cc.budget_bytes(np.array([100, 5000, 20_050])), [32, 100, 401])


def test_rate_control_counts_the_record(tiny_rank_weights):
    codec = Codec(tiny_rank_weights, device="cpu")
    image = synthetic_photo(64, 96, seed=7)
    for target in (0.3, 0.8):
        on = codec.encode_to_target(image, target_bpp=target)
        off = codec.encode_with(image, EncodeOptions(target_bpp=target, colour_correction=False))
        record = on.stats.section_bytes["correction"]
        assert record == 8 + cc.budget_bytes(len(on.data) - record)
        assert sum(on.stats.section_bytes.values()) == len(on.data)
        # Both meet the target as closely as their rate paths allow; the record's bytes come out of the tokens.
        assert sum(on.stats.token_counts) <= sum(off.stats.token_counts)


def test_tiled_coding_writes_and_decodes_the_same_corrected_image(tiny_rank_weights):
    image = synthetic_photo(100, 150, seed=9)
    whole = Codec(tiny_rank_weights, "cpu", tiles=TileSpec(core=1 << 16, margin=0))
    tiled = Codec(tiny_rank_weights, "cpu", tiles=TileSpec(core=64, margin=192))
    data = tiled.encode(image).data
    assert data == whole.encode(image).data and data[4] == FORMAT_VERSION_CORRECTED
    decoded = whole.decode_array(data)[0]
    np.testing.assert_array_equal(tiled.decode_array(data)[0], decoded)
    np.testing.assert_array_equal(tiled.decode_array(data, crop=(70, 40, 60, 50))[0], decoded[40:90, 70:130])
