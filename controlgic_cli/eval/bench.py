"""Codec benchmark on a folder of images (Kodak in docs/benchmarks.md).

For every image and every ratio preset: real .cgic bytes, bpp, PSNR, encode
and decode wall time (PNG file in -> .cgic bytes -> decoded PNG bytes, model
already loaded), bits per transmitted index against the empirical entropy of
those indices, and the process's peak resident memory.

    python -m controlgic_cli.eval.bench KODAK_DIR --json-out docs/bench-kodak.json
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import click
import numpy as np
import torch

from ..api import Codec
from ..coding.container import parse_file
from ..coding.entropy_coder import empirical_entropy_bits
from ..io.image_io import encode_image_file, list_image_files, load_image
from ..metrics.distortion import psnr
from ..planning.ratios import ratios_to_ppm
from ..planning.tunes import DEFAULT_PLANNER, PLANNERS

PRESETS = ((0.0, 0.5, 0.5), (0.0, 0.8, 0.2), (0.1, 0.8, 0.1), (0.3, 0.6, 0.1), (0.5, 0.4, 0.1), (0.9, 0.1, 0.0))
GRANULARITIES = ("fine", "medium", "coarse")


def write_report(report: dict, json_out: str | None) -> None:
    """Print a measurement report as JSON, and save it when asked (the docs/*.json files)."""
    text = json.dumps(report, indent=1)
    if json_out:
        Path(json_out).write_text(text)
    click.echo(text)


def cpu_description() -> str:
    """CPU model and the matrix extensions that decide CPU speed here (AMX / AVX-512 make bf16 fast)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    extensions = [name for name in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if name in flags]
    return f"{model} ({', '.join(extensions) or 'no AVX2'}), {os.cpu_count()} CPUs"


def peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_image(
    codec: Codec, path: Path, presets, planner: str = DEFAULT_PLANNER, colour_correction: bool = True
) -> list[dict]:
    rows = []
    raw = path.read_bytes()
    for ratios in presets:
        started = time.perf_counter()
        source = load_image(raw)
        analysis = codec.analyse(source, planner=planner, colour_correction=colour_correction)
        result = codec.encode_analysis(analysis, ratios_to_ppm(ratios))
        encode_seconds = time.perf_counter() - started

        started = time.perf_counter()
        decoded = codec.decode(result.data)
        encode_image_file(decoded, "out.png")
        decode_seconds = time.perf_counter() - started

        plan = codec.plan(analysis, ratios_to_ppm(ratios))
        _, sections = parse_file(result.data)
        index_stats = {}
        for name, mask, indices, stream in zip(
            GRANULARITIES,
            (plan.fine, plan.medium, plan.coarse),
            analysis.indices,
            (sections.fine, sections.medium, sections.coarse),
            strict=True,
        ):
            symbols = indices[mask]
            if symbols.size:
                index_stats[name] = {
                    "count": int(symbols.size),
                    "bits_per_index": 8 * len(stream) / symbols.size,
                    "entropy_bits": empirical_entropy_bits(symbols, codec.model.config.codebook_size),
                }
        rows.append(
            {
                "image": path.name,
                "ratios": list(ratios),
                "bytes": result.stats.size_bytes,
                "bpp": result.stats.bpp,
                "psnr": psnr(source.rgb, np.asarray(decoded.convert("RGB"))),
                "encode_s": encode_seconds,
                "decode_s": decode_seconds,
                "section_bytes": result.stats.section_bytes,
                "indices": index_stats,
            }
        )
    return rows


def summarise(rows: list[dict], presets) -> list[dict]:
    summary = []
    for ratios in presets:
        subset = [r for r in rows if r["ratios"] == list(ratios)]
        entry = {
            "ratios": list(ratios),
            "bpp_mean": float(np.mean([r["bpp"] for r in subset])),
            "bpp_min": float(np.min([r["bpp"] for r in subset])),
            "bpp_max": float(np.max([r["bpp"] for r in subset])),
            "psnr_mean": float(np.mean([r["psnr"] for r in subset])),
            "encode_s_mean": float(np.mean([r["encode_s"] for r in subset])),
            "decode_s_mean": float(np.mean([r["decode_s"] for r in subset])),
        }
        for name in GRANULARITIES:
            stats = [r["indices"][name] for r in subset if name in r["indices"]]
            if stats:
                count = sum(s["count"] for s in stats)
                entry[f"{name}_bits_per_index"] = sum(s["bits_per_index"] * s["count"] for s in stats) / count
                entry[f"{name}_entropy_bits"] = sum(s["entropy_bits"] * s["count"] for s in stats) / count
        summary.append(entry)
    return summary


@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--weights", type=click.Path(dir_okay=False), default=None)
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--json-out", type=click.Path(dir_okay=False), help="Write per-image rows and the summary here.")
@click.option("--limit", type=int, default=0, help="Only the first N images (0: all).")
@click.option("--planner", type=click.Choice(PLANNERS), default=DEFAULT_PLANNER, show_default=True)
@click.option("--colour-correction/--no-colour-correction", default=True, show_default=True)
def main(folder, weights, threads, json_out, limit, planner, colour_correction) -> None:
    torch.set_num_threads(threads)
    files = list_image_files(folder)
    if limit:
        files = files[:limit]
    started = time.perf_counter()
    codec = Codec(weights, device="cpu")
    load_seconds = time.perf_counter() - started
    rss_after_load = peak_rss_mb()
    rows = []
    for path in files:
        rows.extend(bench_image(codec, path, PRESETS, planner, colour_correction))
        click.echo(
            f"{path.name}: " + ", ".join(f"{r['bpp']:.3f} bpp/{r['psnr']:.2f} dB" for r in rows[-len(PRESETS) :]),
            err=True,
        )
    report = {
        "machine": {
            "cpu": cpu_description(),
            "threads": threads,
            "torch": torch.__version__,
            "python": sys.version.split()[0],
        },
        "weights": str(codec.model.path.name),
        "model_id": codec.model_id.hex(),
        "planner": planner,
        "colour_correction": colour_correction,
        "images": len(files),
        "model_load_s": load_seconds,
        "peak_rss_mb_after_load": rss_after_load,
        "peak_rss_mb": peak_rss_mb(),
        "summary": summarise(rows, PRESETS),
        "rows": rows,
    }
    text = json.dumps(report, indent=1)
    if json_out:
        Path(json_out).write_text(text)
    for entry in report["summary"]:
        click.echo(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in entry.items()}))
    click.echo(f"peak RSS {report['peak_rss_mb']:.0f} MB, model load {load_seconds:.2f} s")


if __name__ == "__main__":
    main()
