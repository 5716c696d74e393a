"""Rate control: exact file sizes for every plan along one path, from one network pass.

The indices of every cell at every granularity do not depend on the ratios
(api.Analysis holds them), so the size of the file any plan would produce is
a sum of Huffman code lengths, mask bits and the header, known without
running the network again. With neighbour-rank coding a code length also
depends on which neighbours are sent; index_coding.py accounts for that, and
the sizes stay exact.

Rate control walks a one-dimensional path through the plans, driven by one
threshold T on the planner's patch scores (planner.PatchScores: entropy, or
measured distortion gains), falling from above every score to below all:

    a 16x16 cell stops being coarse when T falls below its score s16;
    an 8x8 cell becomes fine when T falls below its score s8 minus the
    scores' fine margin, and not before its 16x16 cell has stopped being coarse.

So the path starts all coarse (0, 0, 1), ends all fine (1, 0, 0), and in
between releases coarse cells and refines medium ones side by side: the
parts of a photo that gain least stay coarse while those that gain most
already go fine. One step is one cell (+3 tokens), or a coarse cell together
with those of its 8x8 cells already past the fine threshold. Every plan on
the path is what the planner itself chooses for the corresponding ratios:
coarse is always the lowest-s16 cells, fine the highest-s8 cells outside
them. Along the path the token count only grows, so the size is monotone
except where Huffman code lengths conspire against it (with version-3 files
a step that makes a neighbour's rank or a mask group cheaper can shrink the
file by a byte or two); the search below never relies on it.

Dataset budgets share the one threshold over all images: the steps released
are the globally highest-threshold ones, so complex images get more bits
than simple ones (with measured scores, equal thresholds are equal
distortion gains: the split that loses least over the set).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..coding.container import HEADER_SIZE, RECORD_HEAD_SIZE
from ..coding.index_coding import UsageCoding
from ..coding.mask_coding import BitMasks
from .planner import GranularityPlan, PatchScores
from .ratios import PPM


def _ceil_bytes(bits: np.ndarray) -> np.ndarray:
    return -(-bits // 8)


@dataclass(frozen=True)
class RateSummary:
    """One image's file size at every step of its path and the threshold each step passes.

    Everything dataset_steps / choose_dataset read, without the cell order
    (the write pass recomputes the path anyway). Thresholds are the path's
    own float32 values, so the global release order is the same as from the
    full RatePath; sizes fit in int32 (files are far below 2 GB).
    """

    sizes: np.ndarray  # int64 in a RatePath, int32 in a summary; one per step, step 0 all coarse
    step_thresholds: np.ndarray  # float32, non-increasing; the threshold passed by steps 1..steps

    @property
    def steps(self) -> int:
        """The last step (all fine)."""
        return self.sizes.size - 1


@dataclass(frozen=True)
class RatePath(RateSummary):
    """Exact .cgic size in bytes at every step of one image's path, and the cells each step changes."""

    # Cells in release order: 16x16 cell c as c (leaves coarse), 8x8 cell j as n16 + j (becomes fine).
    events: np.ndarray
    step_events: np.ndarray  # events done by each step
    coarse_shape: tuple[int, int]
    correction_budgets: np.ndarray  # int64 data bytes of the colour-correction record at each step (0: none)

    def correction_budget(self, step: int) -> int | None:
        """The colour-correction record's data size in the file at `step`, or None for files without one."""
        return int(self.correction_budgets[step]) or None

    def _released(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= step <= self.steps:
            raise ValueError(f"step {step} outside 0..{self.steps}")
        n16 = self.coarse_shape[0] * self.coarse_shape[1]
        done = self.events[: self.step_events[step]]
        return done[done < n16], done[done >= n16] - n16

    def plan(self, step: int) -> GranularityPlan:
        released, fine = self._released(step)
        coarse = np.ones(self.coarse_shape, bool)
        coarse.ravel()[released] = False
        medium = ~np.kron(coarse, np.ones((2, 2), bool))
        medium.ravel()[fine] = False
        return GranularityPlan(coarse=coarse, medium=medium)

    def summary(self) -> RateSummary:
        """What a dataset budget's reduce needs of this path, in 8 bytes per step."""
        return RateSummary(
            sizes=self.sizes.astype(np.int32), step_thresholds=self.step_thresholds.astype(np.float32, copy=False)
        )

    def ratios_ppm(self, step: int) -> tuple[int, int, int]:
        """Area fractions of the plan at `step`, in ppm summing to 1e6 (for the header).

        Rounded so that the planner, given them, picks the same number of cells.
        """
        released, fine = self._released(step)
        n16 = self.coarse_shape[0] * self.coarse_shape[1]
        n8 = 4 * n16
        coarse_ppm = ((n16 - released.size) * PPM + n16 // 2) // n16
        covered_ppm = ((n8 - fine.size) * PPM + n8 // 2) // n8
        return PPM - covered_ppm, covered_ppm - coarse_ppm, coarse_ppm


def rate_path(
    scores: PatchScores,
    indices: tuple[np.ndarray, np.ndarray, np.ndarray],
    coding: UsageCoding,
    masks: BitMasks,
    record_bytes: int = 0,
    correction_budget: Callable[[np.ndarray], np.ndarray] | None = None,
) -> RatePath:
    """The path of one image; record_bytes: the file's alpha and metadata records, the same at every step.

    correction_budget: for files with a colour-correction record, its data size given the bytes of
    everything else (colour_correction.budget_bytes); the record then counts at every step.
    """
    fine_idx, medium_idx, coarse_idx = indices
    h16, w16 = scores.coarse.shape
    h8, w8 = scores.medium.shape
    n16, n8 = h16 * w16, h8 * w8

    e16 = scores.coarse.ravel()
    e8 = scores.medium.ravel()
    parent = (np.arange(h8)[:, None] // 2 * w16 + np.arange(w8)[None, :] // 2).ravel()
    # The threshold at which each cell changes: an 8x8 cell waits for its 16x16 cell.
    fine_at = e8 - np.float32(scores.fine_margin)
    waits = fine_at > e16[parent]
    thresholds = np.concatenate([e16, np.where(waits, e16[parent], fine_at)])
    is_fine = np.concatenate([np.zeros(n16, np.int8), np.ones(n8, np.int8)])
    own_score = np.concatenate([e16, e8])
    position = np.concatenate([np.arange(n16), np.arange(n8)])
    # Falling threshold; at equal thresholds coarse cells first (a cell's parent before it), then
    # higher score, then later raster position: the planner's own tie-breaks.
    events = np.lexsort((-position, -own_score, is_fine, -thresholds))

    # A step may not stop between a coarse cell and those of its 8x8 cells that were waiting for it.
    rank = np.empty_like(events)
    rank[events] = np.arange(events.size)
    child_rank = rank[n16:][waits]
    parent_rank = rank[parent[waits]]
    open_spans = np.zeros(events.size + 2, np.int64)
    np.add.at(open_spans, parent_rank + 1, 1)
    np.add.at(open_spans, child_rank + 1, -1)
    inside_group = np.cumsum(open_spans)[: events.size + 1] > 0
    step_events = np.flatnonzero(~inside_group)

    # Time t = events done. Each cell is sent during one interval of t: a coarse cell until it
    # is released, a medium cell from its coarse cell's release until it goes fine, a fine
    # cell from its medium cell's change on. The coding turns those into bits at every t.
    times = events.size
    released_at = rank[:n16] + 1
    fine_from = (rank[n16:] + 1).reshape(h8, w8)
    intervals = {
        "coarse": (np.zeros((h16, w16), np.int64), released_at.reshape(h16, w16)),
        "medium": (released_at[parent].reshape(h8, w8), fine_from),
        "fine": (np.repeat(np.repeat(fine_from, 2, axis=0), 2, axis=1), np.full(fine_idx.shape[:2], times + 1)),
    }
    stream_bytes = [
        _ceil_bytes(coding.bits_over_time(level, index_map, *intervals[level], times))
        for level, index_map in (("fine", fine_idx), ("medium", medium_idx), ("coarse", coarse_idx))
    ]
    mask_bytes = masks.bytes_over_time(released_at.reshape(h16, w16), fine_from, times)
    size_at = HEADER_SIZE + record_bytes + mask_bytes + sum(stream_bytes)
    budgets = np.zeros_like(size_at)
    if correction_budget is not None:
        budgets = correction_budget(size_at)
        size_at = size_at + RECORD_HEAD_SIZE + budgets
    sizes = size_at[step_events]

    return RatePath(
        sizes=sizes.astype(np.int64),
        correction_budgets=budgets[step_events].astype(np.int64),
        step_thresholds=thresholds[events][step_events[1:] - 1].astype(np.float32),
        events=events.astype(np.int32),
        step_events=step_events,
        coarse_shape=(h16, w16),
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
    low, high = float(bpp.min()), float(bpp.max())
    # Clipped first: from a target of 1e20 every difference rounds to the same float, and the tie would go
    # to the smallest file.
    step = int(np.argmin(np.abs(bpp - min(max(target_bpp, low), high))))
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


def choose_for_threshold(path: RateSummary, threshold: float) -> RateChoice:
    """The step that takes every step whose threshold is at least `threshold` (a quality level, quality.py).

    Step thresholds fall along the path, so this is a prefix: the plan the
    planner makes when every cell gaining at least `threshold` per step goes finer.
    """
    step = int(np.count_nonzero(path.step_thresholds >= threshold))
    return RateChoice(step, int(path.sizes[step]), True)


# A quality search stops once the bracketing files differ by less than this share of the size:
# a few more decodes would move the result by under half a percent of its bytes.
QUALITY_SIZE_TOLERANCE = 0.005


def choose_for_quality(
    path: RatePath, quality_at: Callable[[int], float], target: float, unit: str = "dB"
) -> tuple[RateChoice, float]:
    """About the smallest step whose quality (higher is better) reaches the target, and that quality.

    quality_at(step) decodes the plan at a step and measures it; it is called
    about log2(steps) times, by bisection, which assumes quality grows along
    the path. It does almost everywhere (each step adds detail) but not
    strictly, so the answer is a step that reaches the target, within
    QUALITY_SIZE_TOLERANCE of the bracketing step that does not, and not
    always the smallest such step. Out of reach: the largest file, with a note.
    """
    low, high = 0, path.steps
    high_quality = quality_at(high)
    if high_quality < target:
        note = f"target {target:g} {unit} is above what this image reaches ({high_quality:.2f} {unit} at most)"
        return RateChoice(high, int(path.sizes[high]), False, note), high_quality
    low_quality = quality_at(low) if high > low else high_quality
    if low_quality >= target:
        return RateChoice(low, int(path.sizes[low]), True), low_quality
    while high - low > 1 and path.sizes[high] > path.sizes[low] * (1 + QUALITY_SIZE_TOLERANCE):
        middle = (low + high) // 2
        quality = quality_at(middle)
        if quality >= target:
            high, high_quality = middle, quality
        else:
            low = middle
    return RateChoice(high, int(path.sizes[high]), True), high_quality


def global_release_order(paths: list[RateSummary]) -> np.ndarray:
    """The image each step of the whole set belongs to, highest threshold first.

    Each image's steps come in falling threshold order, so any prefix of this
    order takes a prefix of every image's path. Ties go to the earlier image,
    then the earlier step.
    """
    thresholds = np.concatenate([p.step_thresholds for p in paths])
    image = np.concatenate([np.full(p.steps, number) for number, p in enumerate(paths)])
    rank = np.concatenate([np.arange(p.steps) for p in paths])
    return image[np.lexsort((rank, image, -thresholds.astype(np.float64)))]


def dataset_steps(paths: list[RateSummary], global_release: int, order: np.ndarray | None = None) -> list[int]:
    """Per-image steps when the `global_release` highest-threshold steps of the whole set are taken.

    order: global_release_order(paths), when the caller asks for many releases.
    """
    if order is None:
        order = global_release_order(paths)
    return [int(c) for c in np.bincount(order[:global_release], minlength=len(paths))]


def choose_dataset(paths: list[RateSummary], pixels: list[int], target_bpp: float) -> tuple[list[int], bool]:
    """Per-image steps meeting a dataset bpp (total bits / total pixels) nearest the target."""
    total_pixels = sum(pixels)
    total_steps = sum(p.steps for p in paths)
    order = global_release_order(paths)  # once: the bisection below asks for many releases

    def dataset_bpp(release: int) -> float:
        steps = dataset_steps(paths, release, order)
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
    return dataset_steps(paths, best, order), reachable


def dataset_choices(paths: list[RateSummary], pixels: list[int], target_bpp: float) -> list[RateChoice]:
    """A dataset budget: each image's choice on its path for the mean target (choose_dataset), with the note
    every image carries when the set cannot reach it. The one implementation behind Codec.encode_dataset and
    the engines' map-reduce (batch/core.py), which calls it on RateSummary objects gathered from its workers."""
    if not paths:
        return []
    steps, reachable = choose_dataset(paths, pixels, target_bpp)
    note = "" if reachable else f"dataset target {target_bpp:g} bpp is outside what this set can reach"
    return [RateChoice(step, int(path.sizes[step]), reachable, note) for path, step in zip(paths, steps, strict=True)]
