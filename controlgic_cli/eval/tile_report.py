"""Tiled inference measurements (docs/robustness.md, "Large images").

    python -m controlgic_cli.eval.tile_report KODAK_DIR --json-out docs/tiles-kodak.json

1. Seam error: each image is coded with small tiles (core 256 px, so a
   768x512 photo has six tiles and seams through its middle) at several
   margins, and compared with the untiled result: how many indices change
   (encoder tiling) and how far the tiled decode of the same file is from the
   untiled decode (decoder tiling), plus the PSNR of both against the source.
2. A 24-megapixel photo: a 6000x4000 mosaic of the folder's images, encoded
   and decoded through the real CLI in child processes with the default
   tiles; wall time, time per megapixel and peak RSS of each child.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch
from PIL import Image

from ..api import Codec
from ..io.image_io import list_image_files, load_image
from ..metrics.distortion import psnr
from ..tiling import DEFAULT_TILES, TileSpec
from .bench import cpu_description, write_report

SEAM_CORE = 256
MARGINS = (0, 32, 64, 128, 192)
UNTILED = TileSpec(core=1 << 20, margin=0)
LARGE_SIZE = (6000, 4000)


def finite_or_none(value: float) -> float | None:
    return value if np.isfinite(value) else None


def seam_rows(folder_images: list[Path], weights: str | None, margins) -> list[dict]:
    reference = Codec(weights, "cpu", tiles=UNTILED)
    rows = []
    for path in folder_images:
        source = load_image(path)
        analysis = reference.analyse(source)
        untiled_file = reference.encode_analysis(analysis, (300_000, 600_000, 100_000)).data
        untiled_rgb = reference.decode_array(untiled_file)[0]
        for margin in margins:
            tiled = Codec(weights, "cpu", tiles=TileSpec(core=SEAM_CORE, margin=margin))
            tiled_analysis = tiled.analyse(source)
            changed = sum(int((a != b).sum()) for a, b in zip(analysis.indices, tiled_analysis.indices, strict=True))
            cells = sum(a.size for a in analysis.indices)
            decoded_same_file = tiled.decode_array(untiled_file)[0]
            tiled_file = tiled.encode_analysis(tiled_analysis, (300_000, 600_000, 100_000)).data
            tiled_rgb = tiled.decode_array(tiled_file)[0]
            diff = np.abs(decoded_same_file.astype(np.int16) - untiled_rgb.astype(np.int16))
            rows.append(
                {
                    "image": path.name,
                    "margin": margin,
                    "indices_changed_fraction": changed / cells,
                    "decode_max_abs_diff": int(diff.max()),
                    # None: bit-identical to the untiled decode (PSNR infinite).
                    "decode_psnr_vs_untiled": finite_or_none(psnr(untiled_rgb, decoded_same_file)),
                    "psnr_untiled": psnr(source.rgb, untiled_rgb),
                    "psnr_tiled": psnr(source.rgb, tiled_rgb),
                }
            )
            click.echo(f"{path.name} margin {margin}: {rows[-1]}", err=True)
    return rows


def mosaic(images: list[Path], size: tuple[int, int]) -> Image.Image:
    canvas = Image.new("RGB", size)
    x = y = i = 0
    row_height = 0
    while y < size[1]:
        tile = Image.open(images[i % len(images)]).convert("RGB")
        canvas.paste(tile, (x, y))
        row_height = max(row_height, tile.height)
        x += tile.width
        i += 1
        if x >= size[0]:
            x, y, row_height = 0, y + row_height, 0
    return canvas


def run_child(args: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one CLI run in a fresh process."""
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "controlgic_cli", *args])
    # wait4 gives this child's own rusage (RUSAGE_CHILDREN would be the maximum over all children).
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise click.ClickException(f"cgic {' '.join(args)} failed with exit code {child.returncode}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024


def large_image(images: list[Path], weights: str | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        png, cgic, out = Path(tmp, "large.png"), Path(tmp, "large.cgic"), Path(tmp, "large-decoded.png")
        source = mosaic(images, LARGE_SIZE)
        source.save(png)
        weight_args = ["--weights", weights] if weights else []
        encode_s, encode_rss = run_child(["encode", "-q", *weight_args, str(png), "-o", str(cgic)])
        decode_s, decode_rss = run_child(["decode", "-q", *weight_args, str(cgic), "-o", str(out)])
        decoded = np.asarray(Image.open(out).convert("RGB"))
        megapixels = LARGE_SIZE[0] * LARGE_SIZE[1] / 1e6
        return {
            "size": list(LARGE_SIZE),
            "tiles": {"core": DEFAULT_TILES.core, "margin": DEFAULT_TILES.margin},
            "bpp": 8 * cgic.stat().st_size / (LARGE_SIZE[0] * LARGE_SIZE[1]),
            "psnr": psnr(np.asarray(source), decoded),
            "encode_seconds": encode_s,
            "decode_seconds": decode_s,
            "encode_seconds_per_megapixel": encode_s / megapixels,
            "decode_seconds_per_megapixel": decode_s / megapixels,
            "encode_peak_rss_mb": encode_rss,
            "decode_peak_rss_mb": decode_rss,
        }


@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--weights", type=click.Path(dir_okay=False), default=None)
@click.option("--images", "image_count", type=int, default=4, show_default=True, help="Images used for seam error.")
@click.option("--json-out", type=click.Path(dir_okay=False), default=None)
@click.option("--skip-large", is_flag=True, help="Only measure seam error.")
def main(folder, weights, image_count, json_out, skip_large):
    images = list_image_files(Path(folder))
    report = {
        "machine": f"{cpu_description()}, torch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "seam_core": SEAM_CORE,
        "seams": seam_rows(images[:image_count], weights, MARGINS),
    }
    if not skip_large:
        report["large"] = large_image(images, weights)
    write_report(report, json_out)


if __name__ == "__main__":
    main()
