"""TAEF2: a tiny pretrained image autoencoder (RGB <-> 32 channels at H/8).

TAEF2 was distilled by Ollin Boer Bohan from the FLUX.2 image VAE (MIT
licence, weights/TAEF2-LICENSE). It is written here from its published
architecture so that its tensors load by their original key names
(``Sequential`` indices), and cgic's second model can start from weights that
took large GPU compute to learn instead of from scratch on two CPU cores.

Images are RGB in [0, 1] (not cgic's [-1, 1]); the latent has 32 channels at
1/8 of the image's sides, values roughly in [-3, 3]. Every layer has a bounded
receptive field (no attention), so tiled inference with a margin is exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LATENT_CHANNELS = 32
LATENT_STRIDE = 8
WIDTH = 64
POOL_WIDTH = 256


def conv3x3(c_in: int, c_out: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=bias)


class Block(nn.Module):
    """relu(convs(x) + x), where x first gains a 1x1 bottleneck branch ('pool') in the H/8 stage."""

    def __init__(self, channels: int = WIDTH, pooled: bool = False):
        super().__init__()
        self.conv = nn.Sequential(
            conv3x3(channels, channels), nn.ReLU(), conv3x3(channels, channels), nn.ReLU(), conv3x3(channels, channels)
        )
        self.pool = (
            nn.Sequential(
                nn.Conv2d(channels, POOL_WIDTH, 1, bias=False),
                nn.GroupNorm(4, POOL_WIDTH),
                nn.ReLU(),
                nn.Conv2d(POOL_WIDTH, channels, 1, bias=False),
            )
            if pooled
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return F.relu(self.conv(x) + x)


class SoftClamp(nn.Module):
    """3 tanh(x / 3): keeps a decoded latent in the range the decoder was trained on, with a gradient."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3.0) * 3.0


def taef2_encoder() -> nn.Sequential:
    """RGB (N, 3, H, W) in [0, 1] -> latent (N, 32, H/8, W/8); H and W multiples of 8."""
    layers: list[nn.Module] = [conv3x3(3, WIDTH), Block()]
    for stage in range(3):
        layers.append(conv3x3(WIDTH, WIDTH, stride=2, bias=False))
        layers.extend(Block(pooled=stage == 2) for _ in range(3))
    layers.append(conv3x3(WIDTH, LATENT_CHANNELS))
    return nn.Sequential(*layers)


def taef2_decoder() -> nn.Sequential:
    """Latent (N, 32, h, w) -> RGB (N, 3, 8h, 8w), about [0, 1] (clamp it)."""
    layers: list[nn.Module] = [SoftClamp(), conv3x3(LATENT_CHANNELS, WIDTH), nn.ReLU()]
    layers.extend(Block(pooled=True) for _ in range(3))
    for blocks in (3, 3, 1):
        layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
        layers.append(conv3x3(WIDTH, WIDTH, bias=False))
        layers.extend(Block() for _ in range(blocks))
    layers.append(conv3x3(WIDTH, 3))
    return nn.Sequential(*layers)
