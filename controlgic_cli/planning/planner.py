"""Granularity planner: per-patch scores -> fine/medium/coarse masks.

The scores say how much a patch gains from being sent at a finer
granularity; the planner keeps the lowest-scoring patches coarse, then
medium. This module computes the paper's score, spatial entropy; measured.py
computes one from decoding errors instead.

Paper Eq. 1-3: every grey pixel p in [-1, 1] is spread over n = 32 bins
b_k = -1 + 2k/31 with Gaussian weights exp(-(p - b_k)^2 / 2 sigma^2); the
weights are averaged over a patch, normalised, and the Shannon entropy (nats)
of that distribution is the patch's information density. As in the authors'
code, only 8x8 (medium grid) and 16x16 (coarse grid) entropies are needed:
fine is whatever is left.

Masks are chosen per image (never with batch-wide thresholds) with exact
token counts: coarse first, the round(r_c * N16) 16x16 cells of lowest
score; then medium, among the 8x8 cells not under a coarse cell, enough of
the lowest-scoring ones that coarse + medium cover round((r_c + r_m) * N8)
8x8 cells. Ties go to the earlier cell in raster order, so flat images are
planned like any other. Entropy is numpy float32 arithmetic, whatever
precision the network runs in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .ratios import PPM

ENTROPY_BINS = 32
# The authors' value: much narrower than the bin spacing 2/31, so this is
# close to a hard 32-level histogram of grey values.
ENTROPY_SIGMA = 0.01
ENTROPY_BAND_ROWS = 256  # a multiple of 16
# How far (nats) an 8x8 patch's entropy must lie above the rate path's
# threshold before it goes fine (rate.py). Measured on 12 Kodak images against
# the two-phase path (every coarse cell released before any fine one) and
# margins 0.5 / 1.5: 1.0 was best or tied at 0.2-0.6 bpp (at 0.2 bpp LPIPS
# -0.006, +0.2 dB; docs/rate-control.md).
ENTROPY_FINE_MARGIN = 1.0


@dataclass(frozen=True)
class PatchScores:
    """Per-patch scores of the 8x8 patches (H/8 grid) and 16x16 patches (H/16 grid); higher goes finer first.

    fine_margin: how far an 8x8 score must lie above the rate path's falling
    threshold before that patch goes fine (in the scores' own units; rate.py).
    """

    medium: np.ndarray  # float32 (H/8, W/8)
    coarse: np.ndarray  # float32 (H/16, W/16)
    fine_margin: float = 0.0


@dataclass(frozen=True)
class GranularityPlan:
    """Boolean masks: coarse (H/16, W/16); medium (H/8, W/8), never under a coarse cell."""

    coarse: np.ndarray
    medium: np.ndarray

    @property
    def fine(self) -> np.ndarray:
        """Fine mask on the H/4 grid: every position neither coarse nor medium."""
        covered = np.kron(self.coarse, np.ones((4, 4), bool)) | np.kron(self.medium, np.ones((2, 2), bool))
        return ~covered

    @property
    def token_counts(self) -> tuple[int, int, int]:
        """(fine, medium, coarse) number of transmitted indices."""
        return int(self.fine.sum()), int(self.medium.sum()), int(self.coarse.sum())


def grey_levels(rgb: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 grey in [-1, 1] (ITU-R 601 weights on the [-1, 1] channels)."""
    x = rgb.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    return np.float32(0.2989) * x[..., 0] + np.float32(0.5870) * x[..., 1] + np.float32(0.1140) * x[..., 2]


def patch_entropy(rgb: np.ndarray, sigma: float = ENTROPY_SIGMA, bins: int = ENTROPY_BINS) -> PatchScores:
    """Spatial entropy (nats) of the 8x8 and 16x16 patches of an image whose sides are multiples of 16."""
    height, width = rgb.shape[:2]
    if height % 16 or width % 16:
        raise ValueError(f"planner needs sides that are multiples of 16, got {width}x{height}")
    medium = np.empty((height // 8, width // 8), np.float32)
    coarse = np.empty((height // 16, width // 16), np.float32)
    # Bands of rows keep the float temporaries of a 100-megapixel photo at a
    # few hundred MB; every patch lies inside one band, so the result is the same.
    for top in range(0, height, ENTROPY_BAND_ROWS):
        band = slice(top, min(height, top + ENTROPY_BAND_ROWS))
        medium_band, coarse_band = _band_entropy(rgb[band], sigma, bins)
        medium[top // 8 : band.stop // 8] = medium_band
        coarse[top // 16 : band.stop // 16] = coarse_band
    return PatchScores(medium=medium, coarse=coarse, fine_margin=ENTROPY_FINE_MARGIN)


def _band_entropy(rgb: np.ndarray, sigma: float, bins: int) -> tuple[np.ndarray, np.ndarray]:
    height, width = rgb.shape[:2]
    grey = grey_levels(rgb)
    centres = np.linspace(-1.0, 1.0, bins, dtype=np.float32)
    inv_two_var = np.float32(1.0 / (2.0 * sigma * sigma))
    h8, w8 = height // 8, width // 8
    # Mean kernel weight per 8x8 patch, one bin at a time to keep memory at
    # O(pixels) instead of O(pixels x bins).
    mean8 = np.empty((bins, h8, w8), np.float32)
    for k, centre in enumerate(centres):
        weights = np.exp(-np.square(grey - centre) * inv_two_var)
        mean8[k] = weights.reshape(h8, 8, w8, 8).mean(axis=(1, 3))
    mean16 = mean8.reshape(bins, h8 // 2, 2, w8 // 2, 2).mean(axis=(2, 4))
    return _entropy(mean8), _entropy(mean16)


def _entropy(bin_means: np.ndarray) -> np.ndarray:
    total = bin_means.sum(axis=0, keepdims=True)
    # A pixel far from every bin centre (impossible for sigma >= spacing/10, but
    # guard anyway) would leave all weights at 0: treat that patch as flat.
    prob = np.divide(bin_means, total, out=np.zeros_like(bin_means), where=total > 0)
    logp = np.log(prob, out=np.zeros_like(prob), where=prob > 0)
    return (-(prob * logp).sum(axis=0)).astype(np.float32)


def weight_by_visibility(scores: PatchScores, alpha: np.ndarray) -> PatchScores:
    """Scores scaled by how visible each patch is: its mean alpha / 255 (alpha: uint8 (H, W), sides x16).

    A fully transparent patch then scores 0 and is among the first kept
    coarse, whatever its colour holds; a half-transparent one counts half.
    Applied to either planner's scores, so images without alpha are planned as before.
    """
    h8, w8 = scores.medium.shape
    visible8 = alpha.reshape(h8, 8, w8, 8).mean(axis=(1, 3), dtype=np.float64) / 255.0
    visible16 = visible8.reshape(h8 // 2, 2, w8 // 2, 2).mean(axis=(1, 3))
    return PatchScores(
        medium=(scores.medium * visible8).astype(np.float32),
        coarse=(scores.coarse * visible16).astype(np.float32),
        fine_margin=scores.fine_margin,
    )


def token_targets(ratios_ppm: tuple[int, int, int], coarse_cells: int) -> tuple[int, int]:
    """(coarse cells, medium cells) for an image with `coarse_cells` 16x16 cells; round half up."""
    _, medium_ppm, coarse_ppm = ratios_ppm
    n_coarse = (coarse_ppm * coarse_cells + PPM // 2) // PPM
    medium_cells = 4 * coarse_cells
    covered = ((coarse_ppm + medium_ppm) * medium_cells + PPM // 2) // PPM
    n_medium = min(max(covered - 4 * n_coarse, 0), medium_cells - 4 * n_coarse)
    return n_coarse, n_medium


def plan_from_scores(scores: PatchScores, ratios_ppm: tuple[int, int, int]) -> GranularityPlan:
    """Masks for one image from its patch scores and integer ratios (fine, medium, coarse)."""
    h16, w16 = scores.coarse.shape
    n_coarse, n_medium = token_targets(ratios_ppm, h16 * w16)

    coarse = np.zeros(h16 * w16, bool)
    # A stable sort keeps raster order among equal scores: the tie-break.
    coarse[np.argsort(scores.coarse.ravel(), kind="stable")[:n_coarse]] = True
    coarse = coarse.reshape(h16, w16)

    under_coarse = np.kron(coarse, np.ones((2, 2), bool)).ravel()
    candidates = np.flatnonzero(~under_coarse)
    order = np.argsort(scores.medium.ravel()[candidates], kind="stable")
    medium = np.zeros(under_coarse.size, bool)
    medium[candidates[order[:n_medium]]] = True
    return GranularityPlan(coarse=coarse, medium=medium.reshape(scores.medium.shape))
