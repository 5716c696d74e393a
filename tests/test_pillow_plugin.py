"""The Pillow plugin: Image.open/save for .cgic."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

import controlgic_cli  # noqa: F401  (registers the plugin)
from controlgic_cli.api import Codec, get_codec
from controlgic_cli.errors import CgicError

from .conftest import synthetic_photo


@pytest.fixture()
def default_to_tiny(monkeypatch, tiny_weights):
    monkeypatch.setenv("CGIC_WEIGHTS", str(tiny_weights))
    get_codec.cache_clear()
    yield
    get_codec.cache_clear()


def test_open_reads_the_header_only(default_to_tiny, tmp_path):
    path = tmp_path / "x.cgic"
    Image.fromarray(synthetic_photo(40, 56)).save(path, ratios=(0.5, 0.4, 0.1))
    with Image.open(path) as im:
        assert (im.format, im.size, im.mode) == ("CGIC", (56, 40), "RGB")
        assert im.info["cgic_ratios"] == (0.5, 0.4, 0.1)
        assert im._im is None  # nothing decoded yet


def test_load_matches_the_library_decoder(default_to_tiny, tiny_weights, tmp_path):
    path = tmp_path / "x.cgic"
    Image.fromarray(synthetic_photo(33, 47)).save(path)
    with Image.open(path) as im:
        pixels = np.asarray(im.convert("RGB"))
    expected = np.asarray(Codec(tiny_weights, "cpu").decode(path.read_bytes()))
    np.testing.assert_array_equal(pixels, expected)


def test_save_with_target_and_grey_mode(default_to_tiny, tmp_path):
    path = tmp_path / "g.cgic"
    Image.fromarray(synthetic_photo(48, 48)[..., 0], "L").save(path, target_bpp=0.3)
    with Image.open(path) as im:
        assert im.mode == "L" and im.info["cgic_rate_controlled"]
        im.load()
        assert im.size == (48, 48)
    buffer = io.BytesIO()
    Image.fromarray(synthetic_photo(48, 48)).save(buffer, format="CGIC", target_size=300)
    assert len(buffer.getvalue()) <= 300
    with pytest.raises(CgicError, match="alternatives"):  # not one of them silently ignored
        Image.fromarray(synthetic_photo(48, 48)).save(io.BytesIO(), format="CGIC", target_size=300, ratios=(0, 0, 1))


def test_save_passes_the_tune(default_to_tiny, tiny_weights):
    image = synthetic_photo(32, 48, seed=2)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="CGIC", ratios=(0.3, 0.6, 0.1), tune="psnr")
    assert buffer.getvalue() == Codec(tiny_weights, "cpu").encode(image, (0.3, 0.6, 0.1), tune="psnr").data
    assert buffer.getvalue() != Codec(tiny_weights, "cpu").encode(image, (0.3, 0.6, 0.1)).data


def test_save_passes_the_colour_correction_choice(monkeypatch, tiny_rank_weights):
    monkeypatch.setenv("CGIC_WEIGHTS", str(tiny_rank_weights))
    get_codec.cache_clear()
    try:
        for choice, version in ((True, 6), (False, 3)):
            buffer = io.BytesIO()
            Image.fromarray(synthetic_photo(32, 48, seed=3)).save(buffer, format="CGIC", colour_correction=choice)
            assert buffer.getvalue()[4] == version
    finally:
        get_codec.cache_clear()


def test_damaged_file_raises_a_clear_unidentified_image_error(default_to_tiny, tmp_path):
    path = tmp_path / "x.cgic"
    Image.fromarray(synthetic_photo(32, 32)).save(path)
    damaged = tmp_path / "damaged.cgic"
    damaged.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(UnidentifiedImageError, match="damaged .cgic file .*truncated"):
        Image.open(damaged)
