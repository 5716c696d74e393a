"""Library API: round trips, determinism, rate behaviour, and refusal of bad files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from controlgic_cli.api import Codec
from controlgic_cli.coding.container import COLOUR_GREY, COLOUR_RGB, COLOUR_RGB_ALPHA_DROPPED, HEADER_SIZE, parse_file
from controlgic_cli.errors import CgicError, FormatError, ImageError, ModelError, OptionsError

from .conftest import synthetic_photo


@pytest.fixture(scope="module")
def codec(tiny_weights):
    return Codec(tiny_weights, device="cpu")


@pytest.mark.parametrize(("height", "width"), [(1, 1), (33, 17), (16, 16), (48, 80), (70, 33)])
def test_round_trip_keeps_exact_size(codec, height, width):
    image = synthetic_photo(height, width)
    result = codec.encode(image, (0.3, 0.6, 0.1))
    decoded, header = codec.decode_array(result.data)
    assert decoded.shape == (height, width, 3)
    assert decoded.dtype == np.uint8
    assert (header.width, header.height) == (width, height)
    assert result.stats.size_bytes == len(result.data)
    assert result.stats.bpp == pytest.approx(8 * len(result.data) / (width * height))


def test_same_input_gives_identical_bytes(codec):
    image = synthetic_photo(64, 96, seed=3)
    assert codec.encode(image, (0.5, 0.4, 0.1)).data == codec.encode(image.copy(), (0.5, 0.4, 0.1)).data


def test_sections_add_up_and_token_counts_match_ratios(codec):
    image = synthetic_photo(64, 128)
    stats = codec.encode(image, (0.5, 0.25, 0.25)).stats
    assert sum(stats.section_bytes.values()) == stats.size_bytes
    assert stats.section_bytes["header"] == HEADER_SIZE
    n16 = (64 // 16) * (128 // 16)
    fine, medium, coarse = stats.token_counts
    assert coarse == round(0.25 * n16)
    assert medium * 64 + coarse * 256 + fine * 16 == 64 * 128


def test_bpp_rises_with_the_fine_ratio(codec):
    image = synthetic_photo(128, 128, seed=5)
    sizes = [codec.encode(image, (fine, 1.0 - fine, 0.0)).stats.size_bytes for fine in (0.0, 0.2, 0.5, 0.8, 1.0)]
    assert sizes == sorted(sizes)
    assert sizes[-1] > sizes[0]


def test_ratios_are_stored_in_the_header(codec):
    header, _ = parse_file(codec.encode(synthetic_photo(32, 32), (0.301, 0.599, 0.1)).data)
    assert header.ratios == (301_000, 599_000, 100_000)
    assert not header.rate_controlled


def test_colour_modes_survive(codec):
    grey = Image.fromarray(synthetic_photo(40, 40)[..., 0], "L")
    data = codec.encode(grey).data
    assert parse_file(data)[0].colour_mode == COLOUR_GREY
    assert codec.decode(data).mode == "L"

    rgba = np.dstack([synthetic_photo(40, 40), np.full((40, 40), 128, np.uint8)])
    result = codec.encode(rgba)
    assert parse_file(result.data)[0].colour_mode == COLOUR_RGB_ALPHA_DROPPED
    assert any("alpha" in w for w in result.warnings)
    assert codec.decode(result.data).mode == "RGB"

    data = codec.encode(synthetic_photo(40, 40)).data
    assert parse_file(data)[0].colour_mode == COLOUR_RGB


def test_accepts_paths_bytes_pil_and_arrays(codec, tmp_path):
    image = synthetic_photo(32, 48)
    path = tmp_path / "x.png"
    Image.fromarray(image).save(path)
    from_array = codec.encode(image).data
    assert codec.encode(path).data == from_array
    assert codec.encode(str(path)).data == from_array
    assert codec.encode(path.read_bytes()).data == from_array
    assert codec.encode(Image.fromarray(image)).data == from_array


def test_invalid_ratios_are_refused(codec):
    with pytest.raises(OptionsError, match="sum to 1"):
        codec.encode(synthetic_photo(16, 16), (0.5, 0.5, 0.5))


def test_wrong_model_is_named(codec, other_tiny_weights):
    data = codec.encode(synthetic_photo(32, 32)).data
    other = Codec(other_tiny_weights, device="cpu")
    with pytest.raises(ModelError, match=codec.model_id.hex()):
        other.decode(data)


def test_damaged_files_raise_format_errors(codec):
    data = codec.encode(synthetic_photo(48, 48)).data
    for cut in range(0, len(data)):
        with pytest.raises(FormatError):
            codec.decode(data[:cut])
    rng = np.random.default_rng(0)
    for position in rng.integers(0, len(data), 40):
        damaged = bytearray(data)
        damaged[position] ^= 1 << int(rng.integers(8))
        with pytest.raises(CgicError):
            codec.decode(bytes(damaged))


def test_decoded_png_is_a_real_png(codec):
    image = codec.decode(codec.encode(synthetic_photo(20, 30)).data)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    assert Image.open(io.BytesIO(buffer.getvalue())).size == (30, 20)


def test_a_crop_decodes_the_pixels_of_the_whole_decode_from_the_tiles_it_meets(tiny_rank_weights, monkeypatch):
    from controlgic_cli.tiling import TileSpec

    codec = Codec(tiny_rank_weights, device="cpu", tiles=TileSpec(core=32, margin=32))
    rgba = np.dstack([synthetic_photo(70, 100, seed=8), np.arange(7000, dtype=np.uint8).reshape(70, 100)])
    data = codec.encode(rgba).data
    whole, _ = codec.decode_array(data)
    decoded_tiles = []
    original = codec.network.network.decode_indices
    monkeypatch.setattr(codec.network.network, "decode_indices", lambda *a: decoded_tiles.append(1) or original(*a))
    for left, top, width, height in [(0, 0, 100, 70), (5, 7, 20, 11), (31, 0, 2, 70), (99, 69, 1, 1), (40, 30, 60, 40)]:
        decoded_tiles.clear()
        part, _ = codec.decode_array(data, (left, top, width, height))
        np.testing.assert_array_equal(part, whole[top : top + height, left : left + width])
        assert part.shape == (height, width, 4)
        if (width, height) == (1, 1):
            assert len(decoded_tiles) == 1  # of 12 tiles (3 x 4 of at most 32 px)
    assert codec.decode(data, (5, 7, 20, 11)).size == (20, 11)
    assert tuple(codec.decode_tensor(data, (5, 7, 20, 11)).shape) == (4, 11, 20)
    for crop in [(0, 0, 101, 70), (-1, 0, 5, 5), (0, 0, 0, 5), (95, 60, 6, 5)]:
        with pytest.raises(OptionsError, match="is not inside the 100x70 image"):
            codec.decode(data, crop)


def test_odd_inputs_get_clear_errors_and_byte_like_inputs_work(codec):
    png = io.BytesIO()
    Image.fromarray(synthetic_photo(24, 40)).save(png, format="PNG")
    expected = codec.encode(png.getvalue()).data
    for same in (bytearray(png.getvalue()), memoryview(png.getvalue()), io.BytesIO(png.getvalue())):
        assert codec.encode(same).data == expected
    with pytest.raises(ImageError, match="empty image"):
        codec.encode(Image.new("RGB", (0, 0)))
    translucent = np.dstack([synthetic_photo(24, 40), np.full((24, 40), 90, np.uint8)])
    premultiplied = Image.fromarray(translucent).convert("RGBa")
    assert codec.encode(premultiplied).stats.width == 40
    for wrong in (None, 5):
        with pytest.raises(TypeError, match="expected a path"):
            codec.encode(wrong)
        with pytest.raises(TypeError, match="bytes of a .cgic file"):
            codec.decode(wrong)
    with pytest.raises(TypeError, match="read the file first"):
        codec.decode("photo.cgic")
    assert codec.decode(bytearray(expected)).size == (40, 24)
    assert codec.encode_dataset([], target_bpp=0.3) == []
    assert codec.encode(png.getvalue(), ratios=None).data == expected


def test_arguments_of_the_wrong_kind_get_clear_errors(codec):
    image = synthetic_photo(24, 40)
    data = codec.encode(image).data
    for crop in ((0, 0, 5), "0,0,5,5", (float("nan"), 0, 5, 5), (None, 0, 5, 5)):
        with pytest.raises(OptionsError, match="four whole numbers"):
            codec.decode(data, crop=crop)
    assert codec.decode(data, crop=np.array([0, 0, 5, 4])).size == (5, 4)
    assert codec.encode(image, metadata=None).data == data
    with pytest.raises(TypeError, match="target_bpp must be a number"):
        codec.encode_to_target(image, target_bpp="0.3")
    with pytest.raises(OptionsError, match="finite"):
        codec.encode_to_target(image, target_size=float("nan"))
    with pytest.raises(TypeError, match="list of images"):
        codec.encode_dataset(image, target_bpp=0.3)
    with pytest.raises(OptionsError, match="three numbers"):
        codec.encode(image, 0.5)
    for device in (None, 0, "mps"):
        with pytest.raises(OptionsError, match="unknown device"):
            Codec(device=device)


def test_float_tensors_outside_0_1_are_refused_not_clamped(codec):
    torch = pytest.importorskip("torch")
    pixels = torch.from_numpy(synthetic_photo(24, 40)).permute(2, 0, 1)
    with pytest.raises(ImageError, match="divide by 255"):
        codec.encode(pixels.float())
    assert codec.encode(pixels.float() / 255).data == codec.encode(pixels).data


def test_big_endian_16_bit_arrays_read_like_native_ones(codec):
    wide = synthetic_photo(24, 40).astype(np.uint16) * 257
    assert codec.encode(wide.astype(">u2")).data == codec.encode(wide).data


def test_get_codec_loads_a_model_once_however_it_is_asked_for(tiny_weights):
    from controlgic_cli.api import get_codec

    get_codec.cache_clear()
    first = get_codec(str(tiny_weights))
    assert get_codec(tiny_weights, "auto") is first and get_codec(str(tiny_weights), device="cpu") is first
    get_codec.cache_clear()


def test_read_info_does_not_import_torch(tmp_path, codec):
    import subprocess
    import sys

    (tmp_path / "x.cgic").write_bytes(codec.encode(synthetic_photo(16, 16)).data)
    script = (
        "import sys, controlgic_cli as c; "
        f"h = c.read_info(open({str(tmp_path / 'x.cgic')!r}, 'rb').read()); "
        "print(h.width, 'torch' in sys.modules)"
    )
    printed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True).stdout
    assert printed.split() == ["16", "False"]
