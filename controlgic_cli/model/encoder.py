"""Granularity-informed encoder: one image -> latents at H/4, H/8 and H/16.

A pixel-unshuffle stem replaces the full-resolution and H/2 conv levels of
the authors' VQGAN encoder; on a CPU those two levels cost almost half of the
FLOPs while the granularity taps start at H/4 anyway.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import LatentHead, ResBlock
from .config import FINE_STRIDE, ModelConfig


class Encoder(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        c4, c8, c16 = config.encoder_channels
        b4, b8, b16 = config.encoder_blocks
        self.stem = nn.Sequential(
            nn.PixelUnshuffle(FINE_STRIDE),
            nn.Conv2d(3 * FINE_STRIDE**2, c4, 3, padding=1),
        )
        self.level4 = nn.Sequential(*[ResBlock(c4, c4) for _ in range(b4)])
        self.down8 = nn.Conv2d(c4, c8, 3, stride=2, padding=1)
        self.level8 = nn.Sequential(*[ResBlock(c8, c8) for _ in range(b8)])
        self.down16 = nn.Conv2d(c8, c16, 3, stride=2, padding=1)
        self.level16 = nn.Sequential(*[ResBlock(c16, c16) for _ in range(b16)])
        self.fine_head = LatentHead(c4, config.latent_dim)
        self.medium_head = LatentHead(c8, config.latent_dim)
        self.coarse_head = LatentHead(c16, config.latent_dim)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The hidden maps at H/4 and H/8 that the fine and medium heads read (the measured planner compares them)."""
        h4 = self.level4(self.stem(x))
        return h4, self.level8(self.down8(h4))

    def heads(self, h4: torch.Tensor, h8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The latents from the hidden maps of features(): (z_fine, z_medium, z_coarse)."""
        h16 = self.level16(self.down16(h8))
        return self.fine_head(h4), self.medium_head(h8), self.coarse_head(h16)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x in [-1, 1], (N, 3, H, W) with H, W multiples of 16 -> (z_fine, z_medium, z_coarse)."""
        return self.heads(*self.features(x))
