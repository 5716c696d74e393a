"""Finite scalar quantization (Mentzer et al. 2023) in groups, with mixed-radix group indices.

Each group of channels is bounded (tanh) and rounded channel by channel to a
small number of levels; the digits of one group form one index, which the
codec Huffman-codes like a codebook index. FSQ needs no codebook and cannot
collapse, which matters for training on two CPU cores: every code is in use
from the first step.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class GroupedFSQ(nn.Module):
    """(N, groups * len(levels), h, w) latents <-> (N, groups, h, w) int64 indices in [0, codes_per_group)."""

    def __init__(self, levels: tuple[int, ...], groups: int):
        super().__init__()
        if any(level < 2 for level in levels) or groups < 1:
            raise ValueError("FSQ needs at least 2 levels per channel and one group")
        self.levels = tuple(int(level) for level in levels)
        self.groups = groups
        self._radix_values = [math.prod(self.levels[:i]) for i in range(len(self.levels))]

    @property
    def codes_per_group(self) -> int:
        return math.prod(self.levels)

    @property
    def channels(self) -> int:
        return self.groups * len(self.levels)

    # Made per call rather than held as buffers: a network built on the meta device (weights.py) gets
    # its tensors from the file, and these constants are in no file.
    def _levels(self, like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self.levels, dtype=torch.float32, device=like.device).view(1, 1, -1, 1, 1)

    def _radix(self, like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self._radix_values, dtype=torch.int64, device=like.device).view(1, 1, -1, 1, 1)

    def _grouped(self, z: torch.Tensor) -> torch.Tensor:
        n, _, h, w = z.shape
        return z.reshape(n, self.groups, len(self.levels), h, w)

    def _bounded(self, z: torch.Tensor) -> torch.Tensor:
        """Squash each channel into its level range; an even count of levels needs the half-step offset."""
        levels = self._levels(z)
        half = (levels - 1.0) * (1.0 + 1e-3) / 2.0
        offset = torch.where(levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(z + shift) * half - offset

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Quantized latents (straight-through gradient), scaled to about [-1, 1]."""
        bounded = self._bounded(self._grouped(z.float()))
        rounded = bounded + (bounded.round() - bounded).detach()
        return (rounded / (self._levels(z) // 2)).flatten(1, 2)

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        digits = self._bounded(self._grouped(z.float())).round() + (self._levels(z) // 2)
        return (digits.long() * self._radix(z)).sum(dim=2)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """The inverse of indices(): (N, groups, h, w) -> quantized latents as forward() gives them."""
        levels = self._levels(indices)
        digits = (indices.unsqueeze(2) // self._radix(indices)) % levels.long()
        half = levels // 2
        return ((digits.float() - half) / half).flatten(1, 2)
