"""Rate control: exact size prediction, the monotone path, budgets and dataset mode."""

from __future__ import annotations

import numpy as np
import pytest

from controlgic_cli.api import Codec
from controlgic_cli.errors import OptionsError
from controlgic_cli.metrics.distortion import psnr
from controlgic_cli.planning.planner import plan_from_scores
from controlgic_cli.planning.rate import (
    QUALITY_SIZE_TOLERANCE,
    choose_dataset,
    choose_for_bpp,
    choose_for_quality,
    choose_for_size,
    dataset_steps,
)
from controlgic_cli.planning.ratios import ratios_to_ppm

from .conftest import synthetic_photo


@pytest.fixture(scope="module", params=["usage-coded", "rank-coded"])
def codec(request, tiny_weights, tiny_rank_weights):
    """Every rate-control test runs with both index codings: sizes must be exact for each."""
    return Codec(tiny_rank_weights if request.param == "rank-coded" else tiny_weights, device="cpu")


@pytest.fixture(scope="module", params=["measured", "entropy"])
def analyses(codec, request):
    """The path works from either planner's scores: its units and fine margin come with them."""
    shapes = [(48, 64), (33, 17), (80, 96), (16, 16), (64, 48)]
    images = [synthetic_photo(h, w, seed=i) for i, (h, w) in enumerate(shapes)]
    # Equal entropies everywhere (flat) and a flat half beside noise: the path's tie-breaks must match the planner's.
    flat_and_noise = np.full((48, 64, 3), 90, np.uint8)
    flat_and_noise[:, 32:] = np.random.default_rng(5).integers(0, 256, (48, 32, 3), dtype=np.uint8)
    images += [np.full((32, 48, 3), 200, np.uint8), flat_and_noise]
    return [codec.analyse(image, planner=request.param) for image in images]


def test_predicted_size_equals_written_size_at_every_step(codec, analyses):
    for analysis in analyses:
        path = codec.rate_path(analysis)
        for step in range(path.steps + 1):
            written = codec.encode_plan(analysis, path.plan(step), path.ratios_ppm(step)).data
            assert len(written) == path.sizes[step], (analysis.source.rgb.shape, step)


def test_path_plans_are_the_planners_own_plans(codec, analyses):
    for analysis in analyses:
        path = codec.rate_path(analysis)
        for step in range(path.steps + 1):
            expected = plan_from_scores(analysis.scores, path.ratios_ppm(step))
            plan = path.plan(step)
            assert np.array_equal(plan.coarse, expected.coarse) and np.array_equal(plan.medium, expected.medium)


def test_path_goes_from_all_coarse_to_all_fine_a_few_cells_at_a_time(codec, analyses):
    path = codec.rate_path(analyses[2])
    counts = [path.plan(step).token_counts for step in range(path.steps + 1)]
    assert counts[0][:2] == (0, 0) and counts[-1][1:] == (0, 0)
    tokens = [sum(c) for c in counts]
    # One cell is +3 tokens; a coarse cell that releases waiting 8x8 cells at once adds 3 per cell.
    assert all(b - a in (3, 6, 9, 12, 15) for a, b in zip(tokens, tokens[1:], strict=False))
    if codec.index_coding.rank_coded:
        # A step can make a neighbour's rank or a mask group cheaper: on Kodak the size falls
        # by 1-2 bytes at 0.05-0.6 % of the steps (kodim01/08/13/20), never more.
        assert np.diff(path.sizes).min() >= -2 and path.sizes[-1] > path.sizes[0]
    else:
        assert np.all(np.diff(path.sizes) >= 0), "size must not fall along the path for this image"
    assert any(c[0] > 0 and c[2] > 0 for c in counts), "fine and coarse cells coexist on the way"


def test_every_step_is_one_score_threshold(codec, analyses):
    """Coarse cells leave below one threshold; 8x8 cells go fine the scores' fine margin above it."""
    for analysis in analyses:
        path = codec.rate_path(analysis)
        e16, e8 = analysis.scores.coarse, analysis.scores.medium
        parent_e16 = np.kron(e16, np.ones((2, 2), np.float32))
        fine_at = np.minimum(e8 - np.float32(analysis.scores.fine_margin), parent_e16)
        for step in range(1, path.steps + 1):
            plan = path.plan(step)
            threshold = path.step_thresholds[step - 1]
            fine8 = ~plan.medium & ~np.kron(plan.coarse, np.ones((2, 2), bool))
            assert np.all(e16[plan.coarse] <= threshold) and np.all(e16[~plan.coarse] >= threshold)
            assert np.all(fine_at[fine8] >= threshold) and np.all(fine_at[plan.medium] <= threshold)


@pytest.mark.parametrize("target", [0.1, 0.2, 0.39, 0.6])
def test_target_bpp_lands_on_the_nearest_achievable_rate(codec, analyses, target):
    for analysis in analyses:
        path = codec.rate_path(analysis)
        pixels = analysis.source.width * analysis.source.height
        choice = choose_for_bpp(path, target, pixels)
        achieved = 8 * path.sizes / pixels
        assert abs(achieved[choice.step] - target) == pytest.approx(np.abs(achieved - target).min())
        assert choice.reachable == (achieved.min() <= target <= achieved.max())


@pytest.mark.parametrize("target", [1e3, 1e20, float("inf")])
def test_a_target_above_every_rate_takes_the_largest_file(codec, analyses, target):
    # From about 1e15 bpp every difference rounds to the same float, which once sent it to the smallest file.
    path = codec.rate_path(analyses[0])
    pixels = analyses[0].source.width * analyses[0].source.height
    choice = choose_for_bpp(path, target, pixels)
    assert choice.size_bytes == path.sizes.max() and not choice.reachable


def test_target_size_never_exceeds_the_budget(codec, analyses):
    for analysis in analyses:
        path = codec.rate_path(analysis)
        for budget in np.linspace(path.sizes.min(), path.sizes.max() + 50, 25).astype(int):
            choice = choose_for_size(path, int(budget))
            assert choice.reachable and choice.size_bytes <= budget
            assert not np.any(path.sizes[choice.step + 1 :] <= budget)
        too_small = choose_for_size(path, int(path.sizes.min()) - 1)
        assert not too_small.reachable and too_small.size_bytes == path.sizes.min()


def test_encode_to_target_writes_what_it_predicts(codec):
    image = synthetic_photo(64, 80, seed=7)
    result = codec.encode_to_target(image, target_size=400)
    assert len(result.data) <= 400 and result.target_reached
    result = codec.encode_to_target(image, target_bpp=1e-4)
    assert result.target_reached is False and any("outside" in w for w in result.warnings)
    with pytest.raises(OptionsError):
        codec.encode_to_target(image)
    with pytest.raises(OptionsError):
        codec.encode_to_target(image, target_bpp=-1)


def test_dataset_mode_meets_the_mean_and_favours_complex_images(codec):
    flat = np.full((64, 64, 3), 120, np.uint8)
    busy = synthetic_photo(64, 64, seed=3)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    images = [flat, busy, noise]
    analyses = [codec.analyse(i) for i in images]
    paths = [codec.rate_path(a) for a in analyses]
    low = sum(int(p.sizes[0]) for p in paths) * 8 / (3 * 64 * 64)
    high = sum(int(p.sizes[-1]) for p in paths) * 8 / (3 * 64 * 64)
    target = (low + high) / 2
    results = codec.encode_dataset(analyses, target)
    mean = sum(len(r.data) for r in results) * 8 / (3 * 64 * 64)
    one_step = max(int(np.diff(p.sizes).max()) for p in paths) * 8 / (3 * 64 * 64)
    assert abs(mean - target) <= one_step
    bpps = [r.stats.bpp for r in results]
    assert bpps[0] < bpps[1] < bpps[2], "the shared threshold gives complex images more bits"


def test_dataset_steps_take_path_prefixes_in_global_threshold_order(codec, analyses):
    paths = [codec.rate_path(a) for a in analyses[:3]]
    total = sum(p.steps for p in paths)
    previous = [0, 0, 0]
    for release in range(0, total + 1, 7):
        steps = dataset_steps(paths, release)
        assert sum(steps) == release
        assert all(s >= p for s, p in zip(steps, previous, strict=True))
        taken = np.concatenate([p.step_thresholds[:s] for p, s in zip(paths, steps, strict=True)])
        waiting = [p.step_thresholds[s] for p, s in zip(paths, steps, strict=True) if s < p.steps]
        if taken.size and waiting:
            assert taken.min() >= max(waiting), "one shared threshold: no step left behind above it"
        previous = steps


def test_fine_ratio_steps_of_a_thousandth_raise_the_size(codec):
    """The paper's Table 2 experiment: at 768x512, 0.001 of area is about 6 cells, so every step counts."""
    analysis = codec.analyse(synthetic_photo(512, 768, seed=11))
    sizes = []
    for thousandths in range(300, 311):
        fine = thousandths / 1000
        sizes.append(len(codec.encode_analysis(analysis, ratios_to_ppm((fine, 0.9 - fine, 0.1))).data))
    assert all(b > a for a, b in zip(sizes, sizes[1:], strict=False)), sizes


def test_rate_summaries_choose_the_same_steps_in_fewer_bytes(codec, analyses):
    paths = [codec.rate_path(a) for a in analyses]
    summaries = [p.summary() for p in paths]
    pixels = [a.source.width * a.source.height for a in analyses]
    for target in (0.05, 0.2, 0.35, 0.6, 2.0):
        assert choose_dataset(summaries, pixels, target) == choose_dataset(paths, pixels, target)
    for path, summary in zip(paths, summaries, strict=True):
        held = summary.sizes.nbytes + summary.step_thresholds.nbytes
        assert held <= 8 * (path.steps + 1)


class _Path:
    """The two things choose_for_quality reads of a RatePath."""

    def __init__(self, sizes):
        self.sizes = np.asarray(sizes)
        self.steps = len(sizes) - 1


def test_quality_search_finds_the_first_step_reaching_the_target_in_few_decodes():
    path = _Path(np.round(1000 * 1.01 ** np.arange(1001)))  # 1000 steps, each 1 % larger: above the tolerance
    calls = []

    def quality(step):
        calls.append(step)
        return 20.0 + step / 100  # rises along the path

    choice, reached = choose_for_quality(path, quality, 25.005)
    assert choice.reachable and choice.step == 501 and reached == quality(501)
    assert choice.size_bytes == path.sizes[501]
    assert len(calls) <= 14, "bisection: about log2(1000) + 2 decodes"


def test_quality_search_stops_within_the_size_tolerance():
    path = _Path(np.full(1001, 10_000) + np.arange(1001))  # 1000 steps over 10 % of the size
    choice, reached = choose_for_quality(path, lambda step: step / 10, 50.05)
    assert reached >= 50.05
    assert path.sizes[choice.step] <= path.sizes[501] * (1 + QUALITY_SIZE_TOLERANCE)


def test_quality_search_edges():
    path = _Path([100, 200, 300])
    unreachable, best = choose_for_quality(path, lambda step: 10.0 + step, 40.0)
    assert (unreachable.step, unreachable.reachable, best) == (2, False, 12.0)
    assert "above what this image reaches (12.00 dB at most)" in unreachable.note
    at_once, quality = choose_for_quality(path, lambda step: 30.0 + step, 25.0)
    assert (at_once.step, at_once.reachable, quality) == (0, True, 30.0)
    single, _ = choose_for_quality(_Path([100]), lambda step: 30.0, 25.0)
    assert single.step == 0 and single.reachable


@pytest.fixture(scope="module")
def shipped_codec(shipped_weights):
    return Codec(shipped_weights, device="cpu")


def test_target_psnr_measures_the_file_it_writes(shipped_codec):
    # The shipped model: a random tiny one gets no better along the path.
    codec = shipped_codec
    image = synthetic_photo(64, 80, seed=7)
    analysis = codec.analyse(image)
    path = codec.rate_path(analysis)
    lowest, highest = codec._psnr_at(analysis, path, 0), codec._psnr_at(analysis, path, path.steps)
    assert highest > lowest + 2
    target = (lowest + highest) / 2
    result = codec.encode_to_target(image, target_psnr=target)
    assert result.target_reached and result.psnr >= target
    decoded = np.asarray(codec.decode(result.data))
    assert psnr(image, decoded) == pytest.approx(result.psnr, abs=1e-9), "the PSNR reported is the file's"
    assert len(result.data) < path.sizes.max()

    unreachable = codec.encode_to_target(image, target_psnr=99.0)
    assert unreachable.target_reached is False and len(unreachable.data) == path.sizes[path.steps]
    assert any("above what this image reaches" in w for w in unreachable.warnings)
    with pytest.raises(OptionsError, match="exactly one"):
        codec.encode_to_target(image, target_bpp=0.5, target_psnr=30.0)
    with pytest.raises(OptionsError, match="between 0 and 100"):
        codec.encode_to_target(image, target_psnr=0.0)


def test_target_psnr_of_a_grey_image_is_measured_on_the_grey_output(codec):
    grey = synthetic_photo(48, 64, seed=3)[..., 1]
    result = codec.encode_to_target(grey, target_psnr=5.0)
    decoded = np.asarray(codec.decode(result.data))
    assert decoded.ndim == 2
    to_rgb = lambda image: np.repeat(image[..., None], 3, axis=2)  # noqa: E731
    assert psnr(to_rgb(grey), to_rgb(decoded)) == pytest.approx(result.psnr, abs=1e-9)
