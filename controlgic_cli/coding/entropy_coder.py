"""Entropy coding of a .cgic payload: canonical Huffman index streams and mask bits.

Index streams use one static code per granularity, built from integer
code-usage counts that ship with the weights. The code is canonical (sorted by
length, then symbol) and the Huffman tree breaks ties by a fixed rule, so the
same counts give the same bits on every machine and every Python version
(reference notes P14). The bits themselves are written and read by dahuffman,
fed with our table; dahuffman's own tree builder and its pickle persistence are
never used.

This module must not import torch: `cgic info`, the Pillow plugin and the
container fuzz tests rely on it staying light.
"""

from __future__ import annotations

import heapq
import itertools
import operator
from collections.abc import Sequence

import dahuffman
import numpy as np

from ..errors import FormatError, OptionsError


def huffman_code_lengths(counts: Sequence[int]) -> list[int]:
    """Huffman code lengths for symbols 0..K-1, given how often each is used.

    Every count must be an integer >= 1: a symbol with count 0 would get no
    code, and a stream using it could not be written. When two subtrees have the
    same total count, the one containing the smaller symbol is merged first;
    subtrees are disjoint, so this orders every tie and the result depends on
    the counts alone. A lone symbol gets a 1-bit code, because a prefix code
    cannot use 0 bits.
    """
    if len(counts) == 0:
        raise OptionsError("cannot build a Huffman code for an empty alphabet")
    checked_counts = []
    for symbol, raw_count in enumerate(counts):
        try:
            count = operator.index(raw_count)
        except TypeError:
            raise OptionsError(f"code-usage count of symbol {symbol} is {raw_count!r}, not an integer") from None
        if count < 1:
            raise OptionsError(f"code-usage count of symbol {symbol} is {count}; every count must be >= 1")
        checked_counts.append(count)
    if len(checked_counts) == 1:
        return [1]

    # Nodes 0..K-1 are the leaves; merged nodes are numbered from K upwards.
    children: list[tuple[int, int]] = []
    heap = [(count, symbol, symbol) for symbol, count in enumerate(checked_counts)]
    heapq.heapify(heap)
    leaf_count = len(checked_counts)
    while len(heap) > 1:
        count_a, smallest_a, node_a = heapq.heappop(heap)
        count_b, smallest_b, node_b = heapq.heappop(heap)
        children.append((node_a, node_b))
        heapq.heappush(heap, (count_a + count_b, min(smallest_a, smallest_b), leaf_count + len(children) - 1))

    # Depths are assigned from the root down without recursion, because a
    # skewed (Fibonacci-like) count table makes the tree as deep as K.
    lengths = [0] * leaf_count
    stack = [(heap[0][2], 0)]
    while stack:
        node, depth = stack.pop()
        if node < leaf_count:
            lengths[node] = depth
        else:
            left, right = children[node - leaf_count]
            stack.append((left, depth + 1))
            stack.append((right, depth + 1))
    return lengths


def canonical_code_table(lengths: Sequence[int]) -> dict[int, tuple[int, int]]:
    """Canonical prefix code for the given code lengths: {symbol: (bitsize, value)}.

    Symbols are sorted by (length, symbol); each gets the previous code plus
    one, shifted left whenever the length grows (as in DEFLATE, RFC 1951
    §3.2.2). The lengths must be >= 1 and satisfy the Kraft inequality.
    """
    checked = [operator.index(length) for length in lengths]
    if any(length < 1 for length in checked):
        raise OptionsError("every code length must be >= 1")
    if checked:
        longest = max(checked)
        if sum(1 << (longest - length) for length in checked) > 1 << longest:
            raise OptionsError("code lengths violate the Kraft inequality: no prefix code has them")

    table: dict[int, tuple[int, int]] = {}
    code = 0
    previous_length = 0
    for symbol in sorted(range(len(checked)), key=lambda s: (checked[s], s)):
        length = checked[symbol]
        code <<= length - previous_length
        table[symbol] = (length, code)
        code += 1
        previous_length = length
    return table


class IndexCoder:
    """Codes streams of codebook indices 0..K-1 with one static canonical Huffman code.

    The alphabet gets one extra symbol, EOF = K, with count 1. dahuffman needs
    it to end a stream that stops mid-byte: it writes only as many leading bits
    of the EOF code as fill the last byte, then zeros, so EOF costs at most 7
    bits and nothing when the stream ends on a byte boundary.
    """

    def __init__(self, counts: Sequence[int], stream_name: str = "index stream"):
        self.stream_name = stream_name  # what error messages call a damaged stream
        if len(counts) == 0:
            raise OptionsError("cannot build an index coder for an empty codebook")
        self.codebook_size = len(counts)
        lengths_with_eof = huffman_code_lengths([*counts, 1])
        self._table = canonical_code_table(lengths_with_eof)
        self._codec = dahuffman.HuffmanCodec(self._table, concat=list, check=True, eof=self.codebook_size)
        self.code_lengths = np.array(lengths_with_eof[:-1], dtype=np.int64)
        self.code_lengths.flags.writeable = False

    def _checked_symbols(self, symbols: Sequence[int] | np.ndarray) -> np.ndarray:
        array = np.asarray(symbols)
        if array.size == 0:
            return np.zeros(0, dtype=np.int64)
        if array.ndim != 1 or array.dtype.kind not in "iu":
            raise OptionsError(f"index stream must be a flat sequence of integers, got {array.dtype} {array.shape}")
        low, high = int(array.min()), int(array.max())
        if low < 0 or high >= self.codebook_size:
            bad = low if low < 0 else high
            raise OptionsError(f"codebook index {bad} is outside 0..{self.codebook_size - 1}")
        return array.astype(np.int64, copy=False)

    def encode(self, symbols: Sequence[int] | np.ndarray) -> bytes:
        # Plain Python ints make dahuffman's per-symbol dict lookups about 1.5x faster than numpy scalars.
        return self._codec.encode(self._checked_symbols(symbols).tolist())

    def decode(self, data: bytes, count: int) -> list[int]:
        """Decode exactly `count` symbols; `data` must be exactly the stream encode() writes.

        The stream is length-delimited by the container, so anything beyond the
        last symbol other than the EOF padding of the final byte means damage.
        Work and memory are bounded by len(data), not by `count`.
        """
        symbols, used = self.decode_head(data, count)
        if len(data) != used:
            raise FormatError(
                f"{self.stream_name} is {len(data)} bytes but its {count} symbols fill {used}: the file is damaged"
            )
        return symbols

    def decode_head(self, data: bytes, count: int) -> tuple[list[int], int]:
        """Decode `count` symbols from the start of `data`; returns them and the bytes their stream fills.

        For a stream followed by others in one section: the rest of `data` is not looked at.
        """
        count = operator.index(count)
        if count < 0:
            raise OptionsError(f"symbol count must be >= 0, got {count}")
        data = bytes(data)
        symbols = list(itertools.islice(self._codec.decode_streaming(data), count))
        if len(symbols) < count:
            raise FormatError(f"{self.stream_name} ends after {len(symbols)} of {count} symbols: the file is damaged")
        total_bits = int(self.code_lengths[np.asarray(symbols, dtype=np.int64)].sum()) if symbols else 0
        used = -(-total_bits // 8)
        padding_bits = 8 * used - total_bits
        if padding_bits and (data[used - 1] & ((1 << padding_bits) - 1)) != self._expected_padding(padding_bits):
            raise FormatError(f"{self.stream_name} has wrong padding bits in its last byte: the file is damaged")
        return symbols, used

    def _expected_padding(self, padding_bits: int) -> int:
        """The first `padding_bits` bits of the EOF code followed by zeros, as dahuffman writes them."""
        eof_length, eof_code = self._table[self.codebook_size]
        if eof_length >= padding_bits:
            return eof_code >> (eof_length - padding_bits)
        return eof_code << (padding_bits - eof_length)


def _coarse_footprint(coarse: np.ndarray) -> np.ndarray:
    """Boolean map on the H/8 grid of the cells covered by a coarse (H/16) cell."""
    return np.repeat(np.repeat(coarse, 2, axis=0), 2, axis=1)


def mask_section_size(coarse: np.ndarray) -> int:
    """Bytes of the mask section: every coarse bit, plus the medium bits not under a coarse cell."""
    cell_count = int(coarse.size)
    medium_bit_count = 4 * (cell_count - int(np.count_nonzero(coarse)))
    return -(-(cell_count + medium_bit_count) // 8)


def pack_masks(coarse: np.ndarray, medium: np.ndarray) -> bytes:
    """Pack the coarse (H/16) and medium (H/8) granularity masks into the mask section.

    Bits go MSB first: all coarse bits in raster order, then, in raster order
    over the H/8 grid, the medium bits of the cells that no coarse cell covers
    (those under a coarse cell are known to be 0 and are not sent), then zero
    bits up to a whole byte.
    """
    coarse = np.asarray(coarse)
    medium = np.asarray(medium)
    if coarse.dtype != np.bool_ or medium.dtype != np.bool_:
        raise OptionsError(f"masks must be boolean arrays, got {coarse.dtype} and {medium.dtype}")
    if coarse.ndim != 2 or min(coarse.shape) < 1:
        raise OptionsError(f"coarse mask must be a non-empty 2-D array, got shape {coarse.shape}")
    if medium.shape != (2 * coarse.shape[0], 2 * coarse.shape[1]):
        raise OptionsError(f"medium mask shape {medium.shape} does not match coarse mask shape {coarse.shape}")
    footprint = _coarse_footprint(coarse)
    if np.any(medium & footprint):
        raise OptionsError("medium mask selects cells that the coarse mask already covers")
    bits = np.concatenate([coarse.ravel(), medium[~footprint]])
    return np.packbits(bits, bitorder="big").tobytes()


def unpack_masks(data: bytes, h16: int, w16: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of pack_masks for an (h16, w16) coarse grid: returns (coarse, medium)."""
    if h16 < 1 or w16 < 1:
        raise OptionsError(f"mask grid must be at least 1x1, got {h16}x{w16}")
    cell_count = h16 * w16
    coarse_bytes = -(-cell_count // 8)
    if len(data) < coarse_bytes:
        raise FormatError(f"mask section is {len(data)} bytes, too short for {cell_count} coarse bits")
    # Unpack only the coarse bits first: they fix the exact section length,
    # which is checked before the rest is touched.
    coarse = np.unpackbits(np.frombuffer(data, dtype=np.uint8, count=coarse_bytes), count=cell_count)
    coarse = coarse.astype(bool).reshape(h16, w16)
    expected_size = mask_section_size(coarse)
    if len(data) != expected_size:
        raise FormatError(f"mask section is {len(data)} bytes but its coarse mask implies {expected_size}")
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8)).astype(bool)
    used_bit_count = cell_count + 4 * (cell_count - int(np.count_nonzero(coarse)))
    if bits[used_bit_count:].any():
        raise FormatError("mask section has non-zero padding bits: the file is damaged")
    footprint = _coarse_footprint(coarse)
    medium = np.zeros(footprint.shape, dtype=bool)
    medium[~footprint] = bits[cell_count:used_bit_count]
    return coarse, medium


def empirical_entropy_bits(symbols: Sequence[int] | np.ndarray, codebook_size: int) -> float:
    """Shannon entropy of the stream's own symbol histogram, in bits per symbol (0.0 if empty)."""
    array = np.asarray(symbols, dtype=np.int64).ravel()
    if array.size == 0:
        return 0.0
    histogram = np.bincount(array, minlength=codebook_size)
    probabilities = histogram[histogram > 0] / array.size
    return 0.0 - float((probabilities * np.log2(probabilities)).sum())
