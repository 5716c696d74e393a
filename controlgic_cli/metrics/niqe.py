"""NIQE (Mittal, Soundararajan and Bovik 2012), the no-reference "naturalness" score.

Follows the original MATLAB ``computequality(im, 96, 96, 0, 0, mu, cov)`` as
ported by BasicSR 1.4.2 (pipeline "A" of the metric-weights README): MATLAB
``rgb2gray`` rounded to uint8, 7x7 Gaussian local normalisation with
replicated borders, AGGD fits on 96x96 blocks at two scales (MATLAB bicubic
antialiased halving in between), and the Mahalanobis-like distance to the
pristine model in ``niqe_pristine.safetensors``. Lower is more natural.

Everything runs in float64 numpy, without scipy. Scores agree with the
README's pipeline A to about 3 significant digits on natural images; on
images with large exactly-flat areas (heavy JPEG) they can move by a few
per cent, because whether ``im - mu`` is exactly 0 there depends on the
filter's rounding (the README explains this).
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from ..errors import ModelError
from .weights import MissingMetricWeights, weights_file

NIQE_WEIGHTS_FILENAME = "niqe_pristine.safetensors"
NIQE_BLOCK_SIZE = 96
NIQE_FEATURES = 36

# MATLAB rgb2gray's coefficients: the first row of inv([YIQ matrix]), not the
# rounded 0.299/0.587/0.114.
_RGB2GRAY = (0.298936021293775, 0.587043074451121, 0.114020904255103)
_GAUSSIAN_SIZE = 7
_GAUSSIAN_SIGMA = 7 / 6
# Products of neighbouring normalised coefficients: right, down, down-right, down-left.
_PAIR_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))


class NIQE:
    """NIQE scorer holding the pristine multivariate Gaussian model."""

    def __init__(self, mu: np.ndarray, cov: np.ndarray):
        mu = np.asarray(mu, dtype=np.float64).reshape(-1)
        cov = np.asarray(cov, dtype=np.float64)
        if mu.shape != (NIQE_FEATURES,) or cov.shape != (NIQE_FEATURES, NIQE_FEATURES):
            raise ModelError(f"NIQE model must be mu (36,) and cov (36, 36), got {mu.shape} and {cov.shape}")
        self.pristine_mu = mu
        self.pristine_cov = cov

    @classmethod
    def from_file(cls, path: str | Path) -> NIQE:
        path = Path(path)
        if not path.is_file():
            raise MissingMetricWeights(path)
        tensors = load_file(str(path))
        if "mu" not in tensors or "cov" not in tensors:
            raise ModelError(f"{path} lacks the 'mu' and 'cov' tensors of a NIQE model")
        return cls(tensors["mu"], tensors["cov"])

    @classmethod
    def from_dir(cls, weights_dir: str | Path | None = None) -> NIQE:
        """Load from a metric-weights folder (``None``: ``$CGIC_METRIC_WEIGHTS``)."""
        return cls.from_file(weights_file(weights_dir, NIQE_WEIGHTS_FILENAME))

    def __call__(self, image_u8: np.ndarray) -> float:
        """NIQE of a uint8 RGB (H, W, 3) or grey (H, W) image at least 96x96."""
        return self.score_gray(matlab_rgb2gray(image_u8) if image_u8.ndim == 3 else image_u8)

    def score_gray(self, gray: np.ndarray) -> float:
        """NIQE of a grey image with values in [0, 255] (any real dtype)."""
        features = niqe_block_features(gray)
        distorted_mu = np.nanmean(features, axis=0)
        # MATLAB nancov: drop every block with a NaN feature, normalise by N-1.
        complete = features[~np.isnan(features).any(axis=1)]
        if complete.shape[0] < 2:
            return math.nan
        distorted_cov = np.cov(complete, rowvar=False)
        difference = self.pristine_mu - distorted_mu
        pooled_inverse = np.linalg.pinv((self.pristine_cov + distorted_cov) / 2)
        return float(np.sqrt(difference @ pooled_inverse @ difference))


def matlab_rgb2gray(image_u8: np.ndarray) -> np.ndarray:
    """MATLAB ``rgb2gray`` of a uint8 RGB image, as float64 integers in [0, 255]."""
    if image_u8.dtype != np.uint8 or image_u8.ndim != 3 or image_u8.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {image_u8.dtype} {image_u8.shape}")
    rgb = image_u8.astype(np.float64)
    gray = _RGB2GRAY[0] * rgb[..., 0] + _RGB2GRAY[1] * rgb[..., 1] + _RGB2GRAY[2] * rgb[..., 2]
    # MATLAB's cast to uint8 rounds half away from zero; values are non-negative.
    return np.floor(gray + 0.5)


def niqe_block_features(gray: np.ndarray) -> np.ndarray:
    """The (blocks, 36) NIQE feature matrix: 18 features at full, then half resolution."""
    gray = np.asarray(gray, dtype=np.float64)
    if gray.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got shape {gray.shape}")
    blocks_y = gray.shape[0] // NIQE_BLOCK_SIZE
    blocks_x = gray.shape[1] // NIQE_BLOCK_SIZE
    if blocks_y == 0 or blocks_x == 0:
        raise ValueError(f"NIQE needs an image of at least 96x96, got {gray.shape[1]}x{gray.shape[0]}")
    image = gray[: blocks_y * NIQE_BLOCK_SIZE, : blocks_x * NIQE_BLOCK_SIZE]
    per_scale = []
    for scale in (1, 2):
        normalised = _local_normalise(image)
        size = NIQE_BLOCK_SIZE // scale
        per_scale.append(
            np.array(
                [
                    _block_features(normalised[by * size : (by + 1) * size, bx * size : (bx + 1) * size])
                    for by in range(blocks_y)
                    for bx in range(blocks_x)
                ]
            )
        )
        if scale == 1:
            # BasicSR resizes in [0, 1] and scales back; kept for identical rounding.
            image = matlab_imresize_half(image / 255.0) * 255.0
    return np.concatenate(per_scale, axis=1)


def _local_normalise(image: np.ndarray) -> np.ndarray:
    window = _gaussian_window()
    mu = _filter_replicate(image, window)
    sigma = np.sqrt(np.abs(_filter_replicate(image * image, window) - mu * mu))
    return (image - mu) / (sigma + 1)


@lru_cache(maxsize=1)
def _gaussian_window() -> np.ndarray:
    # MATLAB fspecial('gaussian', 7, 7/6), same operation order.
    radius = (_GAUSSIAN_SIZE - 1) // 2
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1].astype(np.float64)
    window = np.exp(-(x * x + y * y) / (2 * _GAUSSIAN_SIGMA * _GAUSSIAN_SIGMA))
    window[window < np.finfo(np.float64).eps * window.max()] = 0
    window = window / window.sum()
    window.setflags(write=False)
    return window


def _filter_replicate(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.convolve(image, window, mode='nearest')`` for a symmetric window.

    Accumulates tap by tap in row-major order starting from 0.0, the order
    scipy's C loop uses, so flat areas round the same way as in BasicSR.
    """
    radius = window.shape[0] // 2
    padded = np.pad(image, radius, mode="edge")
    height, width = image.shape
    result = np.zeros_like(image)
    for dy in range(window.shape[0]):
        for dx in range(window.shape[1]):
            result += window[dy, dx] * padded[dy : dy + height, dx : dx + width]
    return result


def _block_features(block: np.ndarray) -> list[float]:
    alpha, beta_left, beta_right = _fit_aggd(block)
    features = [alpha, (beta_left + beta_right) / 2]
    for shift in _PAIR_SHIFTS:
        # circshift within the block, as the original code does.
        products = block * np.roll(block, shift, axis=(0, 1))
        alpha, beta_left, beta_right = _fit_aggd(products)
        mean = (beta_right - beta_left) * (math.gamma(2 / alpha) / math.gamma(1 / alpha))
        features.extend([alpha, mean, beta_left, beta_right])
    return features


@lru_cache(maxsize=1)
def _aggd_shape_table() -> tuple[np.ndarray, np.ndarray]:
    shapes = np.arange(0.2, 10.001, 0.001)
    reciprocal = np.reciprocal(shapes)
    gamma = np.vectorize(math.gamma, otypes=[np.float64])
    ratio = np.square(gamma(reciprocal * 2)) / (gamma(reciprocal) * gamma(reciprocal * 3))
    return shapes, ratio


def _fit_aggd(values: np.ndarray) -> tuple[float, float, float]:
    """Moment-matching fit of an asymmetric generalised Gaussian: (alpha, beta_l, beta_r)."""
    shapes, ratio = _aggd_shape_table()
    values = values.ravel()
    # An empty side gives NaN, as MATLAB's mean([]) does; NIQE drops such blocks later.
    with np.errstate(invalid="ignore", divide="ignore"):
        left_std = _root_mean_square(values[values < 0])
        right_std = _root_mean_square(values[values > 0])
        gamma_hat = left_std / right_std
        r_hat = np.mean(np.abs(values)) ** 2 / np.mean(values**2)
        r_hat_normalised = (r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1)) / ((gamma_hat**2 + 1) ** 2)
        alpha = float(shapes[np.argmin((ratio - r_hat_normalised) ** 2)])
        scale = math.sqrt(math.gamma(1 / alpha) / math.gamma(3 / alpha))
        return alpha, float(left_std * scale), float(right_std * scale)


def _root_mean_square(values: np.ndarray) -> float:
    if values.size == 0:
        return math.nan
    return float(np.sqrt(np.mean(values**2)))


def matlab_imresize_half(image: np.ndarray) -> np.ndarray:
    """MATLAB ``imresize(image, 0.5)``: bicubic with antialiasing, symmetric borders."""
    return _resize_axis(_resize_axis(image, 0), 1)


def _resize_axis(image: np.ndarray, axis: int) -> np.ndarray:
    weights, first_index = _matlab_bicubic_half_weights(image.shape[axis])
    taps = weights.shape[1]
    pad_before = int(-first_index.min())
    pad_after = int(first_index.max() + taps - image.shape[axis])
    pad = [(0, 0), (0, 0)]
    pad[axis] = (pad_before, max(pad_after, 0))
    padded = np.moveaxis(np.pad(image, pad, mode="symmetric"), axis, 0)
    rows = []
    for out_index in range(weights.shape[0]):
        start = first_index[out_index] + pad_before
        rows.append(np.tensordot(weights[out_index], padded[start : start + taps], axes=(0, 0)))
    return np.moveaxis(np.stack(rows), 0, axis)


@lru_cache(maxsize=16)
def _matlab_bicubic_half_weights(length: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-sample weights and 0-based first input index for halving ``length``.

    A port of MATLAB's (and BasicSR's) contributions(): the cubic kernel is
    stretched by 1/scale for antialiasing and all-zero edge taps are dropped.
    """
    scale = 0.5
    out_length = math.ceil(length * scale)
    kernel_width = 4 / scale
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    weights = scale * _cubic((u[:, None] - indices) * scale)
    weights = weights / weights.sum(axis=1, keepdims=True)
    if np.any(weights[:, 0] == 0):
        indices, weights = indices[:, 1:], weights[:, 1:]
    if np.any(weights[:, -1] == 0):
        indices, weights = indices[:, :-1], weights[:, :-1]
    # MATLAB indices are 1-based.
    return weights, indices[:, 0].astype(np.int64) - 1


def _cubic(x: np.ndarray) -> np.ndarray:
    absx = np.abs(x)
    absx2 = absx**2
    absx3 = absx**3
    near = (1.5 * absx3 - 2.5 * absx2 + 1) * (absx <= 1)
    far = (-0.5 * absx3 + 2.5 * absx2 - 4 * absx + 2) * ((absx > 1) & (absx <= 2))
    return near + far
