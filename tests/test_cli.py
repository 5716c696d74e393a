"""The `cgic` command line: files, pipes, directories, exit codes and messages."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from controlgic_cli.api import get_codec
from controlgic_cli.cli import main
from controlgic_cli.coding.container import pack_file, parse_file

from .colour_profiles import matrix_profile
from .conftest import synthetic_photo


def run(args, input_bytes=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input_bytes, catch_exceptions=False)


def real_cli(args, weights, input_bytes=None):
    """The installed console entry point in a fresh process, as a user runs it."""
    env = {**os.environ, "CGIC_WEIGHTS": str(weights)}
    return subprocess.run(
        [sys.executable, "-m", "controlgic_cli", *map(str, args)], input=input_bytes, capture_output=True, env=env
    )


def save_png(path, array, mode=None):
    Image.fromarray(array, mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


@pytest.mark.parametrize(("height", "width"), [(1, 1), (33, 17), (769, 513)])
def test_encode_decode_keeps_size(tmp_path, tiny_weights, height, width):
    src = save_png(tmp_path / "in.png", synthetic_photo(height, width))
    result = run(["encode", src, "-o", tmp_path / "a.cgic", "--weights", tiny_weights])
    assert result.exit_code == 0, result.output
    assert f"{(tmp_path / 'a.cgic').stat().st_size} bytes" in result.stderr
    result = run(["decode", tmp_path / "a.cgic", "-o", tmp_path / "out.png", "--weights", tiny_weights])
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "out.png").size == (width, height)


def test_grey_and_rgba_inputs(tmp_path, tiny_weights):
    grey = save_png(tmp_path / "grey.png", synthetic_photo(40, 24)[..., 1], "L")
    rgba = save_png(tmp_path / "rgba.png", np.dstack([synthetic_photo(24, 40), np.full((24, 40), 7, np.uint8)]))
    for src, mode in ((grey, "L"), (rgba, "RGB")):
        assert run(["encode", src, "--weights", tiny_weights]).exit_code == 0
        result = run(
            ["decode", src.with_suffix(".cgic"), "-o", tmp_path / f"{src.stem}-out.png", "--weights", tiny_weights]
        )
        assert result.exit_code == 0
        decoded = Image.open(tmp_path / f"{src.stem}-out.png")
        assert decoded.mode == mode and decoded.size == Image.open(src).size
    assert "alpha" in run(["encode", rgba, "-f", "--weights", tiny_weights]).stderr


def test_a_photo_with_a_wide_gamut_profile_is_coded_in_srgb_with_a_note(tmp_path, tiny_weights):
    src = tmp_path / "adobe.png"
    Image.fromarray(synthetic_photo(24, 40)).save(src, icc_profile=matrix_profile("Test Adobe RGB"))
    result = run(["encode", src, "--weights", tiny_weights])
    assert result.exit_code == 0
    assert "converted from its colour profile 'Test Adobe RGB' to sRGB" in result.stderr
    assert "converted" not in run(["encode", src, "-f", "-q", "--weights", tiny_weights]).stderr


def test_default_output_names(tmp_path, tiny_weights):
    src = save_png(tmp_path / "photo.png", synthetic_photo(32, 32))
    assert run(["encode", src, "--weights", tiny_weights]).exit_code == 0
    assert (tmp_path / "photo.cgic").exists()
    (tmp_path / "photo.png").unlink()
    assert run(["decode", tmp_path / "photo.cgic", "--weights", tiny_weights]).exit_code == 0
    assert (tmp_path / "photo.png").exists()


def test_pipeline_gives_the_same_bytes_as_files(tmp_path, tiny_weights):
    src = save_png(tmp_path / "in.png", synthetic_photo(48, 64))
    assert real_cli(["encode", src, "-o", tmp_path / "file.cgic"], tiny_weights).returncode == 0
    piped = real_cli(["encode", "-", "-o", "-", "-q"], tiny_weights, input_bytes=src.read_bytes())
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == (tmp_path / "file.cgic").read_bytes()
    assert not (tmp_path / "-").exists()
    decoded = real_cli(["decode", "-", "-o", "-"], tiny_weights, input_bytes=piped.stdout)
    assert decoded.returncode == 0
    assert decoded.stdout[:8] == b"\x89PNG\r\n\x1a\n"
    assert real_cli(["decode", tmp_path / "file.cgic", "-o", tmp_path / "file.png"], tiny_weights).returncode == 0
    assert decoded.stdout == (tmp_path / "file.png").read_bytes()


def test_never_overwrites_without_force(tmp_path, tiny_weights):
    src = save_png(tmp_path / "in.png", synthetic_photo(32, 32))
    target = tmp_path / "in.cgic"
    target.write_bytes(b"precious")
    result = run(["encode", src, "--weights", tiny_weights])
    assert result.exit_code == 1
    assert "exists" in result.stderr and "-f" in result.stderr
    assert target.read_bytes() == b"precious"
    assert run(["encode", src, "-f", "--weights", tiny_weights]).exit_code == 0
    assert target.read_bytes()[:4] == b"CGIC"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask, "outputs get normal permissions, not mkstemp's 0600"


def test_missing_output_folder_is_one_line_naming_it(tmp_path, tiny_weights):
    src = save_png(tmp_path / "in.png", synthetic_photo(32, 32))
    assert run(["encode", src, "--weights", tiny_weights]).exit_code == 0
    for command, source in (("encode", src), ("decode", tmp_path / "in.cgic")):
        result = run([command, source, "-o", tmp_path / "missing" / "out.png", "--weights", tiny_weights])
        assert result.exit_code == 1
        assert result.stderr.count("\n") == 1 and "output folder does not exist" in result.stderr
        assert str(tmp_path / "missing") in result.stderr and ".part" not in result.stderr
        assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["encode", "x.png", "--ratios", "0.5,0.5,0.5"],
        ["encode", "x.png", "--ratios", "0.5,0.5"],
        ["encode", "x.png", "--ratios", "a,b,c"],
        ["encode", "x.png", "--ratios", "1.2,-0.2,0"],
        ["encode", "x.png", "--device", "tpu"],
        ["encode"],
        ["encode", "x.png", "-q", "-v"],
        ["encode", "x.png", "--target-bpp", "nan"],
        ["encode", "x.png", "--target-bpp", "inf"],
        ["encode", "x.png", "--target-psnr", "nan"],
        ["encode", "x.png", "--quality", "nan"],
        ["encode", "x.png", "--frobnicate"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2_with_one_line(args):
    result = run(args)
    assert result.exit_code == 2
    assert result.stderr.startswith("cgic: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "--help" in result.stderr


def test_damaged_and_wrong_model_files_exit_1_with_one_line(tmp_path, tiny_weights, other_tiny_weights):
    src = save_png(tmp_path / "in.png", synthetic_photo(32, 48))
    assert run(["encode", src, "-o", tmp_path / "good.cgic", "--weights", tiny_weights]).exit_code == 0
    good = (tmp_path / "good.cgic").read_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x10
    cases = {
        "truncated.cgic": good[: len(good) - 3],
        "corrupted.cgic": bytes(flipped),
        "empty.cgic": b"",
        "random.cgic": bytes(np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8)),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        result = real_cli(["decode", tmp_path / name, "-o", tmp_path / f"{name}.png"], tiny_weights)
        assert result.returncode == 1, name
        lines = result.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("cgic: error:"), (name, lines)
        assert "Traceback" not in result.stderr.decode()
        assert not (tmp_path / f"{name}.png").exists()
    wrong = real_cli(["decode", tmp_path / "good.cgic", "-o", tmp_path / "w.png"], other_tiny_weights)
    assert wrong.returncode == 1
    assert "needs model" in wrong.stderr.decode() and len(wrong.stderr.decode().strip().splitlines()) == 1


def test_verbose_shows_the_traceback(tmp_path, tiny_weights):
    (tmp_path / "bad.cgic").write_bytes(b"CGIC\x01")
    result = real_cli(["decode", tmp_path / "bad.cgic", "-v"], tiny_weights)
    assert result.returncode == 1
    assert "Traceback" in result.stderr.decode()


def test_bad_image_input_exits_1(tmp_path, tiny_weights):
    (tmp_path / "notes.png").write_text("not an image")
    result = run(["encode", tmp_path / "notes.png", "--weights", tiny_weights])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "notes.png" in result.stderr
    assert not (tmp_path / "notes.cgic").exists()


def test_directory_batch_survives_a_bad_file(tmp_path, tiny_weights):
    src = tmp_path / "photos"
    src.mkdir()
    for i in range(3):
        save_png(src / f"img{i}.png", synthetic_photo(32 + 16 * i, 40, seed=i))
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (src / "readme.txt").write_text("ignored: not an image suffix")
    out = tmp_path / "out"
    result = run(["encode", src, "-o", out, "--json", "--weights", tiny_weights])
    assert result.exit_code == 1
    assert sorted(p.name for p in out.iterdir()) == ["img0.cgic", "img1.cgic", "img2.cgic"]
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["ok"] for r in records].count(True) == 3 and [r["ok"] for r in records].count(False) == 1
    assert "3 of 4 files done, 1 failed" in result.stderr
    for record in records:
        if record["ok"]:
            assert record["bytes"] == (out / (os.path.basename(record["input"])[:-4] + ".cgic")).stat().st_size


def test_info_reports_header_without_a_model(tmp_path, tiny_weights):
    src = save_png(tmp_path / "in.png", synthetic_photo(30, 50))
    assert run(["encode", src, "--ratios", "0.301,0.599,0.1", "--weights", tiny_weights]).exit_code == 0
    result = run(["info", tmp_path / "in.cgic", "--json"])
    assert result.exit_code == 0
    record = json.loads(result.stdout)
    assert (record["width"], record["height"]) == (50, 30)
    assert record["ratios"] == [0.301, 0.599, 0.1]
    assert record["bytes"] == (tmp_path / "in.cgic").stat().st_size
    assert record["bpp"] == pytest.approx(8 * record["bytes"] / 1500, abs=1e-6)
    assert (record["format_version"], record["index_coding"]) == (1, "usage")
    (tmp_path / "bad.cgic").write_bytes(b"nope")
    assert run(["info", tmp_path / "bad.cgic"]).exit_code == 1


@pytest.mark.parametrize("weights", ["tiny_weights", "tiny_rank_weights"])
def test_info_checks_the_masks_and_lists_failures_in_json(tmp_path, weights, request):
    src = save_png(tmp_path / "in.png", synthetic_photo(40, 72))
    assert run(["encode", src, "--weights", request.getfixturevalue(weights)]).exit_code == 0
    header, sections = parse_file((tmp_path / "in.cgic").read_bytes())
    # A damaged mask section under a valid CRC (only a crafted file has one): decode refuses it, so info must too.
    damaged = pack_file(header, dataclasses.replace(sections, masks=sections.masks + b"\xff"))
    (tmp_path / "damaged.cgic").write_bytes(damaged)
    result = run(["info", tmp_path / "in.cgic", tmp_path / "damaged.cgic", "--json"])
    assert result.exit_code == 1 and "mask" in result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["ok"] for r in records] == [True, False] and "mask" in records[1]["error"]


@pytest.mark.parametrize(("flag", "version"), [("--colour-correction", 6), ("--no-colour-correction", 3)])
def test_info_names_neighbour_rank_coding_of_versions_3_and_6(tmp_path, tiny_rank_weights, flag, version):
    src = save_png(tmp_path / "in.png", synthetic_photo(30, 50))
    assert run(["encode", src, "--weights", tiny_rank_weights, flag]).exit_code == 0
    record = json.loads(run(["info", tmp_path / "in.cgic", "--json"]).stdout)
    assert (record["format_version"], record["index_coding"]) == (version, "neighbour-rank")
    assert (record["section_bytes"]["correction"] > 0) == (version == 6)
    text = run(["info", tmp_path / "in.cgic"]).output
    assert f"cgic v{version}" in text and "neighbour-rank coded indices" in text


def test_target_options(tmp_path, tiny_weights):
    src = save_png(tmp_path / "in.png", synthetic_photo(64, 96))
    result = run(
        ["encode", src, "-o", tmp_path / "t.cgic", "--target-size", "400", "--json", "--weights", tiny_weights]
    )
    assert result.exit_code == 0
    record = json.loads(result.stdout)
    assert record["bytes"] <= 400 and record["target_reached"] is True
    assert (tmp_path / "t.cgic").stat().st_size == record["bytes"]
    result = run(["encode", src, "-o", tmp_path / "u.cgic", "--target-bpp", "50", "--json", "--weights", tiny_weights])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["target_reached"] is False
    assert "outside" in result.stderr
    result = run(["encode", src, "-o", tmp_path / "p.cgic", "--target-psnr", "5", "--json", "--weights", tiny_weights])
    assert result.exit_code == 0
    record = json.loads(result.stdout)
    assert record["target_reached"] is True and record["psnr"] >= 5
    assert f"{record['psnr']:.2f} dB" in result.stderr
    for bad in (
        ["--target-bpp", "0"],
        ["--target-size", "0"],
        ["--target-psnr", "0"],
        ["--target-psnr", "100"],
        ["--budget", "dataset"],
        ["--target-bpp", "1", "-r", "1,0,0"],
        ["--target-psnr", "30", "--target-size", "400"],
    ):
        assert run(["encode", src, *bad, "--weights", tiny_weights]).exit_code == 2


def test_dataset_budget_meets_the_mean(tmp_path, tiny_weights):
    folder = tmp_path / "set"
    folder.mkdir()
    for i in range(3):
        save_png(folder / f"{i}.png", synthetic_photo(48, 64, seed=i))
    result = run(
        [
            "encode",
            folder,
            "-o",
            tmp_path / "out",
            "--target-bpp",
            "0.3",
            "--budget",
            "dataset",
            "--json",
            "--weights",
            tiny_weights,
        ]
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    mean = 8 * sum(r["bytes"] for r in records) / sum(r["width"] * r["height"] for r in records)
    assert abs(mean - 0.3) < 0.02


def test_eval_writes_rows_and_summaries(tmp_path, tiny_weights, monkeypatch):
    monkeypatch.delenv("CGIC_METRIC_WEIGHTS", raising=False)
    folder = tmp_path / "imgs"
    folder.mkdir()
    save_png(folder / "a.png", synthetic_photo(64, 64))
    args = [
        "eval",
        folder,
        "-o",
        tmp_path / "ev",
        "--codecs",
        "cgic,jpeg",
        "--targets",
        "0.5,1.5",
        "--weights",
        tiny_weights,
        "--gallery",
        "1",
        "-q",
    ]
    assert run(args).exit_code == 0
    rows = (tmp_path / "ev" / "rows.csv").read_text().splitlines()
    strip = Image.open(tmp_path / "ev" / "gallery-a-0.5bpp.png")
    assert strip.size == (3 * 64, 64 + 18)  # original | cgic | jpeg, labelled
    # The first panel is the original pixels.
    assert np.array_equal(np.asarray(strip)[:64, :64], synthetic_photo(64, 64))
    assert len(rows) == 1 + 4
    summary = json.loads((tmp_path / "ev" / "summary-jpeg.json").read_text())
    assert summary["name"] == "jpeg" and len(summary["results"]["bpp"]) == 2 and "psnr-rgb" in summary["results"]
    assert "lpips" not in summary["results"], "no metric weights given: LPIPS must be skipped, not invented"
    # A second run computes nothing new.
    assert run(args).exit_code == 0
    assert (tmp_path / "ev" / "rows.csv").read_text().splitlines() == rows
    assert run(["eval", folder, "-o", tmp_path / "ev", "--codecs", "gif"]).exit_code == 2


def test_eval_survives_a_cut_row_a_bad_image_and_refuses_what_cannot_work(tmp_path, monkeypatch):
    monkeypatch.delenv("CGIC_METRIC_WEIGHTS", raising=False)
    folder = tmp_path / "imgs"
    folder.mkdir()
    save_png(folder / "a.png", synthetic_photo(48, 64))
    (folder / "b.png").write_bytes(b"not an image")
    save_png(folder / "c.png", synthetic_photo(48, 64, seed=4))
    args = ["eval", folder, "-o", tmp_path / "ev", "--codecs", "jpeg", "--targets", "0.5,1", "-q"]
    result = run(args)
    assert result.exit_code == 1 and "cgic: error:" in result.stderr and "b.png" in result.stderr
    rows_path = tmp_path / "ev" / "rows.csv"
    complete = rows_path.read_text()
    assert len(complete.splitlines()) == 1 + 4  # a and c at two targets
    # A run killed while writing its last row: that row is computed again.
    rows_path.write_text(complete[:-30])
    assert run(args).exit_code == 1  # b.png again
    assert rows_path.read_text().splitlines()[:-1] == complete.splitlines()[:-1]
    assert len(rows_path.read_text().splitlines()) == 1 + 4
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "rows.csv").write_text("a,b\n1,2\n")
    result = run(["eval", folder, "-o", tmp_path / "other", "--codecs", "jpeg", "--targets", "0.5"])
    assert result.exit_code == 1 and "not the rows.csv" in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "empty").mkdir()
    assert run(["eval", tmp_path / "empty", "-o", tmp_path / "ev2", "--codecs", "jpeg"]).exit_code == 1
    for bad in (["--codecs", ","], ["--limit", "-1"], ["--targets", "inf"], ["--targets", "nan"]):
        assert run(["eval", folder, "-o", tmp_path / "ev3", *bad]).exit_code == 2, bad


def test_eval_jpeg_xl_when_the_plugin_is_installed(tmp_path, tiny_weights, monkeypatch):
    pytest.importorskip("pillow_jxl", reason='JPEG XL in cgic eval needs pip install "cgic[eval]"')
    monkeypatch.delenv("CGIC_METRIC_WEIGHTS", raising=False)
    folder = tmp_path / "imgs"
    folder.mkdir()
    save_png(folder / "a.png", synthetic_photo(64, 64))
    args = ["eval", folder, "-o", tmp_path / "ev", "--codecs", "jxl", "--targets", "1.0", "--weights", tiny_weights]
    assert run([*args, "-q"]).exit_code == 0
    summary = json.loads((tmp_path / "ev" / "summary-jxl.json").read_text())
    assert summary["results"]["bpp"][0] == pytest.approx(1.0, abs=0.3)


def test_the_progress_bar_draws_on_a_terminal_once_a_phase_is_slow_and_clears_itself(monkeypatch):
    import io

    from controlgic_cli.cli.output import progress_bar

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    clock = [1000.0]
    monkeypatch.setattr("tqdm.std.time", lambda: clock[0])  # tqdm's own clock, for its 1 s delay
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    advance = progress_bar()
    assert terminal.getvalue() == "", "no bar before the search starts"
    advance(1, 6)
    assert terminal.getvalue() == "", "no bar in a phase's first second"
    clock[0] += 2
    advance(2, 6)
    assert "encoding" in terminal.getvalue() and "2/6" in terminal.getvalue()
    advance(6, 6)
    assert "6/6" in terminal.getvalue()
    assert terminal.getvalue().endswith("\r") or terminal.getvalue().endswith("\x1b[A"), "closed without leaving a line"
    # The next phase counts from 0 again, on a bar of its own.
    drawn = len(terminal.getvalue())
    advance(1, 4)
    clock[0] += 2
    advance(2, 4)
    assert "2/4" in terminal.getvalue()[drawn:]


def test_encoding_a_cgic_file_warns_that_it_is_coded_again(tmp_path, tiny_weights, monkeypatch):
    monkeypatch.setenv("CGIC_WEIGHTS", str(tiny_weights))  # what the Pillow plugin decodes with
    # get_codec() keeps one codec per process for weights=None: keep the tiny one out of later tests.
    get_codec.cache_clear()
    try:
        src = save_png(tmp_path / "in.png", synthetic_photo(32, 48))
        assert run(["encode", src]).exit_code == 0
        result = run(["encode", tmp_path / "in.cgic", "-o", tmp_path / "again.cgic"])
    finally:
        get_codec.cache_clear()
    assert result.exit_code == 0
    assert "already a .cgic file" in result.stderr and "cgic decode" in result.stderr


def test_decoding_a_folder_on_two_threads_writes_what_one_thread_writes(tmp_path, tiny_weights):
    src = tmp_path / "photos"
    src.mkdir()
    for i in range(4):
        save_png(src / f"img{i}.png", synthetic_photo(24 + 8 * i, 40, seed=i))
    assert run(["encode", src, "-o", tmp_path / "coded", "--weights", tiny_weights]).exit_code == 0
    lines = {}
    for jobs in (1, 2):
        out = tmp_path / f"out{jobs}"
        result = run(["decode", tmp_path / "coded", "-o", out, "-j", jobs, "--weights", tiny_weights])
        assert result.exit_code == 0, result.output
        lines[jobs] = [line.split(" -> ")[0] for line in result.stderr.splitlines()[:-1]]
    assert lines[1] == lines[2] == [str(tmp_path / "coded" / f"img{i}.cgic") for i in range(4)]  # input order
    for i in range(4):
        assert (tmp_path / "out1" / f"img{i}.png").read_bytes() == (tmp_path / "out2" / f"img{i}.png").read_bytes()


def test_decode_crop(tmp_path, tiny_weights):
    src = save_png(tmp_path / "in.png", synthetic_photo(40, 56))
    run(["encode", src, "--weights", tiny_weights])
    whole = run(["decode", tmp_path / "in.cgic", "-o", tmp_path / "whole.png", "--weights", tiny_weights])
    part = run(
        ["decode", tmp_path / "in.cgic", "-o", tmp_path / "part.png", "--crop", "8,4,20,30", "--weights", tiny_weights]
    )
    assert whole.exit_code == 0 and part.exit_code == 0, part.output
    expected = np.asarray(Image.open(tmp_path / "whole.png"))[4:34, 8:28]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "part.png")), expected)
    outside = run(
        ["decode", tmp_path / "in.cgic", "-o", tmp_path / "x.png", "--crop", "50,0,10,10", "--weights", tiny_weights]
    )
    assert outside.exit_code == 1 and "is not inside the 56x40 image" in outside.stderr
    assert not (tmp_path / "x.png").exists()
    for bad in ("1,2,3", "a,b,c,d", "0,0,0,4", "-1,0,4,4"):
        assert run(["decode", tmp_path / "in.cgic", "--crop", bad, "--weights", tiny_weights]).exit_code == 2


def test_python_warnings_from_libraries_read_as_one_cgic_line(tmp_path, tiny_weights, monkeypatch):
    import warnings

    from controlgic_cli.api import Codec

    src = save_png(tmp_path / "in.png", synthetic_photo(24, 24))
    original = Codec._scores

    def warn_then_score(*args):
        # Outside image reading, whose Pillow warnings become notes naming the file.
        warnings.warn("something odd in this file", UserWarning, stacklevel=1)
        return original(*args)

    monkeypatch.setattr(Codec, "_scores", warn_then_score)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        result = run(["encode", src, "--weights", tiny_weights])
        quiet = run(["encode", src, "-f", "-q", "--weights", tiny_weights])
    assert result.exit_code == 0
    assert "cgic: warning: something odd in this file\n" in result.stderr
    assert "UserWarning" not in result.stderr and "warn(" not in result.stderr
    assert quiet.stderr == ""


def test_resize_codes_the_resampled_image(tmp_path, tiny_weights):
    src = save_png(tmp_path / "in.png", synthetic_photo(48, 64))
    result = run(["encode", src, "--resize", "32x0", "-o", tmp_path / "a.cgic", "--weights", tiny_weights, "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert (record["width"], record["height"]) == (32, 24)
    assert run(["decode", tmp_path / "a.cgic", "-o", tmp_path / "a.png", "--weights", tiny_weights]).exit_code == 0
    assert Image.open(tmp_path / "a.png").size == (32, 24)
    # The same as resizing first and coding the result.
    Image.open(src).resize((32, 24), Image.Resampling.LANCZOS).save(tmp_path / "small.png")
    assert run(["encode", tmp_path / "small.png", "-o", tmp_path / "b.cgic", "--weights", tiny_weights]).exit_code == 0
    assert (tmp_path / "a.cgic").read_bytes() == (tmp_path / "b.cgic").read_bytes()


@pytest.mark.parametrize("value", ["0x0", "32", "32x-1", "axb", "32x24x1"])
def test_resize_values_that_are_not_a_size_are_usage_errors(tmp_path, value):
    result = run(["encode", tmp_path / "in.png", "--resize", value])
    assert result.exit_code == 2 and "--resize" in result.stderr


def test_decoding_to_a_suffix_cgic_does_not_write_is_a_usage_error(tmp_path, tiny_weights):
    src = save_png(tmp_path / "in.png", synthetic_photo(16, 16))
    assert run(["encode", src, "--weights", tiny_weights]).exit_code == 0
    result = run(["decode", tmp_path / "in.cgic", "-o", tmp_path / "out.gif", "--weights", tiny_weights])
    assert result.exit_code == 2 and "cannot write 'out.gif'" in result.stderr
    assert not (tmp_path / "out.gif").exists()


def test_a_side_longer_than_a_header_holds_is_refused_before_the_network(tmp_path, tiny_weights, monkeypatch):
    src = save_png(tmp_path / "long.png", np.full((2, 70_000, 3), 128, np.uint8))

    def no_network(*args, **kwargs):
        raise AssertionError("the network ran")

    monkeypatch.setattr("controlgic_cli.inference.TiledNetwork.encode_indices_many", no_network)
    result = run(["encode", src, "--weights", tiny_weights])
    assert result.exit_code == 1 and "side over 65535 pixels" in result.stderr
    assert result.stderr.count("\n") == 1
    # Resizing brings it within the limit.
    monkeypatch.undo()
    assert run(["encode", src, "--resize", "7000x0", "--weights", tiny_weights]).exit_code == 0


def test_binary_output_is_not_written_to_a_terminal(tmp_path, tiny_weights, monkeypatch):
    src = save_png(tmp_path / "in.png", synthetic_photo(16, 16))
    assert run(["encode", src, "--weights", tiny_weights]).exit_code == 0
    monkeypatch.setattr("controlgic_cli.cli.commands._stdout_is_a_terminal", lambda: True)
    for args in (["encode", src, "-o", "-"], ["decode", tmp_path / "in.cgic", "-o", "-"]):
        result = CliRunner().invoke(main, [*map(str, args), "--weights", str(tiny_weights)])
        assert result.exit_code == 2 and "terminal" in result.stderr


def test_pillows_warnings_about_a_file_name_it_once(tmp_path, tiny_weights):
    photo = tmp_path / "damaged-exif.jpg"
    Image.fromarray(synthetic_photo(32, 32)).save(photo, exif=b"Exif\0\0II*\0\xff\xff\xff\x7f garbage")
    result = run(["encode", photo, "--metadata", "exif", "--weights", tiny_weights])
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("cgic: warning:")]
    assert warnings == [f"cgic: warning: {photo}: Corrupt EXIF data. Expecting to read 2 bytes but only got 0."]


def test_print_psnr_is_the_psnr_of_the_decoded_file(tmp_path, tiny_weights):
    from controlgic_cli.metrics.distortion import psnr

    photo = synthetic_photo(40, 56)
    alpha = np.full((40, 56), 255, np.uint8)
    alpha[:, :20] = 0  # transparent pixels do not count
    for name, pixels in (("rgb.png", photo), ("rgba.png", np.dstack([photo, alpha]))):
        src = save_png(tmp_path / name, pixels)
        result = run(["encode", src, "--print-psnr", "--json", "--weights", tiny_weights])
        assert result.exit_code == 0, result.stderr
        reported = json.loads(result.stdout)["psnr"]
        out = tmp_path / f"out-{name}"
        assert run(["decode", src.with_suffix(".cgic"), "-o", out, "--weights", tiny_weights]).exit_code == 0
        decoded = np.asarray(Image.open(out))[..., :3]
        seen = alpha > 0 if name == "rgba.png" else np.ones(alpha.shape, bool)
        assert reported == pytest.approx(psnr(photo[seen][None], decoded[seen][None]), abs=1e-3)
        assert f"{reported:.2f} dB" in run(["encode", src, "-f", "--print-psnr", "--weights", tiny_weights]).stderr
