"""LPIPS (Zhang et al. 2018), AlexNet trunk with the v0.1 linear layers.

A re-implementation of ``lpips.LPIPS(net='alex', version='0.1')`` in eval mode
that loads its tensors from ``lpips_alex_v0.1.safetensors`` (see the README
next to that file). torchvision is deliberately not needed: the five AlexNet
convolutions are applied with ``F.conv2d`` directly.

The module is meant to double as a training loss, so ``forward`` is pure torch
(differentiable with respect to both inputs, no numpy) and the weights are
non-persistent buffers rather than parameters: they follow ``.to(device)``,
yet an optimiser never sees them and they never bloat the state_dict of a
model that holds this module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .frozen import FrozenMetricNet

LPIPS_WEIGHTS_FILENAME = "lpips_alex_v0.1.safetensors"

# (conv index in torchvision's alexnet().features, stride, padding); a max-pool
# (kernel 3, stride 2) precedes conv2 and conv3 only.
_ALEXNET_CONVS = ((0, 4, 2), (3, 1, 2), (6, 1, 1), (8, 1, 1), (10, 1, 1))
_POOL_BEFORE_TAP = (False, True, True, False, False)
LPIPS_LAYER_CHANNELS = (64, 192, 384, 256, 256)

# Below this the trunk's second max-pool has nothing left to pool.
LPIPS_MIN_SIZE = 31

_UNIT_NORM_EPS = 1e-10


class LPIPS(FrozenMetricNet):
    """Learned perceptual distance; lower is more similar, identical inputs give 0.

    Inputs are RGB NCHW float tensors in [-1, 1] (``u8 / 127.5 - 1``), both
    at least 31x31. ``forward`` returns one distance per batch item.
    """

    NAME = "LPIPS"
    WEIGHTS_FILENAME = LPIPS_WEIGHTS_FILENAME

    @staticmethod
    def expected_shapes() -> dict[str, tuple[int, ...]]:
        return _expected_shapes()

    def features(self, x: Tensor) -> list[Tensor]:
        """The five unit-normalised AlexNet taps (relu1..relu5) of ``x`` in [-1, 1]."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS expects an (N, 3, H, W) tensor, got shape {tuple(x.shape)}")
        if min(x.shape[-2:]) < LPIPS_MIN_SIZE:
            raise ValueError(
                f"LPIPS needs images of at least {LPIPS_MIN_SIZE}x{LPIPS_MIN_SIZE}, got {tuple(x.shape[-2:])}"
            )
        h = (x - self.scaling_shift.to(x.dtype)) / self.scaling_scale.to(x.dtype)
        taps = []
        for (index, stride, padding), pool_first in zip(_ALEXNET_CONVS, _POOL_BEFORE_TAP, strict=True):
            if pool_first:
                h = F.max_pool2d(h, kernel_size=3, stride=2)
            weight = getattr(self, f"features_{index}_weight").to(h.dtype)
            bias = getattr(self, f"features_{index}_bias").to(h.dtype)
            h = F.relu(F.conv2d(h, weight, bias, stride=stride, padding=padding))
            taps.append(unit_normalise(h))
        return taps

    def forward(self, x: Tensor, y: Tensor, per_layer: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """LPIPS(x, y) as an (N,) tensor; with ``per_layer`` also the (N, 5) per-tap terms.

        The total is the sum of the per-tap terms (relu1..relu5).
        """
        if x.shape != y.shape:
            raise ValueError(f"LPIPS inputs differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
        # One trunk pass over both images halves the number of kernel launches,
        # which matters more than memory for the small crops used in training.
        taps = self.features(torch.cat([x, y], dim=0))
        batch = x.shape[0]
        terms = []
        for k, tap in enumerate(taps):
            squared_difference = (tap[:batch] - tap[batch:]).square()
            # The spatial mean commutes with the 1x1 linear layer, so averaging
            # first saves a conv over H*W positions. Multiply-and-sum rather
            # than a matmul, which autocast would run in half precision.
            lin = getattr(self, f"lin{k}_weight").to(tap.dtype).flatten()
            terms.append((squared_difference.mean(dim=(2, 3)) * lin).sum(dim=1))
        per_layer_values = torch.stack(terms, dim=1)
        total = per_layer_values.sum(dim=1)
        if per_layer:
            return total, per_layer_values
        return total


def unit_normalise(feature: Tensor) -> Tensor:
    """Each position's channel vector scaled to unit length, as LPIPS does (also the measured planner's features)."""
    # Half-precision sums of squares over 64..384 channels lose too much, so
    # the normalisation runs in at least float32 even under autocast.
    if feature.dtype in (torch.float16, torch.bfloat16):
        feature = feature.float()
    sum_of_squares = feature.square().sum(dim=1, keepdim=True)
    # The official code takes sqrt(0) where every channel of a pixel is zero
    # after the ReLU, whose backward is 0/0 = NaN. Clamping at 1e-30 changes
    # the norm only far below the 1e-10 epsilon (and the feature is 0 there
    # anyway), but keeps gradients finite.
    norm = sum_of_squares.clamp_min(1e-30).sqrt()
    return feature / (norm + _UNIT_NORM_EPS)


def _expected_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {
        "features.0.weight": (64, 3, 11, 11),
        "features.3.weight": (192, 64, 5, 5),
        "features.6.weight": (384, 192, 3, 3),
        "features.8.weight": (256, 384, 3, 3),
        "features.10.weight": (256, 256, 3, 3),
        "scaling.shift": (1, 3, 1, 1),
        "scaling.scale": (1, 3, 1, 1),
    }
    for (index, _, _), channels in zip(_ALEXNET_CONVS, LPIPS_LAYER_CHANNELS, strict=True):
        shapes[f"features.{index}.bias"] = (channels,)
    for k, channels in enumerate(LPIPS_LAYER_CHANNELS):
        shapes[f"lin{k}.weight"] = (1, channels, 1, 1)
    return shapes
