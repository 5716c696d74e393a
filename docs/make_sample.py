"""Regenerate docs/sample.png, the demo image the project ships.

It is drawn procedurally (no photo is copied): a landscape with sky, sun,
fractal mountains, a lake with a reflection and textured foreground, so it has
the mix of flat and detailed regions a codec meets in photos.

    python docs/make_sample.py
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

WIDTH, HEIGHT = 640, 432


def fractal_noise(rng: np.random.Generator, height: int, width: int, octaves: int = 6) -> np.ndarray:
    total = np.zeros((height, width), np.float32)
    for octave in range(octaves):
        cells = 2 ** (octave + 2)
        coarse = rng.random((cells + 1, cells + 1)).astype(np.float32)
        layer = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))
        total += layer / 2**octave
    return (total - total.min()) / (total.max() - total.min())


def ridge(rng: np.random.Generator, width: int, base: float, amplitude: float) -> np.ndarray:
    line = np.zeros(width, np.float32)
    for octave in range(7):
        points = 2 ** (octave + 1) + 1
        values = rng.random(points).astype(np.float32) - 0.5
        line += np.interp(np.linspace(0, points - 1, width), np.arange(points), values) * amplitude / 1.8**octave
    return base + line


def draw() -> np.ndarray:
    rng = np.random.default_rng(2024)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    horizon = HEIGHT * 0.62
    t = yy / horizon
    sky = np.stack([70 + 150 * t, 120 + 110 * t, 200 + 45 * t], -1)
    sun = np.exp(-((xx - WIDTH * 0.72) ** 2 + (yy - HEIGHT * 0.22) ** 2) / (2 * 28.0**2))
    sky += sun[..., None] * np.array([255, 200, 90]) * 0.9
    clouds = fractal_noise(rng, HEIGHT, WIDTH, 5)
    sky += (np.clip(clouds - 0.55, 0, 1) * 260 * (1 - t).clip(0, 1))[..., None]
    image = sky

    for base, amplitude, colour in ((0.42, 90, (95, 105, 140)), (0.52, 70, (60, 85, 70)), (0.6, 40, (45, 70, 40))):
        top = ridge(rng, WIDTH, HEIGHT * base, amplitude)
        mask = (yy >= top[None, :]) & (yy < horizon)
        rock = fractal_noise(rng, HEIGHT, WIDTH, 6)[..., None]
        shade = np.array(colour, np.float32) * (0.75 + 0.5 * rock)
        image = np.where(mask[..., None], shade, image)

    above = image[: int(horizon)][::-1]
    lake_rows = HEIGHT - int(horizon)
    reflection = above[:lake_rows] * 0.6 + np.array([20, 40, 70]) * 0.4
    ripple = np.sin(yy[int(horizon) :] * 0.9 + fractal_noise(rng, lake_rows, WIDTH, 4) * 12)[..., None]
    image[int(horizon) :] = reflection + ripple * 10

    grass_top = ridge(rng, WIDTH, HEIGHT * 0.86, 30)
    grass = (yy >= grass_top[None, :])[..., None]
    blades = rng.random((HEIGHT, WIDTH, 1)) * 60
    image = np.where(grass, np.array([70, 110, 40]) + blades * np.array([0.6, 1.0, 0.3]), image)
    return np.clip(image, 0, 255).astype(np.uint8)


def main() -> None:
    image = Image.fromarray(draw()).filter(ImageFilter.SMOOTH)
    out = Path(__file__).with_name("sample.png")
    image.save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
