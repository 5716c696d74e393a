"""Granularity planner: paper Eq. 1-3 entropy, exact per-image token counts, deterministic tie-breaks."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from controlgic_cli.errors import OptionsError
from controlgic_cli.planning.planner import (
    ENTROPY_BINS,
    ENTROPY_SIGMA,
    PatchScores,
    patch_entropy,
    plan_from_scores,
)
from controlgic_cli.planning.ratios import ratios_to_ppm

from .conftest import entropy_plan, synthetic_photo

# ---------------------------------------------------------------------------
# Reference implementation: a literal, slow, float64 transcription of the paper.
# ---------------------------------------------------------------------------


def reference_patch_entropy(rgb: np.ndarray, patch: int, sigma: float = ENTROPY_SIGMA, n: int = 32) -> np.ndarray:
    """Paper Eq. 1-3, one patch at a time, float64, natural log, 0 log 0 = 0."""
    rgb = rgb.astype(np.float64)
    r, g, b = (rgb[..., c] / 127.5 - 1.0 for c in range(3))
    grey = 0.2989 * r + 0.5870 * g + 0.1140 * b
    bins = np.array([-1.0 + 2.0 * i / (n - 1) for i in range(n)])
    rows, cols = grey.shape[0] // patch, grey.shape[1] // patch
    out = np.zeros((rows, cols))
    for py in range(rows):
        for px in range(cols):
            pixels = grey[py * patch : (py + 1) * patch, px * patch : (px + 1) * patch].ravel()
            # Eq. 1: Gaussian "diffusion" of every pixel to every bin.
            f = np.exp(-((pixels[:, None] - bins[None, :]) ** 2) / (2.0 * sigma**2))
            # Eq. 2: average over the patch, then normalise to a distribution.
            mean = f.mean(axis=0)
            prob = mean / mean.sum()
            # Eq. 3: Shannon entropy in nats.
            out[py, px] = -sum(p * math.log(p) for p in prob if p > 0)
    return out


def structured_images() -> dict[str, np.ndarray]:
    """A few images with very different entropy landscapes (all sides multiples of 16)."""
    rng = np.random.default_rng(1234)
    yy, xx = np.mgrid[0:48, 0:64]
    gradient = np.stack([xx * 4, yy * 5, (xx + yy) * 2], axis=-1).clip(0, 255).astype(np.uint8)
    checker = (((yy // 4) + (xx // 4)) % 2 * 255).astype(np.uint8)
    stripes = np.zeros((48, 64, 3), np.uint8)
    stripes[:, ::3] = (10, 200, 90)
    return {
        "uniform-noise": rng.integers(0, 256, (32, 48, 3), dtype=np.uint8),
        "low-contrast-noise": rng.integers(120, 136, (48, 32, 3), dtype=np.uint8),
        "photo": synthetic_photo(48, 64, seed=3),
        "gradient": gradient,
        "checker": np.repeat(checker[..., None], 3, axis=2),
        "stripes": stripes,
        "flat": np.full((32, 32, 3), 77, np.uint8),
        "extremes": rng.choice(np.array([0, 255], np.uint8), (32, 32, 3)),
    }


@pytest.mark.parametrize("name", sorted(structured_images()))
def test_patch_entropy_matches_literal_transcription_of_eq_1_to_3(name):
    rgb = structured_images()[name]
    entropy = patch_entropy(rgb)
    assert entropy.medium.shape == (rgb.shape[0] // 8, rgb.shape[1] // 8)
    assert entropy.coarse.shape == (rgb.shape[0] // 16, rgb.shape[1] // 16)
    # The planner runs in float32; 1e-4 nats is far below any meaningful entropy difference.
    np.testing.assert_allclose(entropy.medium, reference_patch_entropy(rgb, 8), rtol=0, atol=1e-4)
    np.testing.assert_allclose(entropy.coarse, reference_patch_entropy(rgb, 16), rtol=0, atol=1e-4)


def test_patch_entropy_range_and_extremes():
    # sigma is far below the bin spacing, so a flat patch puts its mass in at most two neighbouring
    # bins: entropy in [0, log 2]. A grey level right on a bin centre gives ~0.
    for value in range(256):
        flat = patch_entropy(np.full((16, 16, 3), value, np.uint8))
        assert 0.0 <= float(flat.coarse[0, 0]) <= math.log(2) + 1e-4
        np.testing.assert_allclose(flat.medium, flat.coarse[0, 0], rtol=0, atol=1e-6)
    assert float(patch_entropy(np.full((16, 16, 3), 255, np.uint8)).coarse[0, 0]) < 1e-3
    # A patch whose pixels spread over all 32 bins equally approaches log(32); nothing can exceed it.
    levels = np.round((np.linspace(-1.0, 1.0, ENTROPY_BINS) + 1.0) * 127.5).astype(np.uint8)
    spread = np.repeat(np.tile(levels, 8)[:256].reshape(16, 16)[..., None], 3, axis=2)
    high = patch_entropy(spread)
    assert math.log(ENTROPY_BINS) - 0.1 < float(high.coarse[0, 0]) <= math.log(ENTROPY_BINS) + 1e-5
    assert high.medium.dtype == np.float32 and high.coarse.dtype == np.float32


# ---------------------------------------------------------------------------
# Exact token counts.
# ---------------------------------------------------------------------------


def round_half_up(value: Fraction) -> int:
    return math.floor(value + Fraction(1, 2))


FIXED_RATIOS = [
    ("1", "0", "0"),
    ("0", "1", "0"),
    ("0", "0", "1"),
    ("0", "0.5", "0.5"),
    ("0.9", "0.1", "0"),
    ("0.5", "0.25", "0.25"),
    ("0.301", "0.599", "0.1"),
    ("0.333", "0.333", "0.334"),
    ("0.125", "0.375", "0.5"),
    ("0.999", "0", "0.001"),
    ("0.001", "0.998", "0.001"),
    ("0.55", "0", "0.45"),
    ("0.3", "0.7", "0"),
]


def random_ratios(count: int, seed: int) -> list[tuple[str, str, str]]:
    """Random ratios with six decimals (the planner's ppm resolution), as exact decimal strings."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        cuts = sorted(int(v) for v in rng.integers(0, 1_000_001, 2))
        ppm = (cuts[0], cuts[1] - cuts[0], 1_000_000 - cuts[1])
        out.append(tuple(f"{p / 1e6:.6f}" for p in ppm))
    return out


ALL_RATIOS = FIXED_RATIOS + random_ratios(40, seed=7)
SIZES = [(16, 16), (32, 48), (64, 16), (16, 112), (48, 48), (80, 144), (512, 768)]


def expected_counts(ratio_strings: tuple[str, str, str], n16: int) -> tuple[int, int]:
    """(coarse cells, covered 8x8 cells) straight from the documented rule, in exact arithmetic."""
    _, r_m, r_c = (Fraction(s) for s in ratio_strings)
    n8 = 4 * n16
    coarse = round_half_up(r_c * n16)
    # token_targets clamps: coarse cells cover 4 cells each, which can already exceed the target
    # (e.g. r_c = 0.5 on a single 16x16 cell); the covered count can never exceed the image.
    covered = min(max(round_half_up((r_c + r_m) * n8), 4 * coarse), n8)
    return coarse, covered


@pytest.fixture(scope="module")
def entropies_by_size() -> dict[tuple[int, int], tuple[np.ndarray, PatchScores]]:
    return {(h, w): (img := synthetic_photo(h, w, seed=h + w), patch_entropy(img)) for h, w in SIZES}


def check_plan(plan, entropy: PatchScores, ratio_strings, height: int, width: int) -> None:
    n16 = (height // 16) * (width // 16)
    coarse_target, covered_target = expected_counts(ratio_strings, n16)
    assert plan.coarse.shape == (height // 16, width // 16) and plan.coarse.dtype == bool
    assert plan.medium.shape == (height // 8, width // 8) and plan.medium.dtype == bool
    assert int(plan.coarse.sum()) == coarse_target
    assert 4 * int(plan.coarse.sum()) + int(plan.medium.sum()) == covered_target
    # Medium cells never sit under a coarse cell.
    under_coarse = np.kron(plan.coarse, np.ones((2, 2), bool))
    assert not (plan.medium & under_coarse).any()
    # Fine is exactly what neither covers, on the H/4 grid.
    covered4 = np.kron(under_coarse | plan.medium, np.ones((2, 2), bool))
    assert plan.fine.shape == (height // 4, width // 4)
    np.testing.assert_array_equal(plan.fine, ~covered4)
    n4 = (height // 4) * (width // 4)
    assert plan.token_counts == (n4 - 4 * covered_target, int(plan.medium.sum()), coarse_target)
    # Coarse cells are the lowest-entropy 16x16 cells.
    if plan.coarse.any() and (~plan.coarse).any():
        assert entropy.coarse[plan.coarse].max() <= entropy.coarse[~plan.coarse].min()
    # Medium cells are the lowest-entropy 8x8 cells among those left over.
    rest = ~under_coarse & ~plan.medium
    if plan.medium.any() and rest.any():
        assert entropy.medium[plan.medium].max() <= entropy.medium[rest].min()


@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_exact_counts_and_entropy_order_for_many_ratios(size, entropies_by_size):
    _, entropy = entropies_by_size[size]
    for ratio_strings in ALL_RATIOS:
        ratios = tuple(float(s) for s in ratio_strings)
        plan = plan_from_scores(entropy, ratios_to_ppm(ratios))
        check_plan(plan, entropy, ratio_strings, *size)


@pytest.mark.parametrize("size", [(16, 16), (32, 48), (64, 16), (80, 144)], ids=str)
@pytest.mark.parametrize("ratio_strings", FIXED_RATIOS, ids="-".join)
def test_entropy_plan_public_path_gives_exact_counts(size, ratio_strings):
    rgb = synthetic_photo(*size, seed=5)
    plan = entropy_plan(rgb, tuple(float(s) for s in ratio_strings))
    check_plan(plan, patch_entropy(rgb), ratio_strings, *size)


def test_single_cell_image_half_coarse_rounds_up_and_clamps_medium():
    # One 16x16 cell, r_c = 0.5: round-half-up gives 1 coarse cell; it covers all four 8x8 cells,
    # more than round(0.5 * 4) = 2, so medium is clamped to 0 rather than going negative.
    plan = entropy_plan(synthetic_photo(16, 16), (0.5, 0.0, 0.5))
    assert plan.coarse.sum() == 1 and plan.medium.sum() == 0 and plan.fine.sum() == 0
    # r_c = 0.49 rounds down: no coarse, round(0.49 * 4) = 2 medium cells.
    plan = entropy_plan(synthetic_photo(16, 16), (0.51, 0.0, 0.49))
    assert plan.coarse.sum() == 0 and plan.medium.sum() == 2 and plan.fine.sum() == 8


# ---------------------------------------------------------------------------
# Tie-breaking on flat and partly flat images.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 128, 255])
@pytest.mark.parametrize(
    "ratio_strings", [("0.5", "0.3", "0.2"), ("0", "0.5", "0.5"), ("0.1", "0.9", "0")], ids="-".join
)
def test_flat_image_gets_exact_counts_with_raster_order_ties(value, ratio_strings):
    height, width = 48, 80
    rgb = np.full((height, width, 3), value, np.uint8)
    entropy = patch_entropy(rgb)
    # Every patch is identical, so every entropy is identical (bitwise): all ties.
    assert np.unique(entropy.medium).size == 1 and np.unique(entropy.coarse).size == 1
    plan = entropy_plan(rgb, tuple(float(s) for s in ratio_strings))
    check_plan(plan, entropy, ratio_strings, height, width)
    coarse_target, covered_target = expected_counts(ratio_strings, (height // 16) * (width // 16))
    # Ties go to the earliest cells in raster order.
    expected_coarse = np.zeros(plan.coarse.size, bool)
    expected_coarse[:coarse_target] = True
    np.testing.assert_array_equal(plan.coarse.ravel(), expected_coarse)
    free = np.flatnonzero(~np.kron(plan.coarse, np.ones((2, 2), bool)).ravel())
    expected_medium = np.zeros(plan.medium.size, bool)
    expected_medium[free[: covered_target - 4 * coarse_target]] = True
    np.testing.assert_array_equal(plan.medium.ravel(), expected_medium)
    assert plan.fine.sum() < plan.fine.size or covered_target == 0


def test_partly_white_image_keeps_exact_counts_and_fills_white_cells_in_raster_order():
    # Right-hand 30% of the 16x16 columns pure white, the rest strong texture. The white cells tie
    # with each other and are strictly below every textured cell.
    rng = np.random.default_rng(99)
    height, width = 64, 160  # 4 x 10 coarse cells; columns 7..9 white = 30%
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    rgb[:, 112:] = 255
    entropy = patch_entropy(rgb)
    white16 = np.zeros((4, 10), bool)
    white16[:, 7:] = True
    assert entropy.coarse[white16].max() < entropy.coarse[~white16].min()

    # Fewer coarse cells than white cells: the first white cells in raster order win the tie.
    ratios = ("0.5", "0.3", "0.2")
    plan = entropy_plan(rgb, tuple(float(s) for s in ratios))
    check_plan(plan, entropy, ratios, height, width)
    expected = np.zeros(40, bool)
    expected[np.flatnonzero(white16.ravel())[:8]] = True
    np.testing.assert_array_equal(plan.coarse.ravel(), expected)
    # 8 coarse cells cover 32 of the round(0.5 * 160) = 80 target 8x8 cells, so 48 are medium. The 4
    # white 16x16 cells left over hold 16 white 8x8 cells, the lowest entropies: all of them are medium.
    white8 = np.kron(white16, np.ones((2, 2), bool)) & ~np.kron(plan.coarse, np.ones((2, 2), bool))
    assert (plan.medium & white8).sum() == white8.sum()

    # More coarse cells than white cells: all white cells plus the lowest-entropy textured ones.
    ratios = ("0.2", "0.2", "0.6")
    plan = entropy_plan(rgb, tuple(float(s) for s in ratios))
    check_plan(plan, entropy, ratios, height, width)
    assert plan.coarse[white16].all() and plan.coarse.sum() == 24
    assert plan.fine.any() and not plan.fine.all()


# ---------------------------------------------------------------------------
# Per-image, stateless, deterministic.
# ---------------------------------------------------------------------------


def test_planning_is_per_image_deterministic_and_stateless():
    a = synthetic_photo(64, 96, seed=11)
    b = np.full((64, 96, 3), 30, np.uint8)  # flat: would drag a batch-wide threshold around
    c = np.random.default_rng(3).integers(0, 256, (128, 48, 3), dtype=np.uint8)
    ratios = (0.4, 0.35, 0.25)
    alone = entropy_plan(a, ratios)
    entropy_plan(b, ratios)
    entropy_plan(c, (0.0, 0.0, 1.0))
    again = entropy_plan(a, ratios)
    np.testing.assert_array_equal(alone.coarse, again.coarse)
    np.testing.assert_array_equal(alone.medium, again.medium)
    # The same pixels inside a larger canvas do not change the standalone plan of `a`.
    canvas = np.concatenate([a, np.zeros_like(a)], axis=1)
    entropy_plan(canvas, ratios)
    third = entropy_plan(a.copy(), ratios)
    np.testing.assert_array_equal(alone.coarse, third.coarse)
    np.testing.assert_array_equal(alone.medium, third.medium)
    # Entropies too are bitwise reproducible.
    e1, e2 = patch_entropy(a), patch_entropy(a)
    np.testing.assert_array_equal(e1.medium, e2.medium)
    np.testing.assert_array_equal(e1.coarse, e2.coarse)


def test_planner_does_not_modify_its_input():
    rgb = synthetic_photo(32, 32)
    before = rgb.copy()
    entropy_plan(rgb, (0.3, 0.3, 0.4))
    np.testing.assert_array_equal(rgb, before)


# ---------------------------------------------------------------------------
# Validation.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ratios", "message"),
    [
        ((0.5, 0.4, 0.2), "sum to 1"),
        ((0.5, 0.4, 0.0), "sum to 1"),
        ((0.5, 0.25, 0.25 + 2e-6), "sum to 1"),
        ((1.2, -0.1, -0.1), "outside"),
        ((0.5, -0.5, 1.0), "outside"),
        ((-0.01, 0.5, 0.51), "outside"),
        ((float("nan"), 0.5, 0.5), "outside"),
        ((0.5, float("inf"), 0.5), "outside"),
        ((0.5, 0.5), "three values"),
        ((0.25, 0.25, 0.25, 0.25), "three values"),
        (("a", 0.5, 0.5), "not a number"),
    ],
)
def test_bad_ratios_raise_options_error_naming_the_problem(ratios, message):
    with pytest.raises(OptionsError, match=message):
        entropy_plan(synthetic_photo(32, 32), ratios)


def test_ratio_sum_within_tolerance_is_accepted():
    plan = entropy_plan(synthetic_photo(32, 32), (0.5, 0.25, 0.25 + 5e-7))
    assert plan.coarse.sum() == 1


@pytest.mark.parametrize("shape", [(16, 24, 3), (24, 16, 3), (8, 8, 3), (30, 32, 3), (33, 48, 3)])
def test_sides_not_multiple_of_16_raise_value_error(shape):
    rgb = np.zeros(shape, np.uint8)
    with pytest.raises(ValueError, match="multiples of 16"):
        patch_entropy(rgb)
    with pytest.raises(ValueError, match="multiples of 16"):
        entropy_plan(rgb, (1.0, 0.0, 0.0))
