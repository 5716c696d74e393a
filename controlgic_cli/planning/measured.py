"""Measured planner: patch scores from what each granularity actually decodes to.

The paper plans from patch entropy (planner.py), a guess at where fine tokens
pay off. This planner asks the decoder instead: it decodes the image three
times, all coarse, all medium and all fine, and scores every patch by how
much its distortion falls when it is sent one granularity finer (an 8x8
patch: medium -> fine; a 16x16 patch: coarse -> medium, counting the 8x8
patches its release lets go fine, release_scores). Each step adds three
tokens either way, so the scores are gains per step in one unit, and the
planner and rate control (rate.py) spend tokens where they gain most. Scores
of different images are in the same unit too, so a dataset budget's shared
threshold gives the set the split that loses least.

A pixel's distortion is its squared error summed over R, G, B (0-255) plus
TEXTURE_WEIGHT times the difference in local contrast (the standard
deviation of grey over a 5x5 window) between decoded and source. Squared
error alone sends fine tokens to edges and leaves texture coarse, which
measured worse LPIPS than the entropy planner (+2 to +7 % on 12 Kodak
images); the contrast term values texture that is present even where it is
not pixel-exact. To that, each 8x8 cell adds a perceptual distance in the
style of LPIPS, taken with cgic's own encoder (its hidden maps at H/4 and H/8,
unit-normalised over channels, TiledNetwork.feature_distances): on Kodak it
lowered LPIPS by another 1-4 % and DISTS by about 1 % at equal bpp, where an ImageNet
AlexNet would have shipped that network's weights and their terms with the
codec. docs/rate-control.md has the comparisons.

The cost is three decoder passes and three passes through the encoder's first
two levels per image at encode time (the source's come from its encoding pass
when the image is one tile; else a fourth); decoding a file is unchanged, and
the scores are an encoder choice that files do not record.

Model v2 (format version 5) is measured in its backbone's latent instead
(latent_scores): each 8x8 cell's distortion is the squared distance of the
latent rebuilt from all-coarse, all-medium or all-fine tokens from the
source's latent, so no decoder pass is needed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..inference import TiledNetwork
from ..tiling import TileSpec, plan_tiles
from .planner import PatchScores

# Weight of the local-contrast difference against squared error (sum over RGB,
# 0-255). 190-200 balances the two terms' coarse-to-fine falls on Kodak (their
# median ratio is about 380:1, and half of that measured best: +0.60 dB and
# -5.8 % DISTS at 0.2 bpp, LPIPS unchanged, against the entropy planner).
TEXTURE_WEIGHT = 200.0
# Weights of the encoder-feature distances at H/4 and H/8 (summed per 8x8 cell)
# against squared error plus contrast: a third to two fifths of the median ratio of
# their coarse-to-fine falls on Kodak, the best of the mixes tried on 12
# images and confirmed on the other 12 (docs/rate-control.md).
FEATURE_WEIGHTS = (86_000.0, 832_500.0)
CONTRAST_RADIUS = 2  # a 5x5 window
BAND_ROWS = 256  # a multiple of 16
GREY_WEIGHTS = (0.299, 0.587, 0.114)
# Tiles of the planner's decodes and feature passes. The scores are an encoder
# heuristic that no decoder recomputes, so they need not be exact at tile seams,
# and a decode of smaller tiles runs faster per pixel (it stays in cache) than the
# exact default (2048 px cores with 192 px margins). On a 6000x4000 photo these
# scored in 100 s instead of 140 s, the largest change 0.5 % of the largest score
# (docs/robustness.md). An image of at most 1024 px per side is one tile either way.
PLANNER_TILES = TileSpec(core=1024, margin=64)


def measured_scores(
    network: TiledNetwork,
    rgb: np.ndarray,
    indices: tuple[np.ndarray, np.ndarray, np.ndarray],
    on_progress: Callable[[int, int], None] | None = None,
    source_features: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> PatchScores:
    """Distortion gains of every 16x16 (coarse -> medium) and 8x8 (medium -> fine) patch of a padded image.

    on_progress(done, total) follows the tiles of the three decodes and of the feature pass.
    source_features: the encoder's hidden maps of rgb from its encoding pass, if it was one tile (NetworkPass).
    """
    if network.is_latent:
        return latent_scores(network, rgb, indices, None if source_features is None else source_features[1])
    height, width = rgb.shape[:2]
    coarse_shape, medium_shape = (height // 16, width // 16), (height // 8, width // 8)
    if network.tiles.core >= PLANNER_TILES.core:  # a codec given smaller tiles (to bound memory) keeps its own
        network = network.with_tiles(PLANNER_TILES)
    tile_done = _counter(on_progress, 4 * len(plan_tiles(height, width, network.tiles)))
    decoded = {
        level: network.decode(indices, np.full(coarse_shape, coarse), np.full(medium_shape, medium), tile_done)
        for level, coarse, medium in (("coarse", True, False), ("medium", False, True), ("fine", False, False))
    }
    sums8 = {level: np.empty(medium_shape, np.float64) for level in decoded}
    # Bands of rows keep the float temporaries of a large photo small; each band
    # reads CONTRAST_RADIUS rows beyond its edges, so the result is that of the whole image.
    for top in range(0, height, BAND_ROWS):
        bottom = min(height, top + BAND_ROWS)
        above, below = max(0, top - CONTRAST_RADIUS), min(height, bottom + CONTRAST_RADIUS)
        inner = slice(top - above, bottom - above)
        source = rgb[above:below].astype(np.float32)
        source_contrast = local_contrast(source)[inner]
        for level, image in decoded.items():
            band = image[above:below].astype(np.float32)
            distortion = np.square(band[inner] - source[inner]).sum(axis=2)
            distortion += np.float32(TEXTURE_WEIGHT) * np.abs(local_contrast(band)[inner] - source_contrast)
            sums8[level][top // 8 : bottom // 8] = cell_sums(distortion, 8)
    fine_weight, medium_weight = FEATURE_WEIGHTS
    distances = network.feature_distances(rgb, list(decoded.values()), tile_done, source_features)
    for level, (at_fine, at_medium) in zip(decoded, distances, strict=True):
        sums8[level] += fine_weight * cell_sums(at_fine, 2) + medium_weight * at_medium
    sums16 = {level: cell_sums(sums, 2) for level, sums in sums8.items()}
    fine_gain = sums8["medium"] - sums8["fine"]
    release = release_scores(sums16["coarse"] - sums16["medium"], fine_gain)
    return PatchScores(medium=fine_gain.astype(np.float32), coarse=release.astype(np.float32), fine_margin=0.0)


def latent_scores(
    network: TiledNetwork, rgb: np.ndarray, indices: tuple[np.ndarray, ...], source_latent: torch.Tensor | None = None
) -> PatchScores:
    """Model v2's measured planner: the gains, measured in the backbone's latent instead of in pixels.

    The latent the decoder gets is rebuilt from all-coarse, all-medium and
    all-fine tokens, and each 8x8 cell's distortion is its squared distance
    from the source's latent (one latent position per 8x8 cell). No decoder or
    encoder pass is needed beyond the encoding one, where decoding three
    images with the backbone's decoder would cost about as much as the rest of
    an encode three times over.
    """
    distances = network.latent_distances(rgb, indices, source_latent)
    fine_gain = distances["medium"] - distances["fine"]
    release = release_scores(cell_sums(distances["coarse"] - distances["medium"], 2), fine_gain)
    return PatchScores(medium=fine_gain.astype(np.float32), coarse=release.astype(np.float32), fine_margin=0.0)


def _counter(on_progress: Callable[[int, int], None] | None, total: int) -> Callable[[], None] | None:
    """A callback that counts calls and reports each to on_progress as (done, total)."""
    if on_progress is None:
        return None
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        on_progress(done, total)

    return step


def release_scores(coarse_gain: np.ndarray, fine_gain: np.ndarray) -> np.ndarray:
    """A 16x16 cell's score: the best mean gain per step of releasing it together with its k best 8x8 cells.

    Releasing a coarse cell is also what lets its 8x8 cells go fine, so a cell
    that gains little from medium but holds one patch that gains much from
    fine must not wait behind cells that gain more from medium alone. Scoring
    it by its own gain only cost 3 % LPIPS and up to 0.7 dB on some images at
    0.39 bpp; this score (each k = 0..4 is a run of k + 1 steps, k of them
    its best 8x8 cells) gained 0.2 dB and 2 % on LPIPS and DISTS there
    (docs/rate-control.md).
    """
    h16, w16 = coarse_gain.shape
    children = fine_gain.reshape(h16, 2, w16, 2).transpose(0, 2, 1, 3).reshape(h16, w16, 4)
    best_first = -np.sort(-children, axis=2)
    released = np.cumsum(np.concatenate([coarse_gain[..., None], best_first], axis=2), axis=2)
    return (released / np.arange(1, 6)).max(axis=2)


def local_contrast(rgb: np.ndarray) -> np.ndarray:
    """float32 (H, W): standard deviation of grey (0-255) over a square window, edges replicated."""
    grey = sum(np.float64(w) * rgb[..., c] for c, w in enumerate(GREY_WEIGHTS))
    mean = box_mean(grey, CONTRAST_RADIUS)
    variance = box_mean(grey * grey, CONTRAST_RADIUS) - mean * mean
    # Cancellation can leave a flat window's variance a hair below zero.
    return np.sqrt(np.maximum(variance, 0.0)).astype(np.float32)


def box_mean(values: np.ndarray, radius: int) -> np.ndarray:
    """Mean over the (2r+1) x (2r+1) window around every element of a 2-D float64 array, edges replicated."""
    size = 2 * radius + 1
    padded = np.pad(values, radius, mode="edge")
    for axis in (0, 1):
        summed = np.cumsum(padded, axis=axis)
        summed = np.concatenate([np.zeros_like(summed.take([0], axis=axis)), summed], axis=axis)
        length = summed.shape[axis] - size
        padded = summed.take(np.arange(size, size + length), axis=axis) - summed.take(np.arange(length), axis=axis)
    return padded / (size * size)


def cell_sums(values: np.ndarray, cell: int) -> np.ndarray:
    """Sums over non-overlapping cell x cell blocks (sides are multiples of cell)."""
    height, width = values.shape
    return values.reshape(height // cell, cell, width // cell, cell).sum(axis=(1, 3), dtype=np.float64)
