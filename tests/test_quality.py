"""--quality: the scale's interpolation and file, its calibration, and encoding at a level (tiny models)."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from controlgic_cli.api import Codec
from controlgic_cli.cli import main
from controlgic_cli.coding.container import parse_file
from controlgic_cli.errors import ModelError, OptionsError
from controlgic_cli.eval.quality_calibration import build_scale
from controlgic_cli.model.weights import default_weights_path, load_weights
from controlgic_cli.planning.quality import ANCHORS, PlannerScale, QualityScale, load_scale, scale_path
from controlgic_cli.planning.rate import choose_dataset

from .conftest import synthetic_photo

SCALE = PlannerScale(thresholds=(900.0, 400.0, 200.0, 90.0, 40.0, 10.0, 1.0, -3.0, -20.0), unit=1.0, kodak_bpp=(0,) * 9)


def test_thresholds_fall_with_quality_through_every_anchor():
    levels = np.linspace(0, 100, 401)
    thresholds = [SCALE.threshold(q) for q in levels]
    assert thresholds[0] == math.inf and thresholds[-1] == -math.inf
    assert all(b < a for a, b in zip(thresholds, thresholds[1:], strict=False))
    for quality, expected in zip(ANCHORS, SCALE.thresholds, strict=True):
        assert SCALE.threshold(quality) == pytest.approx(expected)
    # Beyond the anchors the end segments continue (in asinh units): no jump to the extremes before 0 and 100.
    assert 900 < SCALE.threshold(5) < math.inf and -math.inf < SCALE.threshold(95) < -20


def test_scale_files_round_trip_and_bad_ones_are_refused(tmp_path):
    scale = QualityScale("0011223344556677", {"measured": SCALE}, "a command")
    assert QualityScale.from_json(scale.to_json(), "x") == scale
    weights = tmp_path / "model.safetensors"
    assert scale_path(weights) == tmp_path / "model.quality.json"
    with pytest.raises(ModelError, match="needs a quality scale for model 0011223344556677"):
        load_scale(weights, "0011223344556677")
    scale_path(weights).write_text(scale.to_json())
    assert load_scale(weights, "0011223344556677") == scale
    with pytest.raises(ModelError, match="is for model 0011223344556677, the weights are model 8899aabbccddeeff"):
        load_scale(weights, "8899aabbccddeeff")
    for damage in ('"thresholds": [', '"unit": 1.0', '"format": "cgic'):
        text = scale.to_json()
        broken = {
            '"thresholds": [': text.replace('"thresholds": [', '"thresholds": [1e9, '),
            '"unit": 1.0': text.replace('"unit": 1.0', '"unit": -1.0'),
            '"format": "cgic': text.replace('"format": "cgic', '"format": "other'),
        }[damage]
        scale_path(weights).write_text(broken)
        with pytest.raises(ModelError, match="is damaged"):
            load_scale(weights, "0011223344556677")
    with pytest.raises(OptionsError, match="between 0 and 100"):
        scale.threshold(101, "measured")
    with pytest.raises(OptionsError, match="no levels for the entropy planner"):
        scale.threshold(50, "entropy")


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, tiny_rank_weights):
    """A copy of the tiny rank-coded weights with a quality scale made from six generated photos."""
    folder = tmp_path_factory.mktemp("quality")
    weights = folder / "tiny.safetensors"
    shutil.copy(tiny_rank_weights, weights)
    images = []
    for seed, (height, width) in enumerate([(48, 64), (64, 48), (32, 80), (80, 80), (48, 48), (64, 96)]):
        images.append(folder / f"photo{seed}.png")
        Image.fromarray(synthetic_photo(height, width, seed=seed)).save(images[-1])
    codec = Codec(weights, device="cpu")
    scale = build_scale(codec, images, "test")
    scale_path(weights).write_text(scale.to_json())
    return Codec(weights, device="cpu"), images, scale


def test_an_anchor_level_gives_the_dataset_budget_it_was_calibrated_on(calibrated):
    codec, images, scale = calibrated
    for planner in ("measured", "entropy"):
        analyses = [codec.analyse(image, planner=planner) for image in images]
        paths = [codec.rate_path(analysis) for analysis in analyses]
        pixels = [a.source.width * a.source.height for a in analyses]
        for anchor, bpp in zip(ANCHORS, scale.planners[planner].kodak_bpp, strict=True):
            expected_steps, _ = choose_dataset([p.summary() for p in paths], pixels, bpp)
            sizes = [len(codec.encode_analysis_to_target(a, quality=anchor).data) for a in analyses]
            assert sizes == [int(p.sizes[s]) for p, s in zip(paths, expected_steps, strict=True)], (planner, anchor)


def test_files_grow_with_quality_from_all_coarse_to_all_fine(calibrated):
    codec, images, _ = calibrated
    analysis = codec.analyse(images[3])
    results = [codec.encode_analysis_to_target(analysis, quality=q) for q in (0, 15, 35, 55, 75, 95, 100)]
    sizes = [len(r.data) for r in results]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    assert parse_file(results[0].data)[0].ratios == (0, 0, 1_000_000)
    assert parse_file(results[-1].data)[0].ratios == (1_000_000, 0, 0)
    assert all(parse_file(r.data)[0].rate_controlled for r in results)
    # The same level is the same file, whether the image comes alone or after others.
    assert codec.encode_to_target(images[3], quality=55).data == results[3].data


def test_cli_quality(calibrated, tmp_path, tiny_rank_weights):
    codec, images, _ = calibrated
    weights = str(codec.model.path)
    runner = CliRunner()
    result = runner.invoke(
        main, ["encode", str(images[0]), "-o", str(tmp_path / "a.cgic"), "--quality", "60", "--weights", weights]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a.cgic").read_bytes() == codec.encode_to_target(images[0], quality=60).data
    both = runner.invoke(
        main, ["encode", str(images[0]), "--quality", "60", "--target-bpp", "0.3", "--weights", weights]
    )
    assert both.exit_code == 2 and "alternatives" in both.output
    out_of_range = runner.invoke(main, ["encode", str(images[0]), "--quality", "120", "--weights", weights])
    assert out_of_range.exit_code == 2
    # Weights without a scale: one line, exit 1, and nothing written.
    missing = runner.invoke(
        main,
        [
            "encode",
            str(images[0]),
            "-o",
            str(tmp_path / "b.cgic"),
            "--quality",
            "60",
            "--weights",
            str(tiny_rank_weights),
        ],
    )
    assert missing.exit_code == 1 and "needs a quality scale" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b.cgic").exists()


def test_the_shipped_scale_belongs_to_the_shipped_model():
    weights = default_weights_path()
    loaded = load_weights(weights)
    scale = load_scale(weights, loaded.model_id.hex())
    assert set(scale.planners) == {"measured", "entropy"}
    for planner in scale.planners.values():
        assert list(planner.kodak_bpp) == sorted(planner.kodak_bpp)
