"""Pixel-fidelity metrics on 8-bit RGB: PSNR and MS-SSIM.

MS-SSIM follows Wang, Simoncelli and Bovik (2003) as implemented by
``pytorch_msssim.ms_ssim`` (which CompressAI reports as ``ms-ssim-rgb``):
11-tap Gaussian window with sigma 1.5, "valid" filtering, K = (0.01, 0.03),
2x2 average pooling between scales (zero-padded on odd sizes), negative
contrast terms clipped at 0, per-channel scores averaged over R, G and B.
Like that implementation it computes in float32 (float64 was 6x slower on
CPU for differences around the 6th digit).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_WINDOW_SIZE = 11
_WINDOW_SIGMA = 1.5
_K1 = 0.01
_K2 = 0.03
_PEAK = 255.0


def psnr(a_u8: np.ndarray, b_u8: np.ndarray) -> float:
    """PSNR in dB over all pixels and channels, peak 255; ``inf`` for identical images."""
    a, b = _check_pair(a_u8, b_u8)
    mse = float(np.mean(np.square(a.astype(np.float64) - b.astype(np.float64))))
    if mse == 0:
        return math.inf
    return 10 * math.log10(_PEAK * _PEAK / mse)


def ms_ssim_scales(height: int, width: int) -> int:
    """How many MS-SSIM scales an image of this size gets (5 normally, 0 if none fit).

    pytorch_msssim requires the smaller side to exceed 10 * 2**4 = 160 for
    five scales; the same rule with fewer halvings decides the fallback.
    """
    smaller_side = min(height, width)
    for scales in range(len(MS_SSIM_WEIGHTS), 0, -1):
        if smaller_side > (_WINDOW_SIZE - 1) * 2 ** (scales - 1):
            return scales
    return 0


def ms_ssim(a_u8: np.ndarray, b_u8: np.ndarray) -> float:
    """MS-SSIM of two uint8 RGB (H, W, 3) images, in [0, 1], 1 for identical images.

    Fallback for small images: where the smaller side is 160 px or less,
    only the ``ms_ssim_scales(H, W)`` finest scales are used, with the
    standard weights of those scales renormalised to sum to 1 (one scale is
    plain SSIM). Images with a side under 11 px raise ValueError.
    """
    a, b = _check_pair(a_u8, b_u8)
    scales = ms_ssim_scales(a.shape[0], a.shape[1])
    if scales == 0:
        raise ValueError(f"MS-SSIM needs both sides of at least {_WINDOW_SIZE} px, got {a.shape[1]}x{a.shape[0]}")
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], dtype=torch.float64)
    weights = weights / weights.sum()
    x = _to_nchw_float32(a)
    y = _to_nchw_float32(b)
    window = _gaussian_window_1d()
    contrast_structure = []
    for scale in range(scales):
        ssim_per_channel, cs_per_channel = _ssim_and_cs(x, y, window)
        if scale < scales - 1:
            contrast_structure.append(torch.relu(cs_per_channel))
            padding = [size % 2 for size in x.shape[2:]]
            x = F.avg_pool2d(x, kernel_size=2, padding=padding)
            y = F.avg_pool2d(y, kernel_size=2, padding=padding)
    terms = torch.stack([*contrast_structure, torch.relu(ssim_per_channel)], dim=0)
    per_channel = torch.prod(terms.double() ** weights.view(-1, 1, 1), dim=0)
    return float(per_channel.mean())


def _ssim_and_cs(x: torch.Tensor, y: torch.Tensor, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean SSIM and contrast-structure term, each (N, C)."""
    c1 = (_K1 * _PEAK) ** 2
    c2 = (_K2 * _PEAK) ** 2
    channels = x.shape[1]
    # One grouped filtering pass over all five moment maps is several times
    # faster on CPU than five separate passes.
    moments = _gaussian_filter(torch.cat([x, y, x * x, y * y, x * y], dim=1), window)
    mu_x, mu_y, xx, yy, xy = moments.split(channels, dim=1)
    mu_x_sq = mu_x.square()
    mu_y_sq = mu_y.square()
    mu_xy = mu_x * mu_y
    sigma_x_sq = xx - mu_x_sq
    sigma_y_sq = yy - mu_y_sq
    sigma_xy = xy - mu_xy
    cs_map = (2 * sigma_xy + c2) / (sigma_x_sq + sigma_y_sq + c2)
    ssim_map = ((2 * mu_xy + c1) / (mu_x_sq + mu_y_sq + c1)) * cs_map
    return ssim_map.flatten(2).mean(-1), cs_map.flatten(2).mean(-1)


def _gaussian_filter(image: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    channels = image.shape[1]
    # Separable "valid" filtering, along H first as pytorch_msssim does.
    vertical = window.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    horizontal = window.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    filtered = F.conv2d(image, vertical, groups=channels)
    return F.conv2d(filtered, horizontal, groups=channels)


def _gaussian_window_1d() -> torch.Tensor:
    coords = torch.arange(_WINDOW_SIZE, dtype=torch.float32) - _WINDOW_SIZE // 2
    window = torch.exp(-(coords**2) / (2 * _WINDOW_SIGMA**2))
    return window / window.sum()


def _to_nchw_float32(image_u8: np.ndarray) -> torch.Tensor:
    chw = np.ascontiguousarray(image_u8.transpose(2, 0, 1))
    return torch.from_numpy(chw).to(torch.float32)[None]


def _check_pair(a_u8: np.ndarray, b_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a_u8)
    b = np.asarray(b_u8)
    for name, image in (("first", a), ("second", b)):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{name} image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    if a.shape != b.shape:
        raise ValueError(f"images differ in size: {a.shape} vs {b.shape}")
    return a, b
