"""Transparency: the alpha plane's lossless coding, the colour under it, planning, files, CLI and Pillow plugin."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from controlgic_cli.api import Codec
from controlgic_cli.cli import main
from controlgic_cli.coding import alpha_coding
from controlgic_cli.coding.alpha_coding import pack_alpha, unpack_alpha
from controlgic_cli.coding.container import (
    COLOUR_GREY_ALPHA,
    COLOUR_RGB_ALPHA,
    FORMAT_VERSION_ALPHA,
    FORMAT_VERSION_CORRECTED,
    HEADER_SIZE,
    parse_file,
)
from controlgic_cli.errors import FormatError, ImageError
from controlgic_cli.io.transparency import fill_invisible
from controlgic_cli.options import EncodeOptions
from controlgic_cli.planning.planner import PatchScores, weight_by_visibility

from .conftest import synthetic_photo


def cutout(height: int, width: int) -> np.ndarray:
    """An anti-aliased ellipse: opaque inside, transparent outside, soft at the edge."""
    scale = 4
    big = Image.new("L", (width * scale, height * scale), 0)
    ImageDraw.Draw(big).ellipse([width * scale // 8, height * scale // 8, width * scale * 5 // 8, height * scale], 255)
    return np.asarray(big.resize((width, height), Image.BOX))


def rgba_photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.dstack([synthetic_photo(height, width, seed), cutout(height, width)])


# ---------------------------------------------------------------------------
# The plane's coding
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("height", "width"), [(1, 1), (1, 9), (13, 1), (24, 40), (61, 37)])
def test_alpha_planes_round_trip_exactly(height, width):
    rng = np.random.default_rng(height * 100 + width)
    for plane in (rng.integers(0, 256, (height, width), dtype=np.uint8), cutout(height, width)):
        data = pack_alpha(plane)
        assert data[0] == alpha_coding.METHOD_WEBP_LOSSLESS
        np.testing.assert_array_equal(unpack_alpha(data, width, height), plane)
        assert pack_alpha(plane.copy()) == data  # deterministic


def test_planes_larger_than_a_webp_are_cut_into_tiles(monkeypatch):
    monkeypatch.setattr(alpha_coding, "MAX_TILE", 7)
    plane = np.random.default_rng(3).integers(0, 256, (16, 15), dtype=np.uint8)
    data = pack_alpha(plane)
    assert len(alpha_coding.tile_boxes(15, 16)) == 9  # 3 x 3 tiles of at most 7 x 7
    np.testing.assert_array_equal(unpack_alpha(data, 15, 16), plane)


def test_a_cutout_codes_small():
    plane = cutout(256, 384)
    data = pack_alpha(plane)
    # Mostly 0 and 255 with a soft edge: a few bytes per edge pixel, far below 1 bit per pixel.
    assert len(data) < plane.size / 16


def webp_of(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", **options)
    return buffer.getvalue()


def record_of(*tiles: bytes, method: int = 0) -> bytes:
    return bytes([method]) + b"".join(struct.pack("<I", len(tile)) + tile for tile in tiles)


GREY_TILE = webp_of(Image.new("L", (4, 3), 9), lossless=True)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "empty"),
        (record_of(GREY_TILE, method=1), "unknown method 1"),
        (b"\x00\x01\x00", "a tile length is cut off"),
        (record_of(GREY_TILE)[:-1], f"a tile says {len(GREY_TILE)} bytes, {len(GREY_TILE) - 1} remain"),
        (record_of(GREY_TILE) + b"\x00", "1 bytes after the last tile"),
        (record_of(webp_of(Image.new("L", (4, 3), 9), quality=50)), "not a lossless WebP"),
        (record_of(b"\x89PNG\r\n\x1a\n" + bytes(40)), "not a lossless WebP"),
        (record_of(webp_of(Image.new("L", (5, 3), 9), lossless=True)), "a tile is 5x3, expected 4x3"),
        (record_of(webp_of(Image.new("RGB", (4, 3), (1, 2, 3)), lossless=True)), "a tile is not grey"),
        (record_of(GREY_TILE[:30] + bytes(len(GREY_TILE) - 30)), "cannot be decoded"),
    ],
)
def test_malformed_alpha_planes_are_refused(data, problem):
    with pytest.raises(FormatError, match=problem):
        unpack_alpha(data, 4, 3)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_damaged_alpha_planes_give_a_format_error_or_a_plane(data):
    record = bytearray(pack_alpha(cutout(24, 40)))
    for _ in range(data.draw(st.integers(1, 6))):
        position = data.draw(st.integers(0, len(record) - 1))
        record[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(record)))
    try:
        plane = unpack_alpha(bytes(record[:cut]) if data.draw(st.booleans()) else bytes(record), 40, 24)
    except FormatError:
        return
    assert plane.shape == (24, 40) and plane.dtype == np.uint8


def test_a_pillow_without_webp_says_so_instead_of_calling_the_file_damaged(monkeypatch):
    data = pack_alpha(cutout(8, 8))
    monkeypatch.setattr(alpha_coding.features, "check", lambda name: name != "webp")
    with pytest.raises(ImageError, match="this Pillow cannot read WebP"):
        unpack_alpha(data, 8, 8)


def test_a_tile_claiming_a_huge_size_is_refused_before_decoding():
    tile = bytearray(GREY_TILE)
    # VP8L header: signature 0x2f, then 14-bit width - 1 and height - 1 (RFC 9649, section 3.2.1).
    struct.pack_into("<I", tile, 21, (16383 | (16383 << 14)) | (struct.unpack_from("<I", tile, 21)[0] & ~0x0FFFFFFF))
    with pytest.raises(FormatError):
        unpack_alpha(record_of(bytes(tile)), 4, 3)


# ---------------------------------------------------------------------------
# Colour under transparency, and planning
# ---------------------------------------------------------------------------


def test_invisible_colour_is_filled_from_the_visible_colour():
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[:, :10] = (200, 40, 10)
    alpha = np.zeros((20, 30), np.uint8)
    alpha[:, :10] = 255
    alpha[0, 0] = 1  # barely visible still counts as visible
    filled = fill_invisible(rgb, alpha)
    np.testing.assert_array_equal(filled[:, :10], rgb[:, :10])  # what can be seen is never changed
    assert (filled[:, 10:] == (200, 40, 10)).all()  # the only visible colour, extended


def test_each_side_of_a_hole_is_extended_with_its_own_colour():
    rgb = np.zeros((8, 64, 3), np.uint8)
    rgb[:, :8], rgb[:, -8:] = 0, 240
    alpha = np.zeros((8, 64), np.uint8)
    alpha[:, :8] = alpha[:, -8:] = 255
    grey = fill_invisible(rgb, alpha)[4, :, 0].astype(int)
    assert (np.diff(grey) >= 0).all()  # no step back and forth across the hole
    assert (grey[8:16] == 0).all() and (grey[48:56] == 240).all()  # no dark rim beside the light side


def test_nothing_or_everything_transparent():
    rgb = synthetic_photo(16, 16)
    assert fill_invisible(rgb, np.full((16, 16), 3, np.uint8)) is rgb
    assert (fill_invisible(rgb, np.zeros((16, 16), np.uint8)) == 128).all()


def test_scores_are_weighted_by_how_visible_each_patch_is():
    scores = PatchScores(medium=np.full((4, 4), 2.0, np.float32), coarse=np.full((2, 2), -3.0, np.float32))
    alpha = np.full((32, 32), 255, np.uint8)
    alpha[:16, :16] = 0  # top-left coarse cell invisible
    alpha[16:24, 16:24] = 0  # one 8x8 patch of the bottom-right coarse cell invisible
    weighted = weight_by_visibility(scores, alpha)
    assert weighted.medium[0, 0] == 0 and weighted.medium[3, 3] == 2 and weighted.medium[2, 2] == 0
    assert weighted.coarse.tolist() == [[0.0, -3.0], [-3.0, -2.25]]


# ---------------------------------------------------------------------------
# Files through the library
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def codec(tiny_rank_weights):
    return Codec(tiny_rank_weights, device="cpu")


@pytest.mark.parametrize(("height", "width"), [(1, 1), (24, 40), (37, 21)])
def test_rgba_round_trips_with_exact_alpha(codec, height, width):
    rgba = rgba_photo(height, width)
    rgba[0, 0, 3] = 100  # never all opaque
    result = codec.encode(rgba)
    header, sections = parse_file(result.data)
    assert result.data[4] == FORMAT_VERSION_CORRECTED and header.colour_mode == COLOUR_RGB_ALPHA
    assert result.stats.section_bytes["alpha"] == 8 + len(sections.alpha)
    uncorrected = codec.encode_with(rgba, EncodeOptions(colour_correction=False)).data
    assert uncorrected[4] == FORMAT_VERSION_ALPHA
    np.testing.assert_array_equal(codec.decode_array(uncorrected)[0][..., 3], rgba[..., 3])
    assert sum(result.stats.section_bytes.values()) == len(result.data)
    image = codec.decode(result.data)
    assert image.mode == "RGBA" and image.size == (width, height)
    np.testing.assert_array_equal(np.asarray(image)[..., 3], rgba[..., 3])
    pixels, _ = codec.decode_array(result.data)
    assert pixels.shape == (height, width, 4)
    np.testing.assert_array_equal(pixels, np.asarray(image))
    tensor = codec.decode_tensor(result.data)
    assert tuple(tensor.shape) == (4, height, width)
    assert codec.encode(rgba.copy()).data == result.data  # deterministic


def test_grey_with_alpha_comes_back_as_la(codec):
    la = Image.fromarray(rgba_photo(24, 32)[..., [0, 3]], "LA")
    result = codec.encode(la)
    assert parse_file(result.data)[0].colour_mode == COLOUR_GREY_ALPHA
    decoded = codec.decode(result.data)
    assert decoded.mode == "LA"
    np.testing.assert_array_equal(np.asarray(decoded.getchannel("A")), np.asarray(la.getchannel("A")))


def test_transparent_areas_are_planned_coarse_first(codec):
    rgba = np.dstack([synthetic_photo(64, 64, seed=2), np.full((64, 64), 255, np.uint8)])
    rgba[:, 32:, 3] = 0  # the right half is invisible
    for planner in ("measured", "entropy"):
        scores = codec.analyse(rgba, planner=planner).scores
        assert (scores.coarse[:, 2:] == 0).all() and (scores.medium[:, 4:] == 0).all()
    # Entropy is never negative, so with it the invisible half is exactly the coarse half.
    plan = codec.plan(codec.analyse(rgba, planner="entropy"), (0, 500_000, 500_000))
    assert plan.coarse[:, 2:].all() and not plan.coarse[:, :2].any()


def test_rate_control_counts_the_alpha_plane(codec):
    rgba = rgba_photo(48, 64, seed=4)
    smallest = len(codec.encode(rgba, (0, 0, 1)).data)
    for size in (smallest + 40, smallest + 200):
        result = codec.encode_to_target(rgba, target_size=size)
        assert len(result.data) <= size
        assert result.stats.section_bytes["alpha"] > 0


def test_weights_without_rank_tables_drop_alpha_with_a_warning(tiny_weights):
    result = Codec(tiny_weights, device="cpu").encode(rgba_photo(24, 24))
    assert parse_file(result.data)[0].colour_mode == 2
    assert any("alpha channel dropped" in warning for warning in result.warnings)


# ---------------------------------------------------------------------------
# CLI and Pillow plugin
# ---------------------------------------------------------------------------


def run(args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_cli_round_trip_keeps_alpha_and_info_shows_it(tmp_path, tiny_rank_weights):
    source = tmp_path / "logo.png"
    Image.fromarray(rgba_photo(40, 56), "RGBA").save(source)
    assert run(["encode", source, "--weights", tiny_rank_weights]).exit_code == 0
    result = run(["decode", tmp_path / "logo.cgic", "-o", tmp_path / "back.png", "--weights", tiny_rank_weights])
    assert result.exit_code == 0, result.output
    back = Image.open(tmp_path / "back.png")
    assert back.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(back)[..., 3], np.asarray(Image.open(source))[..., 3])
    info = run(["info", tmp_path / "logo.cgic"])
    assert info.exit_code == 0 and "cgic v6, 56x40 RGBA" in info.output and "alpha " in info.output


def test_cli_decode_to_jpeg_composites_over_white_and_says_so(tmp_path, tiny_rank_weights):
    source = tmp_path / "logo.png"
    Image.fromarray(rgba_photo(40, 56), "RGBA").save(source)
    run(["encode", source, "--weights", tiny_rank_weights])
    result = run(["decode", tmp_path / "logo.cgic", "-o", tmp_path / "back.jpg", "--weights", tiny_rank_weights])
    assert result.exit_code == 0
    assert "JPEG has no alpha channel: composited over white" in result.stderr
    corner = np.asarray(Image.open(tmp_path / "back.jpg"))[-1, -1]  # transparent in the source
    assert (corner > 240).all()


def test_a_damaged_alpha_plane_is_one_line_and_exit_1(tmp_path, tiny_rank_weights):
    data = bytearray(Codec(tiny_rank_weights, device="cpu").encode(rgba_photo(24, 40)).data)
    _, sections = parse_file(bytes(data))
    start = data.index(b"ALPH") + 8
    data[start + 30 : start + len(sections.alpha) - 4] = bytes(len(sections.alpha) - 34)  # inside the WebP
    struct.pack_into("<I", data, 52, zlib.crc32(data[HEADER_SIZE:]))  # a valid payload CRC: only the plane is bad
    struct.pack_into("<I", data, 56, zlib.crc32(data[:56]))
    damaged = tmp_path / "damaged.cgic"
    damaged.write_bytes(bytes(data))
    for command in (["info", damaged], ["decode", damaged, "--weights", tiny_rank_weights]):
        result = run(command)
        assert result.exit_code == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "alpha record" in lines[0] and "Traceback" not in result.stderr


def test_pillow_plugin_opens_alpha_files_as_rgba(tmp_path, tiny_rank_weights, monkeypatch):
    from controlgic_cli.api import get_codec

    monkeypatch.setenv("CGIC_WEIGHTS", str(tiny_rank_weights))
    get_codec.cache_clear()
    try:
        rgba = rgba_photo(24, 32)
        path = tmp_path / "x.cgic"
        Image.fromarray(rgba, "RGBA").save(path)
        with Image.open(path) as image:
            assert image.mode == "RGBA" and image.size == (32, 24)
            np.testing.assert_array_equal(np.asarray(image)[..., 3], rgba[..., 3])
    finally:
        get_codec.cache_clear()
