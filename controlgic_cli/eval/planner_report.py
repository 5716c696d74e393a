"""The planners compared on a folder of images at equal bpp (docs/rate-control.md, "Measured planner").

    python -m controlgic_cli.eval.planner_report KODAK_DIR --metric-weights METRIC_WEIGHTS_DIR \
        --json-out docs/planner-kodak.json

For every image and target bpp, each planner's file from rate control (real
files, the same network pass and indices): mean bpp, PSNR, LPIPS and DISTS
per planner and target, the per-image PSNR at the default ratios, and the
encode time of each planner.
"""

from __future__ import annotations

import dataclasses
import time

import click
import numpy as np
import torch

from ..api import Codec, pad_to_block
from ..io.image_io import list_image_files, load_image
from ..metrics.suite import MetricSuite
from ..planning.measured import measured_scores
from ..planning.ratios import DEFAULT_RATIOS, ratios_to_ppm
from ..planning.tunes import PLANNERS
from .bench import write_report

TARGETS = (0.1, 0.2, 0.3, 0.39)
METRICS = ("psnr", "lpips", "dists")


@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--weights", type=click.Path(dir_okay=False), default=None)
@click.option("--metric-weights", type=click.Path(exists=True, file_okay=False), default=None)
@click.option("--targets", default=",".join(f"{t:g}" for t in TARGETS), show_default=True)
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--json-out", type=click.Path(dir_okay=False))
@click.option("--limit", type=int, default=0)
def main(folder, weights, metric_weights, targets, threads, json_out, limit) -> None:
    torch.set_num_threads(threads)
    targets = [float(t) for t in targets.split(",")]
    files = list_image_files(folder)[: limit or None]
    codec = Codec(weights, device="cpu")
    suite = MetricSuite(metric_weights)
    rows = {(planner, target): [] for planner in PLANNERS for target in targets}
    default_psnr = {planner: {} for planner in PLANNERS}
    seconds = {planner: [] for planner in PLANNERS}
    for path in files:
        source = load_image(path.read_bytes())
        network_pass = codec.analyse(source, planner="entropy")
        # The same indices for both planners: only the scores differ.
        scores = {
            "entropy": network_pass.scores,
            "measured": measured_scores(codec.network, pad_to_block(source.rgb), network_pass.indices),
        }
        for planner in PLANNERS:
            started = time.perf_counter()
            codec.encode(source, DEFAULT_RATIOS, planner=planner)
            seconds[planner].append(time.perf_counter() - started)
            analysis = dataclasses.replace(network_pass, scores=scores[planner])
            for target in targets:
                result = codec.encode_analysis_to_target(analysis, target_bpp=target)
                rows[planner, target].append({"bpp": result.stats.bpp, **_quality(codec, suite, source, result.data)})
            data = codec.encode_analysis(analysis, ratios_to_ppm(DEFAULT_RATIOS)).data
            default_psnr[planner][path.name] = round(_quality(codec, suite, source, data, ("psnr",))["psnr"], 3)
        click.echo(f"{path.name}: " + ", ".join(f"{p} {default_psnr[p][path.name]:.2f} dB" for p in PLANNERS), err=True)

    report = {
        "model_id": codec.model_id.hex(),
        "images": len(files),
        "at_equal_bpp": [
            {"planner": planner, "target_bpp": target}
            | {key: float(np.mean([row[key] for row in values if key in row])) for key in ("bpp", *METRICS)}
            for (planner, target), values in rows.items()
        ],
        "psnr_at_default_ratios": default_psnr,
        "encode_seconds": {planner: float(np.mean(v)) for planner, v in seconds.items()},
    }
    write_report(report, json_out)


def _quality(codec: Codec, suite: MetricSuite, source, data: bytes, metrics=METRICS) -> dict[str, float]:
    decoded = np.asarray(codec.decode(data).convert("RGB"))
    return suite.compute(source.rgb, decoded, metrics=metrics).values


if __name__ == "__main__":
    main()
