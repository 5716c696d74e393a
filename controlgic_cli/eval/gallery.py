"""Side-by-side crops: original, cgic and the classic codecs at the same bitrate.

Each codec is run on the whole image at the setting nearest the target bpp
(the same searches `cgic eval` uses), so the crop shows what a real file of
that size looks like; the label under each crop gives the codec and its
measured bpp. Crops are taken where the image is busiest (highest mean 16x16
patch entropy), where codecs differ most.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..api import Codec, pad_to_block
from ..io.image_io import load_image
from ..planning.planner import patch_entropy
from .classic import classic_at_bpp

LABEL_HEIGHT = 18


def busiest_crop(rgb: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner (multiple of 16) of the size x size window with the highest mean patch entropy."""
    height, width = rgb.shape[:2]
    size = min(size, height // 16 * 16, width // 16 * 16)
    entropy = patch_entropy(pad_to_block(rgb)).coarse
    cells = max(size // 16, 1)
    best, corner = -1.0, (0, 0)
    for top in range(0, max(height - size, 0) // 16 + 1):
        for left in range(0, max(width - size, 0) // 16 + 1):
            score = float(entropy[top : top + cells, left : left + cells].mean())
            if score > best:
                best, corner = score, (top * 16, left * 16)
    return corner


def gallery_strip(
    image_path: Path, codec: Codec, classic: list[str], target_bpp: float, crop: int = 256
) -> Image.Image:
    """One row: original | cgic | each classic codec, crops of crop x crop pixels, labelled."""
    rgb = load_image(image_path).rgb
    pixels = rgb.shape[0] * rgb.shape[1]
    panels = [("original", rgb)]
    result = codec.encode_to_target(rgb, target_bpp=target_bpp)
    panels.append((f"cgic {result.stats.bpp:.3f} bpp", np.asarray(codec.decode(result.data).convert("RGB"))))
    for name in classic:
        data, quality = classic_at_bpp(rgb, name, target_bpp)
        decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        panels.append((f"{name} q{quality} {8 * len(data) / pixels:.3f} bpp", decoded))
    top, left = busiest_crop(rgb, crop)
    size_h, size_w = min(crop, rgb.shape[0]), min(crop, rgb.shape[1])
    strip = Image.new("RGB", (size_w * len(panels), size_h + LABEL_HEIGHT), "white")
    draw = ImageDraw.Draw(strip)
    for number, (label, pixels_rgb) in enumerate(panels):
        window = pixels_rgb[top : top + size_h, left : left + size_w]
        strip.paste(Image.fromarray(np.ascontiguousarray(window)), (number * size_w, 0))
        draw.text((number * size_w + 4, size_h + 3), label, fill="black")
    return strip
