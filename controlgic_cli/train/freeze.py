"""Freeze a training checkpoint into shipped weights.

This is the deliberate deployment step (CompressAI's update_model): take the
EMA network, count how often each code is transmitted over the training
images, and write half-precision safetensors with the config and the integer
code-usage tables the Huffman coder is built from.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..model import ControlGIC, ModelConfig
from ..model.weights import GRANULARITIES, save_weights
from ..planner import patch_entropy, plan_from_entropy
from ..ratios import ratios_to_ppm
from .data import list_images, load_rgb

# Counting at the presets users start from weights each granularity by how
# often its tokens are really sent, not by how many cells exist.
USAGE_RATIOS = ((0.0, 0.5, 0.5), (0.0, 0.8, 0.2), (0.1, 0.8, 0.1), (0.3, 0.6, 0.1), (0.5, 0.4, 0.1), (0.9, 0.1, 0.0))


def load_ema_network(checkpoint: Path) -> tuple[ControlGIC, dict]:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    config = json.loads(state["config"])
    model_config = ModelConfig.from_json(json.dumps(config["model"]))
    network = ControlGIC(model_config)
    network.load_state_dict(state["ema"])
    info = {
        "steps": int(state["step"]),
        "crops_seen": int(state["crops_seen"]),
        "train_hours": round(float(state["train_seconds"]) / 3600, 2),
        "crop_size": config["crop_size"],
        "batch_size": config["batch_size"],
    }
    return network.eval(), info


@torch.no_grad()
def count_code_usage(network: ControlGIC, files: list[Path], max_side: int = 768) -> dict[str, list[int]]:
    """Integer counts of transmitted indices per granularity (+1 each, so every code stays codable)."""
    k = network.config.codebook_size
    counts = {name: np.ones(k, np.int64) for name in GRANULARITIES}
    plans_ppm = [ratios_to_ppm(r) for r in USAGE_RATIOS]
    # mininterval keeps a log readable when stderr is a file, not a terminal.
    for path in tqdm(files, desc="code usage", mininterval=30):
        rgb = load_rgb(path)
        h, w = (min(s, max_side) // 16 * 16 for s in rgb.shape[:2])
        if h == 0 or w == 0:
            continue
        rgb = np.array(rgb[:h, :w])  # writable copy for torch.from_numpy
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div(127.5).sub(1.0)
        indices = network.encode_indices(x)
        fine_idx, medium_idx, coarse_idx = (i[0].numpy() for i in (indices.fine, indices.medium, indices.coarse))
        entropy = patch_entropy(rgb)
        for ppm in plans_ppm:
            plan = plan_from_entropy(entropy, ppm)
            counts["fine"] += np.bincount(fine_idx[plan.fine], minlength=k)
            counts["medium"] += np.bincount(medium_idx[plan.medium], minlength=k)
            counts["coarse"] += np.bincount(coarse_idx[plan.coarse], minlength=k)
    return {name: [int(c) for c in values] for name, values in counts.items()}


def export_weights(checkpoint: Path, data_dir: Path, output: Path) -> tuple[bytes, dict]:
    network, info = load_ema_network(checkpoint)
    started = time.time()
    usage = count_code_usage(network, list_images(data_dir))
    info["usage_images"] = len(list_images(data_dir))
    info["usage_seconds"] = round(time.time() - started, 1)
    metadata = {"training": json.dumps(info)}
    model_id = save_weights(output, network, usage, metadata)
    return model_id, {**info, "codes_used": {n: int(sum(c > 1 for c in usage[n])) for n in GRANULARITIES}}
