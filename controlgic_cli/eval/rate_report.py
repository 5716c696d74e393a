"""Rate-control measurements on a folder of images (docs/rate-control.md).

    python -m controlgic_cli.eval.rate_report KODAK_DIR --metric-weights METRIC_WEIGHTS_DIR \
        --json-out docs/rate-kodak.json

1. Accuracy: for each target bpp, the achieved bpp of every image (real files).
2. Cost: encode time with a target against encode time with fixed ratios.
3. Fine control (paper Table 2): ratios stepped by 0.001 of fine area.
4. Per-image target vs --budget dataset at the same mean bpp, with quality.
"""

from __future__ import annotations

import time

import click
import numpy as np
import torch

from ..api import Codec
from ..io.image_io import list_image_files, load_image
from ..metrics.suite import MetricSuite
from ..planning.rate import choose_for_bpp
from ..planning.ratios import ratios_to_ppm
from .bench import write_report

TARGETS = (0.1, 0.2, 0.39, 0.6)
TABLE2_RATIOS = ((0.301, 0.599, 0.1), (0.302, 0.598, 0.1), (0.303, 0.597, 0.1), (0.304, 0.596, 0.1))


def quality(codec: Codec, suite: MetricSuite, rgb: np.ndarray, data: bytes, metrics) -> dict[str, float]:
    decoded = np.asarray(codec.decode(data).convert("RGB"))
    return suite.compute(rgb, decoded, metrics=metrics).values


@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--weights", type=click.Path(dir_okay=False), default=None)
@click.option("--metric-weights", type=click.Path(exists=True, file_okay=False), default=None)
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--json-out", type=click.Path(dir_okay=False))
@click.option("--limit", type=int, default=0)
def main(folder, weights, metric_weights, threads, json_out, limit) -> None:
    torch.set_num_threads(threads)
    files = list_image_files(folder)[: limit or None]
    codec = Codec(weights, device="cpu")
    suite = MetricSuite(metric_weights)
    metrics = ("psnr", "lpips", "dists")
    report: dict = {"model_id": codec.model_id.hex(), "images": len(files)}

    accuracy = {t: [] for t in TARGETS}
    fixed_seconds, target_seconds = [], []
    table2 = {r: {"bpp": [], "lpips": [], "dists": []} for r in TABLE2_RATIOS}
    analyses, per_image_039 = [], []
    for path in files:
        raw = path.read_bytes()
        started = time.perf_counter()
        codec.encode(raw, (0.3, 0.6, 0.1))
        fixed_seconds.append(time.perf_counter() - started)
        started = time.perf_counter()
        codec.encode_to_target(raw, target_bpp=0.39)
        target_seconds.append(time.perf_counter() - started)

        source = load_image(raw)
        analysis = codec.analyse(source)
        analyses.append(analysis)
        path_sizes = codec.rate_path(analysis)
        pixels = source.width * source.height
        for target in TARGETS:
            choice = choose_for_bpp(path_sizes, target, pixels)
            accuracy[target].append(8 * choice.size_bytes / pixels)
        result = codec.encode_to_target(source, target_bpp=0.39)
        per_image_039.append({"bpp": result.stats.bpp, **quality(codec, suite, source.rgb, result.data, metrics)})
        for ratios in TABLE2_RATIOS:
            data = codec.encode_analysis(analysis, ratios_to_ppm(ratios)).data
            values = quality(codec, suite, source.rgb, data, ("lpips", "dists"))
            table2[ratios]["bpp"].append(8 * len(data) / pixels)
            for key in ("lpips", "dists"):
                if key in values:
                    table2[ratios][key].append(values[key])
        click.echo(f"{path.name}: " + ", ".join(f"{accuracy[t][-1]:.4f}" for t in TARGETS), err=True)

    report["accuracy"] = {
        f"{t:g}": {
            "mean_bpp": float(np.mean(v)),
            "max_abs_error": float(np.max(np.abs(np.array(v) - t))),
            "within_0.005": int(np.sum(np.abs(np.array(v) - t) <= 0.005)),
        }
        for t, v in accuracy.items()
    }
    report["encode_seconds"] = {
        "fixed_ratios": float(np.mean(fixed_seconds)),
        "target_bpp": float(np.mean(target_seconds)),
    }
    report["table2"] = [
        {"ratios": list(r), **{k: float(np.mean(v)) for k, v in values.items() if v}} for r, values in table2.items()
    ]
    dataset = codec.encode_dataset(analyses, 0.39)
    per_dataset = [
        {"bpp": r.stats.bpp, **quality(codec, suite, a.source.rgb, r.data, metrics)}
        for r, a in zip(dataset, analyses, strict=True)
    ]
    report["budget_modes"] = {
        name: {key: float(np.mean([row[key] for row in rows if key in row])) for key in ("bpp", *metrics)}
        | {"bpp_min": float(min(row["bpp"] for row in rows)), "bpp_max": float(max(row["bpp"] for row in rows))}
        for name, rows in (("image", per_image_039), ("dataset", per_dataset))
    }
    write_report(report, json_out)


if __name__ == "__main__":
    main()
