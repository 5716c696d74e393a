"""Tile geometry for running the network over images larger than one pass can hold.

The network is local: it has no attention and every norm is per position
(model/blocks.py), so an output pixel depends only on inputs within the
receptive field. A tile is therefore run on its core plus a margin of context
on every side, and only the core of its output is kept. With a margin as wide
as the receptive field the tiled result equals the untiled one up to float
rounding; docs/robustness.md records the measured seam error per margin.

All boxes are in pixels of the image padded to a multiple of 16, and every
edge is a multiple of 16, so each box maps onto whole cells of the fine (H/4),
medium (H/8) and coarse (H/16) grids.

The split depends on the image size only, never on the machine, so the same
image always gives the same tiles and hence the same file.
"""

from __future__ import annotations

from dataclasses import dataclass

ALIGN = 16


@dataclass(frozen=True)
class TileSpec:
    """Largest tile core side and the context margin, in pixels (multiples of 16)."""

    core: int = 2048
    margin: int = 192

    def __post_init__(self) -> None:
        if self.core < ALIGN or self.core % ALIGN or self.margin < 0 or self.margin % ALIGN:
            raise ValueError(f"tile core must be a positive multiple of {ALIGN} and margin a multiple of {ALIGN}")


@dataclass(frozen=True)
class Box:
    top: int
    left: int
    bottom: int
    right: int

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left

    def scaled(self, stride: int) -> tuple[slice, slice]:
        """Row and column slices of this box on a grid with the given stride (1 = pixels)."""
        return slice(self.top // stride, self.bottom // stride), slice(self.left // stride, self.right // stride)

    def intersection(self, other: Box) -> Box | None:
        """The pixels both boxes cover, or None when they do not meet."""
        top, left = max(self.top, other.top), max(self.left, other.left)
        bottom, right = min(self.bottom, other.bottom), min(self.right, other.right)
        return Box(top, left, bottom, right) if top < bottom and left < right else None

    def within(self, outer: Box, stride: int) -> tuple[slice, slice]:
        """Slices of this box inside an array that covers `outer`, at the given stride."""
        return (
            slice((self.top - outer.top) // stride, (self.bottom - outer.top) // stride),
            slice((self.left - outer.left) // stride, (self.right - outer.left) // stride),
        )


@dataclass(frozen=True)
class Tile:
    core: Box  # the part of the output this tile writes
    context: Box  # the part of the input it reads: core plus margin, clipped to the image


DEFAULT_TILES = TileSpec()


def split_axis(length: int, core: int) -> list[tuple[int, int]]:
    """Split [0, length) into the fewest spans of at most `core`, as equal as 16-pixel alignment allows."""
    if length % ALIGN:
        raise ValueError(f"length {length} is not a multiple of {ALIGN}")
    cells = length // ALIGN
    count = -(-length // core)
    base, extra = divmod(cells, count)
    spans, start = [], 0
    for i in range(count):
        size = (base + (1 if i < extra else 0)) * ALIGN
        spans.append((start, start + size))
        start += size
    return spans


def plan_tiles(height: int, width: int, spec: TileSpec) -> list[Tile]:
    """Tiles in raster order covering a padded image exactly once with their cores."""
    tiles = []
    for top, bottom in split_axis(height, spec.core):
        for left, right in split_axis(width, spec.core):
            core = Box(top, left, bottom, right)
            context = Box(
                max(0, top - spec.margin),
                max(0, left - spec.margin),
                min(height, bottom + spec.margin),
                min(width, right + spec.margin),
            )
            tiles.append(Tile(core, context))
    return tiles
