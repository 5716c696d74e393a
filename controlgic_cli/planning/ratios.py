"""Granularity ratios (fine, medium, coarse): validation and integer form.

Ratios are area fractions of the image given to each granularity. Every
computation after validation uses integer parts per million, so planning and
the header never compare floats for equality.
"""

from __future__ import annotations

import math

from ..errors import OptionsError

PPM = 1_000_000
RATIO_SUM_TOLERANCE = 1e-6
NAMES = ("fine", "medium", "coarse")
# The paper's (0.3, 0.6, 0.1) preset: about 0.3 bpp with the shipped model.
DEFAULT_RATIOS = (0.3, 0.6, 0.1)


def validate_ratios(ratios) -> tuple[float, float, float]:
    """Each ratio in [0, 1], three of them, summing to 1 within 1e-6."""
    try:
        if isinstance(ratios, str | bytes):
            raise TypeError
        values = tuple(ratios)
    except TypeError:  # text, or one number
        raise OptionsError(f"ratios need three numbers (fine, medium, coarse), got {ratios!r}") from None
    if len(values) != 3:
        raise OptionsError(f"ratios need three values (fine, medium, coarse), got {len(values)}")
    checked = []
    for name, value in zip(NAMES, values, strict=True):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise OptionsError(f"{name} ratio {value!r} is not a number") from None
        # Float noise such as 1 - 0.07 - 0.93 = -1.1e-16 is not a user's mistake.
        if not math.isfinite(value) or not -RATIO_SUM_TOLERANCE <= value <= 1.0 + RATIO_SUM_TOLERANCE:
            raise OptionsError(f"{name} ratio {value!r} is outside [0, 1]")
        checked.append(min(max(value, 0.0), 1.0))
    total = sum(checked)
    if abs(total - 1.0) > RATIO_SUM_TOLERANCE:
        raise OptionsError(f"ratios (fine, medium, coarse) must sum to 1, got {total:.7g}")
    return checked[0], checked[1], checked[2]


def ratios_to_ppm(ratios) -> tuple[int, int, int]:
    """Validated ratios -> integer parts per million summing to exactly 1_000_000.

    Each is rounded to the nearest ppm; the leftover (a few ppm at most) goes
    to the largest share, where it matters least.
    """
    ppm = [round(value * PPM) for value in validate_ratios(ratios)]
    largest = ppm.index(max(ppm))
    ppm[largest] += PPM - sum(ppm)
    return ppm[0], ppm[1], ppm[2]


def ratios_ppm_problem(ratios_ppm) -> str | None:
    """Why an integer triple is not a valid ratio, or None."""
    if len(ratios_ppm) != 3 or not all(isinstance(v, int) and 0 <= v <= PPM for v in ratios_ppm):
        return f"ratios must be three integers in 0..{PPM} ppm that sum to {PPM}, got {ratios_ppm}"
    if sum(ratios_ppm) != PPM:
        return f"ratios must sum to {PPM} ppm, got {sum(ratios_ppm)}"
    return None


def ppm_to_ratios(ratios_ppm) -> tuple[float, float, float]:
    problem = ratios_ppm_problem(ratios_ppm)
    if problem:
        raise OptionsError(problem)
    return ratios_ppm[0] / PPM, ratios_ppm[1] / PPM, ratios_ppm[2] / PPM
