"""The `cgic` command's option types and shared options: values are checked while parsing, so a bad one is a
usage error (exit status 2) before any file is touched."""

from __future__ import annotations

import math

import click

from ..errors import OptionsError
from ..io.metadata import parse_metadata_kinds
from ..planning.ratios import validate_ratios


class RatiosType(click.ParamType):
    """`f,m,c` area fractions for fine, medium and coarse granularity."""

    name = "F,M,C"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        parts = [p.strip() for p in str(value).split(",")]
        try:
            return validate_ratios([float(p) for p in parts])
        except ValueError as exc:  # OptionsError is a ValueError too
            message = str(exc) if isinstance(exc, OptionsError) else f"{value!r} is not three numbers"
            self.fail(f"{message} (expected fine,medium,coarse such as 0.3,0.6,0.1)", param, ctx)


class _PixelNumbers(click.ParamType):
    """Whole numbers of pixels joined by a separator: how many, and which are valid, is the subclass's."""

    separator = ","
    count = 0
    expected = ""  # what the message says a value should be

    def valid(self, numbers: tuple[int, ...]) -> bool:
        raise NotImplementedError

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            numbers = tuple(int(p.strip()) for p in str(value).lower().split(self.separator))
        except ValueError:
            numbers = ()
        if len(numbers) != self.count or not self.valid(numbers):
            self.fail(f"{value!r} is not {self.expected}", param, ctx)
        return numbers


class CropType(_PixelNumbers):
    """`x,y,w,h`: left, top, width and height in pixels, like dwebp's -crop."""

    name = "X,Y,W,H"
    count = 4
    expected = "left,top,width,height in pixels (such as 0,0,512,512)"

    def valid(self, crop: tuple[int, ...]) -> bool:
        return min(crop) >= 0 and min(crop[2:]) >= 1


class FiniteFloatRange(click.FloatRange):
    """click's FloatRange without NaN and infinity, which compare false with every bound and so pass its check."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class ResizeType(_PixelNumbers):
    """`WxH` in pixels, a side of 0 keeping the aspect ratio (cwebp's -resize)."""

    name = "WxH"
    separator = "x"
    count = 2
    expected = "WIDTHxHEIGHT in pixels (such as 1600x0; 0 keeps the aspect ratio)"

    def valid(self, size: tuple[int, ...]) -> bool:
        return min(size) >= 0 and max(size) > 0


class MetadataType(click.ParamType):
    """`none`, `all` or a comma list of icc, exif, xmp."""

    name = "LIST"

    def convert(self, value, param, ctx):
        if isinstance(value, frozenset):
            return value
        try:
            return parse_metadata_kinds(str(value))
        except OptionsError as exc:
            self.fail(str(exc), param, ctx)


skip_existing_option = click.option(
    "--skip-existing",
    is_flag=True,
    help="Leave inputs whose output already exists (outputs are written atomically, so they are complete): "
    "resumes an interrupted batch.",
)


def common_options(func):
    func = click.option("-v", "--verbose", is_flag=True, help="More detail; tracebacks on errors.")(func)
    func = click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")(func)
    func = click.option("--json", "as_json", is_flag=True, help="One JSON object per file (JSON Lines).")(func)
    return func


def model_options(func):
    func = click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda"]),
        default="auto",
        show_default=True,
        help="Where the network runs.",
    )(func)
    func = click.option(
        "--weights",
        type=click.Path(dir_okay=False),
        default=None,
        help="Weights file (default: $CGIC_WEIGHTS, else the shipped model).",
    )(func)
    return func
