"""`python -m controlgic_cli.train run|export|rank-tables|pack|compare`: train, freeze, pack the data, compare."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from .config import TrainConfig


@click.group()
def main() -> None:
    """Train Control-GIC weights and freeze them for the codec."""


@main.command()
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), help="JSON TrainConfig.")
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False), help="Folder of training images.")
@click.option("--run-dir", type=click.Path(file_okay=False), help="Checkpoints and logs (resumed if present).")
@click.option(
    "--metric-weights", type=click.Path(exists=True, file_okay=False), help="Folder with lpips_alex_v0.1.safetensors."
)
@click.option("--device", type=str, help="cpu, cuda, cuda:1 ...")
@click.option("--max-steps", type=int)
@click.option("--threads", type=int)
@click.option(
    "--init-weights", type=click.Path(exists=True, dir_okay=False), help="Start a new run from these weights."
)
@click.option(
    "--init-checkpoint",
    type=click.Path(exists=True, dir_okay=False),
    help="Start a new run from another run's checkpoint.pt (a larger codebook_size grows its codebook).",
)
def run(
    config_file, data_dir, run_dir, metric_weights, device, max_steps, threads, init_weights, init_checkpoint
) -> None:
    """Train (or resume) a run."""
    from .loop import Trainer

    overrides = {
        "data_dir": data_dir,
        "run_dir": run_dir,
        "metric_weights_dir": metric_weights,
        "device": device,
        "max_steps": max_steps,
        "threads": threads,
        "init_weights": init_weights,
        "init_checkpoint": init_checkpoint,
    }
    if config_file:
        config = TrainConfig.from_file(config_file, **overrides)
    else:
        config = TrainConfig.from_dict({k: v for k, v in overrides.items() if v is not None})
    if not config.data_dir or not config.metric_weights_dir:
        raise click.UsageError("--data-dir and --metric-weights are required (or set them in --config)")
    Path(config.run_dir).mkdir(parents=True, exist_ok=True)
    (Path(config.run_dir) / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    trainer = Trainer(config)
    trainer.run()
    if trainer.replicas.distributed:
        # Everything is saved and the process group left. Interpreter shutdown can still
        # abort (SIGABRT) when a communication library's threads are torn down after
        # Python's, which fails a finished run, so a replica ends here.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


@main.command()
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), required=True)
@click.option(
    "--data-dir", type=click.Path(exists=True, file_okay=False), required=True, help="Images to count code usage on."
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True)
@click.option(
    "--threads", type=int, default=1, show_default=True, help="torch threads (1 avoids fighting a training run)."
)
def export(checkpoint, data_dir, output, threads) -> None:
    """Freeze a checkpoint's EMA weights + code-usage tables into a weights file."""
    import torch

    from .freeze import export_weights

    torch.set_num_threads(threads)
    model_id, info = export_weights(Path(checkpoint), Path(data_dir), Path(output))
    click.echo(json.dumps({"model_id": model_id.hex(), **info}), err=False)


@main.command("rank-tables")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), required=True)
@click.option(
    "--data-dir", type=click.Path(exists=True, file_okay=False), required=True, help="Images to count ranks on."
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True)
@click.option("--threads", type=int, default=1, show_default=True)
def rank_tables(weights, data_dir, output, threads) -> None:
    """Add neighbour-rank tables (format version 3) to a weights file, keeping everything else."""
    import torch

    from .freeze import add_rank_tables

    torch.set_num_threads(threads)
    model_id, base_model_id = add_rank_tables(Path(weights), Path(data_dir), Path(output))
    click.echo(json.dumps({"model_id": model_id.hex(), "base_model_id": base_model_id.hex()}))


@main.command()
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False), required=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, help="The .tar to write.")
@click.option("--max-mb", type=float, default=48.0, show_default=True, help="Size limit in MB (10^6 bytes).")
@click.option(
    "--every", type=click.IntRange(min=1), default=1, show_default=True, help="Pack every N-th image (by name) only."
)
def pack(data_dir, output, max_mb, every) -> None:
    """Pack the training folder into one tar of at most --max-mb (for a lent GPU machine)."""
    from .pack import build_pack

    try:
        info = build_pack(Path(data_dir), Path(output), int(max_mb * 1_000_000), every)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps({"images": info.images, "bytes": info.bytes, "jpeg_quality": info.quality}))


@main.command("compare")
@click.argument("networks", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False), required=True, help="The training folder.")
@click.option("--metric-weights", type=click.Path(exists=True, file_okay=False), required=True)
@click.option("--json-out", type=click.Path(dir_okay=False), help="Also write the rows as JSON.")
@click.option("--threads", type=int, default=1, show_default=True)
def compare_command(networks, data_dir, metric_weights, json_out, threads) -> None:
    """PSNR/LPIPS/DISTS of checkpoints (.pt, EMA) or weights files on the held-out crops at the presets."""
    import torch

    from .compare import compare

    torch.set_num_threads(threads)
    rows = compare([Path(n) for n in networks], Path(data_dir), Path(metric_weights))
    for row in rows:
        click.echo(json.dumps(row))
    if json_out:
        Path(json_out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
