"""Image metadata a .cgic file can keep: the ICC colour profile, Exif and XMP.

By default none is kept, as in cwebp: the file is smallest and carries no
camera serial numbers or GPS positions, and a photo with a non-sRGB profile is
converted to sRGB (image_io.py), so its colours are right without one.
`--metadata icc,exif,xmp` (or `all`) keeps them in a version-2 file
(docs/format.md) and the decoder writes them into the output image; with
`icc` kept, the colour values are coded as stored and the decoded image
carries the original profile, so a wide-gamut photo keeps its gamut.

Exif orientation is applied to the pixels before coding (image_io.py), so the
kept Exif and XMP say nothing about orientation any more, or a viewer would
rotate the decoded image a second time.
"""

from __future__ import annotations

import re

from PIL import Image, PngImagePlugin

from ..coding.container import METADATA_RECORD_TYPES, ImageMetadata
from ..errors import OptionsError

METADATA_KINDS = tuple(METADATA_RECORD_TYPES)  # ("icc", "exif", "xmp")
_EXIF_PREFIX = b"Exif\x00\x00"  # JPEG's APP1 marker text, which Pillow keeps and PNG's eXIf chunk lacks
_EXIF_ORIENTATION = 0x0112
_XMP_ORIENTATION = re.compile(rb'\s*tiff:Orientation\s*=\s*"[^"]*"|<tiff:Orientation>[^<]*</tiff:Orientation>')


def parse_metadata_kinds(text: str) -> frozenset[str]:
    """'none', 'all' or a comma-separated subset of icc, exif, xmp -> the kinds to keep."""
    words = [word.strip().lower() for word in text.split(",") if word.strip()]
    if words in (["none"], []):
        return frozenset()
    if words == ["all"]:
        return frozenset(METADATA_KINDS)
    return check_metadata_kinds(words)


def check_metadata_kinds(kinds) -> frozenset[str]:
    """The library's form of the option: an iterable of kind names, the option's text, or None for none."""
    if kinds is None:
        return frozenset()
    if isinstance(kinds, str):
        return parse_metadata_kinds(kinds)
    kinds = frozenset(kinds)
    unknown = sorted(kinds - set(METADATA_KINDS))
    if unknown:
        choices = ", ".join(METADATA_KINDS)
        raise OptionsError(f"unknown metadata kind {unknown[0]!r} (use none, all, or some of {choices})")
    return kinds


def read_metadata(im: Image.Image, kinds: frozenset[str]) -> ImageMetadata:
    """The kinds asked for that `im` (already upright: exif_transpose applied) carries."""
    icc = im.info.get("icc_profile") if "icc" in kinds else None
    exif = _exif_without_orientation(im) if "exif" in kinds else None
    xmp = None
    if "xmp" in kinds:
        packet = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
        if isinstance(packet, str):
            packet = packet.encode("utf-8")
        xmp = _XMP_ORIENTATION.sub(b"", packet) if packet else None
    return ImageMetadata(icc=icc or None, exif=exif or None, xmp=xmp or None)


def _exif_without_orientation(im: Image.Image) -> bytes | None:
    raw = im.info.get("exif")
    if not raw:
        return None
    exif = Image.Exif()
    exif.load(raw)
    if _EXIF_ORIENTATION in exif:
        del exif[_EXIF_ORIENTATION]
        raw = exif.tobytes()
    return raw.removeprefix(_EXIF_PREFIX) or None


def save_options(metadata: ImageMetadata, fmt: str) -> dict:
    """Keyword arguments for Image.save that write the metadata into a file of format `fmt`.

    PNG, JPEG, WebP and TIFF take a profile; PNG, JPEG and WebP take Exif and
    XMP (PNG's XMP goes into an iTXt chunk, as Adobe specifies). Formats
    without a place for a kind (BMP, PPM) drop it.
    """
    options = {}
    if metadata.icc and fmt in ("PNG", "JPEG", "WEBP", "TIFF"):
        options["icc_profile"] = metadata.icc
    if metadata.exif and fmt in ("PNG", "JPEG", "WEBP"):
        options["exif"] = _EXIF_PREFIX + metadata.exif  # JPEG needs the prefix; PNG and WebP strip it
    if metadata.xmp and fmt in ("JPEG", "WEBP"):
        options["xmp"] = metadata.xmp
    elif metadata.xmp and fmt == "PNG":
        text = PngImagePlugin.PngInfo()
        text.add_itxt("XML:com.adobe.xmp", metadata.xmp.decode("utf-8", errors="replace"))
        options["pnginfo"] = text
    return options


def attach(image: Image.Image, metadata: ImageMetadata) -> Image.Image:
    """Put the metadata into image.info under Pillow's own keys, for callers of the API."""
    if metadata.icc:
        image.info["icc_profile"] = metadata.icc
    if metadata.exif:
        image.info["exif"] = _EXIF_PREFIX + metadata.exif
    if metadata.xmp:
        image.info["xmp"] = metadata.xmp
    return image
