"""How one granularity's codebook indices become a stream, in the three schemes a .cgic file can use.

Usage coding (format versions 1 and 2) codes each index with the static
Huffman code of its granularity, built from how often each code is used.

Neighbour-rank coding (version 3) exploits what usage coding ignores: the
index of a cell is usually close, in latent space, to the index of the cell
beside it. Each sent index is replaced by its rank among all codes sorted by
distance to a predictor, the index of its first sent causal neighbour at the
same granularity (left, then above, above-left, above-right). A cell with no
such neighbour takes its rank in the usage order instead. The ranks are then
Huffman-coded with a static table counted over the training images, so the
stream is still one canonical Huffman stream per granularity (IndexCoder,
through dahuffman), just over ranks instead of indices. On the 24 Kodak images
this alone makes files 8-13 % smaller at the paper's presets (docs/format.md §12).

Group coding (version 5, model v2) codes tokens made of several FSQ groups,
an index per group: the stream of a granularity is one byte-aligned
sub-stream per group, each with the Huffman code of that group's usage
counts, one after the other. Cells are in raster order within each.

All schemes also give rate control the exact stream size for every plan
along a path (bits_over_time). A rank's cost depends on which neighbours are
sent, so the plan matters, but only through when each neighbour appears and
disappears along the path: each cell's cost is constant between those few
moments, and the totals follow from a difference array.

Distances are computed in float64 from the codebook as stored (half
precision, so the values are exact) in a fixed order, and ties go to the
smaller index: the rank tables are the same on every machine.
This module must not import torch.
"""

from __future__ import annotations

import array
from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import FormatError, ModelError
from .entropy_coder import IndexCoder

LEVELS = ("fine", "medium", "coarse")

# The predictor is the first of these (dy, dx) neighbours that is sent. Left
# first: on Kodak it saved 1.3-2.3 points more of the index bits than above first.
PREDICTOR_NEIGHBOURS = ((0, -1), (-1, 0), (-1, -1), (-1, 1))

# Rank tables hold K x K entries; beyond this a weights file cannot carry rank coding.
MAX_RANK_CODEBOOK = 4096

# Cells per chunk in bits_over_time: bounds its memory on a 100 MP photo.
_CHUNK_CELLS = 1 << 18
# Rows of the rank tables built at a time: bounds the distance matrix held at model load.
_RANK_ROWS = 128


def predictor_positions(mask: np.ndarray) -> np.ndarray:
    """For each sent cell in raster order, the raster number among sent cells of its predictor, or -1.

    Depends on the mask alone, so the decoder knows it before any index.
    """
    height, width = mask.shape
    numbers = np.full(mask.shape, -1, np.int64)
    numbers[mask] = np.arange(int(np.count_nonzero(mask)))
    padded = np.pad(numbers, 1, constant_values=-1)
    predictor = np.full(mask.shape, -1, np.int64)
    for dy, dx in reversed(PREDICTOR_NEIGHBOURS):
        neighbour = padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
        predictor = np.where(neighbour >= 0, neighbour, predictor)
    return predictor[mask]


def _rank_order(codebook: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rank_of, code_at): rank_of[b, a] is a's place among all codes by distance to b; code_at inverts it."""
    values = np.asarray(codebook, dtype=np.float64)
    size, dims = values.shape
    code_at = np.empty((size, size), np.int16)  # K <= MAX_RANK_CODEBOOK fits
    rank_of = np.empty((size, size), np.int16)
    for first in range(0, size, _RANK_ROWS):
        rows = slice(first, first + _RANK_ROWS)
        distance = np.zeros((len(values[rows]), size))
        for dim in range(dims):  # explicit order: the same sums on every machine
            difference = values[rows, None, dim] - values[None, :, dim]
            distance += difference * difference
        # A stable sort keeps equal distances in index order: ties go to the smaller index.
        order = np.argsort(distance, axis=1, kind="stable")
        code_at[rows] = order
        np.put_along_axis(rank_of[rows], order, np.arange(size, dtype=np.int16)[None, :], axis=1)
    return rank_of, code_at


def _usage_order(counts: Sequence[int]) -> np.ndarray:
    """Codes by falling usage count, ties to the smaller index."""
    counts = np.asarray(counts, dtype=np.int64)
    return np.lexsort((np.arange(counts.size), -counts))


def constant_pieces(first: np.ndarray, last: np.ndarray, changes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split each item's interval [first, last) at the times it may change cost: (starts, ends), (items, k + 1).

    first, last: (items, 1); changes: (items, k), clipped into the interval. Pieces may be empty.
    """
    starts = np.sort(np.clip(np.concatenate([first, changes], axis=1), first, last), axis=1)
    return starts, np.concatenate([starts[:, 1:], last], axis=1)


def interval_totals(starts: np.ndarray, ends: np.ndarray, costs: np.ndarray, times: int) -> np.ndarray:
    """Sum over intervals [start, end) of their costs, at every time 0..times (ends may be times + 1)."""
    added = np.bincount(starts, weights=costs, minlength=times + 2)
    removed = np.bincount(ends, weights=costs, minlength=times + 2)
    # Weights go through float64: exact for any bit count below 2**53.
    return np.rint(np.cumsum(added - removed)[: times + 1]).astype(np.int64)


class UsageCoding:
    """Format versions 1 and 2: each index with the Huffman code of its granularity's usage counts."""

    rank_coded = False
    grouped = False
    grouped_masks = False  # masks in groups of four (mask_coding.py), which versions 3 to 5 use; alpha needs them

    def __init__(self, code_usage: Mapping[str, Sequence[int]]):
        self.coders = {level: IndexCoder(code_usage[level]) for level in LEVELS}

    def symbols(self, level: str, index_map: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """What the stream codes for the sent cells, in raster order."""
        return index_map[mask]

    def encode(self, level: str, index_map: np.ndarray, mask: np.ndarray) -> bytes:
        return self.coders[level].encode(self.symbols(level, index_map, mask))

    def decode(self, level: str, data: bytes, mask: np.ndarray) -> np.ndarray:
        """The index map of one granularity (0 where nothing is sent)."""
        index_map = np.zeros(mask.shape, np.int64)
        index_map[mask] = self.coders[level].decode(data, int(np.count_nonzero(mask)))
        return index_map

    def bits_over_time(
        self, level: str, index_map: np.ndarray, present_from: np.ndarray, present_until: np.ndarray, times: int
    ) -> np.ndarray:
        """Stream bits at every time 0..times when cell c is sent during [present_from[c], present_until[c])."""
        costs = self.coders[level].code_lengths[index_map.ravel()]
        return interval_totals(present_from.ravel(), present_until.ravel(), costs.astype(np.float64), times)


class NeighbourRankCoding(UsageCoding):
    """Format version 3: each index as its rank by distance to its predictor's code (see the module docstring)."""

    rank_coded = True
    grouped_masks = True

    def __init__(
        self,
        codebook: np.ndarray,
        code_usage: Mapping[str, Sequence[int]],
        rank_usage: Mapping[str, Sequence[int]],
    ):
        size = len(codebook)
        if size > MAX_RANK_CODEBOOK:
            raise ModelError(f"neighbour-rank coding supports codebooks of up to {MAX_RANK_CODEBOOK} codes, not {size}")
        self.coders = {level: IndexCoder(rank_usage[level]) for level in LEVELS}
        self.rank_of, self.code_at = _rank_order(codebook)
        # The decoder's per-cell lookup: array.array indexing is far cheaper than numpy's, and a flat
        # int16 array is 2 MB where a list of lists of ints would be about 30.
        self._code_at_flat = array.array("h", self.code_at.tobytes())
        self._size = size
        self.usage_order = {level: _usage_order(code_usage[level]) for level in LEVELS}
        self.usage_rank = {}
        for level, order in self.usage_order.items():
            self.usage_rank[level] = np.empty(size, np.int64)
            self.usage_rank[level][order] = np.arange(size)

    def symbols(self, level: str, index_map: np.ndarray, mask: np.ndarray) -> np.ndarray:
        indices = index_map[mask].astype(np.int64)
        predictor = predictor_positions(mask)
        predicted = predictor >= 0
        ranks = self.usage_rank[level][indices]
        ranks[predicted] = self.rank_of[indices[predictor[predicted]], indices[predicted]]
        return ranks

    def decode(self, level: str, data: bytes, mask: np.ndarray) -> np.ndarray:
        predictor = predictor_positions(mask).tolist()
        ranks = self.coders[level].decode(data, len(predictor))
        code_at, size = self._code_at_flat, self._size
        usage_order = self.usage_order[level].tolist()
        # Sequential by nature: each index needs its predictor's.
        indices = [0] * len(ranks)
        for number, (rank, source) in enumerate(zip(ranks, predictor, strict=True)):
            indices[number] = code_at[indices[source] * size + rank] if source >= 0 else usage_order[rank]
        index_map = np.zeros(mask.shape, np.int64)
        index_map[mask] = indices
        return index_map

    def bits_over_time(
        self, level: str, index_map: np.ndarray, present_from: np.ndarray, present_until: np.ndarray, times: int
    ) -> np.ndarray:
        height, width = index_map.shape
        lengths = self.coders[level].code_lengths
        usage_rank = self.usage_rank[level]

        def neighbours(grid: np.ndarray) -> np.ndarray:
            """(cells, 4): each cell's predictor candidates, in PREDICTOR_NEIGHBOURS order (0 outside the map)."""
            padded = np.pad(grid, 1)
            return np.stack(
                [padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width].ravel() for dy, dx in PREDICTOR_NEIGHBOURS],
                axis=1,
            )

        # Outside the map a neighbour's interval is [0, 0): never sent.
        neighbour_from, neighbour_until = neighbours(present_from), neighbours(present_until)
        neighbour_index = neighbours(index_map)
        own_from, own_until, own_index = present_from.ravel(), present_until.ravel(), index_map.ravel()
        total = np.zeros(times + 1, np.int64)
        for start in range(0, own_index.size, _CHUNK_CELLS):
            part = slice(start, start + _CHUNK_CELLS)
            first, last = own_from[part, None], own_until[part, None]
            # A cell's cost can change only when one of its neighbours appears or disappears.
            changes = np.concatenate([neighbour_from[part], neighbour_until[part]], axis=1)
            moments, ends = constant_pieces(first, last, changes)
            sent = (neighbour_from[part, None, :] <= moments[:, :, None]) & (
                moments[:, :, None] < neighbour_until[part, None, :]
            )
            ranked = lengths[self.rank_of[neighbour_index[part], own_index[part, None]]]  # (cells, 4)
            unpredicted = lengths[usage_rank[own_index[part]]]
            # The first sent neighbour's cost; the usage-rank cost when none is sent.
            choice = np.where(sent.any(axis=2), sent.argmax(axis=2), len(PREDICTOR_NEIGHBOURS))
            costs = np.concatenate([ranked, unpredicted[:, None]], axis=1)
            segment_costs = np.take_along_axis(costs, choice, axis=1)
            # Empty segments (start == end) add and remove the same cost at one time.
            total += interval_totals(moments.ravel(), ends.ravel(), segment_costs.ravel().astype(np.float64), times)
        return total


class GroupUsageCoding:
    """Format version 5: index maps (h, w, groups), each group with the Huffman code of its own usage counts."""

    rank_coded = False
    grouped = True
    grouped_masks = True

    def __init__(self, code_usage: Mapping[str, Sequence[Sequence[int]]]):
        self.coders = {
            level: [IndexCoder(counts, f"{level} index stream, group {group}") for group, counts in enumerate(tables)]
            for level, tables in code_usage.items()
        }

    def encode(self, level: str, index_map: np.ndarray, mask: np.ndarray) -> bytes:
        sent = index_map[mask]
        return b"".join(coder.encode(sent[:, group]) for group, coder in enumerate(self.coders[level]))

    def decode(self, level: str, data: bytes, mask: np.ndarray) -> np.ndarray:
        """The index map (h, w, groups) of one granularity (0 where nothing is sent)."""
        coders = self.coders[level]
        index_map = np.zeros((*mask.shape, len(coders)), np.int64)
        count, offset = int(np.count_nonzero(mask)), 0
        for group, coder in enumerate(coders):
            symbols, used = coder.decode_head(data[offset:], count)
            index_map[mask, group] = symbols
            offset += used
        if offset != len(data):
            raise FormatError(f"{level} index stream has {len(data) - offset} bytes after its last group: damaged")
        return index_map

    def bits_over_time(
        self, level: str, index_map: np.ndarray, present_from: np.ndarray, present_until: np.ndarray, times: int
    ) -> np.ndarray:
        """As UsageCoding.bits_over_time, with each group's sub-stream rounded up to whole bytes."""
        total = np.zeros(times + 1, np.int64)
        for group, coder in enumerate(self.coders[level]):
            costs = coder.code_lengths[index_map[..., group].ravel()].astype(np.float64)
            bits = interval_totals(present_from.ravel(), present_until.ravel(), costs, times)
            total += 8 * -(-bits // 8)
        return total
