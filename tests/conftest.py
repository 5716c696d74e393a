"""Shared fixtures: a tiny seeded model, generated images, the shipped weights, files from ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from controlgic_cli.model import ControlGIC, ModelConfig
from controlgic_cli.model.weights import default_weights_path, save_weights
from controlgic_cli.planning.planner import GranularityPlan, patch_entropy, plan_from_scores
from controlgic_cli.planning.ratios import ratios_to_ppm

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# One intra-op thread for the networks run in this process. The tests' networks are tiny or their
# images small, so a second thread saves little; but on a machine whose cores are busy with other
# work, every small torch op waits at its barrier for a descheduled second thread: the whole suite
# took 20 min on a loaded 2-core machine with torch's default of 2 threads, 4 min with 1. Tests of
# thread counts set their own and put the count back; CLI runs in child processes keep torch's default.
torch.set_num_threads(1)


def needs_shared(folder: str, what: str, *, file: str | None = None, env: str | None = None) -> Path:
    """<repo>/../shared/<folder> (or the folder $env names), else skip the test saying what is missing.

    ../shared holds what a clone does not carry (metric weights, the Kodak
    images); on a fresh clone these tests skip, and the summary that -ra
    prints (pyproject's addopts) lists each reason. file: a file the test
    needs in that folder, named in the reason too.
    """
    override = os.environ.get(env) if env else None
    base = Path(override) if override else SHARED / folder
    wanted = base / file if file else base
    if not (wanted.is_file() if file else wanted.is_dir()):
        shown = f"{wanted} (from ${env})" if override else "/".join(["../shared", folder, *([file] if file else [])])
        alternative = f"; or set ${env} to a folder holding it" if env and not override else ""
        pytest.skip(f"needs {shown} ({what}{alternative})")
    return base


def synthetic_photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A photo-like uint8 RGB image: smooth gradients, a few shapes and texture of varying strength."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [
            120 + 80 * np.sin(xx / max(width, 1) * 3.1 + seed),
            100 + 60 * np.cos(yy / max(height, 1) * 2.3),
            140 + 50 * np.sin((xx + yy) / max(width + height, 1) * 4.0),
        ],
        axis=-1,
    )
    cy, cx, r = height * 0.4, width * 0.6, max(min(height, width) * 0.25, 1)
    disc = ((yy - cy) ** 2 + (xx - cx) ** 2) < r * r
    base[disc] = [220, 200, 60]
    texture = rng.normal(0, 1, (height, width, 1)) * (xx[..., None] / max(width, 1) * 40)
    return np.clip(base + texture, 0, 255).astype(np.uint8)


def entropy_plan(rgb: np.ndarray, ratios: tuple[float, float, float]) -> GranularityPlan:
    """The entropy planner's masks as the codec gets them: uint8 (H, W, 3), sides multiples of 16, float ratios."""
    return plan_from_scores(patch_entropy(rgb), ratios_to_ppm(ratios))


def build_tiny_weights(path, seed: int = 0, rank_tables: bool = False) -> bytes:
    """Write a tiny randomly initialised model with skewed code-usage counts; returns its model id.

    rank_tables: also skewed rank counts (small ranks common, as in trained weights), so files are version 3.
    """
    torch.manual_seed(seed)
    network = ControlGIC(ModelConfig.tiny())
    k = network.config.codebook_size
    usage = {
        name: [int(1 + (1000 // (i + 1 + offset))) for i in range(k)]
        for offset, name in enumerate(("fine", "medium", "coarse"))
    }
    ranks = {name: [1 + 5000 // (rank + 1) for rank in range(k)] for name in usage} if rank_tables else None
    return save_weights(path, network, usage, rank_usage=ranks)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    build_tiny_weights(path)
    return path


@pytest.fixture(scope="session")
def tiny_rank_weights(tmp_path_factory):
    """tiny_weights plus rank tables: the same network and usage counts, writing version-3 files."""
    path = tmp_path_factory.mktemp("weights-rank") / "tiny-rank.safetensors"
    build_tiny_weights(path, rank_tables=True)
    return path


@pytest.fixture(scope="session")
def other_tiny_weights(tmp_path_factory):
    """A second tiny model, for wrong-model tests."""
    path = tmp_path_factory.mktemp("weights-other") / "other.safetensors"
    build_tiny_weights(path, seed=1)
    return path


@pytest.fixture(scope="session")
def shipped_weights():
    path = default_weights_path()
    assert path.exists(), f"shipped weights missing at {path}"
    return path
