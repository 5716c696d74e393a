"""Make the quality scale of a model (quality.py) from a folder of photos: the Kodak images for shipped weights.

    python -m controlgic_cli.eval.quality_calibration KODAK_DIR -o weights/cgic-base.quality.json

For each planner, every image is analysed once and its rate path computed;
the threshold of each anchor level is then the shared threshold of a
dataset budget (rate.choose_dataset) at that level's mean bpp. The mean
bpps are spread geometrically between the all-coarse and all-fine means of
the set, so the levels cover the model's whole range.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..api import Codec
from ..io.image_io import list_image_files
from ..planning.quality import ANCHORS, PlannerScale, QualityScale
from ..planning.rate import RateSummary, choose_dataset
from ..planning.tunes import PLANNERS

# The interpolation unit of each planner's scores (quality.PlannerScale): about the smallest
# threshold the levels use, so asinh is logarithmic over the levels and linear near 0.
UNITS = {"measured": 1e4, "entropy": 0.1}


def anchor_bpps(lowest: float, highest: float) -> list[float]:
    """Mean bpps of the anchors: geometric from a little above all-coarse to a little below all-fine."""
    start, stop = lowest * 1.15, highest * 0.88
    return [float(b) for b in np.geomspace(start, stop, len(ANCHORS))]


def planner_scale(paths: list[RateSummary], pixels: list[int], unit: float) -> PlannerScale:
    total = sum(pixels)
    ends = [8.0 * sum(int(p.sizes[at]) for p in paths) / total for at in (0, -1)]
    bpps = [round(bpp, 4) for bpp in anchor_bpps(*ends)]  # as stored, so the stored values reproduce the levels
    thresholds = []
    for bpp in bpps:
        steps, _ = choose_dataset(paths, pixels, bpp)
        # The threshold between the last step taken and the first left, over the whole set.
        taken = [p.step_thresholds[s - 1] for p, s in zip(paths, steps, strict=True) if s > 0]
        left = [p.step_thresholds[s] for p, s in zip(paths, steps, strict=True) if s < p.steps]
        low, high = max(left, default=-np.inf), min(taken, default=np.inf)
        thresholds.append(float((low + high) / 2) if np.isfinite(low + high) else float(min(high, low)))
    return PlannerScale(tuple(thresholds), unit, tuple(bpps))


def build_scale(codec: Codec, images: list[Path], command: str = "") -> QualityScale:
    planners = {}
    for planner in PLANNERS:
        paths, pixels = [], []
        for image in images:
            analysis = codec.analyse(image, planner=planner)
            paths.append(codec.rate_path(analysis).summary())
            pixels.append(analysis.source.width * analysis.source.height)
        planners[planner] = planner_scale(paths, pixels, UNITS[planner])
    return QualityScale(codec.model_id.hex(), planners, command)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="calibration photos (the Kodak images for shipped weights)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the scale, <weights stem>.quality.json")
    parser.add_argument("--weights", default=None, help="weights file (default: the shipped model)")
    args = parser.parse_args(argv)
    images = list_image_files(args.folder)
    if not images:
        parser.error(f"no images in {args.folder}")
    arguments = argv if argv is not None else sys.argv[1:]
    command = "python -m controlgic_cli.eval.quality_calibration " + " ".join(arguments)
    scale = build_scale(Codec(args.weights, device="cpu"), images, command)
    args.output.write_text(scale.to_json(), encoding="utf-8")
    for name, planner in scale.planners.items():
        levels = zip(ANCHORS, planner.thresholds, planner.kodak_bpp, strict=True)
        print(name, ", ".join(f"q{q}: {t:.5g} ({b:.3f} bpp)" for q, t, b in levels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
