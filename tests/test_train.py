"""Training: a few steps of a tiny model, checkpoints, exact resume, export."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from controlgic_cli.metrics import DISTS_WEIGHTS_FILENAME, LPIPS_WEIGHTS_FILENAME, METRIC_WEIGHTS_ENV
from controlgic_cli.model.weights import load_weights
from controlgic_cli.train.config import TrainConfig
from controlgic_cli.train.freeze import export_weights
from controlgic_cli.train.loop import Trainer
from controlgic_cli.train.validation import masks_for_batch

from .conftest import needs_shared, synthetic_photo

TINY = {
    "codebook_size": 32,
    "encoder_channels": [8, 16, 16],
    "encoder_blocks": [1, 1, 1],
    "decoder_channels": [16, 16, 8, 8],
    "decoder_blocks": [1, 1, 1, 0],
}


@pytest.fixture(scope="module")
def metric_weights():
    return needs_shared("metric-weights", "LPIPS weights", file=LPIPS_WEIGHTS_FILENAME, env=METRIC_WEIGHTS_ENV)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train-images")
    for i in range(6):
        Image.fromarray(synthetic_photo(80 + 16 * i, 96, seed=i)).save(folder / f"img{i}.png")
    return folder


def config(tmp_path, image_dir, metric_weights, **changes) -> TrainConfig:
    settings = {
        "data_dir": str(image_dir),
        "run_dir": str(tmp_path),
        "metric_weights_dir": str(metric_weights),
        "model": TINY,
        "crop_size": 64,
        "batch_size": 2,
        "max_steps": 4,
        "validation_images": 2,
        "validation_crop_size": 64,
        "validate_every": 0,
        "log_every": 1,
        "gan_start_step": 2,
        "dead_code_interval": 3,
        "threads": 1,
    }
    settings.update(changes)
    return TrainConfig.from_dict(settings)


def test_learning_rate_decays_on_a_cosine_from_the_start_step():
    constant = TrainConfig(lr=1e-3)
    assert constant.lr_at(0) == constant.lr_at(10**6) == 1e-3
    decay = TrainConfig(lr=1e-3, lr_decay_start=100, lr_decay_steps=50, lr_final_fraction=0.1)
    assert decay.lr_at(0) == decay.lr_at(100) == 1e-3
    assert decay.lr_at(125) == pytest.approx(0.55e-3)  # half-way: the cosine's midpoint
    assert decay.lr_at(150) == decay.lr_at(10**6) == pytest.approx(1e-4)
    lrs = [decay.lr_at(step) for step in range(90, 160)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False)), "never rises"


def test_resumed_run_matches_an_uninterrupted_one(tmp_path, image_dir, metric_weights):
    # The lr decays over the run, so the resumed half must pick the schedule up from the step.
    schedule = {"gan_adaptive": True, "lr_decay_start": 1, "lr_decay_steps": 2}
    straight = Trainer(config(tmp_path / "a", image_dir, metric_weights, **schedule))
    straight.run()

    first = Trainer(config(tmp_path / "b", image_dir, metric_weights, max_steps=2, **schedule))
    first.run()
    resumed = Trainer(config(tmp_path / "b", image_dir, metric_weights, **schedule))
    assert resumed.step == 2
    resumed.run()

    assert resumed.step == straight.step == 4
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    log = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    gan_steps = [r for r in log if r.get("step", 0) > 2 and "gan_scale" in r]
    assert gan_steps and all(r["gan_scale"] > 0 and "crops_per_s" in r for r in gan_steps), "the GAN phase ran"
    lrs = [r["lr"] for r in log if "lr" in r]
    assert lrs[:2] == [straight.config.lr] * 2 and lrs[-1] == pytest.approx(straight.config.lr * 0.1, rel=1e-3)
    assert resumed.opt_g.param_groups[0]["lr"] == resumed.opt_d.param_groups[0]["lr"] == lrs[-1]


def test_validation_reports_psnr_lpips_dists_and_codes(tmp_path, image_dir, metric_weights):
    result = Trainer(config(tmp_path, image_dir, metric_weights)).validate()
    for key in ("0.3-0.6-0.1", "0-0.5-0.5"):
        assert 5 < result[f"val_psnr_{key}"] < 60
        assert 0 < result[f"val_lpips_{key}"] < 1.5 and 0 < result[f"val_dists_{key}"] < 1.0
    assert 0 <= result["codes_in_use"] <= 32


def test_export_writes_loadable_weights_with_integer_usage(tmp_path, image_dir, metric_weights):
    Trainer(config(tmp_path / "run", image_dir, metric_weights, max_steps=2)).run()
    model_id, info = export_weights(tmp_path / "run" / "checkpoint.pt", image_dir, tmp_path / "w.safetensors")
    loaded = load_weights(tmp_path / "w.safetensors")
    assert loaded.model_id == model_id and info["steps"] == 2
    for counts in loaded.code_usage.values():
        assert len(counts) == 32 and min(counts) >= 1 and all(isinstance(c, int) for c in counts)
    assert sum(loaded.code_usage["fine"]) > 32, "the training images' tokens were counted"
    assert np.isfinite(loaded.network.quantizer.codebook.numpy()).all()
    # Rank tables are counted from the same tokens: as many ranks as indices per granularity.
    assert loaded.rank_usage is not None and loaded.base_model_id != loaded.model_id
    for name, counts in loaded.rank_usage.items():
        assert len(counts) == 32 and min(counts) >= 1 and sum(counts) == sum(loaded.code_usage[name])


def _photo_folder(folder: Path, count: int, quality: int = 97) -> Path:
    folder.mkdir()
    for i in range(count):
        Image.fromarray(synthetic_photo(160, 200, seed=i)).save(folder / f"photo{i}.jpg", quality=quality)
    return folder


def test_pack_keeps_originals_when_they_fit(tmp_path):
    import tarfile

    from controlgic_cli.train.pack import build_pack

    folder = _photo_folder(tmp_path / "photos", 3)
    info = build_pack(folder, tmp_path / "pack.tar", max_bytes=10_000_000)
    assert info.quality is None and info.images == 3
    with tarfile.open(tmp_path / "pack.tar") as tar:
        assert tar.extractfile("photo1.jpg").read() == (folder / "photo1.jpg").read_bytes()
        assert "PACK.json" in tar.getnames()
    # The same folder gives the same pack, byte for byte.
    build_pack(folder, tmp_path / "again.tar", max_bytes=10_000_000)
    assert (tmp_path / "again.tar").read_bytes() == (tmp_path / "pack.tar").read_bytes()
    # Every second image only: photo0 and photo2, as they are.
    info = build_pack(folder, tmp_path / "half.tar", max_bytes=10_000_000, every=2)
    with tarfile.open(tmp_path / "half.tar") as tar:
        assert info.images == 2 and sorted(tar.getnames()) == ["PACK.json", "photo0.jpg", "photo2.jpg"]


def test_pack_reencodes_to_fit_and_keeps_names(tmp_path):
    import json
    import tarfile

    from controlgic_cli.train.data import list_images, split_train_validation
    from controlgic_cli.train.pack import build_pack

    folder = _photo_folder(tmp_path / "photos", 6)
    original_bytes = sum(p.stat().st_size for p in folder.iterdir())
    limit = int(original_bytes * 0.8)
    info = build_pack(folder, tmp_path / "pack.tar", max_bytes=limit)
    assert info.quality is not None and 60 <= info.quality < 96
    assert (tmp_path / "pack.tar").stat().st_size <= limit
    unpacked = tmp_path / "unpacked"
    with tarfile.open(tmp_path / "pack.tar") as tar:
        tar.extractall(unpacked, filter="data")
        manifest = json.loads(tar.extractfile("PACK.json").read())
    assert manifest["quality"] == info.quality and sorted(manifest["images"]) == sorted(
        p.name for p in folder.iterdir()
    )
    # Same names, so the same validation split.
    split = [[p.name for p in part] for part in split_train_validation(list_images(folder), 2)]
    assert split == [[p.name for p in part] for part in split_train_validation(list_images(unpacked), 2)]
    with pytest.raises(ValueError, match="do not fit"):
        build_pack(folder, tmp_path / "tiny.tar", max_bytes=20_000)


def test_init_weights_continues_the_recorded_history(tmp_path, image_dir, metric_weights):
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    Trainer(config(tmp_path / "first", image_dir, metric_weights, max_steps=2)).run()
    # The trainer's stop handlers end with the run: this process can still be interrupted.
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers
    export_weights(tmp_path / "first" / "checkpoint.pt", image_dir, tmp_path / "w.safetensors")
    shipped = load_weights(tmp_path / "w.safetensors").network.state_dict()

    follow_up = Trainer(
        config(
            tmp_path / "second", image_dir, metric_weights, max_steps=3, init_weights=str(tmp_path / "w.safetensors")
        )
    )
    assert (follow_up.step, follow_up.crops_seen) == (2, 4), "step and crops carry on from the weights' history"
    for name, value in follow_up.model.state_dict().items():
        assert torch.equal(value, shipped[name].float()), name
    follow_up.run()
    assert follow_up.step == 3


def continued(tmp_path, image_dir, metric_weights, model: dict, **changes) -> Trainer:
    """A run in tmp_path/second that starts from tmp_path/first's checkpoint, with `model`."""
    first_checkpoint = str(tmp_path / "first" / "checkpoint.pt")
    return Trainer(
        config(tmp_path / "second", image_dir, metric_weights, model=model, init_checkpoint=first_checkpoint, **changes)
    )


def test_init_checkpoint_grows_the_codebook_and_keeps_the_rest(tmp_path, image_dir, metric_weights):
    Trainer(config(tmp_path / "first", image_dir, metric_weights, max_steps=3)).run()
    first = torch.load(tmp_path / "first" / "checkpoint.pt", weights_only=True)
    grown_model = {**TINY, "codebook_size": 48}
    follow_up = continued(tmp_path, image_dir, metric_weights, grown_model, max_steps=4, dead_code_interval=0)
    assert follow_up.step == 3 and follow_up.crops_seen == 6
    codebook = follow_up.model.quantizer.codebook
    assert codebook.shape == (48, 4)
    assert torch.equal(codebook.detach()[:32], first["model"]["quantizer.codebook"])
    for name, value in follow_up.discriminator.state_dict().items():
        assert torch.equal(value, first["discriminator"][name]), name
    moments = follow_up.opt_g.state[codebook]
    assert moments["exp_avg"].shape == (48, 4) and not moments["exp_avg"][32:].any()
    assert follow_up.codes_to_seed.tolist() == [False] * 32 + [True] * 16

    follow_up.run()
    assert follow_up.step == 4 and not follow_up.codes_to_seed.any()
    new_codes = follow_up.model.quantizer.codebook.detach()[32:]
    assert new_codes.abs().sum(1).gt(0).all(), "every added code was seeded from encoder outputs"
    assert len({tuple(row.tolist()) for row in new_codes}) == 16
    resumed = torch.load(tmp_path / "second" / "checkpoint.pt", weights_only=True)
    assert resumed["codebook_initialised"] and resumed["code_usage_ema"].shape == (48,)


def test_init_checkpoint_adds_residual_blocks_that_start_as_identities(tmp_path, image_dir, metric_weights):
    Trainer(config(tmp_path / "first", image_dir, metric_weights, max_steps=2)).run()
    first = Trainer(config(tmp_path / "first", image_dir, metric_weights, max_steps=2))
    grown_model = {**TINY, "encoder_blocks": [1, 2, 1], "decoder_blocks": [1, 2, 1, 1]}
    follow_up = continued(tmp_path, image_dir, metric_weights, grown_model, max_steps=3)
    assert follow_up.step == 2
    assert len(list(follow_up.model.parameters())) > len(list(first.model.parameters()))

    image = synthetic_photo(64, 64, seed=9)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
    masks = masks_for_batch(image[None], [(300_000, 600_000, 100_000)])
    for old, new in ((first.model, follow_up.model), (first.ema, follow_up.ema)):
        old.eval()
        new.eval()
        with torch.no_grad():
            assert torch.allclose(old(x, masks).reconstruction, new(x, masks).reconstruction, atol=1e-6)

    # Adam moments follow their parameters by name; the added blocks have none yet.
    old_moments = {name: first.opt_g.state[p] for name, p in first.model.named_parameters()}
    for name, parameter in follow_up.model.named_parameters():
        moments = follow_up.opt_g.state.get(parameter)
        if name in old_moments:
            assert torch.equal(moments["exp_avg"], old_moments[name]["exp_avg"]), name
        else:
            assert not moments, name
    follow_up.run()
    assert follow_up.step == 3
    added_conv = follow_up.model.decoder.stage8.blocks[1].conv2.weight
    assert added_conv.abs().sum() > 0, "the added block learns"


@pytest.mark.parametrize(
    ("change", "problem"),
    [({"codebook_size": 16}, "cannot shrink"), ({"decoder_channels": [16, 16, 12, 8]}, "widths cannot change")],
)
def test_init_checkpoint_refuses_changes_that_cannot_start_as_the_same_network(
    tmp_path, image_dir, metric_weights, change, problem
):
    Trainer(config(tmp_path / "first", image_dir, metric_weights, max_steps=1)).run()
    with pytest.raises(ValueError, match=problem):
        continued(tmp_path, image_dir, metric_weights, {**TINY, **change})


def test_dists_term_joins_the_loss_on_the_first_crops(tmp_path, image_dir, metric_weights):
    needs_shared("metric-weights", "DISTS weights", file=DISTS_WEIGHTS_FILENAME, env=METRIC_WEIGHTS_ENV)
    trainer = Trainer(config(tmp_path, image_dir, metric_weights, dists_weight=2.0, dists_crops=1, gan_start_step=100))
    calls = []
    original = trainer.judge.dists.forward

    def spy(a, b):
        calls.append(a.shape[0])
        return original(a, b)

    trainer.judge.dists.forward = spy
    stats = trainer.train_step()
    assert calls == [1], "DISTS sees only dists_crops crops"
    assert stats["dists"] > 0
    expected = stats["mse"] + stats["lpips"] + 2.0 * stats["dists"] + stats["vq"]
    assert stats["loss"] == pytest.approx(expected, rel=1e-5)


def test_dists_term_needs_the_dists_weights(tmp_path, image_dir, metric_weights):
    only_lpips = tmp_path / "metrics"
    only_lpips.mkdir()
    (only_lpips / "lpips_alex_v0.1.safetensors").symlink_to(metric_weights / "lpips_alex_v0.1.safetensors")
    with pytest.raises(ValueError, match="needs DISTS weights"):
        Trainer(config(tmp_path / "run", image_dir, only_lpips, dists_weight=1.0))


def _torchrun(run_dir: Path, settings: dict, replicas: int) -> None:
    import subprocess
    import sys

    (run_dir.parent / "cfg.json").write_text(json.dumps(settings))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={replicas}"]
    command += ["-m", "controlgic_cli.train", "run", "--config", str(run_dir.parent / "cfg.json")]
    # faulthandler: if a replica dies on a signal (CI once saw a SIGABRT), its Python stacks reach the message.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Grad strides do not match" not in done.stderr, "DDP buckets and gradients disagree on strides"


@pytest.mark.slow
def test_torchrun_trains_two_replicas_in_sync_and_resumes(tmp_path, image_dir, metric_weights):
    """The DDP path on CPU (gloo): what runs on several GPUs, in two processes here."""

    settings = config(
        tmp_path / "run", image_dir, metric_weights, max_steps=3, dead_code_interval=2, gan_adaptive=True
    ).to_dict()
    settings["dead_code_min_usage"] = 1e9  # every code counts as dead: restarts must reach both replicas
    run_dir = tmp_path / "run"
    # Each checkpoint asserts that the replicas' parameters are identical (the run fails otherwise).
    _torchrun(run_dir, settings, replicas=2)
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert state["step"] == 3 and state["crops_seen"] == 3 * 2 * settings["batch_size"]
    first_states = state["rng_numpy_ranks"]
    assert len(first_states) == 2 and first_states[0] != first_states[1], "each replica draws its own crops"
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert sum(r.get("restarted", 0) for r in log) > 0, "codes were restarted during the run"

    settings["max_steps"] = 5
    _torchrun(run_dir, settings, replicas=2)
    resumed = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert resumed["step"] == 5
    assert any(
        r.get("event") == "resumed" and r.get("replicas") == 2
        for r in (json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines())
    )


def test_compare_scores_checkpoints_and_weights_files_alike(tmp_path, image_dir, metric_weights):
    from controlgic_cli.train.compare import compare

    Trainer(config(tmp_path / "run", image_dir, metric_weights, max_steps=1)).run()
    export_weights(tmp_path / "run" / "checkpoint.pt", image_dir, tmp_path / "w.safetensors")
    networks = [tmp_path / "run" / "checkpoint.pt", tmp_path / "w.safetensors"]
    split = TrainConfig(validation_images=2, validation_crop_size=64)
    rows = compare(networks, image_dir, metric_weights, validation=split)
    assert [r["network"] for r in rows] == [str(tmp_path / "run" / "checkpoint.pt"), str(tmp_path / "w.safetensors")]
    for key in ("val_psnr_0.3-0.6-0.1", "val_lpips_0.9-0.1-0", "val_dists_0-0.5-0.5"):
        # The file holds the same EMA network in half precision: nearly the same scores.
        assert rows[0][key] == pytest.approx(rows[1][key], rel=0.02, abs=0.02), key
