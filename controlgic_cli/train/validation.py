"""Held-out quality of a network at fixed ratios: used by the training loop and `train compare`.

Validation crops come from the training folder's held-out split (never
Kodak). Every crop is planned at the same ratios, so at one ratio all
networks compared send the same number of tokens and differ only in quality.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..metrics.dists import DISTS, DISTS_WEIGHTS_FILENAME
from ..metrics.lpips import LPIPS
from ..model import ControlGIC, MaskSet
from ..planning.planner import patch_entropy, plan_from_scores
from ..planning.ratios import ratios_to_ppm


def masks_for_batch(batch_u8: np.ndarray, ratios_ppm: list[tuple[int, int, int]]) -> MaskSet:
    """The codec's own plan for each crop at its ratios (ppm)."""
    coarse, medium = [], []
    for image, ratio in zip(batch_u8, ratios_ppm, strict=True):
        plan = plan_from_scores(patch_entropy(image), ratio)
        coarse.append(plan.coarse)
        medium.append(plan.medium)
    return MaskSet.from_coarse_medium(
        torch.from_numpy(np.stack(coarse)[:, None]), torch.from_numpy(np.stack(medium)[:, None])
    )


def to_model_input(batch_u8: np.ndarray, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = torch.from_numpy(batch_u8).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0).to(device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def ratio_key(ratios: tuple[float, float, float]) -> str:
    return "-".join(f"{r:g}" for r in ratios)


class Judge:
    """The perceptual metrics validation reports (DISTS only where its weights are present)."""

    def __init__(self, metric_weights_dir: str | Path, device: torch.device):
        self.lpips = LPIPS.from_dir(metric_weights_dir).to(device)
        dists_file = Path(metric_weights_dir) / DISTS_WEIGHTS_FILENAME
        self.dists = DISTS.from_dir(metric_weights_dir).to(device) if dists_file.is_file() else None


@torch.no_grad()
def evaluate(
    network: ControlGIC,
    crops_u8: np.ndarray,
    ratio_list,
    judge: Judge,
    device: torch.device,
    channels_last: bool = True,
) -> dict:
    """val_psnr_/val_lpips_/val_dists_<ratios> means over the crops, for every ratio in ratio_list."""
    result = {}
    x = to_model_input(crops_u8, device, channels_last)
    indices = network.encode_indices(x)
    for ratios in ratio_list:
        masks = masks_for_batch(crops_u8, [ratios_to_ppm(ratios)] * len(crops_u8))
        masks = MaskSet(*(m.to(device) for m in (masks.fine, masks.medium, masks.coarse)))
        x_hat = network.decode_indices(indices, masks)
        mse = F.mse_loss((x_hat + 1) * 127.5, (x + 1) * 127.5, reduction="none").mean(dim=(1, 2, 3))
        key = ratio_key(ratios)
        result[f"val_psnr_{key}"] = round((10 * torch.log10(255.0**2 / mse.clamp_min(1e-10))).mean().item(), 3)
        result[f"val_lpips_{key}"] = round(judge.lpips(x_hat, x).mean().item(), 4)
        if judge.dists is not None:
            # In slices: VGG16 features of a whole batch of 256x256 crops are large.
            pairs = zip(x_hat.split(4), x.split(4), strict=True)
            dists = torch.cat([judge.dists((a + 1) / 2, (b + 1) / 2) for a, b in pairs])
            result[f"val_dists_{key}"] = round(dists.mean().item(), 4)
    return result
