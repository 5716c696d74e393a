"""Compare trained networks on the held-out crops at every preset ratio (`train compare`).

Used for the experiments in docs/training.md (training ratios, architectures,
GAN phase): each network is a checkpoint's EMA or a shipped weights file.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ..model import ControlGIC
from ..model.weights import load_weights
from .config import TrainConfig
from .data import centre_crops, list_images, split_train_validation
from .freeze import USAGE_RATIOS, load_ema_network
from .validation import Judge, evaluate


def load_network(path: Path) -> tuple[ControlGIC, dict]:
    """A checkpoint's EMA network (.pt) or a weights file's network, in float32 and eval mode."""
    if path.suffix == ".pt":
        return load_ema_network(path)
    loaded = load_weights(path)
    return loaded.network.float().eval(), {"model_id": loaded.model_id.hex()}


def compare(
    paths: list[Path],
    data_dir: Path,
    metric_weights: Path,
    ratio_list=USAGE_RATIOS,
    validation: TrainConfig | None = None,
) -> list[dict]:
    """One row per network; the held-out split and crop size are the training defaults unless given."""
    validation = validation or TrainConfig()
    _, val_files = split_train_validation(list_images(data_dir), validation.validation_images)
    crops = centre_crops(val_files, validation.validation_crop_size)
    device = torch.device("cpu")
    judge = Judge(metric_weights, device)
    rows = []
    for path in paths:
        network, info = load_network(path)
        started = time.perf_counter()
        metrics = evaluate(network.to(memory_format=torch.channels_last), crops, ratio_list, judge, device)
        params = sum(p.numel() for p in network.parameters())
        row = {"network": str(path), **info, "parameters": params, **metrics}
        row["seconds"] = round(time.perf_counter() - started, 1)
        rows.append(row)
    return rows
