"""How well one token design codes TAEF2's latent at one granularity, trained alone on the cached latents.

A quick probe for choosing model v2's token shapes (levels, groups per
granularity) before a long run: a small analysis/synthesis pair learns, from
latent MSE alone, to pass the latent through FSQ tokens at fine (H/4),
medium (H/8) or coarse (H/16) cells. It reports
  - the rate: raw bits per pixel, and the entropy of each group's index
    over held-out latents (what Huffman coding approaches);
  - the latent MSE on held-out latents and on the validation images;
  - PSNR and LPIPS of those images through TAEF2's own (not fine-tuned) decoder;
  - the linear bound: the share of the latent's variance in its top principal
    components, as many as the token has channels per latent cell.

    python -m controlgic_cli.train.latent_probe --cache-file RUN/cache.pt --taef2 TAEF2_DIR \
        --metric-weights METRIC_WEIGHTS_DIR --kodak KODAK_DIR --granularity medium --levels 8,5,5,5 --groups 2
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import click
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..metrics.lpips import LPIPS
from ..model.fsq import GroupedFSQ
from ..model.latent_network import ResBlock
from ..model.taef2 import LATENT_CHANNELS, LATENT_STRIDE, taef2_decoder, taef2_encoder
from .data import load_rgb
from .latent import VALIDATION_IMAGES, LatentCache, load_taef2

# Token cells per latent cell along each side: fine 2 (H/4), medium 1 (H/8), coarse 1/2 (H/16).
CELLS_PER_LATENT = {"fine": 2.0, "medium": 1.0, "coarse": 0.5}
HELD_OUT_SHARE = 0.1


class Probe(nn.Module):
    """Latent -> FSQ tokens on one grid -> latent; the sizes of model v2's adapters."""

    def __init__(self, granularity: str, quantizer: GroupedFSQ, width: int = 160, blocks: int = 2):
        super().__init__()
        self.quantizer = quantizer
        self.up = 2 if granularity == "fine" else 1
        down = 2 if granularity == "coarse" else 1
        token_channels = quantizer.channels * self.up**2
        self.analysis = nn.Sequential(
            nn.Conv2d(LATENT_CHANNELS, width, 3, padding=1),
            *(ResBlock(width) for _ in range(blocks)),
            nn.Conv2d(width, width, 3, stride=down, padding=1),
            *(ResBlock(width) for _ in range(blocks)),
            nn.ReLU(),
            nn.Conv2d(width, token_channels, 1),
        )
        self.synthesis = nn.Sequential(
            nn.Conv2d(token_channels, width * down**2, 1),
            nn.PixelShuffle(down),
            *(ResBlock(width) for _ in range(2 * blocks)),
            nn.ReLU(),
            nn.Conv2d(width, LATENT_CHANNELS, 3, padding=1),
        )

    def tokens(self, latent: torch.Tensor) -> torch.Tensor:
        """Pre-quantization tokens on their own grid (N, groups * len(levels), h, w)."""
        return F.pixel_shuffle(self.analysis(latent), self.up)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.synthesis(F.pixel_unshuffle(self.quantizer(self.tokens(latent)), self.up))


def trim(latent: torch.Tensor, multiple: int) -> torch.Tensor:
    """(C, h, w) cut to sides that are multiples of `multiple`."""
    return latent[:, : latent.shape[1] // multiple * multiple, : latent.shape[2] // multiple * multiple]


def linear_bound(latents: list[torch.Tensor], granularity: str, token_channels: int) -> float:
    """Share of latent variance in the top principal components a token of this many channels could hold."""
    side = 2 if granularity == "coarse" else 1
    vectors = torch.cat(
        [F.pixel_unshuffle(trim(latent, side)[None], side)[0].flatten(1) for latent in latents],
        dim=1,
    ).double()
    vectors = vectors - vectors.mean(dim=1, keepdim=True)
    eigenvalues = torch.linalg.eigvalsh(vectors @ vectors.T / vectors.shape[1]).flip(0)
    per_cell = int(token_channels * CELLS_PER_LATENT[granularity] ** 2 * side**2)
    return float(eigenvalues[:per_cell].sum() / eigenvalues.sum())


def group_entropy_bits(probe: Probe, latents: list[torch.Tensor]) -> float:
    """Bits per token: the summed entropy of each group's index over these latents."""
    quantizer = probe.quantizer
    counts = torch.zeros(quantizer.groups, quantizer.codes_per_group, dtype=torch.float64)
    for latent in latents:
        indices = quantizer.indices(probe.tokens(latent[None]))[0].flatten(1)
        for group in range(quantizer.groups):
            counts[group] += torch.bincount(indices[group], minlength=quantizer.codes_per_group)
    p = counts / counts.sum(dim=1, keepdim=True)
    return float(-(p * torch.log2(p.clamp_min(1e-300))).sum())


def random_crops(rng: np.random.Generator, latents: list[torch.Tensor], batch: int, side: int) -> torch.Tensor:
    crops = []
    while len(crops) < batch:
        latent = latents[rng.integers(len(latents))]
        if min(latent.shape[1:]) < side:
            continue
        top, left = rng.integers(latent.shape[1] - side + 1), rng.integers(latent.shape[2] - side + 1)
        crops.append(latent[:, top : top + side, left : left + side])
    return torch.stack(crops)


@click.command()
@click.option("--cache-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--taef2", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--metric-weights", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--kodak", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--granularity", type=click.Choice(list(CELLS_PER_LATENT)), required=True)
@click.option("--levels", default="8,5,5,5", show_default=True, help="FSQ levels of one group.")
@click.option("--groups", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=600, show_default=True)
@click.option("--width", type=click.IntRange(min=1), default=160, show_default=True)
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def main(cache_file, taef2, metric_weights, kodak, granularity, levels, groups, steps, width, threads, seed) -> None:
    """Train one token design alone for --steps (Adam 1e-3, 3e-4 for the last quarter) and print one JSON line."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    try:
        quantizer = GroupedFSQ(tuple(int(v) for v in levels.split(",")), groups)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--levels") from None
    latents = [latent.float() for latent in LatentCache.load(cache_file).latents]
    held_count = max(1, int(len(latents) * HELD_OUT_SHARE))
    train, held = latents[:-held_count], latents[-held_count:]
    probe = Probe(granularity, quantizer, width)
    optimiser = torch.optim.Adam(probe.parameters(), 1e-3)
    rng = np.random.default_rng(seed)
    # 16x16 latent crops (128 px), or the smallest cached latent's even side where that is less.
    side = min(16, *(min(latent.shape[1:]) // 2 * 2 for latent in train))
    if side < 2:
        raise click.ClickException(f"{cache_file}: a cached latent is smaller than one coarse cell")
    started = time.time()
    for step in range(steps):
        if step == steps * 3 // 4:
            for group in optimiser.param_groups:
                group["lr"] = 3e-4
        crops = random_crops(rng, train, 16, side)
        loss = F.mse_loss(probe(crops), crops)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    train_seconds = time.time() - started

    encoder, decoder = taef2_encoder(), taef2_decoder()
    load_taef2(encoder, decoder, taef2)
    lpips = LPIPS.from_dir(metric_weights)
    pixels_per_token = (LATENT_STRIDE / CELLS_PER_LATENT[granularity]) ** 2
    probe.eval()
    with torch.no_grad():
        trimmed = [trim(latent, 2) for latent in held]  # whole coarse cells
        held_mse = float(np.mean([F.mse_loss(probe(latent[None]), latent[None]).item() for latent in trimmed]))
        entropy_bits = group_entropy_bits(probe, trimmed)
        images = []
        for name in VALIDATION_IMAGES:
            x = torch.from_numpy(load_rgb(kodak / f"{name}.png").copy()).permute(2, 0, 1)[None].float() / 255.0
            latent = encoder(x)
            rebuilt = probe(latent)
            y = (decoder(rebuilt).clamp(0.0, 1.0) * 255.0).round() / 255.0
            images.append(
                (
                    F.mse_loss(rebuilt, latent).item(),
                    10 * math.log10(1.0 / F.mse_loss(y, x).item()),
                    lpips(x * 2 - 1, y * 2 - 1).item(),
                )
            )
    mean = np.mean(images, axis=0)
    record = {
        "granularity": granularity,
        "levels": list(quantizer.levels),
        "groups": groups,
        "steps": steps,
        "raw_bpp": round(groups * math.log2(quantizer.codes_per_group) / pixels_per_token, 4),
        "entropy_bpp": round(entropy_bits / pixels_per_token, 4),
        "held_latent_mse": round(held_mse, 4),
        "validation_latent_mse": round(float(mean[0]), 4),
        "validation_psnr": round(float(mean[1]), 2),
        "validation_lpips": round(float(mean[2]), 4),
        "linear_bound": round(linear_bound(held, granularity, quantizer.channels), 4),
        "train_seconds": round(train_seconds),
    }
    click.echo(json.dumps(record))


if __name__ == "__main__":
    main()
