"""Ratios: validation and exact integer (ppm) form."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlgic_cli.errors import OptionsError
from controlgic_cli.planning.ratios import ppm_to_ratios, ratios_to_ppm, validate_ratios

FUZZ = settings(max_examples=200, deadline=None)


@pytest.mark.parametrize(
    ("fractions", "expected"),
    [
        ((0.5, 0.4, 0.1), (500_000, 400_000, 100_000)),
        ((1.0, 0.0, 0.0), (1_000_000, 0, 0)),
        ((0, 0, 1), (0, 0, 1_000_000)),
        ((1 / 3, 1 / 3, 1 / 3), (333_334, 333_333, 333_333)),
        ((0.07, 0.93, 0.0), (70_000, 930_000, 0)),
        # Both of the first two round up; the first of the largest gives the extra ppm back.
        ((0.3333335, 0.3333335, 0.333333), (333_333, 333_334, 333_333)),
    ],
)
def test_ratios_to_ppm_is_exact(fractions, expected):
    assert ratios_to_ppm(fractions) == expected


@given(st.floats(0, 1), st.floats(0, 1))
@FUZZ
def test_ratios_to_ppm_always_sums_exactly(a, b):
    fine, medium = min(a, b), abs(a - b)
    coarse = 1.0 - fine - medium
    ppm = ratios_to_ppm((fine, medium, coarse))
    assert sum(ppm) == 1_000_000
    assert all(abs(p - f * 1e6) <= 2 for p, f in zip(ppm, (fine, medium, coarse), strict=True))
    assert ppm_to_ratios(ppm) == pytest.approx((fine, medium, coarse), abs=2e-6)


@pytest.mark.parametrize(
    "fractions", [(0.5, 0.4, 0.2), (0.5, 0.5, 0.01), (1.1, -0.1, 0.0), (float("nan"), 0.5, 0.5), (0.6, 0.6, -0.2)]
)
def test_ratios_to_ppm_rejects_bad_fractions(fractions):
    with pytest.raises(OptionsError):
        ratios_to_ppm(fractions)


def test_ppm_to_ratios():
    assert ppm_to_ratios((500_000, 400_000, 100_000)) == (0.5, 0.4, 0.1)
    with pytest.raises(OptionsError):
        ppm_to_ratios((500_000, 400_000, 100_001))


@pytest.mark.parametrize("ratios", [(0.5, 0.5), (0.2, 0.3, 0.4, 0.1), ("a", 0.5, 0.5)])
def test_validate_ratios_names_the_problem(ratios):
    with pytest.raises(OptionsError):
        validate_ratios(ratios)


def test_validate_ratios_accepts_float_noise():
    assert validate_ratios((0.07, 0.93, 1 - 0.07 - 0.93)) == pytest.approx((0.07, 0.93, 0.0))
