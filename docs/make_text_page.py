"""Regenerate docs/text-page.png: a page of 10 px text with flat colour swatches, the hard case for a
generative codec (docs/benchmarks.md, "Gallery").

Drawn with Pillow's built-in font (no document is copied), 384x256 pixels:
a coloured title bar, body text 10 px tall in black and in dark blue, and
the six primary and secondary colours as flat swatches.

    python docs/make_text_page.py
"""

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 384, 256
BODY = (
    "Control-GIC codes every 4x4, 8x8 or 16x16 patch at the granularity its",
    "content needs. Small print like this line, ten pixels tall, is where a",
    "generative decoder is weakest: strokes are one or two pixels wide and",
    "every letter must land exactly where it was. Compare the same bytes in",
    "WebP and AVIF beside it. 0123456789 ABCDEFGHIJKLMNOPQRSTUV",
    "The quick brown fox jumps over the lazy dog; pack my box with five",
    "dozen liquor jugs. Sphinx of black quartz, judge my vow. (12.5 %, 3:4)",
)
SWATCHES = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (0, 255, 255), (255, 0, 255), (255, 255, 0)]


def text_page() -> Image.Image:
    page = Image.new("RGB", (WIDTH, HEIGHT), (250, 248, 240))
    draw = ImageDraw.Draw(page)
    draw.rectangle((0, 0, WIDTH, 30), fill=(32, 64, 128))
    draw.text((10, 6), "A page of small text", fill=(255, 255, 255), font=ImageFont.load_default(size=16))
    body = ImageFont.load_default(size=10)
    for number, line in enumerate(BODY):
        colour = (0, 0, 0) if number % 2 == 0 else (20, 40, 140)
        draw.text((10, 40 + 14 * number), line, fill=colour, font=body)
    width = (WIDTH - 20) // len(SWATCHES)
    for number, colour in enumerate(SWATCHES):
        draw.rectangle((10 + number * width, 150, 10 + (number + 1) * width - 4, 240), fill=colour)
    return page


if __name__ == "__main__":
    text_page().save(Path(__file__).with_name("text-page.png"), optimize=True)
