"""Golden bitstreams: the encoder writes the checked-in .cgic files byte for byte, the decoder their pixels.

The files, what they hold and how to regenerate them on purpose are described
in tests/make_golden.py (`python -m tests.make_golden`).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from controlgic_cli.coding.container import HEADER_SIZE, parse_file

from .make_golden import CASES, REGENERATE, cgic_path, decode, decoded_path, encode, pixels

ON_PURPOSE = (
    f"If the change is meant (a new format version, a different encoder), regenerate the goldens with "
    f"`{REGENERATE}`, review `git diff --stat tests/data/golden`, and say in the commit why the bytes changed."
)


@pytest.mark.parametrize("name", list(CASES))
def test_the_encoder_writes_the_golden_bytes(name, tmp_path):
    expected = cgic_path(name).read_bytes()
    written = encode(name, tmp_path / f"{name}.cgic")
    if written != expected:
        differs = next((i for i, (a, b) in enumerate(zip(written, expected, strict=False)) if a != b), None)
        if differs is None:
            where = "the same bytes up to the shorter one's end"
        else:
            where = f"first difference at byte {differs} ({'header' if differs < HEADER_SIZE else 'payload'})"
        pytest.fail(
            f"encoding tests/data/golden/{name}.png no longer gives {cgic_path(name).name}: "
            f"{len(written)} bytes instead of {len(expected)}, {where}. {ON_PURPOSE}"
        )


@pytest.mark.parametrize("name", list(CASES))
def test_the_decoder_gives_the_golden_pixels(name, tmp_path):
    parse_file(cgic_path(name).read_bytes())  # a well-formed file of the format version it claims
    expected = pixels(decoded_path(name))
    decoded = decode(cgic_path(name), tmp_path / f"{name}.png")
    assert decoded.shape == expected.shape and decoded.dtype == expected.dtype, ON_PURPOSE
    if decoded.shape[-1] == 4:
        assert np.array_equal(decoded[..., 3], expected[..., 3]), f"the alpha plane is lossless. {ON_PURPOSE}"
    # Pixels are float network outputs rounded to 8 bits: on another CPU instruction set (AVX2 vs
    # AVX-512, controlgic_cli/determinism.py) a value on a rounding boundary may come out 1 off.
    difference = np.abs(decoded.astype(np.int16) - expected.astype(np.int16))
    changed = int((difference > 0).sum())
    assert difference.max() <= 1 and changed <= expected.size // 1000, (
        f"decoding {cgic_path(name).name} gives other pixels than {decoded_path(name).name}: "
        f"{changed} of {expected.size} values differ, by up to {difference.max()}. {ON_PURPOSE}"
    )
    if changed:
        warnings.warn(f"{name}: {changed} decoded values are 1 off the golden pixels (rounding)", stacklevel=1)
