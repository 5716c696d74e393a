"""Batch encoding: the local pipeline, manifests, resuming, and the Dask engine, all byte-identical."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from controlgic_cli.api import Codec
from controlgic_cli.batch.core import EncodeSettings, FileTask, default_jobs, encode_local, run_ordered
from controlgic_cli.cli import main

from .conftest import synthetic_photo


def run(args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("photos")
    for i in range(5):
        Image.fromarray(synthetic_photo(48 + 16 * (i % 3), 64 + 8 * i, seed=i)).save(path / f"img{i}.png")
    (path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return path


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.cgic"))}


def tasks_for(folder: Path, out: Path) -> list[FileTask]:
    out.mkdir(exist_ok=True)
    return [FileTask(str(p), str(out / (p.stem + ".cgic"))) for p in sorted(folder.glob("img*.png"))]


def test_pipeline_writes_the_same_bytes_whatever_the_job_count(tmp_path, folder, tiny_weights):
    results = {}
    for jobs in (1, 3):
        out = tmp_path / f"jobs{jobs}"
        result = run(["encode", folder, "-o", out, "--jobs", jobs, "--weights", tiny_weights])
        assert result.exit_code == 1  # broken.png
        assert "broken.png" in result.stderr and "5 of 6 files done, 1 failed" in result.stderr
        results[jobs] = outputs(out)
    assert len(results[1]) == 5
    assert results[1] == results[3]
    codec = Codec(tiny_weights, "cpu")
    assert results[1]["img2.cgic"] == codec.encode(folder / "img2.png").data


def test_outcomes_come_back_in_input_order(tmp_path, folder, tiny_weights):
    tasks = tasks_for(folder, tmp_path / "out")
    outcomes = list(encode_local(tasks, EncodeSettings(weights=str(tiny_weights), device="cpu"), jobs=3))
    assert [o.task for o in outcomes] == tasks
    assert all(o.ok and Path(o.task.target).exists() for o in outcomes)


def test_manifest_and_skip_existing_resume_an_interrupted_run(tmp_path, folder, tiny_weights):
    out, manifest = tmp_path / "out", tmp_path / "manifest.jsonl"
    first = run(["encode", folder, "-o", out, "--manifest", manifest, "--weights", tiny_weights, "--jobs", 2])
    assert first.exit_code == 1
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert sorted(Path(r["input"]).name for r in lines) == [f"img{i}.png" for i in range(5)]
    for record in lines:
        written = Path(record["output"])
        assert record["bytes"] == written.stat().st_size
        assert record["bpp"] == pytest.approx(
            8 * record["bytes"] / Image.open(record["input"]).size[0] / Image.open(record["input"]).size[1], abs=1e-6
        )
        assert set(record) == {"input", "output", "bytes", "bpp", "ratios", "seconds"}
    complete = outputs(out)

    # An interrupted run: two outputs never got written.
    (out / "img1.cgic").unlink()
    (out / "img4.cgic").unlink()
    again = run(
        ["encode", folder, "-o", out, "--skip-existing", "--manifest", manifest, "--weights", tiny_weights, "--json"]
    )
    records = [json.loads(line) for line in again.stdout.splitlines()]
    encoded = sorted(Path(r["input"]).name for r in records if r["ok"] and not r.get("skipped"))
    skipped = sorted(Path(r["input"]).name for r in records if r.get("skipped"))
    assert encoded == ["img1.png", "img4.png"]
    assert skipped == ["img0.png", "img2.png", "img3.png"]
    assert "(3 skipped, output exists)" in again.stderr
    assert outputs(out) == complete
    assert len(manifest.read_text().splitlines()) == 7  # 5 + the 2 re-encoded


def test_skip_existing_and_force_exclude_each_other(tmp_path, folder, tiny_weights):
    result = run(["encode", folder, "-o", tmp_path, "-f", "--skip-existing", "--weights", tiny_weights])
    assert result.exit_code == 2


def test_local_dataset_budget_matches_the_in_memory_api(tmp_path, folder, tiny_weights):
    tasks = tasks_for(folder, tmp_path / "out")
    settings = EncodeSettings(weights=str(tiny_weights), device="cpu")
    outcomes = list(encode_local(tasks, settings, jobs=2, dataset_target=0.35))
    assert all(o.ok for o in outcomes)
    codec = Codec(tiny_weights, "cpu")
    expected = codec.encode_dataset([t.source for t in tasks], 0.35)
    assert [Path(t.target).read_bytes() for t in tasks] == [r.data for r in expected]


def _dask_or_skip():
    return pytest.importorskip("dask.distributed", reason='the Dask engine needs the extra: pip install "cgic[dask]"')


@pytest.mark.parametrize("mode", ["ratios", "dataset"])
def test_dask_cluster_writes_the_same_bytes_as_the_local_run(tmp_path, folder, tiny_weights, mode):
    _dask_or_skip()
    extra = ["--target-bpp", "0.35", "--budget", "dataset"] if mode == "dataset" else ["--ratios", "0.5,0.4,0.1"]
    local, remote = tmp_path / "local", tmp_path / "dask"
    run(["encode", folder, "-o", local, "--weights", tiny_weights, *extra])
    # A real local cluster: a scheduler and two worker processes.
    # The dataset budget's two map passes on the cluster take three files per task (shared network passes).
    batch = ["--batch", 3] if mode == "dataset" else []
    result = run(
        ["encode", folder, "-o", remote, "--engine", "dask", "--jobs", 2, "--weights", tiny_weights, *extra, *batch]
    )
    assert result.exit_code == 1 and "5 of 6 files done, 1 failed" in result.stderr
    assert len(outputs(remote)) == 5
    assert outputs(remote) == outputs(local)


def test_dask_engine_refuses_stdio_and_address_needs_dask(tiny_weights):
    assert run(["encode", "-", "--engine", "dask", "--weights", tiny_weights]).exit_code == 2
    assert run(["encode", "x.png", "--address", "tcp://127.0.0.1:1", "--weights", tiny_weights]).exit_code == 2


@pytest.fixture(scope="module")
def same_size_folder(tmp_path_factory):
    """Mostly one size, so batches really share network passes; one other size and one broken file."""
    path = tmp_path_factory.mktemp("same-size")
    for i in range(5):
        Image.fromarray(synthetic_photo(64, 80, seed=10 + i)).save(path / f"img{i}.png")
    Image.fromarray(synthetic_photo(40, 56, seed=20)).save(path / "img5.png")
    (path / "img6.png").write_bytes(b"not an image")
    return path


@pytest.mark.parametrize(
    "mode", [[], ["--target-bpp", "0.4"], ["--target-size", "300"], ["--target-bpp", "0.4", "--budget", "dataset"]]
)
def test_batches_write_the_same_bytes_as_one_image_at_a_time(tmp_path, same_size_folder, tiny_weights, mode):
    results = {}
    for batch, jobs in ((1, 1), (4, 1), (3, 2)):
        out = tmp_path / f"b{batch}j{jobs}"
        args = ["encode", same_size_folder, "-o", out, "--batch", batch, "--jobs", jobs, "--weights", tiny_weights]
        result = run([*args, *mode])
        assert result.exit_code == 1 and "6 of 7 files done, 1 failed" in result.stderr, result.stderr
        results[(batch, jobs)] = outputs(out)
    assert len(results[(1, 1)]) == 6
    assert results[(1, 1)] == results[(4, 1)] == results[(3, 2)]


def test_a_network_pass_over_several_images_gives_each_its_own_indices(shipped_weights):
    """The shipped network's convolutions are per sample: a batch changes no index (so no file byte)."""
    shipped_codec = Codec(shipped_weights, "cpu")
    images = [synthetic_photo(96, 128, seed=s) for s in range(3)] + [synthetic_photo(64, 128, seed=3)]
    together = shipped_codec.analyse_many(images)
    for image, analysis in zip(images, together, strict=True):
        alone = shipped_codec.analyse(image)
        for a, b in zip(alone.indices, analysis.indices, strict=True):
            assert (a == b).all()


def test_dataset_summaries_share_network_passes_and_match_one_at_a_time(same_size_folder, tiny_weights, monkeypatch):
    from controlgic_cli.api import get_codec
    from controlgic_cli.batch import core as batch_module

    settings = EncodeSettings(weights=str(tiny_weights), device="cpu")
    tasks = [FileTask(str(p), "-") for p in sorted(same_size_folder.iterdir())]
    alone = [batch_module.summarise_files([task], settings)[0] for task in tasks]
    codec = get_codec(settings.weights, settings.device)
    passes = []
    analyse_many = codec.analyse_many
    monkeypatch.setattr(
        codec,
        "analyse_many",
        lambda sources, tune, **options: passes.append(len(sources)) or analyse_many(sources, tune, **options),
    )
    together = batch_module.summarise_files(tasks, settings)
    assert passes == [6], "the six readable images go to the network as one group"
    assert [s.error != "" for s in together] == [p.name == "img6.png" for p in sorted(same_size_folder.iterdir())]
    for a, b in zip(alone, together, strict=True):
        assert (a.pixels, a.error) == (b.pixels, b.error)
        if a.rates is not None:
            assert (a.rates.sizes == b.rates.sizes).all()
            assert (a.rates.step_thresholds == b.rates.step_thresholds).all()


def test_a_single_item_keeps_all_threads():
    """One file with the default --jobs (one per core) must not run on a fraction of the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert list(run_ordered(lambda _: torch.get_num_threads(), ["only"], jobs=2)) == [2]
        shared = max(1, default_jobs() // 2)
        assert list(run_ordered(lambda _: torch.get_num_threads(), ["a", "b"], jobs=2)) == [shared, shared]
    finally:
        torch.set_num_threads(before)


def test_a_manifest_that_cannot_work_is_refused_before_any_coding(tmp_path, folder, tiny_weights):
    photo = folder / "img0.png"
    image_file = tmp_path / "photo.jpg"
    image_file.write_bytes(b"\xff\xd8 a user's photo, not a manifest")
    for manifest, message in (
        ("-", "--json"),
        (tmp_path / "missing" / "m.jsonl", "folder does not exist"),
        (tmp_path / "a.cgic", "where an output goes"),
        (image_file, "not a manifest"),
    ):
        result = run(["encode", photo, "-o", tmp_path / "a.cgic", "--manifest", manifest, "--weights", tiny_weights])
        assert result.exit_code == 2 and message in result.stderr, result.stderr
        assert not (tmp_path / "a.cgic").exists()
    assert image_file.read_bytes() == b"\xff\xd8 a user's photo, not a manifest"


def test_a_run_that_writes_nothing_leaves_no_manifest(tmp_path, folder, tiny_weights):
    manifest = tmp_path / "m.jsonl"
    result = run(["encode", folder / "broken.png", "--manifest", manifest, "--weights", tiny_weights])
    assert result.exit_code == 1 and not manifest.exists()


def test_ctrl_c_stops_a_batch_and_reports_every_file_that_landed(tmp_path, tiny_weights):
    photos = tmp_path / "many"
    photos.mkdir()
    image = synthetic_photo(640, 640, seed=3)
    for i in range(40):
        Image.fromarray(np.roll(image, 16 * i, axis=1)).save(photos / f"p{i:02d}.png")
    out, manifest = tmp_path / "out", tmp_path / "m.jsonl"
    env = {**os.environ, "CGIC_WEIGHTS": str(tiny_weights)}
    command = [sys.executable, "-m", "controlgic_cli", "encode", str(photos), "-o", str(out), "--jobs", "2"]
    process = subprocess.Popen([*command, "--manifest", str(manifest)], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out.is_dir() and any(out.glob("*.cgic"))) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    written = sorted(p.name for p in out.glob("*.cgic"))
    listed = sorted(Path(json.loads(line)["output"]).name for line in manifest.read_text().splitlines())
    assert 0 < len(written) < 40 and written == listed
    assert f"interrupted: {len(written)} of 40 files written" in stderr.decode()
    assert b"Traceback" not in stderr and not [p for p in out.iterdir() if p.name.endswith(".part")]
