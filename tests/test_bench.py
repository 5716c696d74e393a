"""The speed/bitrate benchmark behind docs/benchmarks.md (python -m controlgic_cli.eval.bench), on a tiny model."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from PIL import Image

from controlgic_cli.eval.bench import PRESETS, main

from .conftest import synthetic_photo


@pytest.mark.parametrize(
    ("flags", "correction"), [((), True), (("--no-colour-correction", "--planner", "entropy"), False)]
)
def test_the_benchmark_reports_every_preset_of_real_files(tmp_path, tiny_rank_weights, flags, correction):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(synthetic_photo(48, 64, seed=1)).save(folder / "a.png")
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        main, [str(folder), "--weights", str(tiny_rank_weights), "--threads", "1", "--json-out", str(out), *flags]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["colour_correction"] is correction and len(report["rows"]) == len(PRESETS)
    for row in report["rows"]:
        assert sum(row["section_bytes"].values()) == row["bytes"] and row["bpp"] == 8 * row["bytes"] / (48 * 64)
        assert (row["section_bytes"]["correction"] > 0) is correction
    bpps = [entry["bpp_mean"] for entry in report["summary"]]
    assert bpps == sorted(bpps)
