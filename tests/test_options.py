"""EncodeOptions: one validated home for the target and the encoder's choices; every front end passes it down."""

from __future__ import annotations

import io
import pickle

import pytest
from PIL import Image

from controlgic_cli import EncodeOptions
from controlgic_cli.api import Codec
from controlgic_cli.batch.core import EncodeSettings
from controlgic_cli.errors import OptionsError
from controlgic_cli.options import TARGETS, TargetConflict
from controlgic_cli.planning.ratios import DEFAULT_RATIOS

from .conftest import synthetic_photo


def test_no_target_means_the_default_ratios_and_exactly_one_is_checked_here():
    assert EncodeOptions().ratios == DEFAULT_RATIOS and EncodeOptions().target == "ratios"
    assert EncodeOptions(target_bpp=0.3).ratios is None and EncodeOptions(target_bpp=0.3).target == "target_bpp"
    for first, second in zip(TARGETS, TARGETS[1:], strict=False):
        values = {"ratios": (0.3, 0.6, 0.1), "target_size": 100, "quality": 50}
        with pytest.raises(TargetConflict, match="exactly one .* alternatives"):
            EncodeOptions(**{first: values.get(first, 0.3), second: values.get(second, 30.0)})


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        ({"target_bpp": "0.3"}, TypeError, "target_bpp must be a number"),
        ({"target_size": float("nan")}, OptionsError, "finite"),
        ({"quality": 101}, OptionsError, "between 0 and 100"),
        ({"target_bpp": 0}, OptionsError, "must be > 0"),
        ({"dataset_bpp": -1.0}, OptionsError, "must be > 0"),
        ({"target_size": 0}, OptionsError, "at least 1 byte"),
        ({"target_psnr": 100}, OptionsError, "between 0 and 100 dB"),
        ({"ratios": 0.5}, OptionsError, "three numbers"),
        ({"ratios": (0.5, 0.6, 0.1)}, OptionsError, "sum to 1"),
        ({"tune": "sharp"}, OptionsError, "unknown tune"),
        ({"planner": "guess"}, OptionsError, "unknown planner"),
        ({"metadata": ("gps",)}, OptionsError, "unknown metadata kind"),
        ({"resize": (0, 0)}, OptionsError, "resize must be"),
        ({"resize": "10x10"}, OptionsError, "resize must be"),
    ],
)
def test_bad_options_fail_when_made(fields, error, message):
    with pytest.raises(error, match=message):
        EncodeOptions(**fields)


def test_options_are_normalised_frozen_and_travel_to_workers():
    options = EncodeOptions(metadata="all", resize=[64, 0], ratios=[0.5, 0.4, 0.1])
    assert options.metadata == frozenset({"icc", "exif", "xmp"}) and options.resize == (64, 0)
    assert options.ratios == (0.5, 0.4, 0.1)
    assert pickle.loads(pickle.dumps(options)) == options
    assert options.retarget(dataset_bpp=0.3).target == "dataset_bpp"
    assert options.retarget(dataset_bpp=0.3).metadata == options.metadata
    settings = EncodeSettings(options, device="cpu")
    assert EncodeSettings(metadata="all", resize=(64, 0), ratios=(0.5, 0.4, 0.1), device="cpu") == settings
    assert pickle.loads(pickle.dumps(settings)) == settings
    assert settings.for_dataset(0.2).options.dataset_bpp == 0.2 and settings.for_dataset(None) is settings
    with pytest.raises(TypeError, match="not both"):
        EncodeSettings(options, tune="psnr")


def test_every_front_end_writes_what_encode_with_writes(tiny_weights):
    codec = Codec(tiny_weights, "cpu")
    image = synthetic_photo(40, 56, seed=4)
    for options in (EncodeOptions(), EncodeOptions(ratios=(0.5, 0.4, 0.1)), EncodeOptions(target_size=300)):
        expected = codec.encode_with(image, options).data
        analysis = codec.analyse(image)
        assert codec.encode_with(analysis, options).data == expected
        buffer = io.BytesIO()
        target = {options.target: getattr(options, options.target)}
        Image.fromarray(image).save(buffer, format="CGIC", weights=str(tiny_weights), device="cpu", **target)
        assert buffer.getvalue() == expected
    assert codec.encode_with(image, EncodeOptions(target_bpp=0.4)).data == codec.encode_to_target(image, 0.4).data
    with pytest.raises(OptionsError, match="encode_dataset"):
        codec.encode_with(image, EncodeOptions(dataset_bpp=0.3))
    with pytest.raises(OptionsError, match="exactly one"):
        codec.encode_to_target(image)
    resized = codec.encode_with(image, EncodeOptions(resize=(28, 0)))
    assert (resized.stats.width, resized.stats.height) == (28, 20)
