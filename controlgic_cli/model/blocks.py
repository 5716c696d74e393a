"""Building blocks shared by the encoder and decoder.

Every normalisation here is per position (statistics over channels only).
Group norm, as in taming/MoVQ, would tie each output pixel to statistics of
the whole image, so a tile of a large photo would decode differently from
the same region of the full image; per-position norms keep the network
local, which is what tiled inference and CPU-sized crops need.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ChannelNorm(nn.Module):
    """Layer norm over the channel axis at every spatial position."""

    def __init__(self, channels: int, affine: bool = True, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1)) if affine else None
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # layer_norm over the last axis is one fused kernel; with channels_last
        # memory the permute is free, so this is several times faster on a CPU
        # than the mean/var arithmetic written out.
        weight = bias = None
        if self.weight is not None:
            weight, bias = self.weight.view(-1), self.bias.view(-1)
        return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), weight, bias, self.eps).permute(0, 3, 1, 2)


class SpatialNorm(nn.Module):
    """MoVQ-style norm: modulation predicted from the quantized latent map.

    The condition (quantized latents plus granularity masks, at H/4) is
    resized to the feature map with nearest interpolation, so each position is
    steered by the codes that describe it.
    """

    def __init__(self, channels: int, cond_channels: int):
        super().__init__()
        self.norm = ChannelNorm(channels, affine=False)
        self.to_scale = nn.Conv2d(cond_channels, channels, 1)
        self.to_shift = nn.Conv2d(cond_channels, channels, 1)
        # Start as a plain norm so early training is not steered by random codes.
        for conv in (self.to_scale, self.to_shift):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        cond = resize_condition(cond, x.shape[-2:])
        # One conv for both: the condition is read once (the same values as two convs).
        weight = torch.cat([self.to_scale.weight, self.to_shift.weight])
        bias = torch.cat([self.to_scale.bias, self.to_shift.bias])
        scale, shift = F.conv2d(cond, weight, bias).chunk(2, dim=1)
        return torch.addcmul(shift, self.norm(x), 1 + scale)


def resize_condition(cond: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    if tuple(cond.shape[-2:]) == tuple(size):
        return cond
    if cond.shape[-2] > size[0]:
        # Downscaling by an integer factor: average, as the paper's decoder does.
        return F.adaptive_avg_pool2d(cond, size)
    return F.interpolate(cond, size=size, mode="nearest")


class ResBlock(nn.Module):
    """Pre-activation residual block; the condition is optional (decoder only)."""

    def __init__(self, in_channels: int, out_channels: int, cond_channels: int = 0):
        super().__init__()
        self.conditioned = cond_channels > 0
        if self.conditioned:
            self.norm1 = SpatialNorm(in_channels, cond_channels)
            self.norm2 = SpatialNorm(out_channels, cond_channels)
        else:
            self.norm1 = ChannelNorm(in_channels)
            self.norm2 = ChannelNorm(out_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def _norm(self, norm: nn.Module, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        return norm(x, cond) if self.conditioned else norm(x)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self._norm(self.norm1, x, cond)))
        h = self.conv2(F.silu(self._norm(self.norm2, h, cond)))
        return self.shortcut(x) + h


class LatentHead(nn.Module):
    """Features -> d-dimensional latent at one granularity tap."""

    def __init__(self, channels: int, latent_dim: int):
        super().__init__()
        self.norm = ChannelNorm(channels)
        self.conv = nn.Conv2d(channels, latent_dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.silu(self.norm(x)))
