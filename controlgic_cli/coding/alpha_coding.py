"""Lossless coding of an alpha plane (the ALPH record of version-4 files, docs/format.md §13).

The network codes colour only; transparency is a different signal (mostly
0 and 255 with soft edges) that a learned lossy codec would blur, and a
wrong alpha is far more visible than a wrong colour. So the plane is coded
losslessly, the way libwebp codes the alpha of its lossy images: with WebP's
lossless mode (VP8L, RFC 9649), through Pillow. On four test masks its files
were 25-38 % smaller than PNG's, and between 33 % larger (a hard-edged
cutout) and 35 % smaller (a soft mask) than xz's (docs/format.md §13).

Layout: one method byte (0: WebP lossless), then the plane cut into tiles of
at most MAX_TILE pixels a side (WebP's limit), row by row, each a uint32
length and one lossless WebP file holding the tile as grey (R = G = B).
Untrusted input: each tile must be a VP8L WebP of exactly its tile's size
with equal channels, and nothing is decoded before those checks.
"""

from __future__ import annotations

import io
import struct
import warnings

import numpy as np
from PIL import Image, features

from ..errors import FormatError, ImageError

METHOD_WEBP_LOSSLESS = 0
MAX_TILE = 16383  # WebP's largest width and height
# libwebp's lossless effort: method 6 gave the same sizes on test masks at ten times the time.
_WEBP_OPTIONS = {"lossless": True, "quality": 100, "method": 4}
_LENGTH = struct.Struct("<I")
_RIFF_HEAD = 12  # "RIFF", size, "WEBP"; the first chunk follows


def tile_boxes(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """(left, top, right, bottom) of every tile, row by row."""
    return [
        (left, top, min(width, left + MAX_TILE), min(height, top + MAX_TILE))
        for top in range(0, height, MAX_TILE)
        for left in range(0, width, MAX_TILE)
    ]


def pack_alpha(alpha: np.ndarray) -> bytes:
    """uint8 (H, W) alpha plane -> the ALPH record's bytes."""
    height, width = alpha.shape
    out = bytearray([METHOD_WEBP_LOSSLESS])
    for left, top, right, bottom in tile_boxes(width, height):
        tile = Image.fromarray(np.ascontiguousarray(alpha[top:bottom, left:right]), "L")
        buffer = io.BytesIO()
        try:
            tile.save(buffer, format="WEBP", **_WEBP_OPTIONS)
        except (KeyError, OSError) as exc:  # a Pillow built without libwebp
            raise ImageError(f"cannot code the alpha channel: this Pillow cannot write WebP ({exc})") from None
        out += _LENGTH.pack(buffer.tell()) + buffer.getvalue()
    return bytes(out)


def unpack_alpha(data: bytes, width: int, height: int) -> np.ndarray:
    """The ALPH record's bytes -> uint8 (height, width); FormatError for anything malformed."""
    if not data:
        raise FormatError("invalid .cgic alpha record: empty")
    if data[0] != METHOD_WEBP_LOSSLESS:
        raise FormatError(f"invalid .cgic alpha record: unknown method {data[0]}")
    alpha = np.empty((height, width), np.uint8)
    offset = 1
    for left, top, right, bottom in tile_boxes(width, height):
        if len(data) - offset < _LENGTH.size:
            raise FormatError("truncated .cgic alpha record: a tile length is cut off")
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        if length > len(data) - offset:
            raise FormatError(f"truncated .cgic alpha record: a tile says {length} bytes, {len(data) - offset} remain")
        alpha[top:bottom, left:right] = _decode_tile(data[offset : offset + length], right - left, bottom - top)
        offset += length
    if offset != len(data):
        raise FormatError(f"invalid .cgic alpha record: {len(data) - offset} bytes after the last tile")
    return alpha


def _decode_tile(webp: bytes, width: int, height: int) -> np.ndarray:
    # A lossless WebP without extended features is "RIFF....WEBP" followed by one VP8L chunk.
    if webp[:4] != b"RIFF" or webp[8:12] != b"WEBP" or webp[_RIFF_HEAD : _RIFF_HEAD + 4] != b"VP8L":
        raise FormatError("invalid .cgic alpha record: a tile is not a lossless WebP image")
    if not features.check("webp"):  # the file is fine; this Pillow was built without libwebp
        raise ImageError("cannot decode the alpha channel: this Pillow cannot read WebP")
    try:
        with warnings.catch_warnings():
            # The size is checked against the header before any pixel is decoded, so Pillow's
            # decompression-bomb warning (tiles may be up to 16383 x 16383) has nothing to add.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(webp), formats=["WEBP"]) as image:
                if image.size != (width, height):
                    raise FormatError(
                        f"invalid .cgic alpha record: a tile is {image.width}x{image.height}, expected {width}x{height}"
                    )
                pixels = np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise FormatError(f"invalid .cgic alpha record: a tile cannot be decoded ({exc})") from None
    grey = pixels[..., 1]
    if not (np.array_equal(pixels[..., 0], grey) and np.array_equal(pixels[..., 2], grey)):
        raise FormatError("invalid .cgic alpha record: a tile is not grey")
    return grey
