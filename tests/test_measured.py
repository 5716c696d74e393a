"""The measured planner: patch scores from decoding errors (controlgic_cli.planning.measured)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from controlgic_cli.api import Codec, pad_to_block
from controlgic_cli.cli import main
from controlgic_cli.errors import OptionsError
from controlgic_cli.inference import TiledNetwork
from controlgic_cli.planning.measured import (
    CONTRAST_RADIUS,
    FEATURE_WEIGHTS,
    TEXTURE_WEIGHT,
    box_mean,
    local_contrast,
    measured_scores,
    release_scores,
)
from controlgic_cli.planning.planner import token_targets
from controlgic_cli.planning.ratios import ratios_to_ppm
from controlgic_cli.tiling import TileSpec

from .conftest import synthetic_photo


@pytest.fixture(scope="module")
def codec(tiny_rank_weights):
    return Codec(tiny_rank_weights, device="cpu")


def window_by_loops(values: np.ndarray, radius: int, reduce=np.mean) -> np.ndarray:
    """reduce() over the (2r+1)-square window around each element, edges replicated, one element at a time."""
    height, width = values.shape
    out = np.empty(values.shape, np.float64)
    for y in range(height):
        for x in range(width):
            rows = np.clip(np.arange(y - radius, y + radius + 1), 0, height - 1)
            cols = np.clip(np.arange(x - radius, x + radius + 1), 0, width - 1)
            out[y, x] = reduce(values[np.ix_(rows, cols)])
    return out


@pytest.mark.parametrize("shape", [(1, 1), (3, 8), (9, 7), (16, 16)])
def test_box_mean_is_the_window_mean_with_replicated_edges(shape):
    values = np.random.default_rng(sum(shape)).normal(size=shape) * 100
    for radius in (1, 2):
        np.testing.assert_allclose(box_mean(values, radius), window_by_loops(values, radius), atol=1e-9)


def test_local_contrast_is_the_window_std_of_grey():
    rgb = np.random.default_rng(3).integers(0, 256, (12, 10, 3)).astype(np.float32)
    grey = 0.299 * rgb[..., 0].astype(np.float64) + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    expected = window_by_loops(grey, CONTRAST_RADIUS, np.std)
    np.testing.assert_allclose(local_contrast(rgb), expected, atol=1e-3)
    assert np.all(local_contrast(np.full((8, 8, 3), 77, np.float32)) == 0)


def test_scores_are_the_distortion_falls_between_the_three_decodes(codec):
    rgb = pad_to_block(synthetic_photo(40, 56, seed=4))
    indices = codec.network.encode_indices(rgb)
    h16, w16 = rgb.shape[0] // 16, rgb.shape[1] // 16
    source = rgb.astype(np.float64)
    source_contrast = local_contrast(rgb.astype(np.float32)).astype(np.float64)

    source_features = encoder_features(codec, rgb)

    def distortion(coarse: bool, medium: bool) -> np.ndarray:
        """Per pixel: squared error + contrast term + each feature distance spread evenly over its cell."""
        decoded = codec.network.decode(indices, np.full((h16, w16), coarse), np.full((2 * h16, 2 * w16), medium))
        contrast = local_contrast(decoded.astype(np.float32)).astype(np.float64)
        squared = np.square(decoded - source).sum(axis=2)
        total = squared + TEXTURE_WEIGHT * np.abs(contrast - source_contrast)
        for weight, mine, theirs, stride in zip(
            FEATURE_WEIGHTS, encoder_features(codec, decoded), source_features, (4, 8), strict=True
        ):
            distance = np.square(mine - theirs).sum(axis=0)
            total += weight * np.kron(distance, np.ones((stride, stride))) / stride**2
        return total

    all_coarse, all_medium, all_fine = distortion(True, False), distortion(False, True), distortion(False, False)
    scores = measured_scores(codec.network, rgb, indices)
    assert scores.fine_margin == 0 and scores.coarse.dtype == scores.medium.dtype == np.float32
    fine_gain = np.empty((2 * h16, 2 * w16))
    for y in range(2 * h16):
        for x in range(2 * w16):
            cell = np.s_[8 * y : 8 * y + 8, 8 * x : 8 * x + 8]
            fine_gain[y, x] = all_medium[cell].sum() - all_fine[cell].sum()
    coarse_gain = np.empty((h16, w16))
    for y in range(h16):
        for x in range(w16):
            cell = np.s_[16 * y : 16 * y + 16, 16 * x : 16 * x + 16]
            coarse_gain[y, x] = all_coarse[cell].sum() - all_medium[cell].sum()
    np.testing.assert_allclose(scores.medium, fine_gain, rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(scores.coarse, release_scores(coarse_gain, fine_gain), rtol=1e-4, atol=1e-2)


def encoder_features(codec: Codec, rgb: np.ndarray) -> list[np.ndarray]:
    """The encoder's H/4 and H/8 maps of a whole image, each position's channels scaled to unit length."""
    x = torch.from_numpy(rgb.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        maps = codec.network.network.encoder.features(x)
    return [(m / m.norm(dim=1, keepdim=True))[0].double().numpy() for m in maps]


def test_feature_distances_are_zero_for_the_source_and_the_same_in_tiles(codec):
    rgb = pad_to_block(synthetic_photo(80, 96, seed=5))
    other = pad_to_block(synthetic_photo(80, 96, seed=6))
    whole = codec.network.feature_distances(rgb, [rgb, other])
    assert [m.shape for m in whole[1]] == [(20, 24), (10, 12)]
    assert all(np.all(m == 0) for m in whole[0])
    assert all(np.all(m >= 0) and m.max() > 0 for m in whole[1])
    features = zip(encoder_features(codec, other), encoder_features(codec, rgb), strict=True)
    for got, (expected, theirs) in zip(whole[1], features, strict=True):
        np.testing.assert_allclose(got, np.square(expected - theirs).sum(axis=0), rtol=1e-4, atol=1e-6)
    # A margin wider than the encoder's reach at H/8 makes tiles invisible.
    tiled = TiledNetwork(codec.network.network, codec.network.device, TileSpec(core=32, margin=96))
    for got, expected in zip(tiled.feature_distances(rgb, [other])[0], whole[1], strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_the_encoding_pass_spares_the_planner_one_encoder_pass_with_the_same_scores(codec):
    images = [pad_to_block(synthetic_photo(48, 64, seed=s)) for s in (1, 2)] + [pad_to_block(synthetic_photo(32, 64))]
    passes = codec.network.encode_indices_many(images)
    # Kept only for an image in a pass of its own (the third); the first two shared a batch.
    assert passes[0].features is None and passes[1].features is None and passes[2].features is not None
    alone = codec.network.encode_indices_many([images[0]])[0]
    assert [f.shape[1:] for f in alone.features] == [(8, 12, 16), (16, 6, 8)]  # the tiny encoder at H/4 and H/8
    calls = []
    encoder = codec.network.network.encoder
    original = encoder.features
    encoder.features = lambda x: calls.append(1) or original(x)
    try:
        reused = measured_scores(codec.network, images[0], alone.indices, source_features=alone.features)
        assert len(calls) == 3  # the three decodes only
        recomputed = measured_scores(codec.network, images[0], alone.indices)
    finally:
        del encoder.features
    np.testing.assert_array_equal(reused.medium, recomputed.medium)
    np.testing.assert_array_equal(reused.coarse, recomputed.coarse)


def test_bands_of_rows_give_the_scores_of_the_whole_image(codec, monkeypatch):
    rgb = pad_to_block(synthetic_photo(72, 40, seed=6))
    indices = codec.network.encode_indices(rgb)
    whole = measured_scores(codec.network, rgb, indices)
    monkeypatch.setattr("controlgic_cli.planning.measured.BAND_ROWS", 16)
    banded = measured_scores(codec.network, rgb, indices)
    np.testing.assert_allclose(banded.coarse, whole.coarse, rtol=1e-5, atol=1e-2)
    np.testing.assert_allclose(banded.medium, whole.medium, rtol=1e-5, atol=1e-2)


def test_planner_tiles_change_speed_not_scores_and_smaller_codec_tiles_are_kept(codec, monkeypatch):
    rgb = pad_to_block(synthetic_photo(64, 96, seed=7))
    indices = codec.network.encode_indices(rgb)
    whole = measured_scores(codec.network, rgb, indices)  # one tile: the image is below PLANNER_TILES.core
    used = []
    with_tiles = TiledNetwork.with_tiles
    monkeypatch.setattr(TiledNetwork, "with_tiles", lambda self, tiles: used.append(tiles) or with_tiles(self, tiles))
    # Two tiles whose margins cover the decoder's whole reach: the scores of the untiled image.
    monkeypatch.setattr("controlgic_cli.planning.measured.PLANNER_TILES", TileSpec(core=64, margin=192))
    tiled = measured_scores(codec.network, rgb, indices)
    np.testing.assert_allclose(tiled.coarse, whole.coarse, rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(tiled.medium, whole.medium, rtol=1e-4, atol=1e-2)
    # A codec given smaller tiles than the planner's (to bound memory) keeps its own in the planner too:
    # not re-tiled, and its scores are the planner's on those tiles (small margins, so not the untiled scores).
    own = TileSpec(core=48, margin=16)
    kept = measured_scores(TiledNetwork(codec.network.network, codec.network.device, own), rgb, indices)
    assert used == [TileSpec(core=64, margin=192)]
    monkeypatch.setattr("controlgic_cli.planning.measured.PLANNER_TILES", own)
    on_own_tiles = measured_scores(codec.network, rgb, indices)
    assert used[-1] == own
    np.testing.assert_array_equal(kept.coarse, on_own_tiles.coarse)
    np.testing.assert_array_equal(kept.medium, on_own_tiles.medium)
    assert not np.allclose(kept.medium, whole.medium, rtol=1e-4, atol=1e-2)


def test_progress_counts_every_tile_of_the_three_decodes_and_the_feature_pass(codec, monkeypatch):
    monkeypatch.setattr("controlgic_cli.planning.measured.PLANNER_TILES", TileSpec(core=32, margin=32))
    calls = []
    codec.analyse(synthetic_photo(48, 64, seed=3), on_progress=lambda done, total: calls.append((done, total)))
    assert calls == [(done, 4 * 4) for done in range(1, 17)]  # 2 x 2 tiles of 32 px, four passes each


@pytest.mark.parametrize("ratios", [(0.3, 0.6, 0.1), (0, 0.5, 0.5), (0.9, 0.1, 0), (1, 0, 0), (0, 0, 1)])
def test_measured_plans_keep_the_exact_token_counts(codec, ratios):
    analysis = codec.analyse(synthetic_photo(48, 80, seed=2), planner="measured")
    plan = codec.plan(analysis, ratios_to_ppm(ratios))
    n_coarse, n_medium = token_targets(ratios_to_ppm(ratios), plan.coarse.size)
    assert plan.coarse.sum() == n_coarse and plan.medium.sum() == n_medium
    assert not np.any(plan.medium & np.kron(plan.coarse, np.ones((2, 2), bool)))


def test_planners_write_decodable_files_and_a_bad_planner_is_refused(codec):
    image = synthetic_photo(32, 48, seed=9)
    for planner in ("measured", "entropy"):
        result = codec.encode(image, (0.3, 0.6, 0.1), planner=planner)
        assert codec.decode_array(result.data)[0].shape == (32, 48, 3)
        assert result.data == codec.encode(image, (0.3, 0.6, 0.1), planner=planner).data
    with pytest.raises(OptionsError, match="planner"):
        codec.analyse(image, planner="psychic")


def test_cli_planner_option_and_json_record(tmp_path, tiny_rank_weights):
    source = tmp_path / "a.png"
    Image.fromarray(synthetic_photo(32, 48, seed=1)).save(source)
    runner = CliRunner()
    records = {}
    for planner in ("measured", "entropy"):
        target = tmp_path / f"{planner}.cgic"
        args = ["encode", source, "-o", target, "--planner", planner, "--weights", tiny_rank_weights, "--json"]
        result = runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, result.stderr
        records[planner] = json.loads(result.stdout.splitlines()[0])
    assert records["measured"]["planner"] == "measured" and records["entropy"]["planner"] == "entropy"
    bad = runner.invoke(main, ["encode", str(source), "--planner", "psychic"])
    assert bad.exit_code == 2 and "planner" in bad.stderr


def test_release_score_is_the_best_mean_gain_of_a_cell_and_its_best_children():
    rng = np.random.default_rng(11)
    coarse_gain = rng.normal(size=(3, 4)) * 50
    fine_gain = rng.normal(size=(6, 8)) * 50
    scores = release_scores(coarse_gain, fine_gain)
    for y in range(3):
        for x in range(4):
            children = sorted(fine_gain[2 * y : 2 * y + 2, 2 * x : 2 * x + 2].ravel(), reverse=True)
            runs = [(coarse_gain[y, x] + sum(children[:k])) / (k + 1) for k in range(5)]
            assert scores[y, x] == pytest.approx(max(runs))
    # A cell whose children gain nothing keeps its own gain.
    assert release_scores(np.array([[7.0]]), np.zeros((2, 2)))[0, 0] == 7.0
