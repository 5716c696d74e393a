"""Reading every kind of input image into 8-bit RGB, and writing decoded images (all images generated here)."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageFile

from controlgic_cli.coding.container import (
    COLOUR_GREY,
    COLOUR_GREY_ALPHA,
    COLOUR_RGB,
    COLOUR_RGB_ALPHA,
    COLOUR_RGB_ALPHA_DROPPED,
)
from controlgic_cli.errors import ImageError
from controlgic_cli.io import image_io
from controlgic_cli.io.image_io import encode_image_file, load_image, loses_alpha, to_pil

from .colour_profiles import matrix_profile
from .conftest import synthetic_photo

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def encoded(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def random_rgb(height: int = 24, width: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_rgb48(values: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG written by hand (Pillow cannot write one)."""
    height, width, _ = values.shape
    raw = b"".join(b"\0" + values[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )


def palette_image() -> Image.Image:
    image = Image.new("P", (4, 2))
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30] + [0] * (768 - 12))
    image.putdata([0, 1, 2, 3, 3, 2, 1, 0])
    return image


PALETTE_RGB = np.array(
    [[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]], [[10, 20, 30], [0, 0, 255], [0, 255, 0], [255, 0, 0]]],
    np.uint8,
)


def alpha_warned(source) -> bool:
    return any("alpha" in note for note in source.warnings)


def alpha_of(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGBA").getchannel("A"))


# ---------------------------------------------------------------------------
# Every source type: RGB passes through unchanged
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["pil", "png-bytes", "png-path-str", "png-path", "array", "bmp-path", "tiff-bytes"])
def test_rgb_8bit_passes_through_unchanged(tmp_path, kind):
    rgb = random_rgb()
    image = Image.fromarray(rgb, "RGB")
    if kind == "pil":
        source = image
    elif kind == "png-bytes":
        source = encoded(image)
    elif kind == "tiff-bytes":
        source = encoded(image, "TIFF")
    elif kind == "array":
        source = rgb
    else:
        suffix = ".bmp" if kind == "bmp-path" else ".png"
        path = tmp_path / f"in{suffix}"
        image.save(path)
        source = str(path) if kind == "png-path-str" else path
    loaded = load_image(source)
    assert loaded.rgb.dtype == np.uint8 and loaded.rgb.flags.c_contiguous
    np.testing.assert_array_equal(loaded.rgb, rgb)
    assert (loaded.height, loaded.width) == (24, 40)
    assert loaded.colour_mode == COLOUR_RGB
    assert loaded.warnings == []


# ---------------------------------------------------------------------------
# Grey inputs
# ---------------------------------------------------------------------------


def assert_grey(loaded, expected_grey: np.ndarray, colour_mode: int = COLOUR_GREY) -> None:
    assert loaded.colour_mode == colour_mode
    assert loaded.rgb.shape == (*expected_grey.shape, 3) and loaded.rgb.dtype == np.uint8
    for channel in range(3):
        np.testing.assert_array_equal(loaded.rgb[..., channel], expected_grey)


def test_grey_l_becomes_three_equal_channels():
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    loaded = load_image(encoded(Image.fromarray(grey, "L")))
    assert_grey(loaded, grey)
    assert loaded.warnings == []


def test_bilevel_mode_1_becomes_black_and_white_grey():
    image = Image.new("1", (8, 4))
    pattern = np.indices((4, 8)).sum(axis=0) % 3 == 0
    for y, x in zip(*np.nonzero(pattern), strict=True):
        image.putpixel((int(x), int(y)), 1)
    loaded = load_image(encoded(image))
    assert_grey(loaded, np.where(pattern, 255, 0).astype(np.uint8))


def test_grey_16bit_png_is_scaled_by_1_over_257_and_rounded():
    values = np.array([[0, 257, 1000, 65535], [128, 129, 385, 386], [32767, 32768, 65406, 65407]], np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    data = encoded(image)
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    loaded = load_image(data)
    # Not Pillow's convert("L"), which clips everything above 255 to white.
    # 385/257 = 1.498 and 386/257 = 1.502, 32767/257 = 127.498 and 32768/257 = 127.502, etc.
    expected = np.array([[0, 1, 4, 255], [0, 1, 1, 2], [127, 128, 254, 255]], np.uint8)
    np.testing.assert_array_equal(expected, np.rint(values / 257.0).astype(np.uint8))
    assert_grey(loaded, expected)


def test_rgb_48bit_png_keeps_the_high_byte_as_documented():
    values = np.array([[[511, 1000, 65535], [257, 0, 32767]]], np.uint16)
    # uint16 arrays are rounded (v / 257); Pillow gives 48-bit PNGs to us already reduced to v >> 8.
    np.testing.assert_array_equal(load_image(values).rgb, np.rint(values / 257.0).astype(np.uint8))
    np.testing.assert_array_equal(load_image(png_rgb48(values)).rgb, (values >> 8).astype(np.uint8))


# ---------------------------------------------------------------------------
# Alpha
# ---------------------------------------------------------------------------


def test_rgba_keeps_colour_and_alpha_exactly():
    rgba = np.concatenate([random_rgb(8, 12), np.zeros((8, 12, 1), np.uint8)], axis=2)
    rgba[::2, ::3, 3] = 255  # mostly fully transparent: colours there must not be premultiplied away
    rgba[1, 1, 3] = 77
    for source in (Image.fromarray(rgba, "RGBA"), encoded(Image.fromarray(rgba, "RGBA")), rgba):
        loaded = load_image(source)
        np.testing.assert_array_equal(loaded.rgb, rgba[..., :3])
        np.testing.assert_array_equal(loaded.alpha, rgba[..., 3])
        assert loaded.colour_mode == COLOUR_RGB_ALPHA
        assert loaded.warnings == []


def test_opaque_alpha_is_dropped_without_a_word():
    rgba = np.concatenate([random_rgb(8, 12), np.full((8, 12, 1), 255, np.uint8)], axis=2)
    for source in (Image.fromarray(rgba, "RGBA"), rgba):
        loaded = load_image(source)
        assert loaded.alpha is None and loaded.colour_mode == COLOUR_RGB and loaded.warnings == []
        np.testing.assert_array_equal(loaded.rgb, rgba[..., :3])


def test_la_keeps_grey_channel_and_alpha():
    grey = np.arange(32, dtype=np.uint8).reshape(4, 8) * 8
    alpha = np.full_like(grey, 0)
    alpha[0, :3] = (255, 128, 1)
    loaded = load_image(encoded(Image.fromarray(np.stack([grey, alpha], axis=-1), "LA")))
    # Grey with alpha stays grey (decoded as LA).
    assert_grey(loaded, grey, COLOUR_GREY_ALPHA)
    np.testing.assert_array_equal(loaded.alpha, alpha)


def test_palette_without_transparency_is_converted_to_rgb():
    loaded = load_image(encoded(palette_image()))
    np.testing.assert_array_equal(loaded.rgb, PALETTE_RGB)
    assert loaded.colour_mode == COLOUR_RGB
    assert loaded.warnings == []


def test_palette_with_transparency_keeps_palette_colours_and_alpha():
    data = encoded(palette_image(), transparency=1)
    assert "transparency" in Image.open(io.BytesIO(data)).info
    loaded = load_image(data)
    # The transparent entry (green) keeps its stored colour.
    np.testing.assert_array_equal(loaded.rgb, PALETTE_RGB)
    assert loaded.colour_mode == COLOUR_RGB_ALPHA
    np.testing.assert_array_equal(loaded.alpha, np.where((PALETTE_RGB == (0, 255, 0)).all(axis=2), 0, 255))


def test_palette_with_several_transparent_entries_is_read_without_a_python_warning():
    data = encoded(palette_image(), transparency=bytes([255, 0, 128, 255]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_image(data)
    assert loaded.alpha.tolist() == [[255, 0, 128, 255], [255, 128, 0, 255]]
    np.testing.assert_array_equal(loaded.rgb, PALETTE_RGB)


def test_rgb_and_grey_with_trns_chunk_keep_their_transparent_colour_as_alpha():
    image = Image.new("RGB", (4, 2), (1, 2, 3))
    image.putpixel((0, 0), (9, 9, 9))
    rgb = load_image(encoded(image, transparency=(1, 2, 3)))
    assert rgb.colour_mode == COLOUR_RGB_ALPHA and rgb.warnings == []
    assert (rgb.rgb[0, 1:] == (1, 2, 3)).all() and rgb.alpha.tolist() == [[255, 0, 0, 0], [0, 0, 0, 0]]
    grey = load_image(encoded(Image.new("L", (4, 2), 7), transparency=7))
    assert grey.colour_mode == COLOUR_GREY_ALPHA and (grey.alpha == 0).all()
    assert (grey.rgb == 7).all()


# ---------------------------------------------------------------------------
# Other colour spaces, orientation, animation
# ---------------------------------------------------------------------------


def test_cmyk_jpeg_is_converted_to_rgb():
    image = Image.new("CMYK", (32, 16), (0, 255, 255, 0))  # red
    image.paste((255, 0, 255, 0), (16, 0, 32, 16))  # green
    data = encoded(image, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    loaded = load_image(data)
    assert loaded.rgb.shape == (16, 32, 3)
    assert loaded.colour_mode == COLOUR_RGB
    # JPEG is lossy: compare block centres with a tolerance.
    np.testing.assert_allclose(loaded.rgb[8, 4], (255, 0, 0), atol=8)
    np.testing.assert_allclose(loaded.rgb[8, 28], (0, 255, 0), atol=8)


def two_colour_image(mode: str = "RGB") -> Image.Image:
    """A mid grey half and a muted green half."""
    image = Image.new(mode, (32, 16), (128, 128, 128, 255)[: len(mode)])
    image.paste((60, 160, 60, 255)[: len(mode)], (16, 0, 32, 16))
    return image


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "WEBP"])
def test_wide_gamut_profile_is_converted_to_srgb(fmt):
    options = {"lossless": True} if fmt == "WEBP" else {}
    data = encoded(two_colour_image(), fmt, icc_profile=matrix_profile("Test Adobe RGB"), **options)
    loaded = load_image(data)
    assert loaded.colour_mode == COLOUR_RGB
    assert loaded.warnings == ["converted from its colour profile 'Test Adobe RGB' to sRGB"]
    # Grey stays grey; a muted Adobe RGB green is a more saturated sRGB green (red and blue drop).
    np.testing.assert_allclose(loaded.rgb[8, 4], (128, 128, 128), atol=2)
    red, green, blue = loaded.rgb[8, 28].astype(int)
    assert red < 20 and blue < 52 and abs(green - 160) <= 3, (red, green, blue)


def test_rgba_with_a_profile_is_converted_and_keeps_alpha():
    image = two_colour_image("RGBA")
    image.putpixel((0, 0), (1, 2, 3, 40))
    loaded = load_image(encoded(image, icc_profile=matrix_profile("Test Adobe RGB")))
    assert loaded.colour_mode == COLOUR_RGB_ALPHA
    assert len(loaded.warnings) == 1 and "sRGB" in loaded.warnings[0]
    assert loaded.rgb[8, 28, 0] < 20
    np.testing.assert_array_equal(loaded.alpha, alpha_of(image))


def test_srgb_profile_leaves_values_and_says_nothing():
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    image = Image.fromarray(random_rgb(16, 32))
    loaded = load_image(encoded(image, icc_profile=srgb))
    np.testing.assert_array_equal(loaded.rgb, np.asarray(image))
    assert loaded.warnings == []


def test_unusable_profile_keeps_values_with_a_note():
    image = Image.fromarray(random_rgb(16, 32))
    loaded = load_image(encoded(image, icc_profile=b"not a colour profile"))
    np.testing.assert_array_equal(loaded.rgb, np.asarray(image))
    assert len(loaded.warnings) == 1 and "colour profile cannot be used" in loaded.warnings[0]


def test_grey_image_with_a_profile_stays_grey():
    grey = Image.new("L", (16, 16), 90)
    loaded = load_image(encoded(grey, icc_profile=matrix_profile("Test Adobe RGB")))
    assert loaded.colour_mode == COLOUR_GREY and (loaded.rgb == 90).all()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_orientation_6_is_applied(fmt):
    # Stored 40 wide x 20 high with a red block at the stored top-left; orientation 6 means "rotate
    # 90 degrees clockwise to display", so it loads 20 wide x 40 high with the block at the top-right.
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:8, :8] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    loaded = load_image(encoded(Image.fromarray(stored, "RGB"), fmt, exif=exif.tobytes()))
    assert (loaded.height, loaded.width) == (40, 20)
    assert loaded.rgb[3, 16, 0] > 200 and loaded.rgb[3, 16, 1] < 60  # top-right corner is red
    assert loaded.rgb[3, 3, 0] < 60  # top-left is black
    assert loaded.rgb[36, 16, 0] < 60  # bottom-right is black


def test_exif_orientation_turns_alpha_with_the_colour():
    exif = Image.Exif()
    exif[0x0112] = 6
    loaded = load_image(encoded(palette_image(), transparency=1, exif=exif.tobytes()))
    assert (loaded.height, loaded.width) == (4, 2)
    assert loaded.colour_mode == COLOUR_RGB_ALPHA
    # Orientation 6 turns the image a quarter clockwise; alpha marks the green pixels wherever they land.
    np.testing.assert_array_equal(loaded.alpha == 0, (loaded.rgb == (0, 255, 0)).all(axis=2))


@pytest.mark.parametrize("fmt", ["GIF", "PNG"])
def test_animated_image_codes_first_frame_with_warning(fmt):
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    data = encoded(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    loaded = load_image(data)
    assert loaded.rgb.shape == (8, 8, 3)
    assert (loaded.rgb == (255, 0, 0)).all()
    assert loaded.colour_mode == COLOUR_RGB
    assert any("frame" in note for note in loaded.warnings)


# ---------------------------------------------------------------------------
# numpy arrays
# ---------------------------------------------------------------------------


def test_array_2d_and_single_channel_are_grey():
    grey = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    assert_grey(load_image(grey), grey)
    assert_grey(load_image(grey[..., None]), grey)


def test_array_rgb_non_contiguous_is_copied_correctly():
    rgb = random_rgb(16, 32)
    view = rgb[:, ::2]
    loaded = load_image(view)
    assert loaded.rgb.flags.c_contiguous
    np.testing.assert_array_equal(loaded.rgb, view)
    assert loaded.colour_mode == COLOUR_RGB and loaded.warnings == []


def test_array_with_two_channels_is_grey_and_alpha():
    la = np.random.default_rng(2).integers(0, 256, (5, 7, 2), dtype=np.uint8)
    loaded = load_image(la)
    assert_grey(loaded, la[..., 0], COLOUR_GREY_ALPHA)
    np.testing.assert_array_equal(loaded.alpha, la[..., 1])


def test_array_rgba_keeps_alpha():
    rgba = np.random.default_rng(1).integers(0, 256, (6, 8, 4), dtype=np.uint8)
    loaded = load_image(rgba)
    np.testing.assert_array_equal(loaded.rgb, rgba[..., :3])
    np.testing.assert_array_equal(loaded.alpha, rgba[..., 3])
    assert loaded.colour_mode == COLOUR_RGB_ALPHA and loaded.warnings == []


def test_array_uint16_is_scaled_by_1_over_257():
    values = np.array([[0, 257, 1000, 65535, 128, 129]], np.uint16)
    expected = np.array([[0, 1, 4, 255, 0, 1]], np.uint8)
    assert_grey(load_image(values), expected)
    rgb = np.stack([values, values[:, ::-1], np.full_like(values, 514)], axis=-1)
    loaded = load_image(rgb)
    np.testing.assert_array_equal(loaded.rgb[..., 0], expected)
    np.testing.assert_array_equal(loaded.rgb[..., 1], expected[:, ::-1])
    assert (loaded.rgb[..., 2] == 2).all() and loaded.colour_mode == COLOUR_RGB


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((4, 4, 3), np.float64),
        np.zeros((4, 4), np.float32),
        np.zeros((4, 4, 3), np.int32),
        np.zeros((4, 4, 3), bool),
        np.zeros((4, 4, 5), np.uint8),
        np.zeros((0, 4, 3), np.uint8),
        np.zeros((4, 0), np.uint8),
        np.zeros((0, 0), np.uint8),
        np.zeros((0,), np.uint8),
        np.zeros((12,), np.uint8),
        np.zeros((1, 4, 4, 3), np.uint8),
        np.zeros((), np.uint8),
    ],
    ids=[
        "float64",
        "float32",
        "int32",
        "bool",
        "five-channels",
        "empty-h",
        "empty-w",
        "empty",
        "empty-1d",
        "1d",
        "4d",
        "0d",
    ],
)
def test_bad_arrays_are_image_errors(array):
    with pytest.raises(ImageError):
        load_image(array)


# ---------------------------------------------------------------------------
# Unreadable inputs: always ImageError, never another exception
# ---------------------------------------------------------------------------


def test_zero_byte_and_text_files_are_image_errors(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    for path in (empty, text):
        with pytest.raises(ImageError, match="not an image"):
            load_image(path)
    with pytest.raises(ImageError):
        load_image(b"")
    with pytest.raises(ImageError):
        load_image(b"hello")


def test_missing_path_and_directory_are_image_errors(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(ImageError, match="no such file") as info:
        load_image(missing)
    assert str(missing) in str(info.value)  # messages about a path start with the path
    with pytest.raises(ImageError, match="no such file"):
        load_image(str(missing))
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files_are_image_errors(tmp_path, fmt):
    data = encoded(Image.fromarray(random_rgb(32, 48), "RGB"), fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    # Cut in the middle of the pixel data: clearly unreadable, as bytes and as a file.
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="cannot read"):
        load_image(path)
    with pytest.raises(ImageError):
        load_image(data[: len(data) // 2])
    # Every cut point: either an ImageError or (for cuts in a PNG's trailing chunk) a complete image,
    # never any other exception type.
    step = max(1, len(data) // 300)
    for cut in [*range(0, len(data), step), len(data) - 1]:
        try:
            loaded = load_image(data[:cut])
        except ImageError:
            continue
        assert cut >= len(data) - 20, f"{fmt} cut at {cut}/{len(data)} loaded"
        assert loaded.rgb.shape == (32, 48, 3)


def test_decompression_bomb_is_an_image_error(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    # Over Pillow's warning limit: read (cgic's own limit decides); over twice it: Pillow's error.
    assert load_image(encoded(Image.new("RGB", (40, 40)))).rgb.shape == (40, 40, 3)
    with pytest.raises(ImageError, match=r"^0\.0 megapixels; this version handles at most 120"):
        load_image(encoded(Image.new("RGB", (64, 64))))


def test_images_over_the_pixel_limit_are_refused_before_their_pixels_are_read(monkeypatch):
    monkeypatch.setattr(image_io, "MAX_PIXELS", 1000)
    data = encoded(Image.new("RGB", (40, 30)))
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda im: decoded.append(im))
    with pytest.raises(ImageError, match="40x30 is .* megapixels; this version handles at most"):
        load_image(data)
    assert decoded == []


# ---------------------------------------------------------------------------
# Output side
# ---------------------------------------------------------------------------


def test_to_pil_gives_l_for_grey_and_rgb_otherwise():
    grey = np.repeat((np.arange(48, dtype=np.uint8).reshape(6, 8) * 5)[..., None], 3, axis=2)
    as_grey = to_pil(grey, COLOUR_GREY)
    assert as_grey.mode == "L" and as_grey.size == (8, 6)
    np.testing.assert_array_equal(np.asarray(as_grey), grey[..., 0])
    rgb = random_rgb(6, 8)
    for mode in (COLOUR_RGB, COLOUR_RGB_ALPHA_DROPPED):
        image = to_pil(rgb, mode)
        assert image.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(image), rgb)


def test_to_pil_gives_rgba_and_la_with_alpha():
    rgb = random_rgb(6, 8)
    alpha = random_rgb(6, 8, seed=9)[..., 0]
    rgba = to_pil(rgb, COLOUR_RGB_ALPHA, alpha)
    assert rgba.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(rgba), np.dstack([rgb, alpha]))
    la = to_pil(np.repeat(rgb[..., :1], 3, axis=2), COLOUR_GREY_ALPHA, alpha)
    assert la.mode == "LA"
    np.testing.assert_array_equal(np.asarray(la), np.dstack([rgb[..., 0], alpha]))


@pytest.mark.parametrize("target", ["x.png", "x.tif", "x.webp"])
@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_formats_with_alpha_keep_it_exactly(target, mode):
    pixels = np.dstack([random_rgb(6, 10), random_rgb(6, 10, seed=4)[..., :1]])
    image = Image.fromarray(pixels, "RGBA").convert(mode) if mode == "LA" else Image.fromarray(pixels, "RGBA")
    assert not loses_alpha(image, target)
    back = Image.open(io.BytesIO(encode_image_file(image, target)))
    np.testing.assert_array_equal(alpha_of(back), alpha_of(image))
    np.testing.assert_array_equal(
        np.asarray(back.convert(mode[0] if mode == "LA" else "RGB")), np.asarray(image)[..., :-1].squeeze()
    )


@pytest.mark.parametrize("target", ["x.jpg", "x.bmp", "x.ppm"])
def test_formats_without_alpha_get_the_image_over_white(target):
    image = Image.new("RGBA", (4, 2), (0, 0, 0, 255))
    image.putpixel((1, 0), (0, 0, 0, 0))  # transparent: white
    image.putpixel((2, 0), (0, 0, 0, 128))  # half: mid grey
    assert loses_alpha(image, target)
    back = np.asarray(Image.open(io.BytesIO(encode_image_file(image, target))).convert("L")).astype(int)
    assert back[0, 0] < 8 and back[0, 1] > 247 and abs(back[0, 2] - 127) < 8


MAGIC = {
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "BMP": (b"BM",),
    "TIFF": (b"II*\x00", b"MM\x00*"),
}


@pytest.mark.parametrize(
    ("target", "fmt"),
    [
        ("out.png", "PNG"),
        ("out.PNG", "PNG"),
        ("dir/out.bmp", "BMP"),
        ("out.tif", "TIFF"),
        ("out.tiff", "TIFF"),
        ("out.TIFF", "TIFF"),
        ("-", "PNG"),
        ("out", "PNG"),
    ],
)
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_encode_image_file_picks_format_by_suffix_and_is_lossless(target, fmt, mode):
    rgb = random_rgb(6, 10)
    image = Image.fromarray(rgb, "RGB").convert(mode)
    data = encode_image_file(image, target)
    assert data.startswith(MAGIC[fmt])
    back = Image.open(io.BytesIO(data))
    assert back.format == fmt and back.mode == mode
    np.testing.assert_array_equal(np.asarray(back), np.asarray(image))


@pytest.mark.parametrize("target", ["out.gif", "out.avif", "out.jxl", "out.xyz", "out."])
def test_a_suffix_cgic_does_not_write_is_refused_not_given_png_bytes(target):
    with pytest.raises(ImageError, match="cannot write"):
        encode_image_file(Image.fromarray(random_rgb(4, 4), "RGB"), target)


def test_a_pgm_holds_grey_only():
    with pytest.raises(ImageError, match="grey"):
        encode_image_file(Image.fromarray(random_rgb(4, 4), "RGB"), "x.pgm")


def test_encode_image_file_other_formats():
    image = Image.fromarray(random_rgb(8, 8), "RGB")
    assert encode_image_file(image, "x.ppm").startswith(b"P6")
    assert encode_image_file(image.convert("L"), "x.pgm").startswith(b"P5")
    assert encode_image_file(image, "x.jpg").startswith(b"\xff\xd8")
    webp = encode_image_file(image, "x.webp")
    assert webp[:4] == b"RIFF" and webp[8:12] == b"WEBP"
    # WebP output is written lossless.
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(webp)).convert("RGB")), np.asarray(image))


def test_jpeg_output_stays_close_to_the_decoded_pixels():
    # Smooth content, as decoded images are; Pillow's default (q75, 4:2:0) gives 32.2 dB here, these settings 43.1 dB.
    rgb = np.asarray(Image.fromarray(random_rgb(16, 16, seed=5), "RGB").resize((128, 128), Image.BICUBIC))
    back = Image.open(io.BytesIO(encode_image_file(Image.fromarray(rgb), "x.jpeg")))
    assert back.layer == [(1, 1, 1, 0), (2, 1, 1, 1), (3, 1, 1, 1)]  # 4:4:4: no chroma subsampling
    error = np.asarray(back).astype(float) - rgb
    assert 10 * np.log10(255**2 / np.mean(error**2)) > 40


def test_loaded_image_round_trips_through_encode_image_file():
    rgb = random_rgb(16, 16, seed=3)
    loaded = load_image(encode_image_file(Image.fromarray(rgb), "-"))
    np.testing.assert_array_equal(loaded.rgb, rgb)


def test_torch_tensors_in_torchvision_layout():
    import torch

    rgb = synthetic_photo(20, 30, seed=4)
    chw = torch.from_numpy(rgb).permute(2, 0, 1)
    assert np.array_equal(load_image(chw).rgb, rgb)
    assert np.array_equal(load_image(chw.float() / 255).rgb, rgb)
    grey = load_image(chw[0])
    assert grey.colour_mode == COLOUR_GREY and np.array_equal(grey.rgb[..., 1], rgb[..., 0])
    with_alpha = load_image(chw[:2])  # (2, H, W): grey and alpha, as Pillow's LA
    assert with_alpha.colour_mode == COLOUR_GREY_ALPHA and np.array_equal(with_alpha.alpha, rgb[..., 1])
    for bad, message in (
        (torch.zeros(5, 4, 4), "C, H, W"),
        (torch.zeros(1, 1, 3, 4, 4), "C, H, W"),
        (torch.full((3, 4, 4), float("nan")), "NaN"),
        (torch.zeros(3, 4, 4, dtype=torch.int32), "uint8"),
    ):
        with pytest.raises(ImageError, match=message):
            load_image(bad)


def test_heic_photos_are_read_with_their_profile_and_metadata():
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    exif = Image.Exif()
    exif[0x010F] = "cgic test phone"
    buffer = io.BytesIO()
    image = Image.new("RGB", (48, 32), (60, 160, 60))
    image.save(buffer, "HEIF", quality=-1, icc_profile=matrix_profile("Test Adobe RGB"), exif=exif)
    loaded = load_image(buffer.getvalue(), frozenset({"exif"}))
    assert (loaded.width, loaded.height) == (48, 32) and loaded.colour_mode == COLOUR_RGB
    assert "converted from its colour profile 'Test Adobe RGB' to sRGB" in loaded.warnings[0]
    assert loaded.rgb[16, 24, 0] < 30, "the muted Adobe RGB green became a saturated sRGB green"
    exif_kept = Image.Exif()
    exif_kept.load(loaded.metadata.exif)
    assert exif_kept[0x010F] == "cgic test phone"


def test_heif_without_a_reader_names_the_missing_extra(monkeypatch):
    from controlgic_cli.io import image_io

    monkeypatch.setattr(image_io, "_register_heif", lambda: False)
    not_decodable = b"\x00\x00\x00\x18ftypheic" + bytes(40)
    with pytest.raises(ImageError, match=r'HEIC/HEIF images need pillow-heif \(pip install "cgic\[heif\]"\)'):
        load_image(not_decodable)
    with pytest.raises(ImageError, match="not an image Pillow can read"):
        load_image(b"\x00\x00\x00\x18ftypisom" + bytes(40))


@pytest.mark.parametrize(
    ("size", "request_", "expected"),
    [
        ((640, 480), (320, 0), (320, 240)),
        ((640, 480), (0, 120), (160, 120)),
        ((640, 480), (100, 100), (100, 100)),
        ((3, 1000), (1, 0), (1, 333)),
        ((1000, 3), (10, 0), (10, 1)),  # never a side of 0
    ],
)
def test_resized_size_follows_cwebps_rule(size, request_, expected):
    assert image_io.resized_size(*size, request_) == expected


def test_resize_source_resamples_colour_and_keeps_the_kind_of_image():
    photo = load_image(synthetic_photo(48, 64))
    half = image_io.resize_source(photo, (32, 0))
    assert (half.width, half.height) == (32, 24) and half.colour_mode == COLOUR_RGB and half.alpha is None
    # Lanczos of a smooth photo stays close to its box-averaged half.
    boxed = photo.rgb.astype(np.float64).reshape(24, 2, 32, 2, 3).mean(axis=(1, 3))
    assert np.abs(half.rgb - boxed).mean() < 6
    assert image_io.resize_source(photo, (64, 48)) is photo
    grey = image_io.resize_source(load_image(synthetic_photo(48, 64)[..., 0]), (0, 20))
    assert grey.colour_mode == COLOUR_GREY and (grey.rgb[..., 0] == grey.rgb[..., 2]).all()


def test_resize_source_weights_colour_by_alpha():
    # Visible red beside invisible green: the green must not tint the resampled edge.
    pixels = np.zeros((16, 32, 4), np.uint8)
    pixels[:, :16] = (255, 0, 0, 255)
    pixels[:, 16:] = (0, 255, 0, 0)
    small = image_io.resize_source(load_image(pixels), (10, 0))
    assert small.colour_mode == COLOUR_RGB_ALPHA and small.alpha is not None
    visible = small.alpha > 0
    assert (small.rgb[visible][:, 1] == 0).all() and (small.rgb[visible][:, 0] == 255).all()
    opaque = load_image(np.dstack([synthetic_photo(16, 32), np.full((16, 32), 200, np.uint8)]))
    assert image_io.resize_source(opaque, (8, 4)).colour_mode == COLOUR_RGB_ALPHA
    # An alpha that resamples to 255 everywhere is dropped, as on reading.
    edge = np.full((16, 32), 255, np.uint8)
    edge[0, 0] = 254
    plain = image_io.resize_source(load_image(np.dstack([synthetic_photo(16, 32), edge])), (4, 2))
    assert plain.alpha is None and plain.colour_mode == COLOUR_RGB


def test_resize_source_refuses_a_size_beyond_the_pixel_limit():
    with pytest.raises(ImageError, match="megapixels"):
        image_io.resize_source(load_image(synthetic_photo(16, 16)), (20_000, 0))
