"""Inputs that used to lose something: PNG transparent colours at every bit depth, and JPEG XL files."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from controlgic_cli.api import Codec
from controlgic_cli.cli import main
from controlgic_cli.coding.container import COLOUR_GREY_ALPHA, COLOUR_RGB, COLOUR_RGB_ALPHA
from controlgic_cli.errors import ImageError
from controlgic_cli.io import image_io
from controlgic_cli.io.image_io import IMAGE_SUFFIXES, list_image_files, load_image

from .conftest import synthetic_photo


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_with_trns(samples: np.ndarray, bit_depth: int, key) -> bytes:
    """A PNG of grey (H, W) or RGB (H, W, 3) samples as stored at `bit_depth`, with a tRNS chunk naming `key`
    (a sample value, or an RGB triple) transparent: what PngSuite's tbwn0g16, tbbn0g04 and tbbn2c16 are."""
    height, width = samples.shape[:2]
    colour_type = 2 if samples.ndim == 3 else 0
    rows = []
    for row in samples.reshape(height, -1).astype(np.int64):
        if bit_depth == 16:
            data = row.astype(">u2").tobytes()
        elif bit_depth == 8:
            data = row.astype(np.uint8).tobytes()
        else:
            per_byte = 8 // bit_depth
            padded = np.concatenate([row, np.zeros(-len(row) % per_byte, np.int64)]).reshape(-1, per_byte)
            shifts = 8 - bit_depth * np.arange(1, per_byte + 1)
            data = (padded << shifts).sum(axis=1).astype(np.uint8).tobytes()
        rows.append(b"\x00" + data)  # filter type 0 (none)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    trns = struct.pack(">HHH", *key) if colour_type == 2 else struct.pack(">H", key)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"tRNS", trns)
        + _chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + _chunk(b"IEND", b"")
    )


def test_a_16_bit_grey_png_with_trns_keeps_its_transparent_pixels():
    """As PngSuite's tbwn0g16: 16-bit grey, one 16-bit value transparent (compared on all 16 bits)."""
    rng = np.random.default_rng(0)
    samples = rng.integers(0, 65536, (32, 32))
    key = 0xFFFF
    samples[8:20, 4:30] = key
    samples[0, :4] = (0xFFFE, 0xFF00, 0x00FF, 0xFFFF)  # the same high or low byte as the key, but not the key
    source = load_image(png_with_trns(samples, 16, key))
    assert source.colour_mode == COLOUR_GREY_ALPHA
    np.testing.assert_array_equal(source.alpha == 0, samples == key)
    assert (source.alpha == 0).sum() == 12 * 26 + 1 and set(np.unique(source.alpha)) == {0, 255}
    visible = samples != key
    expected_grey = np.rint(samples / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(source.rgb[..., 0][visible], expected_grey[visible])


@pytest.mark.parametrize("bit_depth", [1, 2, 4, 8])
def test_low_bit_depth_grey_pngs_with_trns_keep_their_transparent_pixels(bit_depth):
    """Pillow scales 1, 2 and 4-bit grey samples to 0-255 but leaves a 2 or 4-bit key as stored."""
    rng = np.random.default_rng(bit_depth)
    samples = rng.integers(0, 2**bit_depth, (12, 21))
    key = 1
    source = load_image(png_with_trns(samples, bit_depth, key))
    assert source.colour_mode == COLOUR_GREY_ALPHA
    np.testing.assert_array_equal(source.alpha == 0, samples == key)


def test_an_8_bit_rgb_png_with_trns_keeps_its_transparent_colour():
    samples = np.random.default_rng(3).integers(0, 256, (10, 14, 3))
    samples[2:5, 3:9] = (10, 20, 30)
    source = load_image(png_with_trns(samples, 8, (10, 20, 30)))
    assert source.colour_mode == COLOUR_RGB_ALPHA
    np.testing.assert_array_equal(source.alpha == 0, (samples == (10, 20, 30)).all(axis=-1))


def test_a_16_bit_rgb_png_with_trns_says_when_its_key_cannot_be_matched():
    """Pillow reads 16-bit RGB as 8 bits (the high bytes): a pixel sharing the key's high bytes may or may not be
    the key, so the image is coded opaque with a note; with no such pixel nothing was transparent anyway."""
    samples = np.random.default_rng(4).integers(0, 0x8000, (10, 14, 3))
    key = (0x9123, 0xA456, 0xB789)
    plain = load_image(png_with_trns(samples, 16, key))
    assert plain.alpha is None and plain.colour_mode == COLOUR_RGB and plain.warnings == []
    samples[1:3, 1:3] = key
    keyed = load_image(png_with_trns(samples, 16, key), frozenset())
    assert keyed.alpha is None and keyed.colour_mode == COLOUR_RGB
    assert any("16-bit RGB" in note and "coded opaque" in note for note in keyed.warnings)


def test_a_16_bit_grey_png_with_trns_decodes_with_its_transparency(tmp_path, tiny_rank_weights):
    samples = np.random.default_rng(5).integers(0, 65536, (24, 40))
    samples[5:15, 10:30] = 0
    data = png_with_trns(samples, 16, 0)
    codec = Codec(tiny_rank_weights, device="cpu")
    decoded = codec.decode(codec.encode(data).data)
    assert decoded.mode == "LA"
    np.testing.assert_array_equal(np.asarray(decoded.getchannel("A")) == 0, samples == 0)


# ----- JPEG XL ---------------------------------------------------------------------------------


def _jxl_bytes(rgb: np.ndarray) -> bytes:
    pytest.importorskip("pillow_jxl")
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JXL", lossless=True)
    return buffer.getvalue()


@pytest.fixture
def without_jxl_plugin(monkeypatch):
    """As if pillow-jxl-plugin were not installed: Pillow does not know JXL, and cgic cannot register it."""
    monkeypatch.setattr(image_io, "_register_jxl", lambda: False)
    monkeypatch.delitem(Image.OPEN, "JXL", raising=False)
    monkeypatch.setattr(Image, "ID", [format_id for format_id in Image.ID if format_id != "JXL"])


def test_jxl_files_are_read_with_the_eval_extras_plugin(tmp_path):
    rgb = synthetic_photo(20, 36)
    path = tmp_path / "photo.jxl"
    path.write_bytes(_jxl_bytes(rgb))
    np.testing.assert_array_equal(load_image(path).rgb, rgb)
    assert ".jxl" in IMAGE_SUFFIXES and list_image_files(tmp_path) == [path]


def test_a_jxl_file_without_the_plugin_names_the_extra_that_reads_it(tmp_path, without_jxl_plugin):
    data = _jxl_bytes(synthetic_photo(16, 16))
    path = tmp_path / "photo.jxl"
    path.write_bytes(data)
    for source in (path, data, io.BytesIO(data)):
        with pytest.raises(ImageError, match=r'JPEG XL images need pillow-jxl-plugin \(pip install "cgic\[eval\]"\)'):
            load_image(source)
    # The container form (an ISO BMFF box first) is recognised too.
    container = b"\x00\x00\x00\x0cJXL \r\n\x87\n" + bytes(20)
    with pytest.raises(ImageError, match="pillow-jxl-plugin"):
        load_image(container)
    with pytest.raises(ImageError, match="not an image Pillow can read"):
        load_image(b"not an image at all")


def test_a_folder_with_jxl_files_encodes_them(tmp_path, tiny_weights):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jxl").write_bytes(_jxl_bytes(synthetic_photo(16, 32)))
    Image.fromarray(synthetic_photo(16, 32, seed=1)).save(folder / "b.png")
    result = CliRunner().invoke(
        main, ["encode", str(folder), "-o", str(tmp_path / "out"), "--weights", str(tiny_weights)]
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.cgic", "b.cgic"]


def test_a_folder_with_jxl_files_and_no_plugin_reports_them(tmp_path, tiny_weights, without_jxl_plugin):
    """Not skipped in silence: each .jxl file fails with the hint, the others are written, exit status 1."""
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jxl").write_bytes(b"\xff\x0a" + bytes(30))
    Image.fromarray(synthetic_photo(16, 32, seed=1)).save(folder / "b.png")
    result = CliRunner().invoke(
        main, ["encode", str(folder), "-o", str(tmp_path / "out"), "--weights", str(tiny_weights)]
    )
    assert result.exit_code == 1
    assert 'a.jxl: JPEG XL images need pillow-jxl-plugin (pip install "cgic[eval]")' in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b.cgic"]
