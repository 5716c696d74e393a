"""Freeze a training checkpoint into shipped weights.

This is the deliberate deployment step (CompressAI's update_model): take the
EMA network, count how often each code, and each neighbour rank, is
transmitted over the training images, and write half-precision safetensors
with the config and the integer tables the Huffman codes are built from.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..coding.index_coding import MAX_RANK_CODEBOOK, NeighbourRankCoding
from ..errors import ModelError
from ..model import ControlGIC, ModelConfig
from ..model.weights import GRANULARITIES, RANK_USAGE_KEY, load_weights, save_weights
from ..planning.planner import patch_entropy, plan_from_scores
from ..planning.ratios import ratios_to_ppm
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
def _sent_indices(network: ControlGIC, files: list[Path], max_side: int):
    """For each image: its index maps and the plans at USAGE_RATIOS (what a user's files send)."""
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
        levels = (indices.fine, indices.medium, indices.coarse)
        maps = {name: i[0].numpy() for name, i in zip(GRANULARITIES, levels, strict=True)}
        entropy = patch_entropy(rgb)
        plans = [plan_from_scores(entropy, ppm) for ppm in plans_ppm]
        yield maps, [{"fine": p.fine, "medium": p.medium, "coarse": p.coarse} for p in plans]


def count_usage_tables(
    network: ControlGIC, files: list[Path], code_usage: dict[str, list[int]] | None = None, max_side: int = 768
) -> tuple[dict[str, list[int]], dict[str, list[int]] | None]:
    """Integer counts of transmitted indices, and of their neighbour ranks, per granularity (+1 each).

    The +1 keeps every symbol codable. Ranks depend on the usage order (a cell
    without a sent neighbour is ranked by it), so they are counted after the
    usage, from the same indices; given code_usage, only the ranks are counted.
    Rank counts are None for codebooks too large for rank tables.
    """
    k = network.config.codebook_size
    usage = {name: np.ones(k, np.int64) for name in GRANULARITIES}
    sent = []
    for maps, plans in _sent_indices(network, files, max_side):
        sent.append((maps, plans))
        if code_usage is None:
            for plan in plans:
                for name in GRANULARITIES:
                    usage[name] += np.bincount(maps[name][plan[name]], minlength=k)
    usage_lists = code_usage or {name: [int(c) for c in values] for name, values in usage.items()}
    if k > MAX_RANK_CODEBOOK:
        return usage_lists, None
    # The codebook as shipped (half precision), since the rank tables are built from that.
    codebook = network.quantizer.codebook.detach().cpu().half().double().numpy()
    coding = NeighbourRankCoding(codebook, usage_lists, {name: [1] * k for name in GRANULARITIES})
    ranks = {name: np.ones(k, np.int64) for name in GRANULARITIES}
    for maps, plans in sent:
        for plan in plans:
            for name in GRANULARITIES:
                ranks[name] += np.bincount(coding.symbols(name, maps[name], plan[name]), minlength=k)
    return usage_lists, {name: [int(c) for c in values] for name, values in ranks.items()}


def export_weights(checkpoint: Path, data_dir: Path, output: Path) -> tuple[bytes, dict]:
    network, info = load_ema_network(checkpoint)
    started = time.time()
    usage, rank_usage = count_usage_tables(network, list_images(data_dir))
    info["usage_images"] = len(list_images(data_dir))
    info["usage_seconds"] = round(time.time() - started, 1)
    metadata = {"training": json.dumps(info)}
    model_id = save_weights(output, network, usage, metadata, rank_usage)
    return model_id, {**info, "codes_used": {n: int(sum(c > 1 for c in usage[n])) for n in GRANULARITIES}}


# Keys save_weights writes itself; everything else in a weights file's metadata is carried over.
_WRITTEN_KEYS = ("format", "config", "code_usage", RANK_USAGE_KEY)


def add_rank_tables(weights: Path, data_dir: Path, output: Path) -> tuple[bytes, bytes]:
    """Write `weights` again with rank tables counted on data_dir; returns (model id, base model id).

    Tensors, config and code usage stay as they are, so the base model id is
    that of the input and its version 1 and 2 files still decode.
    """
    loaded = load_weights(weights)
    _usage, rank_usage = count_usage_tables(loaded.network, list_images(data_dir), loaded.code_usage)
    if rank_usage is None:
        raise ModelError(f"a codebook of {loaded.config.codebook_size} codes is too large for rank tables")
    kept = {key: value for key, value in loaded.metadata.items() if key not in _WRITTEN_KEYS}
    save_weights(output, loaded.network, loaded.code_usage, kept, rank_usage)
    written = load_weights(output)
    return written.model_id, written.base_model_id
