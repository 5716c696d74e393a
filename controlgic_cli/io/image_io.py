"""Reading images of any kind into 8-bit RGB, and writing decoded images.

What happens to each kind of input (also in README "Input images"):
  RGB 8-bit                  coded as is
  grey (L, 1, I;16, I, F)    coded as RGB with equal channels, decoded back to grey (L)
  16-bit grey (I;16), uint16 arrays   scaled to 8 bits (v / 257, rounded)
  48-bit RGB PNG             Pillow itself reduces it to 8 bits (keeps the high byte)
  RGBA, LA, P + transparency alpha is coded losslessly beside the colour (alpha_coding.py),
                             decoded as RGBA (or LA); an alpha of 255 everywhere is dropped
                             (decoded as RGB or L). Colour under fully transparent pixels is
                             replaced by an extension of the visible colour (transparency.py)
                             and planned coarse first
  PNG transparent colour     (tRNS) of grey at 1 to 16 bits or 8-bit RGB: alpha 0 where a pixel has it,
                             compared on the samples as stored; 16-bit RGB, which Pillow reads as 8 bits,
                             cannot be matched: coded opaque, with a note where a pixel might have had it
  P (palette), CMYK, YCbCr   converted to RGB by Pillow
  JPEG XL, HEIC/HEIF         read with pillow-jxl-plugin (the eval extra), pillow-heif (the heif extra);
                             without them a message names the extra to install
  embedded colour profile    RGB and CMYK images whose ICC profile is not sRGB are converted
                             to sRGB (relative colorimetric), with a note; decoded as sRGB.
                             Unless the profile is kept (metadata "icc", metadata.py): then
                             the values are coded as stored and decoded with the profile
  EXIF orientation           applied before coding, so the decoded image is upright
  animated GIF/WebP/APNG     the first frame is coded, with a warning
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import re
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from ..coding.container import (
    COLOUR_GREY,
    COLOUR_GREY_ALPHA,
    COLOUR_RGB,
    COLOUR_RGB_ALPHA,
    COLOUR_RGB_ALPHA_DROPPED,
    DECODED_PIL_MODES,
    MAX_DIMENSION,
    ImageMetadata,
)
from ..errors import ImageError
from .fileio import folder_files
from .metadata import METADATA_KINDS, read_metadata, save_options

# Files a folder input contributes (cgic encode DIR, training, benchmarks).
IMAGE_SUFFIXES = {
    ".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".pnm", ".avif", ".heic",
    ".heif", ".jxl",
}  # fmt: skip
# ISO BMFF brands of HEIF stills (bytes 8-11 of the file), for a helpful message when pillow-heif is missing.
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1"}
# How a JPEG XL file starts: a bare codestream, or the ISO BMFF container's signature box.
_JXL_SIGNATURES = (b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")
GREY_MODES = {"1", "L", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@dataclass
class SourceImage:
    """An input image as the codec sees it: uint8 (H, W, 3) plus how it was obtained.

    alpha: uint8 (H, W) when the image has transparency (colour mode 3 or 4), else None.
    """

    rgb: np.ndarray
    colour_mode: int
    warnings: list[str] = field(default_factory=list)
    metadata: ImageMetadata = ImageMetadata()  # what the file will keep (none unless asked)
    alpha: np.ndarray | None = None

    def without_alpha(self, reason: str) -> SourceImage:
        """The same image with its alpha dropped, and a warning giving the reason."""
        if self.alpha is None:
            return self
        colour = COLOUR_GREY if self.colour_mode == COLOUR_GREY_ALPHA else COLOUR_RGB_ALPHA_DROPPED
        note = f"alpha channel dropped: {reason}"
        return dataclasses.replace(self, colour_mode=colour, alpha=None, warnings=[*self.warnings, note])

    @property
    def width(self) -> int:
        return self.rgb.shape[1]

    @property
    def height(self) -> int:
        return self.rgb.shape[0]


# The network runs in tiles (tiling.py), but the image, its index maps and the
# planner's per-patch statistics are still whole-image arrays: a 101.8 MP
# photo (11648x8736, the 100 MP medium-format cameras) peaked at 3,284 MB and took
# 11 minutes to encode on two cores (docs/robustness.md). 120 MP keeps those
# cameras in and the peak near 4 GB; beyond that, refuse clearly.
MAX_PIXELS = 120_000_000


def check_pixel_count(width: int, height: int, name: str | None = None) -> None:
    """ImageError for an image (to encode or to decode) larger than MAX_PIXELS."""
    if width * height > MAX_PIXELS:
        size = f"{width}x{height} is {width * height / 1e6:.1f} megapixels"
        raise ImageError(_about(name, f"{size}; this version handles at most {MAX_PIXELS / 1e6:.0f}"))


def check_codable_size(width: int, height: int) -> None:
    """ImageError for an image to encode that a .cgic file cannot hold: check_pixel_count, and sides.

    Not checked on reading, so --resize can still bring a long panorama within the limits.
    """
    check_pixel_count(width, height)
    if max(width, height) > MAX_DIMENSION:
        raise ImageError(f"{width}x{height} has a side over {MAX_DIMENSION} pixels, the most a .cgic file holds")


def resized_size(width: int, height: int, request: tuple[int, int]) -> tuple[int, int]:
    """The size a (width, height) request gives, by cwebp's -resize rule: a side of 0 keeps the aspect ratio."""
    wanted_width, wanted_height = request
    if wanted_width == 0:
        wanted_width = max(1, round(width * wanted_height / height))
    if wanted_height == 0:
        wanted_height = max(1, round(height * wanted_width / width))
    return wanted_width, wanted_height


def resize_source(source: SourceImage, request: tuple[int, int]) -> SourceImage:
    """The image resampled (Lanczos) to the size resized_size gives; the same object when that is its size.

    Colour is resampled weighted by alpha (Pillow premultiplies RGBA for it),
    so the colour hidden under transparent pixels does not bleed into the
    visible edge.
    """
    width, height = resized_size(source.width, source.height, request)
    if (width, height) == (source.width, source.height):
        return source
    check_codable_size(width, height)
    if source.alpha is None:
        image = Image.fromarray(source.rgb, "RGB")
    else:
        image = Image.fromarray(np.dstack([source.rgb, source.alpha]), "RGBA")
    pixels = np.asarray(image.resize((width, height), Image.Resampling.LANCZOS))
    if source.alpha is None:
        return dataclasses.replace(source, rgb=np.ascontiguousarray(pixels))
    alpha = _transparent_or_none(pixels[..., 3])
    grey = source.colour_mode == COLOUR_GREY_ALPHA
    rgb = np.ascontiguousarray(pixels[..., :3])
    return dataclasses.replace(source, rgb=rgb, alpha=alpha, colour_mode=_colour_mode(grey, alpha is not None))


# catch_warnings swaps process-wide state, so threads reading or writing images take turns in it.
_PILLOW_WARNINGS = threading.Lock()


@contextlib.contextmanager
def pillow_warnings_into(notes: list[str], name: str | None):
    """Pillow's warnings about a file (corrupt EXIF data, say) as notes naming it, each once, instead of
    bare Python warnings that name no file."""
    with _PILLOW_WARNINGS, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Pillow only warns between its limit (about 89 MP) and twice it; cgic's own limit,
        # checked before any pixel is decoded, is what stops a large image.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            yield
        finally:
            for message in dict.fromkeys(" ".join(str(w.message).split()) for w in caught):
                notes.append(_about(name, message))


def _about(name: str | None, text: str) -> str:
    """A message about an input, naming it where the library knows its name (a path; not bytes)."""
    return f"{name}: {text}" if name else text


# torch tensors are accepted too ((C, H, W) float in [0, 1] or uint8), without importing torch here.
ImageSource = str | Path | bytes | Image.Image | np.ndarray


def load_image(source: ImageSource, metadata: frozenset[str] = frozenset()) -> SourceImage:
    """Read a path, encoded bytes, a PIL image or an ndarray into a SourceImage.

    metadata: the kinds to keep ("icc", "exif", "xmp"; metadata.py), where
    the image has them. Messages about a path start with the path; for bytes,
    arrays and PIL images the caller knows best what to call the input.
    """
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if type(source).__module__.startswith("torch"):
        return _from_array(tensor_to_array(source))
    if isinstance(source, bytearray | memoryview):
        source = bytes(source)
    elif not isinstance(source, str | Path | bytes | Image.Image) and not hasattr(source, "read"):
        raise TypeError(
            "expected a path, encoded image bytes, a file object, a PIL image, a numpy array or a torch tensor, "
            f"not {type(source).__name__}"
        )
    notes: list[str] = []
    if isinstance(source, Image.Image):
        with pillow_warnings_into(notes, "image"):
            image = _from_pil(source, "image", metadata)
        return dataclasses.replace(image, warnings=image.warnings + notes)
    name = None if isinstance(source, bytes) else str(source)
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    heif_reader, jxl_reader = _register_heif(), _register_jxl()
    try:
        with pillow_warnings_into(notes, name), Image.open(stream) as im:
            check_pixel_count(im.width, im.height, name)
            image = _from_pil(im, name, metadata)
        return dataclasses.replace(image, warnings=image.warnings + notes)
    except FileNotFoundError:
        raise ImageError(_about(name, "no such file")) from None
    except IsADirectoryError:
        raise ImageError(_about(name, "is a directory")) from None
    except UnidentifiedImageError:
        if not heif_reader and _looks_like_heif(source):
            raise ImageError(_about(name, 'HEIC/HEIF images need pillow-heif (pip install "cgic[heif]")')) from None
        if not jxl_reader and _file_head(source, 12).startswith(_JXL_SIGNATURES):
            raise ImageError(_about(name, 'JPEG XL images need pillow-jxl-plugin (pip install "cgic[eval]")')) from None
        raise ImageError(_about(name, "not an image Pillow can read")) from None
    except Image.DecompressionBombError as exc:
        # Pillow refuses twice its own limit while opening, before cgic's check sees the size: say it cgic's way.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)) / 1e6:.1f} megapixels" if found else "too large"
        raise ImageError(_about(name, f"{size}; this version handles at most {MAX_PIXELS / 1e6:.0f}")) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(_about(name, f"cannot read image ({exc})")) from None


@functools.cache
def _register_heif() -> bool:
    """Let Pillow open HEIC/HEIF (iPhone photos) when the optional pillow-heif is installed."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


@functools.cache
def _register_jxl() -> bool:
    """Let Pillow open JPEG XL when the optional pillow-jxl-plugin (the eval extra) is installed."""
    try:
        import pillow_jxl  # noqa: F401  (registers the JXL format with Pillow)
    except ImportError:
        return False
    return True


def _file_head(source, size: int) -> bytes:
    """The first bytes of a path, bytes or file object (b"" where they cannot be read)."""
    if isinstance(source, bytes):
        return source[:size]
    try:
        if hasattr(source, "read"):
            source.seek(0)
            return source.read(size)
        with Path(source).open("rb") as file:
            return file.read(size)
    except (OSError, ValueError):
        return b""


def _looks_like_heif(source: str | Path | bytes) -> bool:
    head = _file_head(source, 12)
    return head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS


def list_image_files(folder: str | Path) -> list[Path]:
    """The image files directly in `folder`, by suffix, in name order (hidden ones left out)."""
    return folder_files(folder, IMAGE_SUFFIXES)


def _from_pil(im: Image.Image, name: str | None, metadata: frozenset[str]) -> SourceImage:
    with warnings.catch_warnings():
        # Converting a palette image whose tRNS chunk lists several transparent entries makes Pillow
        # advise converting it to RGBA, which is what happens here; the advice is not for the user.
        warnings.filterwarnings("ignore", "Palette images with Transparency", UserWarning)
        return _read_pil(im, name, metadata)


def _read_pil(im: Image.Image, name: str | None, metadata: frozenset[str]) -> SourceImage:
    if im.width == 0 or im.height == 0:
        raise ImageError(_about(name, f"empty image ({im.width}x{im.height})"))
    if im.mode in ("La", "RGBa"):
        # Premultiplied alpha (a PIL image made in memory): Pillow converts it back, not to grey directly.
        im = im.convert({"La": "LA", "RGBa": "RGBA"}[im.mode])
    notes = []
    if im.format == "CGIC":  # pillow_plugin.FORMAT, when the plugin is registered
        notes.append(
            _about(name, "already a .cgic file: decoded and coded again, losing detail (to read it: cgic decode)")
        )
    if getattr(im, "n_frames", 1) > 1:
        notes.append(_about(name, f"animated image with {im.n_frames} frames, only the first frame is coded"))
        im.seek(0)
    # How a PNG stores its samples ("L;4", "I;16B", "RGB;16B"...), known only until the pixels are read.
    rawmode = im.tile[0][3] if im.format == "PNG" and len(im.tile) == 1 else None
    rawmode = rawmode if isinstance(rawmode, str) else None
    im.load()
    im = ImageOps.exif_transpose(im)
    mode = im.mode
    has_alpha = (
        mode in ALPHA_MODES
        or (mode == "P" and "transparency" in im.info)
        or ((mode in GREY_MODES or mode == "RGB") and "transparency" in im.info)
    )
    alpha = _alpha_plane(im, rawmode, name, notes) if has_alpha else None
    kept = read_metadata(im, metadata)
    if kept.icc is not None and not _profile_fits(kept.icc, im.mode):
        # A CMYK profile, say, cannot describe the RGB values the decoder returns.
        kept = dataclasses.replace(kept, icc=None)
    if kept.icc is None:
        im = _to_srgb(im, name, notes)
    mode = im.mode
    grey = mode in GREY_MODES or mode in ("LA", "La")
    if mode in ("I", "F"):
        notes.extend(_wide_grey_notes(im, name))
    rgb = np.repeat(_grey_u8(im)[..., None], 3, axis=2) if grey else np.asarray(im.convert("RGB"))
    colour = _colour_mode(grey, alpha is not None)
    return SourceImage(np.ascontiguousarray(rgb, dtype=np.uint8), colour, notes, kept, alpha)


def _alpha_plane(im: Image.Image, rawmode: str | None, name: str | None, notes: list[str]) -> np.ndarray | None:
    """uint8 (H, W) transparency of an image with an alpha channel or a transparent colour; None if all opaque."""
    # RGBA, LA, PA and the premultiplied RGBa, La have an A band; a palette image may give its entries alpha,
    # which Pillow turns into an A band on conversion; a grey or RGB image may name one transparent colour.
    if "A" in im.getbands():
        return _transparent_or_none(np.asarray(im.getchannel("A")))
    if im.mode == "P":
        return _transparent_or_none(np.asarray(im.convert("RGBA").getchannel("A")))
    return _transparent_or_none(_colour_key_alpha(im, rawmode, name, notes))


# PNG grey samples of fewer than 8 bits (Pillow's rawmodes), which Pillow scales to 0-255 while its
# "transparency" may still hold the sample as stored (Pillow 13 does so for 2 and 4 bits).
_LOW_GREY_DEPTHS = {"1": 1, "L;2": 2, "L;4": 4}


def _colour_key_alpha(im: Image.Image, rawmode: str | None, name: str | None, notes: list[str]) -> np.ndarray:
    """Alpha 0 where a grey (1, L, I;16, I) or RGB image has the one colour its info["transparency"] names
    (a PNG tRNS chunk), 255 elsewhere. The comparison is on the samples as stored: 16-bit grey as 16 bits;
    1, 2 and 4-bit grey keys scaled as Pillow scales the samples."""
    key = im.info["transparency"]
    if not (isinstance(key, int) if im.mode != "RGB" else isinstance(key, tuple) and len(key) == 3):
        return np.asarray(im.convert("RGBA").getchannel("A"))  # a key of another kind: as Pillow reads it
    if im.mode == "RGB":
        pixels = np.asarray(im)
        if rawmode is not None and rawmode.startswith("RGB;16"):
            # Pillow keeps the high byte of 16-bit RGB, and which of the pixels sharing the key's high bytes
            # had the key itself is lost with the low byte.
            if (pixels == tuple(k >> 8 for k in key)).all(axis=-1).any():
                notes.append(
                    _about(name, "its transparent colour (PNG tRNS) is a 16-bit RGB one, which cannot be told "
                           "apart after Pillow reduces the image to 8 bits: coded opaque")
                )  # fmt: skip
            return np.full(pixels.shape[:2], 255, np.uint8)
        return np.where((pixels == tuple(key)).all(axis=-1), 0, 255).astype(np.uint8)
    values = np.asarray(im.convert("L") if im.mode == "1" else im)
    depth = _LOW_GREY_DEPTHS.get(rawmode or "")
    if depth is not None and 0 < key < 2**depth:
        key *= 255 // (2**depth - 1)
    return np.where(values == key, 0, 255).astype(np.uint8)


def _transparent_or_none(alpha: np.ndarray) -> np.ndarray | None:
    # An alpha of 255 everywhere says nothing; dropping it keeps the file (and the decoded image) plain.
    return np.ascontiguousarray(alpha, dtype=np.uint8) if alpha.min(initial=255) < 255 else None


def _colour_mode(grey: bool, has_alpha: bool) -> int:
    if grey:
        return COLOUR_GREY_ALPHA if has_alpha else COLOUR_GREY
    return COLOUR_RGB_ALPHA if has_alpha else COLOUR_RGB


def _profile_fits(icc: bytes, mode: str) -> bool:
    """Whether a profile describes the values coded: grey or RGB values stored as such (ICC bytes 16-19).

    CMYK, YCbCr or Lab values are converted to RGB before coding, so their
    profile cannot describe the result.
    """
    if mode in GREY_MODES or mode in ("LA", "La"):
        return icc[16:20] == b"GRAY"
    return mode in ("RGB", "RGBA", "RGBa", "RGBX", "P", "PA") and icc[16:20] == b"RGB "


def _to_srgb(im: Image.Image, name: str | None, notes: list[str]) -> Image.Image:
    """The image in sRGB when it carries a colour profile of another RGB or CMYK space.

    The network was trained on sRGB photos and decoded files carry no profile
    (viewers then assume sRGB), so a Display P3 or Adobe RGB photo coded as
    stored would come back with muted colours, and a CMYK one with wrong ones.
    Grey profiles are left alone: grey stays grey either way.
    """
    icc = im.info.get("icc_profile")
    if not icc or im.mode not in ("RGB", "RGBA", "CMYK"):
        return im
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        description = ImageCms.getProfileDescription(profile).strip()
        if "srgb" in description.lower():
            return im
        source = im.convert("RGB") if im.mode == "RGBA" else im
        converted = ImageCms.profileToProfile(
            source, profile, _SRGB, renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC, outputMode="RGB"
        )
    except (OSError, ImageCms.PyCMSError) as exc:
        notes.append(_about(name, f"its colour profile cannot be used ({exc}); colours are coded as stored"))
        return im
    notes.append(_about(name, f"converted from its colour profile '{description}' to sRGB"))
    return converted


def _wide_grey_notes(im: Image.Image, name: str | None) -> list[str]:
    """32-bit integer and float images declare no range, so how _grey_u8 reads them is a guess: say so where
    the values suggest another one. ImageError for NaN or infinity in a float image."""
    values = np.asarray(im)
    if im.mode == "F" and not np.isfinite(values).all():
        raise ImageError(_about(name, "float image holds NaN or infinite values"))
    top = float(values.max(initial=0))
    if im.mode == "I" and 0 < top <= 255:
        return [
            _about(
                name,
                f"32-bit image with values up to {top:g} read as 16-bit (divided by 257); if they are "
                "8-bit values, convert it to L first",
            )
        ]
    return []


def _grey_u8(im: Image.Image) -> np.ndarray:
    if im.mode in ("LA", "La"):
        im = im.getchannel("L")
    if im.mode == "1":
        im = im.convert("L")
    values = np.asarray(im)
    if values.dtype == np.uint8:
        return values
    if im.mode == "F":
        # Float images have no declared range; [0, 1] is the common convention.
        scale = 255.0 if values.max(initial=0.0) <= 1.0 else 1.0
        return np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
    # I;16 and 32-bit I: Pillow's own convert("L") clips instead of scaling.
    return np.clip(np.rint(values.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)


# How far outside [0, 1] a float tensor may stray (rounding), well under half of one 8-bit step (1 / 510).
FLOAT_SLACK = 1e-3


def tensor_to_array(tensor) -> np.ndarray:
    """A torch tensor in torchvision layout, (C, H, W) or (H, W), float in [0, 1] or uint8 -> (H, W, C) uint8."""
    import torch

    if not isinstance(tensor, torch.Tensor):
        raise ImageError(f"unsupported image type {type(tensor).__name__}")
    tensor = tensor.detach().cpu()
    if tensor.ndim == 3:
        if tensor.shape[0] not in (1, 2, 3, 4):
            raise ImageError(f"tensor must be (C, H, W) with C in 1, 2, 3, 4, or (H, W); got {tuple(tensor.shape)}")
        tensor = tensor.permute(1, 2, 0)
    elif tensor.ndim != 2:
        raise ImageError(f"tensor must be (C, H, W) or (H, W), got {tuple(tensor.shape)}")
    if tensor.is_floating_point():
        if not torch.isfinite(tensor).all():
            raise ImageError("tensor holds NaN or infinite values")
        low, high = float(tensor.min()), float(tensor.max())
        # Rounding in a float pipeline may step a hair outside [0, 1]; 0-255 values (uint8.float()) are a mistake.
        if low < -FLOAT_SLACK or high > 1.0 + FLOAT_SLACK:
            hint = " (a uint8 image as float? divide by 255)" if high > 1.0 + FLOAT_SLACK else ""
            raise ImageError(f"float tensor values must lie in [0, 1], found {low:g} to {high:g}{hint}")
        tensor = tensor.float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    elif tensor.dtype != torch.uint8:
        raise ImageError(f"tensor must be float in [0, 1] or uint8, got {tensor.dtype}")
    return tensor.contiguous().numpy()


def _from_array(array: np.ndarray) -> SourceImage:
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4) or array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"array must be (H, W) or (H, W, C) with C in 1, 2, 3, 4, got {array.shape}")
    if array.dtype.kind == "u" and array.dtype.itemsize == 2:  # any byte order (raw PGM and FITS are big-endian)
        array = np.rint(array.astype(np.float64) / 257.0).astype(np.uint8)
    elif array.dtype.kind == "u" and array.dtype.itemsize == 1:
        array = array.astype(np.uint8, copy=False)
    else:
        raise ImageError(f"array must be uint8 or uint16, got {array.dtype}")
    # Channels as Pillow's modes: L, LA, RGB, RGBA.
    channels = array.shape[2]
    alpha = _transparent_or_none(array[..., -1]) if channels in (2, 4) else None
    grey = channels in (1, 2)
    rgb = np.repeat(array[..., :1], 3, axis=2) if grey else array[..., :3]
    # A copy: the caller's array must not change under an analysis that keeps it.
    return SourceImage(np.array(rgb, dtype=np.uint8, order="C"), _colour_mode(grey, alpha is not None), alpha=alpha)


def to_pil(rgb: np.ndarray, colour_mode: int, alpha: np.ndarray | None = None) -> Image.Image:
    """Decoded uint8 RGB (and alpha) -> the PIL image a user gets back: RGB, L, RGBA or LA as the source was.

    Without the alpha plane an alpha colour mode gives its colour part alone (RGB or L).
    """
    mode = DECODED_PIL_MODES[colour_mode]
    image = Image.fromarray(rgb, "RGB")
    if mode.startswith("L"):
        image = image.convert("L")
    if alpha is not None and mode.endswith("A"):
        image.putalpha(Image.fromarray(alpha, "L"))
    return image


# Decoding to .jpg: close to the decoded pixels, at several times the size of the .cgic file.
JPEG_OUTPUT_QUALITY = 95
# Formats whose Pillow writer keeps an alpha channel; others get the image composited over white.
ALPHA_FORMATS = {"PNG", "TIFF", "WEBP"}
OUTPUT_FORMATS = {
    ".png": "PNG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".ppm": "PPM",
    ".pgm": "PPM",
    ".webp": "WEBP",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
}


def output_format(target: str) -> str:
    """The Pillow format a decoded image is written in: from the target's suffix, PNG for stdout or no suffix.

    ImageError for a suffix cgic does not write (.gif, say), rather than PNG bytes under that name.
    """
    suffix = Path(target).suffix.lower()
    if not suffix and not target.endswith("."):
        return "PNG"
    if suffix not in OUTPUT_FORMATS:
        known = ", ".join(sorted(OUTPUT_FORMATS))
        raise ImageError(f"cannot write {Path(target).name!r}: decoded images are written as one of {known}")
    return OUTPUT_FORMATS[suffix]


def loses_alpha(image: Image.Image, target: str) -> bool:
    """Whether writing `image` to `target` flattens its transparency (a format without alpha: JPEG, BMP, PPM)."""
    return image.mode in ("RGBA", "LA") and output_format(target) not in ALPHA_FORMATS


def encode_image_file(image: Image.Image, target: str, notes: list[str] | None = None) -> bytes:
    """Bytes of `image` in the format named by the target's suffix (output_format).

    Metadata in image.info (a decoded file's kept profile, Exif, XMP) goes
    into the output where its format has a place for it. A format without
    alpha gets the image composited over white (loses_alpha). Pillow's warnings
    (about kept Exif it finds damaged, say) go to `notes`.
    """
    with pillow_warnings_into(notes if notes is not None else [], None):
        return _image_file_bytes(image, target)


def _image_file_bytes(image: Image.Image, target: str) -> bytes:
    fmt = output_format(target)
    if fmt == "PPM" and Path(target).suffix.lower() == ".pgm" and image.mode not in ("L", "LA"):
        raise ImageError(f"{Path(target).name}: a .pgm file holds grey, and this image is in colour (use .ppm)")
    options = save_options(read_metadata(image, frozenset(METADATA_KINDS)), fmt)
    if loses_alpha(image, target):
        image = flatten_over_white(image)
    elif fmt == "WEBP" and image.mode == "LA":
        image = image.convert("RGBA")  # Pillow's WebP writer takes no LA
    if fmt == "WEBP":
        options["lossless"] = True
    elif fmt == "JPEG":
        # Pillow's default (quality 75, 4:2:0 chroma) would add its own artefacts to the decoded image.
        options.update(quality=JPEG_OUTPUT_QUALITY, subsampling=0)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def flatten_over_white(image: Image.Image) -> Image.Image:
    """An RGBA or LA image composited over white: RGB or L, with the info (kept metadata) carried over."""
    base = image.mode[:-1]
    flat = Image.new(base, image.size, "white")
    flat.paste(image.convert(base), mask=image.getchannel("A"))
    flat.info.update(image.info)
    return flat
