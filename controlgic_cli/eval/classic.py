"""The classic codecs `cgic eval` and the gallery compare against: JPEG, WebP, AVIF and JPEG XL through Pillow,
each at the quality whose real file is nearest a target bpp."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

CLASSIC_CODECS = {
    # name: (Pillow format, fixed save options); quality is searched.
    "jpeg": ("JPEG", {}),
    "webp": ("WEBP", {"method": 4}),
    "avif": ("AVIF", {"speed": 6}),
    # JPEG XL through pillow-jxl-plugin (pip install "cgic[eval]"), when installed.
    "jxl": ("JXL", {"effort": 7}),
}


def jxl_available() -> bool:
    try:
        import pillow_jxl  # noqa: F401  (registers the JXL format with Pillow)
    except ImportError:
        return False
    return True


def encode_classic(rgb: np.ndarray, codec: str, quality: int) -> bytes:
    fmt, options = CLASSIC_CODECS[codec]
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format=fmt, quality=quality, **options)
    return buffer.getvalue()


def classic_at_bpp(rgb: np.ndarray, codec: str, target_bpp: float) -> tuple[bytes, int]:
    """The quality (0-100) whose file is nearest the target bpp; bisection, as size grows with quality."""
    pixels = rgb.shape[0] * rgb.shape[1]
    cache: dict[int, bytes] = {}

    def size_bpp(quality: int) -> float:
        if quality not in cache:
            cache[quality] = encode_classic(rgb, codec, quality)
        return 8 * len(cache[quality]) / pixels

    low, high = 0, 100
    while high - low > 1:
        middle = (low + high) // 2
        if size_bpp(middle) <= target_bpp:
            low = middle
        else:
            high = middle
    best = min((low, high), key=lambda q: abs(size_bpp(q) - target_bpp))
    return cache[best], best
