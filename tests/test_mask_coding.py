"""Mask sections: grouped (version 3) against plain bits (versions 1 and 2), and their sizes along a path."""

from __future__ import annotations

import numpy as np
import pytest

from controlgic_cli.coding.container import FORMAT_VERSION_RANK_CODED, mask_section_size_range
from controlgic_cli.coding.mask_coding import BitMasks, GroupedMasks
from controlgic_cli.errors import FormatError


def random_masks(rng: np.random.Generator, h16: int, w16: int) -> tuple[np.ndarray, np.ndarray]:
    coarse = rng.random((h16, w16)) < rng.uniform(0, 1)
    medium = rng.random((2 * h16, 2 * w16)) < rng.uniform(0, 1)
    medium &= ~np.kron(coarse, np.ones((2, 2), bool))
    return coarse, medium


def test_symbols_take_cells_in_reading_order():
    coarse = np.array([[1, 0, 1], [1, 1, 0]], bool)
    medium = np.zeros((4, 6), bool)
    medium[0, 2] = medium[1, 3] = True  # the second coarse cell: top-left and bottom-right medium
    coarse_symbols, medium_symbols = GroupedMasks.symbols(coarse, medium)
    # Blocks: cells (0,0) (0,1) (1,0) (1,1) -> 1011; cells (0,2), beyond, (1,2), beyond -> 1000.
    assert coarse_symbols.tolist() == [0b1011, 0b1000]
    # Non-coarse cells in raster order: (0,1) then (1,2).
    assert medium_symbols.tolist() == [0b1001, 0b0000]


@pytest.mark.parametrize("masks", [BitMasks(), GroupedMasks()], ids=["bits", "grouped"])
@pytest.mark.parametrize("seed", range(8))
def test_masks_round_trip(masks, seed):
    rng = np.random.default_rng(seed)
    h16, w16 = (int(x) for x in rng.integers(1, 12, 2))
    coarse, medium = random_masks(rng, h16, w16)
    unpacked = masks.unpack(masks.pack(coarse, medium), h16, w16)
    assert np.array_equal(unpacked[0], coarse) and np.array_equal(unpacked[1], medium)


def test_grouped_masks_are_smaller_on_planner_like_masks():
    # Flat regions coarse, busy ones fine: what the planner makes.
    coarse = np.zeros((24, 32), bool)
    coarse[:12] = True
    medium = np.ones((48, 64), bool) & ~np.kron(coarse, np.ones((2, 2), bool))
    medium[36:] = False
    assert len(GroupedMasks().pack(coarse, medium)) < len(BitMasks().pack(coarse, medium)) / 2


@pytest.mark.parametrize("masks", [BitMasks(), GroupedMasks()], ids=["bits", "grouped"])
def test_bytes_over_time_equal_the_packed_section_at_every_time(masks):
    rng = np.random.default_rng(11)
    for _ in range(6):
        h16, w16 = (int(x) for x in rng.integers(1, 7, 2))
        times = int(rng.integers(1, 30))
        released_at = rng.integers(0, times + 2, (h16, w16))
        # A medium cell goes fine only after its coarse cell is released (or never, times + 1).
        parent = np.kron(released_at, np.ones((2, 2), np.int64))
        fine_from = np.minimum(parent + rng.integers(0, times + 2, parent.shape), times + 1)
        sizes = masks.bytes_over_time(released_at, fine_from, times)
        for time in range(times + 1):
            coarse = time < released_at
            medium = ~np.kron(coarse, np.ones((2, 2), bool)) & (time < fine_from)
            assert sizes[time] == len(masks.pack(coarse, medium)), (h16, w16, time)


def test_damaged_grouped_masks_are_refused():
    masks = GroupedMasks()
    coarse, medium = random_masks(np.random.default_rng(2), 3, 5)
    data = masks.pack(coarse, medium)
    with pytest.raises(FormatError, match="medium mask stream is"):
        masks.unpack(data + b"\x00", 3, 5)
    for length in range(len(data)):
        with pytest.raises(FormatError):
            masks.unpack(data[:length], 3, 5)
    # A coarse cell beyond the right edge of a 1x1 grid: the block symbol 1100.
    beyond = masks.coarse_coder.encode([0b1100])
    with pytest.raises(FormatError, match="outside the image"):
        masks.unpack(beyond, 1, 1)


@pytest.mark.parametrize(("width", "height"), [(1, 1), (17, 33), (768, 512), (65535, 65535)])
def test_version_3_mask_sections_fit_the_header_range(width, height):
    smallest, largest = mask_section_size_range(width, height, FORMAT_VERSION_RANK_CODED)
    h16, w16 = -(-height // 16), -(-width // 16)
    masks = GroupedMasks()
    assert 0 < smallest < largest < 2**32  # a uint32 section length can hold any of them
    if h16 * w16 > 10_000:
        return  # too large to pack all four extremes here; the bound above is what matters
    for coarse_share in (0.0, 1.0):
        coarse = np.full((h16, w16), bool(coarse_share))
        for medium_value in (False, True):
            medium = np.full((2 * h16, 2 * w16), medium_value) & ~np.kron(coarse, np.ones((2, 2), bool))
            assert smallest <= len(masks.pack(coarse, medium)) <= largest
