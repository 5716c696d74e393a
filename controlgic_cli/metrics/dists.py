"""DISTS (Ding et al. 2020): structure and texture similarity on VGG16 features.

Re-implements the official ``DISTS_pytorch.DISTS`` with tensors from
``dists_vgg16.safetensors``: VGG16 up to relu5_3, with each max-pool
replaced by L2 pooling, and the learnt per-channel alpha/beta weights.
No resizing happens here; the reference values are full-resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .frozen import FrozenMetricNet

DISTS_WEIGHTS_FILENAME = "dists_vgg16.safetensors"

# torchvision vgg16().features conv indices of each stage; every stage but the
# first starts with an L2 pool in place of VGG's max-pool.
_VGG16_STAGES = ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))
_STAGE_CHANNELS = (64, 128, 256, 512, 512)
# The raw input is a "stage" of its own in the alpha/beta layout.
DISTS_CHANNELS = (3, *_STAGE_CHANNELS)

_L2POOL_EPS = 1e-12
_STABILITY_C1 = 1e-6
_STABILITY_C2 = 1e-6


class DISTS(FrozenMetricNet):
    """Full-reference distance; 0 for identical images, larger is worse.

    Inputs are RGB NCHW float tensors in [0, 1] (``u8 / 255``). Differentiable
    like LPIPS, though at about 15 GFLOP per 224x224 image it is mostly for
    evaluation. Weights are non-persistent buffers for the same reasons as
    in :class:`~controlgic_cli.metrics.lpips.LPIPS`.
    """

    NAME = "DISTS"
    WEIGHTS_FILENAME = DISTS_WEIGHTS_FILENAME

    @staticmethod
    def expected_shapes() -> dict[str, tuple[int, ...]]:
        return _expected_shapes()

    def features(self, x: Tensor) -> list[Tensor]:
        """``[x, relu1_2, relu2_2, relu3_3, relu4_3, relu5_3]`` for ``x`` in [0, 1].

        Exposed so that one reference image can be compared with several
        distorted versions without running VGG16 on it again.
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"DISTS expects an (N, 3, H, W) tensor, got shape {tuple(x.shape)}")
        dtype = x.dtype
        h = (x - self.mean.to(dtype)) / self.std.to(dtype)
        outputs = [x]
        for stage, conv_indices in enumerate(_VGG16_STAGES):
            if stage > 0:
                h = self._l2_pool(h)
            for index in conv_indices:
                weight = getattr(self, f"features_{index}_weight").to(dtype)
                bias = getattr(self, f"features_{index}_bias").to(dtype)
                h = F.relu(F.conv2d(h, weight, bias, padding=1))
            outputs.append(h)
        return outputs

    def _l2_pool(self, h: Tensor) -> Tensor:
        channels = h.shape[1]
        kernel = self.l2pool_filter.to(h.dtype).expand(channels, 1, 3, 3)
        pooled = F.conv2d(h.square(), kernel, stride=2, padding=1, groups=channels)
        return (pooled + _L2POOL_EPS).sqrt()

    def distance_from_features(self, features_x: list[Tensor], features_y: list[Tensor]) -> Tensor:
        """DISTS as an (N,) tensor from two outputs of :meth:`features`."""
        dtype = features_x[0].dtype
        alpha = self.alpha.to(dtype)
        beta = self.beta.to(dtype)
        weight_sum = alpha.sum() + beta.sum()
        alphas = torch.split(alpha / weight_sum, DISTS_CHANNELS, dim=1)
        betas = torch.split(beta / weight_sum, DISTS_CHANNELS, dim=1)
        structure = texture = 0
        for fx, fy, alpha_k, beta_k in zip(features_x, features_y, alphas, betas, strict=True):
            mean_x = fx.mean(dim=(2, 3), keepdim=True)
            mean_y = fy.mean(dim=(2, 3), keepdim=True)
            # Same expression and rounding order as the official code, so
            # float32 results agree to the last digit or so.
            luminance_term = (2 * mean_x * mean_y + _STABILITY_C1) / (mean_x.square() + mean_y.square() + _STABILITY_C1)
            var_x = (fx - mean_x).square().mean(dim=(2, 3), keepdim=True)
            var_y = (fy - mean_y).square().mean(dim=(2, 3), keepdim=True)
            covariance = (fx * fy).mean(dim=(2, 3), keepdim=True) - mean_x * mean_y
            structure_term = (2 * covariance + _STABILITY_C2) / (var_x + var_y + _STABILITY_C2)
            structure = structure + (alpha_k * luminance_term).sum(dim=1)
            texture = texture + (beta_k * structure_term).sum(dim=1)
        return 1 - (structure + texture).flatten()

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """DISTS(x, y) for inputs in [0, 1], one value per batch item, shape (N,)."""
        if x.shape != y.shape:
            raise ValueError(f"DISTS inputs differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
        return self.distance_from_features(self.features(x), self.features(y))


def _expected_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {
        "alpha": (1, sum(DISTS_CHANNELS), 1, 1),
        "beta": (1, sum(DISTS_CHANNELS), 1, 1),
        "mean": (1, 3, 1, 1),
        "std": (1, 3, 1, 1),
        "l2pool.filter": (1, 1, 3, 3),
    }
    in_channels = 3
    for conv_indices, channels in zip(_VGG16_STAGES, _STAGE_CHANNELS, strict=True):
        for index in conv_indices:
            shapes[f"features.{index}.weight"] = (channels, in_channels, 3, 3)
            shapes[f"features.{index}.bias"] = (channels,)
            in_channels = channels
    return shapes
