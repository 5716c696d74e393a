"""Model v2's training script end to end on a tiny network: cache, both stages, resume, export, codec."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import save_file

from controlgic_cli.api import Codec
from controlgic_cli.metrics.lpips import LPIPS, LPIPS_WEIGHTS_FILENAME
from controlgic_cli.model.taef2 import taef2_decoder, taef2_encoder
from controlgic_cli.train.latent import main, random_masks, synthetic_image
from tests.conftest import synthetic_photo


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Random stand-ins for the TAEF2 and LPIPS weights (the mechanics, not the quality, are under test)."""
    root = tmp_path_factory.mktemp("v2-train")
    torch.manual_seed(0)
    (root / "taef2").mkdir()
    save_file(taef2_encoder().state_dict(), str(root / "taef2" / "taef2_encoder.safetensors"))
    save_file(taef2_decoder().state_dict(), str(root / "taef2" / "taef2_decoder.safetensors"))
    (root / "metric").mkdir()
    shapes = LPIPS.expected_shapes()
    save_file({k: torch.rand(s) * 0.1 for k, s in shapes.items()}, str(root / "metric" / LPIPS_WEIGHTS_FILENAME))
    for folder, count in (("train", 3), ("kodak", 0)):
        (root / folder).mkdir()
        for n in range(count):
            Image.fromarray(synthetic_photo(96, 112, seed=n)).save(root / folder / f"photo{n}.png")
    for name in ("kodim01", "kodim08", "kodim13", "kodim23"):
        Image.fromarray(synthetic_photo(64, 64, seed=9)).save(root / "kodak" / f"{name}.png")
    return root


@pytest.fixture(scope="module")
def cache(setup):
    """The training images' latents, cached once for the tests that train from them."""
    path = setup / "cache-shared.pt"
    invoke(["cache", "--data-dir", setup / "train", "--taef2", setup / "taef2", "-o", path, "--threads", 1])
    return path


def tiny_run(setup, cache, run_dir) -> list:
    """`run` arguments for a tiny network from the shared cache, backbone from --taef2."""
    args = ["run", "--cache-file", cache, "--taef2", setup / "taef2", "--metric-weights", setup / "metric"]
    return [*args, "--size", "tiny", "--batch", 2, "--crop", 32, "--threads", 1, "--run-dir", run_dir]


def invoke(args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_cache_train_resume_export_and_code(setup):
    root = setup
    invoke(["cache", "--data-dir", root / "train", "--taef2", root / "taef2", "-o", root / "cache.pt", "--threads", 1])
    common = [
        "--cache-file",
        root / "cache.pt",
        "--taef2",
        root / "taef2",
        "--metric-weights",
        root / "metric",
        "--kodak",
        root / "kodak",
        "--run-dir",
        root / "run",
        "--size",
        "tiny",
        "--batch",
        2,
        "--crop",
        32,
        "--validate-every",
        2,
        "--threads",
        1,
    ]
    invoke(["run", *common, "--stage", "latent", "--steps", 2])
    invoke(["run", *common, "--stage", "pixel", "--steps", 4])
    assert "already at step 4" in invoke(["run", *common, "--stage", "latent", "--steps", 3])
    records = [json.loads(line) for line in (root / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "fine_psnr" in r] == [
        2,
        2,
        4,
        4,
    ]  # each stage validates at 2 or 4, and at its end
    assert records[-1]["stage"] == "pixel" and records[-1]["final"]
    invoke(
        [
            "export",
            "--checkpoint",
            root / "run" / "checkpoint.pt",
            "--cache-file",
            root / "cache.pt",
            "-o",
            root / "v2.safetensors",
        ]
    )
    codec = Codec(root / "v2.safetensors", device="cpu")
    assert codec.model.metadata["training_steps"] == "4"
    data = codec.encode(synthetic_photo(40, 56), planner="entropy").data
    assert codec.decode_array(data)[0].shape == (40, 56, 3)


def test_random_masks_cover_every_cell_once():
    masks = random_masks(np.random.default_rng(1), 12, 8)
    fine, medium, coarse = masks
    covered = fine + torch.nn.functional.interpolate(medium, scale_factor=2.0)
    covered = covered + torch.nn.functional.interpolate(coarse, scale_factor=4.0)
    assert torch.equal(covered, torch.ones_like(covered))
    assert fine.shape == (12, 1, 16, 16) and medium.shape == (12, 1, 8, 8) and coarse.shape == (12, 1, 4, 4)


def test_synthetic_images_are_flat_colours_and_text():
    rng = np.random.default_rng(2)
    images = [synthetic_image(rng, 64) for _ in range(20)]
    assert all(i.shape == (64, 64, 3) and i.dtype == np.uint8 for i in images)
    colours = [len(np.unique(i.reshape(-1, 3), axis=0)) for i in images]
    # flat regions alone in some (a few colours), anti-aliased text over them in others
    assert sum(c <= 8 for c in colours) >= 5 and max(colours) > 8


def test_a_run_starts_from_exported_weights_without_backbone_or_validation(setup, cache, tmp_path):
    root = setup
    common = ["--cache-file", cache, "--metric-weights", root / "metric", "--size", "tiny", "--batch", 2]
    common += ["--crop", 32, "--threads", 1]
    first = tmp_path / "first"
    invoke(["run", *common, "--taef2", root / "taef2", "--run-dir", first, "--stage", "latent", "--steps", 1])
    exported = tmp_path / "first.safetensors"
    invoke(["export", "--checkpoint", first / "checkpoint.pt", "--cache-file", cache, "-o", exported])

    # Neither the backbone nor a way to make one: a usage error, not a run from random weights.
    result = CliRunner().invoke(
        main, [str(a) for a in ["run", *common, "--run-dir", tmp_path / "none"] + ["--stage", "pixel", "--steps", 1]]
    )
    assert result.exit_code == 2 and "--init-weights" in result.output

    second = tmp_path / "second"
    # bfloat16 autocast too (the path a GPU run takes), on the CPU here.
    invoke(
        ["run", *common, "--init-weights", exported, "--run-dir", second, "--stage", "pixel", "--steps", 2, "--bf16"]
    )
    records = [json.loads(line) for line in (second / "log.jsonl").read_text().splitlines()]
    assert not any("fine_psnr" in r for r in records)  # no --kodak, no validation
    started = torch.load(first / "checkpoint.pt", weights_only=False)["model"]
    trained = torch.load(second / "checkpoint.pt", weights_only=False)
    assert trained["step"] == 2 and trained["stage"] == "pixel"
    # The frozen encoder is the exported one (to fp16 precision), so the run really began from the file.
    name = "backbone_encoder.0.weight"
    assert torch.allclose(trained["model"][name], started[name].half().float())


def test_max_minutes_stops_a_run_and_saves(setup, cache, tmp_path):
    args = tiny_run(setup, cache, tmp_path / "run")
    before = signal.getsignal(signal.SIGTERM)
    invoke([*args, "--stage", "latent", "--steps", 1000, "--max-minutes", 0])
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["step"] == 0
    # The run's SIGTERM handler is gone with it: this process can still be stopped (a timeout, CI).
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_latent_probe_reports_rate_distortion_and_the_linear_bound(setup, cache):
    from controlgic_cli.train.latent_probe import main as probe

    root = setup
    args = ["--cache-file", cache, "--taef2", root / "taef2", "--metric-weights", root / "metric"]
    args += ["--kodak", root / "kodak", "--levels", "3,3", "--groups", 2, "--steps", 2, "--width", 8]
    for granularity, pixels_per_token in (("fine", 16), ("medium", 64), ("coarse", 256)):
        result = CliRunner().invoke(probe, [str(a) for a in [*args, "--granularity", granularity]])
        assert result.exit_code == 0, result.output + repr(result.exception)
        record = json.loads(result.output)
        assert record["raw_bpp"] == round(2 * np.log2(9) / pixels_per_token, 4)
        assert 0 <= record["entropy_bpp"] <= record["raw_bpp"] + 1e-4
        assert 0 < record["linear_bound"] <= 1 and record["held_latent_mse"] > 0
        assert np.isfinite(record["validation_psnr"]) and record["validation_lpips"] >= 0
    # A channel of one level is no quantizer: a usage error naming --levels.
    bad = CliRunner().invoke(probe, [str(a) for a in [*args, "--granularity", "fine", "--levels", "1,3"]])
    assert bad.exit_code == 2 and "levels" in bad.output


def test_a_new_run_takes_groups_and_levels_per_granularity_and_a_resumed_run_keeps_them(setup, cache, tmp_path):
    from controlgic_cli.model.latent_network import LatentModelConfig

    args = tiny_run(setup, cache, tmp_path / "run")
    invoke([*args, "--stage", "latent", "--steps", 1, "--groups", "1,2,2", "--levels-by-granularity", "4,3/3,3/2,2,2"])
    invoke([*args, "--stage", "latent", "--steps", 2])  # resumed without the flags
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    config = LatentModelConfig.from_json(state["config"])
    assert state["step"] == 2 and config.groups == (1, 2, 2)
    assert config.granularity_levels == ((4, 3), (3, 3), (2, 2, 2))
    bad = CliRunner().invoke(
        main,
        [str(a) for a in [*args[:-1], tmp_path / "new", "--stage", "latent"]]
        + ["--steps", "1", "--levels-by-granularity", "4,3/1,3/2"],
    )
    assert bad.exit_code == 2 and "fewer than 2 levels" in bad.output
