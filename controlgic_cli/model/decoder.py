"""Probabilistic conditional decoder (paper Eq. 5-7).

    y1 = avgpool4(z_hat)                                   H/16
    y2 = D1(y1) * (1 - m2) + lift8(avgpool2(z_hat)) * m2   H/8
    y3 = D2(y2) * (1 - m1) + lift4(z_hat) * m1             H/4
    x  = D3(y3)                                            H

z_hat is the hybrid latent of Eq. 5. The replacement follows Eq. 7: at H/8
the decoder keeps D1's features wherever m2 = 0 (the authors' code zeroes the
fine positions there instead). The features being replaced are wide while
the latents are d = 4, so a 3x3 "lift" conv maps the transmitted latents to
the decoder's width before they replace the predicted features. Every norm is
conditioned (MoVQ SpatialNorm) on z_hat and the three masks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ResBlock, SpatialNorm, resize_condition
from .config import ModelConfig


class _Stage(nn.Module):
    def __init__(self, channels: int, blocks: int, cond_channels: int):
        super().__init__()
        self.blocks = nn.ModuleList([ResBlock(channels, channels, cond_channels) for _ in range(blocks)])

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            h = block(h, cond)
        return h


class _Upsample(nn.Module):
    """x2 upsampling as conv + pixel shuffle (same FLOPs as nearest+conv at the output size, no smearing)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.conv(x))


class Decoder(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        d = config.latent_dim
        c16, c8, c4, c2 = config.decoder_channels
        b16, b8, b4, b2 = config.decoder_blocks
        cond = d + 3  # z_hat plus the fine/medium/coarse masks at H/4
        self.conv_in = nn.Conv2d(d, c16, 3, padding=1)
        self.stage16 = _Stage(c16, b16, cond)
        self.up8 = _Upsample(c16, c8)
        self.lift8 = nn.Conv2d(d, c8, 3, padding=1)
        self.stage8 = _Stage(c8, b8, cond)
        self.up4 = _Upsample(c8, c4)
        self.lift4 = nn.Conv2d(d, c4, 3, padding=1)
        self.stage4 = _Stage(c4, b4, cond)
        self.up2 = _Upsample(c4, c2)
        self.stage2 = _Stage(c2, b2, cond)
        self.norm_out = SpatialNorm(c2, cond)
        self.conv_out = nn.Conv2d(c2, 3 * 4, 3, padding=1)
        self.shuffle_out = nn.PixelShuffle(2)

    def forward(
        self, z_hat: torch.Tensor, fine: torch.Tensor, medium: torch.Tensor, coarse: torch.Tensor
    ) -> torch.Tensor:
        """z_hat (N, d, H/4, W/4) hybrid latent; masks as float {0,1} at H/4, H/8, H/16 -> image in ~[-1, 1]."""
        cond = torch.cat(
            [z_hat, fine, F.interpolate(medium, scale_factor=2.0), F.interpolate(coarse, scale_factor=4.0)], dim=1
        )
        h = self.conv_in(F.avg_pool2d(z_hat, 4))
        h = self.stage16(h, _condition_like(cond, h))
        h = self.up8(h)
        h = h * (1 - medium) + self.lift8(F.avg_pool2d(z_hat, 2)) * medium
        h = self.stage8(h, _condition_like(cond, h))
        h = self.up4(h)
        h = h * (1 - fine) + self.lift4(z_hat) * fine
        h = self.stage4(h, _condition_like(cond, h))
        h = self.up2(h)
        cond2 = _condition_like(cond, h)
        h = self.stage2(h, cond2)
        return self.shuffle_out(self.conv_out(F.silu(self.norm_out(h, cond2))))


def _condition_like(cond: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """The condition at the features' resolution and in their memory format, made once for all norms there.

    Each norm would otherwise resize it again, and each of its two 1x1 convs
    convert it to the network's channels_last layout again (the values are the same).
    """
    resized = resize_condition(cond, features.shape[-2:])
    channels_last = features.is_contiguous(memory_format=torch.channels_last) and features.shape[1] > 1
    return resized.contiguous(memory_format=torch.channels_last) if channels_last else resized
