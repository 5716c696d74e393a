"""Canonical Huffman index coding and mask bit-packing (controlgic_cli.coding.entropy_coder)."""

from __future__ import annotations

import heapq
import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlgic_cli.coding.entropy_coder import (
    IndexCoder,
    canonical_code_table,
    empirical_entropy_bits,
    huffman_code_lengths,
    mask_section_size,
    pack_masks,
    unpack_masks,
)
from controlgic_cli.errors import FormatError, OptionsError

# The machine running the suite is shared with training jobs, so wall-clock deadlines would flake.
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def zipf_counts(codebook_size: int, exponent: float = 1.1, scale: float = 1e6) -> list[int]:
    return [1 + int(scale / rank**exponent) for rank in range(1, codebook_size + 1)]


def predicted_bytes(coder: IndexCoder, symbols) -> int:
    """A stream's size from code_lengths alone, as rate control predicts it (index_coding.py): ceil(bits / 8)."""
    symbols = np.asarray(symbols, dtype=np.int64)
    return -(-int(coder.code_lengths[symbols].sum()) // 8)


@pytest.fixture(scope="module")
def skewed_1024() -> IndexCoder:
    return IndexCoder(zipf_counts(1024))


@pytest.fixture(scope="module")
def uniform_1024() -> IndexCoder:
    return IndexCoder([7] * 1024)


def optimal_huffman_cost(counts: list[int]) -> int:
    """Total bits of an optimal prefix code: the sum of all merge weights (independent of tie-breaking)."""
    heap = list(counts)
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        cost += merged
        heapq.heappush(heap, merged)
    return cost


def code_bits(table: dict[int, tuple[int, int]]) -> dict[int, str]:
    return {symbol: format(value, f"0{length}b") for symbol, (length, value) in table.items()}


# --- Huffman code lengths -----------------------------------------------------------------------


def test_code_lengths_are_pinned_for_a_small_table():
    # Worked by hand from the tie rule (count, then smallest symbol in the subtree):
    # any change to this output changes every .cgic bitstream.
    assert huffman_code_lengths([4, 2, 1, 1, 1]) == [1, 3, 3, 3, 3]
    assert huffman_code_lengths([1, 1, 1]) == [2, 2, 1]
    assert huffman_code_lengths([5, 5, 5, 5, 5]) == [3, 3, 2, 2, 2]


@pytest.mark.parametrize(
    "counts",
    [[1, 1], [3, 1, 4, 1, 5, 9, 2, 6], [7] * 300, zipf_counts(1025), [2**40, 1, 1, 3], [1, 2, 3, 5, 8, 13, 21, 34]],
)
def test_code_lengths_are_optimal_and_complete(counts):
    lengths = huffman_code_lengths(counts)
    assert sum(c * n for c, n in zip(counts, lengths, strict=True)) == optimal_huffman_cost(counts)
    longest = max(lengths)
    assert sum(1 << (longest - length) for length in lengths) == 1 << longest


def test_lone_symbol_gets_a_one_bit_code():
    assert huffman_code_lengths([12]) == [1]


def test_fibonacci_counts_build_a_deep_tree_without_recursion():
    fibonacci = [1, 1]
    while len(fibonacci) < 1500:
        fibonacci.append(fibonacci[-1] + fibonacci[-2])
    assert max(huffman_code_lengths(fibonacci)) == 1499


def test_code_lengths_depend_only_on_count_values():
    counts = [5, 3, 5, 1, 3, 3, 5, 1, 9, 1]
    reference = huffman_code_lengths(counts)
    assert huffman_code_lengths(tuple(counts)) == reference
    assert huffman_code_lengths(np.array(counts, dtype=np.int64)) == reference
    assert huffman_code_lengths(np.array(counts, dtype=np.uint32)) == reference
    assert [huffman_code_lengths(list(counts)) for _ in range(5)] == [reference] * 5


@given(st.lists(st.integers(1, 6), min_size=2, max_size=40), st.randoms(use_true_random=False))
@FUZZ
def test_permuting_counts_keeps_the_code_optimal(counts, random):
    permutation = list(range(len(counts)))
    random.shuffle(permutation)
    permuted = [counts[i] for i in permutation]
    lengths = huffman_code_lengths(counts)
    permuted_lengths = huffman_code_lengths(permuted)
    cost = sum(c * n for c, n in zip(counts, lengths, strict=True))
    assert cost == sum(c * n for c, n in zip(permuted, permuted_lengths, strict=True)) == optimal_huffman_cost(counts)


@pytest.mark.parametrize("counts", [[], [1, 0, 2], [3, -1], [1.5, 2], ["a", 1]])
def test_invalid_counts_are_rejected(counts):
    with pytest.raises(OptionsError):
        huffman_code_lengths(counts)


# --- canonical codes --------------------------------------------------------------------------


def test_canonical_table_is_pinned():
    expected = {0: (1, 0b0), 1: (3, 0b100), 2: (3, 0b101), 3: (3, 0b110), 4: (3, 0b111)}
    assert canonical_code_table([1, 3, 3, 3, 3]) == expected
    assert canonical_code_table([2, 2, 1]) == {2: (1, 0b0), 0: (2, 0b10), 1: (2, 0b11)}


@pytest.mark.parametrize("counts", [zipf_counts(1025), [1] * 17, [9, 1, 1, 4, 4, 2, 30, 1]])
def test_canonical_codes_are_prefix_free_and_ordered(counts):
    lengths = huffman_code_lengths(counts)
    table = canonical_code_table(lengths)
    assert {symbol: length for symbol, (length, _) in table.items()} == dict(enumerate(lengths))
    ordered = sorted(table, key=lambda symbol: (table[symbol][0], symbol))
    bits = code_bits(table)
    for earlier, later in itertools.pairwise(ordered):
        # Canonical: codes increase along (length, symbol) when compared as left-aligned bit strings,
        # and adjacent codes in that order can only clash as prefixes if any two codes do.
        assert bits[earlier].ljust(64, "0") < bits[later].ljust(64, "0")
        assert not bits[later].startswith(bits[earlier])


@pytest.mark.parametrize("lengths", [[1, 1, 1], [0, 1], [2, 2, 2, 2, 1]])
def test_canonical_table_rejects_impossible_lengths(lengths):
    with pytest.raises(OptionsError):
        canonical_code_table(lengths)


# --- IndexCoder ------------------------------------------------------------------------------


def test_known_bitstreams():
    coder = IndexCoder([4, 2, 1, 1])
    assert coder.code_lengths.tolist() == [1, 3, 3, 3]
    # 0 100 101 110, then the first 6 bits of EOF (111) padded with zeros.
    assert coder.encode([0, 1, 2, 3]) == bytes([0b01001011, 0b10111000])
    assert coder.encode([0] * 8) == b"\x00"  # byte-aligned: no EOF bits at all
    assert coder.encode([0] * 7) == bytes([0b00000001])  # one EOF bit fills the byte


@pytest.mark.parametrize("coder_name", ["skewed_1024", "uniform_1024"])
def test_round_trip_of_every_codebook_index(coder_name, request):
    coder = request.getfixturevalue(coder_name)
    symbols = list(range(1024)) + list(range(1023, -1, -1))
    data = coder.encode(symbols)
    assert len(data) == predicted_bytes(coder, symbols)
    assert coder.decode(data, len(symbols)) == symbols


@pytest.mark.parametrize("counts", [[1], [1, 1], [5, 1, 1], [1, 2, 3, 4, 5, 6, 7], [100] * 16])
def test_round_trip_with_small_codebooks(counts):
    coder = IndexCoder(counts)
    rng = np.random.default_rng(len(counts))
    for length in (0, 1, 2, 7, 8, 9, 63, 200):
        symbols = rng.integers(0, len(counts), size=length).tolist()
        data = coder.encode(symbols)
        assert coder.decode(data, length) == symbols
        assert len(data) == predicted_bytes(coder, symbols)


def test_empty_stream(skewed_1024):
    assert skewed_1024.encode([]) == b""
    assert skewed_1024.encode(np.zeros(0, dtype=np.int64)) == b""
    assert skewed_1024.decode(b"", 0) == []
    with pytest.raises(FormatError):
        skewed_1024.decode(b"\x00", 0)
    with pytest.raises(FormatError):
        skewed_1024.decode(b"", 1)


@pytest.mark.parametrize("symbol", [0, 1, 511, 1023])
@pytest.mark.parametrize("repeats", [1, 2, 8, 1000])
def test_single_symbol_streams(skewed_1024, symbol, repeats):
    symbols = [symbol] * repeats
    data = skewed_1024.encode(symbols)
    assert len(data) == predicted_bytes(skewed_1024, symbols)
    assert skewed_1024.decode(data, repeats) == symbols


def test_single_entry_codebook_costs_one_bit_per_symbol():
    coder = IndexCoder([10])
    assert coder.code_lengths.tolist() == [1]
    assert len(coder.encode([0] * 17)) == 3  # 17 one-bit codes
    assert coder.decode(coder.encode([0] * 17), 17) == [0] * 17


def test_code_lengths_predict_the_size_of_many_random_streams():
    rng = np.random.default_rng(1234)
    coders = [IndexCoder(zipf_counts(k, exponent)) for k, exponent in ((1024, 1.1), (64, 0.5), (3, 2.0), (2, 0.0))]
    for _ in range(400):
        coder = coders[int(rng.integers(len(coders)))]
        symbols = rng.integers(0, coder.codebook_size, size=int(rng.integers(0, 300)))
        assert predicted_bytes(coder, symbols) == len(coder.encode(symbols))


@given(st.lists(st.integers(0, 63), max_size=400))
@FUZZ
def test_predicted_size_and_round_trip_property(symbols):
    coder = IndexCoder(zipf_counts(64, 1.3))
    data = coder.encode(symbols)
    assert predicted_bytes(coder, symbols) == len(data)
    assert coder.decode(data, len(symbols)) == symbols


def test_numpy_and_python_symbols_encode_identically(skewed_1024):
    symbols = np.random.default_rng(5).integers(0, 1024, size=500)
    expected = skewed_1024.encode(symbols.tolist())
    assert skewed_1024.encode(symbols) == expected
    assert skewed_1024.encode(symbols.astype(np.uint16)) == expected
    assert skewed_1024.encode([np.int32(s) for s in symbols]) == expected
    assert skewed_1024.encode(symbols.astype(np.int16)) == expected


def test_code_lengths_exclude_eof_and_are_read_only(skewed_1024):
    assert skewed_1024.code_lengths.shape == (1024,)
    with pytest.raises(ValueError):
        skewed_1024.code_lengths[0] = 1


@pytest.mark.parametrize("symbols", [[1024], [-1], [0, 5000], [0.0, 1.0], [[1, 2]], [True]])
def test_encode_rejects_symbols_outside_the_codebook(skewed_1024, symbols):
    with pytest.raises(OptionsError):
        skewed_1024.encode(symbols)


def test_decode_rejects_a_negative_count(skewed_1024):
    with pytest.raises(OptionsError):
        skewed_1024.decode(b"", -1)


def test_empty_codebook_is_rejected():
    with pytest.raises(OptionsError):
        IndexCoder([])


def test_every_truncation_of_a_stream_is_detected(skewed_1024):
    symbols = np.random.default_rng(9).integers(0, 1024, size=120).tolist()
    data = skewed_1024.encode(symbols)
    for cut in range(len(data)):
        with pytest.raises(FormatError):
            skewed_1024.decode(data[:cut], len(symbols))


def test_extra_bytes_after_a_stream_are_detected(skewed_1024):
    for length in (8, 9, 57):
        symbols = [3] * length
        data = skewed_1024.encode(symbols)
        for extra in (b"\x00", b"\xff", data):
            with pytest.raises(FormatError):
                skewed_1024.decode(data + extra, length)


def test_wrong_padding_bits_are_detected():
    coder = IndexCoder([4, 2, 1, 1])
    data = coder.encode([0, 1, 2, 3])
    assert coder.decode(data, 4) == [0, 1, 2, 3]
    for bit in range(6):
        with pytest.raises(FormatError):
            coder.decode(data[:-1] + bytes([data[-1] ^ (1 << bit)]), 4)


def test_eof_inside_the_stream_is_detected():
    coder = IndexCoder([4, 2, 1, 1])
    with pytest.raises(FormatError, match="ends after 1 of 5 symbols"):
        coder.decode(bytes([0b01110000]), 5)


@given(st.binary(max_size=64), st.integers(0, 600))
@FUZZ
def test_decoding_arbitrary_bytes_either_fails_cleanly_or_is_canonical(data, count):
    coder = IndexCoder([4, 2, 1, 1, 9, 30, 1, 1])
    try:
        symbols = coder.decode(data, count)
    except FormatError:
        return
    # Whatever the decoder accepts is exactly what the encoder would write: one bitstream per stream.
    assert len(symbols) == count
    assert coder.encode(symbols) == data


@given(st.binary(max_size=200), st.integers(0, 10**12))
@FUZZ
def test_huge_counts_do_not_allocate_or_hang(skewed_1024, data, count):
    try:
        symbols = skewed_1024.decode(data, count)
    except FormatError:
        return
    assert skewed_1024.encode(symbols) == data


# --- masks -----------------------------------------------------------------------------------


def random_masks(rng: np.random.Generator, h16: int, w16: int) -> tuple[np.ndarray, np.ndarray]:
    coarse = rng.random((h16, w16)) < rng.random()
    footprint = np.repeat(np.repeat(coarse, 2, axis=0), 2, axis=1)
    medium = (rng.random((2 * h16, 2 * w16)) < rng.random()) & ~footprint
    return coarse, medium


def test_mask_bit_layout_is_pinned():
    coarse = np.array([[True, False]])
    medium = np.zeros((2, 4), dtype=bool)
    medium[0, 3] = medium[1, 2] = True
    # coarse 1 0 | medium bits of the uncovered cells (0,2) (0,3) (1,2) (1,3): 0 1 1 0 | padding 0 0
    assert pack_masks(coarse, medium) == bytes([0b10011000])


def test_mask_round_trip_for_many_shapes():
    rng = np.random.default_rng(77)
    shapes = [(1, 1), (1, 2), (2, 1), (1, 9), (7, 3), (3, 7), (16, 16), (48, 32), (5, 64)]
    shapes += [tuple(int(v) for v in rng.integers(1, 40, size=2)) for _ in range(40)]
    for h16, w16 in shapes:
        for _ in range(3):
            coarse, medium = random_masks(rng, h16, w16)
            data = pack_masks(coarse, medium)
            assert len(data) == mask_section_size(coarse)
            unpacked_coarse, unpacked_medium = unpack_masks(data, h16, w16)
            assert np.array_equal(unpacked_coarse, coarse)
            assert np.array_equal(unpacked_medium, medium)


@pytest.mark.parametrize("coarse_value", [False, True])
def test_mask_section_size_extremes(coarse_value):
    coarse = np.full((3, 5), coarse_value)
    medium = np.zeros((6, 10), dtype=bool)
    expected = 2 if coarse_value else -(-5 * 15 // 8)
    assert mask_section_size(coarse) == len(pack_masks(coarse, medium)) == expected


def test_non_zero_mask_padding_is_rejected():
    coarse = np.array([[True, False]])
    data = pack_masks(coarse, np.zeros((2, 4), dtype=bool))
    for bit in range(2):
        with pytest.raises(FormatError, match="padding"):
            unpack_masks(bytes([data[0] | (1 << bit)]), 1, 2)


def test_wrong_mask_section_lengths_are_rejected():
    rng = np.random.default_rng(3)
    coarse, medium = random_masks(rng, 6, 5)
    data = pack_masks(coarse, medium)
    for wrong in (b"", data[:1], data[:-1], data + b"\x00"):
        with pytest.raises(FormatError):
            unpack_masks(wrong, 6, 5)


@given(st.binary(max_size=40), st.integers(1, 12), st.integers(1, 12))
@FUZZ
def test_unpacking_arbitrary_bytes_either_fails_cleanly_or_is_canonical(data, h16, w16):
    try:
        coarse, medium = unpack_masks(data, h16, w16)
    except FormatError:
        return
    assert pack_masks(coarse, medium) == data


def test_medium_cells_under_coarse_cells_are_rejected():
    coarse = np.array([[True]])
    medium = np.array([[False, False], [False, True]])
    with pytest.raises(OptionsError):
        pack_masks(coarse, medium)


@pytest.mark.parametrize(
    ("coarse", "medium"),
    [
        (np.zeros((2, 2), dtype=bool), np.zeros((4, 3), dtype=bool)),
        (np.zeros((2, 2), dtype=np.uint8), np.zeros((4, 4), dtype=np.uint8)),
        (np.zeros((0, 2), dtype=bool), np.zeros((0, 4), dtype=bool)),
        (np.zeros(4, dtype=bool), np.zeros(8, dtype=bool)),
    ],
)
def test_malformed_masks_are_rejected(coarse, medium):
    with pytest.raises(OptionsError):
        pack_masks(coarse, medium)


# --- reporting ------------------------------------------------------------------------------


def test_empirical_entropy():
    assert empirical_entropy_bits([], 16) == 0.0
    assert empirical_entropy_bits([5] * 10, 16) == 0.0
    assert empirical_entropy_bits([0, 1, 2, 3] * 5, 16) == pytest.approx(2.0)
    assert empirical_entropy_bits(np.array([0, 0, 0, 1]), 2) == pytest.approx(0.8112781244591328)
