"""Training losses: pixel + LPIPS + PatchGAN hinge (paper Eq. 9-11)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchDiscriminator(nn.Module):
    """PatchGAN (pix2pix / taming NLayerDiscriminator shape, n_layers=2).

    Group norm instead of batch norm: batches here are small and the
    discriminator must behave the same in train and eval mode.
    """

    def __init__(self, base_channels: int = 64):
        super().__init__()
        c = base_channels
        self.net = nn.Sequential(
            nn.Conv2d(3, c, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1, bias=False),
            nn.GroupNorm(16, 2 * c),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * c, 4 * c, 4, stride=1, padding=1, bias=False),
            nn.GroupNorm(16, 4 * c),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(4 * c, 1, 4, stride=1, padding=1),
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def hinge_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()
