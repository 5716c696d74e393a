"""Batch throughput measurements (docs/scaling.md).

    python -m controlgic_cli.eval.scale_report KODAK_DIR --json-out docs/scaling-kodak.json

Runs the real CLI in fresh processes on a folder: the one-image-at-a-time
loop (--jobs 1), the pipeline at several --jobs, and a local Dask cluster of
two workers; every setting is run `--repeats` times, interleaved so machine
noise hits all of them alike. Wall times include process start and model
loading (what a user waits for); the fixed part is measured separately by
encoding a 16x16 image. Checks that every run wrote byte-identical files.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch
from PIL import Image

from ..io.image_io import list_image_files
from .bench import cpu_description, write_report

SETTINGS = {
    "loop (--jobs 1)": ["--jobs", "1"],
    "pipeline --jobs 2": ["--jobs", "2"],
    "pipeline --jobs 3": ["--jobs", "3"],
    "pipeline --jobs 4": ["--jobs", "4"],
    "loop, --batch 4": ["--jobs", "1", "--batch", "4"],
    "pipeline --jobs 2 --batch 4": ["--jobs", "2", "--batch", "4"],
    "dask local cluster, 2 workers": ["--engine", "dask", "--jobs", "2"],
}


def timed_encode(inputs: str, out: Path, extra: list[str], weights: str | None) -> float:
    args = [sys.executable, "-m", "controlgic_cli", "encode", inputs, "-o", str(out), "-q", "-f", *extra]
    if weights:
        args += ["--weights", weights]
    started = time.perf_counter()
    subprocess.run(args, check=False)
    return time.perf_counter() - started


def cluster_startup_seconds() -> float | None:
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        return None
    import logging

    started = time.perf_counter()
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None, silence_logs=logging.ERROR)
    client = Client(cluster)
    client.wait_for_workers(2)
    seconds = time.perf_counter() - started
    client.close()
    cluster.close()
    return seconds


@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--weights", type=click.Path(dir_okay=False), default=None)
@click.option("--repeats", type=int, default=2, show_default=True)
@click.option("--json-out", type=click.Path(dir_okay=False), default=None)
def main(folder, weights, repeats, json_out):
    count = len(list_image_files(Path(folder)))
    report = {
        "machine": f"{cpu_description()}, torch {torch.__version__}",
        "images": count,
        "runs": {name: [] for name in SETTINGS},
    }
    with tempfile.TemporaryDirectory() as tmp:
        tiny = Path(tmp, "tiny.png")
        Image.new("RGB", (16, 16), (90, 120, 150)).save(tiny)
        report["fixed_seconds"] = min(timed_encode(str(tiny), Path(tmp, "tiny.cgic"), [], weights) for _ in range(2))
        reference = None
        for repeat in range(repeats):
            for number, (name, extra) in enumerate(SETTINGS.items()):
                out = Path(tmp, f"{number}-{repeat}")
                seconds = timed_encode(folder, out, extra, weights)
                files = {p.name: p.read_bytes() for p in sorted(out.glob("*.cgic"))}
                if len(files) != count:
                    raise click.ClickException(f"{name}: wrote {len(files)} of {count} files")
                reference = reference or files
                if files != reference:
                    raise click.ClickException(f"{name}: files differ from the first run")
                report["runs"][name].append(seconds)
                click.echo(f"{name}: {seconds:.2f} s", err=True)
    report["identical_files"] = True
    report["cluster_startup_seconds"] = cluster_startup_seconds()
    loop = float(np.median(report["runs"]["loop (--jobs 1)"]))
    report["summary"] = {
        name: {
            "median_seconds": float(np.median(runs)),
            "images_per_second": count / float(np.median(runs)),
            "speedup_vs_loop": loop / float(np.median(runs)),
        }
        for name, runs in report["runs"].items()
    }
    write_report(report, json_out)


if __name__ == "__main__":
    main()
