"""EncodeOptions: everything that decides the bytes of a .cgic file, validated in one place (as libwebp's WebPConfig).

The CLI, the batch engines (local and Dask), the library API and the Pillow
plugin all build one EncodeOptions and pass it down whole; the codec
(api.Codec.encode_with) takes the planning path it names. File policy
(overwrite, skip existing), worker set-up (weights, device, threads) and
reporting are not encode options: batch.EncodeSettings holds those beside it.

The target is exactly one of:

    ratios       fixed area fractions (fine, medium, coarse); the default, DEFAULT_RATIOS, when no target is given
    target_bpp   the file nearest this many bits per pixel (rate control)
    target_size  the largest file of at most this many bytes (rate control)
    target_psnr  about the smallest file whose decoded image reaches this PSNR in dB (rate control)
    quality      0-100: one score threshold for every image (planning/quality.py)
    dataset_bpp  a mean bpp over a set of images, one threshold shared by all (Codec.encode_dataset,
                 the engines' map-reduce); not for one image alone

A new target is a field below, its check in _check_target and its choice in
rate_choice, and the CLI flag that sets it.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

from .errors import OptionsError
from .io.metadata import check_metadata_kinds
from .planning.ratios import DEFAULT_RATIOS, validate_ratios
from .planning.tunes import DEFAULT_PLANNER, check_tune_and_planner

RATE_TARGETS = ("target_bpp", "target_size", "target_psnr", "quality")  # one image, a step on its rate path
TARGETS = ("ratios", *RATE_TARGETS, "dataset_bpp")


class TargetConflict(OptionsError):
    """More than one target was given (each front end may say it in its own words: the CLI names its flags)."""


@dataclass(frozen=True)
class EncodeOptions:
    """How to encode: the target (exactly one; see the module) and the encoder's choices, all checked on creation.

    tune: "perceptual" or "psnr" (Codec.analyse_many). planner: "measured" or
    "entropy". metadata: the kinds kept, some of "icc", "exif", "xmp" or
    "all" (a frozenset once created). resize: (width, height) before coding,
    a side of 0 keeping the aspect ratio. colour_correction: send the
    low-resolution colour correction (coding/colour_correction.py; weights with
    rank tables), at one decoder pass more per encode.
    """

    ratios: tuple[float, float, float] | None = None
    target_bpp: float | None = None
    target_size: int | None = None
    target_psnr: float | None = None
    quality: float | None = None
    dataset_bpp: float | None = None
    tune: str = "perceptual"
    planner: str = DEFAULT_PLANNER
    metadata: frozenset[str] = frozenset()
    resize: tuple[int, int] | None = None
    colour_correction: bool = True

    def __post_init__(self):
        given = [name for name in TARGETS if getattr(self, name) is not None]
        if len(given) > 1:
            names = ", ".join(TARGETS[:-1]) + f" and {TARGETS[-1]}"
            raise TargetConflict(f"give exactly one of {names}: they are alternatives, got {', '.join(given)}")
        for name in TARGETS[1:]:
            _check_target(name, getattr(self, name))
        # The default ratios are resolved here, and only here.
        if not given:
            object.__setattr__(self, "ratios", validate_ratios(DEFAULT_RATIOS))
        elif given == ["ratios"]:
            object.__setattr__(self, "ratios", validate_ratios(self.ratios))
        check_tune_and_planner(self.tune, self.planner)
        object.__setattr__(self, "metadata", check_metadata_kinds(self.metadata))
        if self.resize is not None:
            object.__setattr__(self, "resize", _checked_resize(self.resize))
        if not isinstance(self.colour_correction, bool):
            raise OptionsError(f"colour_correction must be True or False, not {self.colour_correction!r}")

    @property
    def target(self) -> str:
        """The name of the target in force (one of TARGETS)."""
        return next(name for name in TARGETS if getattr(self, name) is not None)

    def retarget(self, **target) -> EncodeOptions:
        """These options with another target, such as retarget(dataset_bpp=0.3)."""
        return dataclasses.replace(self, **{**dict.fromkeys(TARGETS), **target})

    def rate_choice(
        self,
        path,
        pixels: int,
        threshold_for: Callable[[float], float],
        psnr_at: Callable[[int], float],
    ):
        """For a rate target: (RateChoice on the image's RatePath, the PSNR reached for a PSNR target, else None).

        threshold_for(quality): the planner-score threshold of a quality level
        (the codec's quality scale); psnr_at(step): the decoded image's PSNR at
        a step (a decoder pass).
        """
        from .planning import rate

        if self.quality is not None:
            return rate.choose_for_threshold(path, threshold_for(self.quality)), None
        if self.target_psnr is not None:
            return rate.choose_for_quality(path, psnr_at, self.target_psnr)
        if self.target_bpp is not None:
            return rate.choose_for_bpp(path, self.target_bpp, pixels), None
        if self.target_size is not None:
            return rate.choose_for_size(path, self.target_size), None
        raise OptionsError(f"{self.target} is not a target for one image's rate control")


def _check_target(name: str, value) -> None:
    if value is None:
        return
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if not math.isfinite(value):
        raise OptionsError(f"{name} must be a finite number, got {value}")
    if name == "quality" and not 0 <= value <= 100:
        raise OptionsError(f"quality must be between 0 and 100, got {value:g}")
    if name in ("target_bpp", "dataset_bpp") and not value > 0:
        raise OptionsError(f"target bpp must be > 0, got {value}")
    if name == "target_size" and value < 1:
        raise OptionsError(f"target size must be at least 1 byte, got {value}")
    if name == "target_psnr" and not 0 < value < 100:
        raise OptionsError(f"target PSNR must be between 0 and 100 dB, got {value}")


def _checked_resize(resize) -> tuple[int, int]:
    values = tuple(resize) if not isinstance(resize, str | bytes) else ()
    if (
        len(values) != 2
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values)
        or min(values) < 0
        or max(values) < 1
    ):
        raise OptionsError(
            f"resize must be (width, height) in whole pixels, a side of 0 keeping the aspect ratio, got {resize!r}"
        )
    return int(values[0]), int(values[1])
