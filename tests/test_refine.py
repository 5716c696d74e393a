"""--tune psnr: the encoder-side search for indices (refine.py) and its plumbing."""

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
from controlgic_cli.metrics.distortion import psnr
from controlgic_cli.model.config import STRIDES
from controlgic_cli.planning.refine import RefineSettings, uniform_masks
from controlgic_cli.tiling import TileSpec

from .conftest import synthetic_photo

SMALL_TILES = RefineSettings(steps=3, tiles=TileSpec(core=32, margin=16))


@pytest.fixture(scope="module")
def codec(tiny_weights):
    return Codec(tiny_weights, device="cpu")


@pytest.fixture(scope="module")
def shipped_codec(shipped_weights):
    return Codec(shipped_weights, device="cpu")


def uniform_error(codec: Codec, rgb: np.ndarray, indices, granularity: int) -> float:
    """Mean squared error (float32) of the image decoded with every cell at one granularity."""
    network = codec.model.network
    x = codec.network._input(rgb[None])
    masks = uniform_masks(granularity, *rgb.shape[:2], device=x.device)
    codes = [network.quantizer.lookup(torch.from_numpy(i)[None]) for i in indices]
    with torch.no_grad():
        hybrid = network.hybrid_latent(*codes, masks)
        reconstruction = network.decoder(hybrid, masks.fine, masks.medium, masks.coarse)
    return float((reconstruction.float() - x).square().mean())


def test_zero_steps_keep_the_nearest_codes(codec):
    rgb = synthetic_photo(48, 64, seed=3)
    plain = codec.network.encode_indices(rgb)
    for settings in (RefineSettings(steps=0), RefineSettings(steps=0, tiles=SMALL_TILES.tiles)):
        refined = codec.network.refined_indices(rgb, settings)
        for a, b in zip(plain, refined, strict=True):
            np.testing.assert_array_equal(a, b)


def test_search_changes_indices_and_shapes_match(codec):
    rgb = synthetic_photo(48, 64, seed=4)  # 2 x 2 tiles
    plain = codec.network.encode_indices(rgb)
    refined = codec.network.refined_indices(rgb, SMALL_TILES)
    assert [r.shape for r in refined] == [(48 // s, 64 // s) for s in STRIDES]
    assert any((a != b).any() for a, b in zip(plain, refined, strict=True))
    again = codec.network.refined_indices(rgb, SMALL_TILES)
    for a, b in zip(refined, again, strict=True):
        np.testing.assert_array_equal(a, b)


def test_thread_count_does_not_change_the_result(codec):
    """Batch workers run torch on fewer threads; their files must not differ."""
    rgb = synthetic_photo(32, 64, seed=5)  # two tiles
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = codec.network.refined_indices(rgb, SMALL_TILES)
        torch.set_num_threads(2)
        two = codec.network.refined_indices(rgb, SMALL_TILES)
    finally:
        torch.set_num_threads(before)
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a, b)


def test_shipped_model_search_lowers_every_uniform_error(shipped_codec):
    rgb = pad_to_block(synthetic_photo(96, 128, seed=6))
    plain = shipped_codec.network.encode_indices(rgb)
    refined = shipped_codec.network.refined_indices(rgb)
    for granularity in range(3):
        assert uniform_error(shipped_codec, rgb, refined, granularity) < uniform_error(
            shipped_codec, rgb, plain, granularity
        )


def test_shipped_model_psnr_tune_is_closer_at_about_the_same_size(shipped_codec):
    rgb = synthetic_photo(96, 128, seed=7)
    results = {tune: shipped_codec.encode(rgb, (0.3, 0.6, 0.1), tune=tune) for tune in ("perceptual", "psnr")}
    quality = {tune: psnr(rgb, np.asarray(shipped_codec.decode(r.data))) for tune, r in results.items()}
    assert quality["psnr"] > quality["perceptual"] + 0.3
    assert results["psnr"].stats.token_counts == results["perceptual"].stats.token_counts
    assert abs(results["psnr"].stats.size_bytes / results["perceptual"].stats.size_bytes - 1) < 0.05


def test_rate_control_is_exact_on_refined_indices(codec):
    rgb = synthetic_photo(64, 80, seed=8)
    result = codec.encode_to_target(rgb, target_size=400, tune="psnr")
    assert len(result.data) <= 400
    assert result.data == codec.encode_to_target(rgb, target_size=400, tune="psnr").data


def test_unknown_tune_is_refused(codec):
    with pytest.raises(OptionsError, match="unknown tune"):
        codec.encode(synthetic_photo(16, 16), tune="sharp")


def test_cli_tune_option(tiny_weights, tmp_path):
    source = tmp_path / "in.png"
    Image.fromarray(synthetic_photo(32, 48, seed=9)).save(source)
    runner = CliRunner()
    common = ["--weights", str(tiny_weights), "--device", "cpu", "--json", "-q"]
    done = runner.invoke(main, ["encode", str(source), "-o", str(tmp_path / "a.cgic"), "--tune", "psnr", *common])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout.splitlines()[0])["tune"] == "psnr"
    decoded = runner.invoke(main, ["decode", str(tmp_path / "a.cgic"), "-o", str(tmp_path / "a.png"), *common])
    assert decoded.exit_code == 0, decoded.output
    assert Image.open(tmp_path / "a.png").size == (48, 32)
    wrong = runner.invoke(main, ["encode", str(source), "-o", str(tmp_path / "b.cgic"), "--tune", "sharp", *common])
    assert wrong.exit_code == 2
    assert not (tmp_path / "b.cgic").exists()


def test_the_search_reports_its_progress_per_tile_and_granularity(tiny_weights):
    codec = Codec(tiny_weights, device="cpu")
    calls = []
    codec.analyse(
        synthetic_photo(48, 64, seed=3),
        tune="psnr",
        planner="entropy",
        on_progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(done, 3) for done in (1, 2, 3)]  # one tile, three granularities
    codec.analyse(
        synthetic_photo(48, 64, seed=3), planner="entropy", on_progress=lambda done, total: calls.append((done, total))
    )
    assert len(calls) == 3, "the perceptual tune has no search to report, the entropy planner no passes"


def test_a_single_file_batch_passes_the_progress_callback_through(tmp_path, tiny_weights):
    import dataclasses

    from controlgic_cli.batch.core import EncodeSettings, FileTask, encode_files

    Image.fromarray(synthetic_photo(32, 48)).save(tmp_path / "in.png")
    calls = []
    settings = EncodeSettings(weights=str(tiny_weights), device="cpu", tune="psnr")
    settings = dataclasses.replace(settings, progress=lambda done, total: calls.append((done, total)))
    task = FileTask(str(tmp_path / "in.png"), str(tmp_path / "in.cgic"))
    (outcome,) = encode_files([(task, None)], settings)
    # The search's three steps, then the measured planner's: three decodes and a feature pass of one tile.
    assert outcome.ok and calls == [(1, 3), (2, 3), (3, 3), (1, 4), (2, 4), (3, 4), (4, 4)]
