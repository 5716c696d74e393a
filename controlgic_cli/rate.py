"""Rate control: exact file sizes for every plan along one path, from one network pass.

The indices of every cell at every granularity do not depend on the ratios
(api.Analysis holds them), so the size of the file any plan would produce is
a sum of Huffman code lengths, mask bits and the header, known without
running the network again. Rate control walks a one-dimensional path through
the ratio space, one cell at a time:

    step 0            everything coarse                 (0, 0, 1)
    steps 1..N16      coarse cells become medium, highest 16x16 entropy first
    step N16          everything medium                 (0, 1, 0)
    steps N16+1..     medium cells become fine, highest 8x8 entropy first
    step N16+N8       everything fine                   (1, 0, 0)

Along it the token count only grows (one coarse token becomes four medium
ones, one medium token four fine ones), so the size is monotone except where
Huffman code lengths conspire against it; the search below never relies on
monotonicity. Every plan on the path is what the planner itself chooses for
the corresponding ratios, since the planner picks lowest-entropy cells first.

Dataset budgets share one entropy threshold per phase over all images: the
cells released from coarse (then medium) are the globally highest-entropy
ones, so complex images get more bits than simple ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .container import HEADER_SIZE
from .entropy_coder import IndexCoder
from .planner import GranularityPlan, PatchEntropy
from .ratios import PPM


def _ceil_bytes(bits: np.ndarray) -> np.ndarray:
    return -(-bits // 8)


@dataclass(frozen=True)
class RateSummary:
    """One image's file size at every step of its path and its sorted patch entropies.

    Everything dataset_steps / choose_dataset read, without the cell orders
    (the write pass recomputes the path anyway). Entropies are the planner's
    own float32 values, so the global release order is the same as from
    the full RatePath; sizes fit in int32 (files are far below 2 GB).
    """

    sizes: np.ndarray  # int64 in a RatePath, int32 in a summary; length n16 + n8 + 1
    coarse_entropy: np.ndarray  # float32, ascending
    medium_entropy: np.ndarray

    @property
    def coarse_cells(self) -> int:
        return self.coarse_entropy.size

    @property
    def steps(self) -> int:
        """The last step (all fine)."""
        return self.sizes.size - 1


@dataclass(frozen=True)
class RatePath(RateSummary):
    """Exact .cgic size in bytes at every step of one image's path, and the cells each step changes."""

    coarse_order: np.ndarray  # 16x16 cells, ascending entropy (stable: raster order breaks ties)
    medium_order: np.ndarray  # 8x8 cells, ascending entropy
    coarse_shape: tuple[int, int]
    medium_shape: tuple[int, int]

    def plan(self, step: int) -> GranularityPlan:
        n16, n8 = self.coarse_cells, self.medium_order.size
        if not 0 <= step <= n16 + n8:
            raise ValueError(f"step {step} outside 0..{n16 + n8}")
        coarse = np.zeros(n16, bool)
        medium = np.zeros(n8, bool)
        if step <= n16:
            coarse[self.coarse_order[: n16 - step]] = True
            coarse = coarse.reshape(self.coarse_shape)
            medium = ~np.kron(coarse, np.ones((2, 2), bool))
        else:
            medium[self.medium_order[: n8 - (step - n16)]] = True
            coarse = coarse.reshape(self.coarse_shape)
            medium = medium.reshape(self.medium_shape)
        return GranularityPlan(coarse=coarse, medium=medium)

    def summary(self) -> RateSummary:
        """What a dataset budget's reduce needs of this path, in 8 bytes per step instead of 20."""
        return RateSummary(
            sizes=self.sizes.astype(np.int32),
            coarse_entropy=self.coarse_entropy.astype(np.float32, copy=False),
            medium_entropy=self.medium_entropy.astype(np.float32, copy=False),
        )

    def ratios_ppm(self, step: int) -> tuple[int, int, int]:
        """Area fractions of the plan at `step`, in ppm summing to 1e6 (for the header)."""
        n16, n8 = self.coarse_cells, self.medium_order.size
        if step <= n16:
            coarse_ppm = ((n16 - step) * PPM + n16 // 2) // n16
            return 0, PPM - coarse_ppm, coarse_ppm
        fine_ppm = ((step - n16) * PPM + n8 // 2) // n8
        return fine_ppm, PPM - fine_ppm, 0


def rate_path(
    entropy: PatchEntropy, indices: tuple[np.ndarray, np.ndarray, np.ndarray], coders: dict[str, IndexCoder]
) -> RatePath:
    fine_idx, medium_idx, coarse_idx = indices
    h16, w16 = entropy.coarse.shape
    h8, w8 = entropy.medium.shape
    n16, n8 = h16 * w16, h8 * w8
    fine_len = coders["fine"].code_lengths[fine_idx]
    medium_len = coders["medium"].code_lengths[medium_idx]
    coarse_len = coders["coarse"].code_lengths[coarse_idx].ravel()
    # Bits of the four medium tokens under each coarse cell, and the four fine tokens under each medium cell.
    medium_under_coarse = medium_len.reshape(h16, 2, w16, 2).sum(axis=(1, 3)).ravel()
    fine_under_medium = fine_len.reshape(h8, 2, w8, 2).sum(axis=(1, 3)).ravel()

    coarse_order = np.argsort(entropy.coarse.ravel(), kind="stable")
    medium_order = np.argsort(entropy.medium.ravel(), kind="stable")

    # Phase 1, step s: the n16 - s lowest-entropy coarse cells stay coarse, the others are medium.
    kept = np.arange(n16, -1, -1)
    coarse_bits = np.concatenate([[0], np.cumsum(coarse_len[coarse_order])])[kept]
    released = np.concatenate([[0], np.cumsum(medium_under_coarse[coarse_order][::-1])])
    steps1 = np.arange(n16 + 1)
    medium_bits1 = released[steps1]
    mask_bits1 = n16 + 4 * steps1
    sizes1 = HEADER_SIZE + _ceil_bytes(mask_bits1) + _ceil_bytes(coarse_bits) + _ceil_bytes(medium_bits1)

    # Phase 2, step t: the n8 - t lowest-entropy medium cells stay medium, the others are fine.
    kept = np.arange(n8 - 1, -1, -1)
    medium_bits2 = np.concatenate([[0], np.cumsum(medium_len.ravel()[medium_order])])[kept]
    fine_bits2 = np.cumsum(fine_under_medium[medium_order][::-1])
    sizes2 = HEADER_SIZE + _ceil_bytes(np.full(n8, n16 + n8)) + _ceil_bytes(medium_bits2) + _ceil_bytes(fine_bits2)

    return RatePath(
        sizes=np.concatenate([sizes1, sizes2]).astype(np.int64),
        coarse_order=coarse_order,
        medium_order=medium_order,
        coarse_shape=(h16, w16),
        medium_shape=(h8, w8),
        coarse_entropy=entropy.coarse.ravel()[coarse_order],
        medium_entropy=entropy.medium.ravel()[medium_order],
    )


@dataclass(frozen=True)
class RateChoice:
    step: int
    size_bytes: int
    reachable: bool  # False: the target lies outside what this image can reach
    note: str = ""


def choose_for_bpp(path: RatePath, target_bpp: float, pixels: int) -> RateChoice:
    """The step whose bpp is nearest the target (the lower step on a tie)."""
    bpp = 8.0 * path.sizes / pixels
    step = int(np.argmin(np.abs(bpp - target_bpp)))
    low, high = float(bpp.min()), float(bpp.max())
    if target_bpp < low or target_bpp > high:
        return RateChoice(
            step,
            int(path.sizes[step]),
            False,
            f"target {target_bpp:g} bpp is outside this image's range {low:.4f}-{high:.4f} bpp",
        )
    return RateChoice(step, int(path.sizes[step]), True)


def choose_for_size(path: RatePath, max_bytes: int) -> RateChoice:
    """The highest step whose file fits in max_bytes; the smallest file if none fits."""
    fits = np.flatnonzero(path.sizes <= max_bytes)
    if fits.size == 0:
        step = int(np.argmin(path.sizes))
        return RateChoice(
            step,
            int(path.sizes[step]),
            False,
            f"target {max_bytes} bytes is below this image's smallest file ({int(path.sizes[step])} bytes)",
        )
    step = int(fits[-1])
    return RateChoice(step, int(path.sizes[step]), True)


def dataset_steps(paths: list[RateSummary], global_release: int) -> list[int]:
    """Per-image steps when the `global_release` highest-entropy cells of the whole set are released.

    Phase 1 releases coarse cells of all images in descending 16x16 entropy;
    only when every coarse cell is released does phase 2 release medium cells
    in descending 8x8 entropy. Ties go to the earlier image, then the later
    raster position, matching each image's own path.
    """
    total_coarse = sum(p.coarse_cells for p in paths)
    if global_release <= total_coarse:
        keys = _release_order(paths, phase=1)
        chosen = keys[:global_release]
        counts = np.bincount(chosen, minlength=len(paths))
        return [int(c) for c in counts]
    keys = _release_order(paths, phase=2)
    chosen = keys[: global_release - total_coarse]
    counts = np.bincount(chosen, minlength=len(paths))
    return [p.coarse_cells + int(c) for p, c in zip(paths, counts, strict=True)]


def _release_order(paths: list[RateSummary], phase: int) -> np.ndarray:
    """Image number of each released cell, in global release order for the phase."""
    entropies, images, ranks = [], [], []
    for number, path in enumerate(paths):
        values = path.coarse_entropy if phase == 1 else path.medium_entropy
        # Each image releases its own cells from the top of its order down.
        values = values[::-1]
        entropies.append(values)
        images.append(np.full(values.size, number))
        ranks.append(np.arange(values.size))
    entropy = np.concatenate(entropies)
    image = np.concatenate(images)
    rank = np.concatenate(ranks)
    order = np.lexsort((rank, image, -entropy.astype(np.float64)))
    return image[order]


def choose_dataset(paths: list[RateSummary], pixels: list[int], target_bpp: float) -> tuple[list[int], bool]:
    """Per-image steps meeting a dataset bpp (total bits / total pixels) nearest the target."""
    total_pixels = sum(pixels)
    total_steps = sum(p.steps for p in paths)

    def dataset_bpp(release: int) -> float:
        steps = dataset_steps(paths, release)
        return 8.0 * sum(int(p.sizes[s]) for p, s in zip(paths, steps, strict=True)) / total_pixels

    low, high = 0, total_steps
    reachable = dataset_bpp(0) <= target_bpp <= dataset_bpp(total_steps)
    # Largest release not above the target, then compare with its successor.
    while low < high:
        middle = (low + high + 1) // 2
        if dataset_bpp(middle) <= target_bpp:
            low = middle
        else:
            high = middle - 1
    best = low
    if best < total_steps and abs(dataset_bpp(best + 1) - target_bpp) < abs(dataset_bpp(best) - target_bpp):
        best += 1
    return dataset_steps(paths, best), reachable
