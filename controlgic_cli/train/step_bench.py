"""Training-step throughput on this machine: fp32 vs bf16 autocast, channels_last on and off.

    python -m controlgic_cli.train.step_bench METRIC_WEIGHTS_DIR [--device cpu]

One training step (forward, MSE + LPIPS + VQ loss, backward, Adam) of the
default network on batch 8 of 128x128 crops, as in the `base` run; the median
of five steps after one warm-up. Results are recorded in docs/training.md.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..metrics.lpips import LPIPS
from ..model import ControlGIC, ModelConfig
from .loop import sample_ratios_ppm
from .validation import masks_for_batch, to_model_input


def photo_like_batch(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    """Smooth gradients plus noise of varying strength: enough structure for the planner's masks."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    batch = []
    for _ in range(count):
        base = np.stack([np.sin(xx * rng.uniform(1, 6)), np.cos(yy * rng.uniform(1, 6)), xx * yy], -1) * 80 + 120
        batch.append(np.clip(base + rng.normal(0, 1, base.shape) * rng.uniform(0, 40), 0, 255).astype(np.uint8))
    return np.stack(batch)


def main(metric_weights: str, device: str = "cpu") -> dict:
    target = torch.device(device)
    rng = np.random.default_rng(0)
    batch = photo_like_batch(rng, 8, 128)
    masks = masks_for_batch(batch, [sample_ratios_ppm(rng, "mixed") for _ in range(8)])
    masks = type(masks)(*(m.to(target) for m in (masks.fine, masks.medium, masks.coarse)))
    lpips = LPIPS.from_dir(metric_weights).to(target)
    results = {}
    for channels_last in (True, False):
        for bf16 in (False, True):
            torch.manual_seed(0)
            memory_format = torch.channels_last if channels_last else torch.contiguous_format
            model = ControlGIC(ModelConfig()).to(target, memory_format=memory_format)
            optimiser = torch.optim.Adam(model.parameters(), 2e-4)
            x = to_model_input(batch, target, channels_last)
            times = []
            for _ in range(6):
                started = time.perf_counter()
                with torch.autocast(target.type, dtype=torch.bfloat16, enabled=bf16):
                    out = model(x, masks)
                    x_hat = out.reconstruction.float()
                    loss = F.mse_loss(x_hat, x) + lpips(x_hat, x).mean() + out.vq_loss
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                if target.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - started)
            seconds = float(np.median(times[1:]))
            results[f"channels_last={channels_last} bf16={bf16}"] = {
                "step_seconds": round(seconds, 3),
                "crops_per_second": round(8 / seconds, 2),
            }
    return {"device": device, "threads": torch.get_num_threads(), "torch": torch.__version__, "results": results}


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:]), indent=1))
