"""Neighbour-rank coding (format version 3) against a direct transcription of its definition."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from controlgic_cli.api import Codec
from controlgic_cli.coding.container import FORMAT_VERSION, FORMAT_VERSION_RANK_CODED, parse_file
from controlgic_cli.coding.index_coding import (
    LEVELS,
    MAX_RANK_CODEBOOK,
    PREDICTOR_NEIGHBOURS,
    NeighbourRankCoding,
    UsageCoding,
    predictor_positions,
)
from controlgic_cli.errors import ModelError
from controlgic_cli.model.weights import load_weights
from controlgic_cli.options import EncodeOptions

from .conftest import synthetic_photo

K = 64


def half_codebook(seed: int = 0, size: int = K) -> np.ndarray:
    """A codebook as weights store it (half precision), with two identical codes to exercise ties."""
    codebook = np.random.default_rng(seed).normal(0, 1, (size, 4)).astype(np.float16).astype(np.float64)
    codebook[7] = codebook[3]
    return codebook


def skewed_counts(size: int = K) -> dict[str, list[int]]:
    return {level: [1 + 900 // (i + 1 + n) for i in range(size)] for n, level in enumerate(LEVELS)}


@pytest.fixture(scope="module")
def coding():
    usage = skewed_counts()
    return NeighbourRankCoding(half_codebook(), usage, {level: list(reversed(c)) for level, c in usage.items()})


def reference_symbols(coding, level, index_map, mask, codebook, usage) -> list[int]:
    """The definition, cell by cell: rank by distance to the first sent causal neighbour, else by usage."""
    by_usage = sorted(range(len(usage)), key=lambda code: (-usage[code], code))
    symbols = []
    height, width = mask.shape
    for y in range(height):
        for x in range(width):
            if not mask[y, x]:
                continue
            code = int(index_map[y, x])
            predictor = None
            for dy, dx in PREDICTOR_NEIGHBOURS:
                ny, nx = y + dy, x + dx
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx]:
                    predictor = int(index_map[ny, nx])
                    break
            if predictor is None:
                symbols.append(by_usage.index(code))
                continue
            distance = [float(((codebook[c] - codebook[predictor]) ** 2).sum()) for c in range(len(codebook))]
            order = sorted(range(len(codebook)), key=lambda c: (distance[c], c))
            symbols.append(order.index(code))
    return symbols


def test_predictor_is_the_first_sent_causal_neighbour():
    mask = np.array(
        [
            [1, 0, 1, 1],
            [0, 1, 0, 1],
            [1, 0, 0, 1],
        ],
        bool,
    )
    # Sent cells in raster order: 0 (0,0) 1 (0,2) 2 (0,3) 3 (1,1) 4 (1,3) 5 (2,0) 6 (2,3)
    assert predictor_positions(mask).tolist() == [-1, -1, 1, 0, 2, 3, 4]
    assert predictor_positions(np.zeros((2, 3), bool)).size == 0


def test_symbols_follow_the_definition(coding):
    codebook, usage = half_codebook(), skewed_counts()
    rng = np.random.default_rng(1)
    for level in LEVELS:
        for _ in range(4):
            shape = tuple(rng.integers(1, 9, 2))
            index_map = rng.integers(0, K, shape)
            index_map[rng.random(shape) < 0.3] = 7  # code 7 equals code 3: the tie goes to 3
            mask = rng.random(shape) < 0.6
            expected = reference_symbols(coding, level, index_map, mask, codebook, usage[level])
            assert coding.symbols(level, index_map, mask).tolist() == expected


def test_a_code_equal_to_its_predictor_has_rank_zero_unless_a_smaller_twin_exists(coding):
    mask = np.ones((1, 2), bool)
    assert coding.symbols("fine", np.array([[5, 5]]), mask)[1] == 0
    assert coding.symbols("fine", np.array([[3, 7]]), mask)[1] == 1  # 3 and 7 are the same vector
    assert coding.symbols("fine", np.array([[7, 3]]), mask)[1] == 0


@pytest.mark.parametrize("seed", range(6))
def test_streams_round_trip_for_any_mask(coding, seed):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(1, 30, 2))
    index_map = rng.integers(0, K, shape)
    mask = rng.random(shape) < rng.uniform(0, 1)
    for level in LEVELS:
        decoded = coding.decode(level, coding.encode(level, index_map, mask), mask)
        assert np.array_equal(decoded[mask], index_map[mask])
        assert not decoded[~mask].any()


def reference_bits(coding, level, index_map, present_from, present_until, time) -> int:
    mask = (present_from <= time) & (time < present_until)
    return int(coding.coders[level].code_lengths[coding.symbols(level, index_map, mask)].sum())


@pytest.mark.parametrize("rank_coded", [False, True])
def test_bits_over_time_equal_the_stream_at_every_time(coding, rank_coded):
    scheme = coding if rank_coded else UsageCoding(skewed_counts())
    rng = np.random.default_rng(3)
    for _ in range(5):
        shape = tuple(rng.integers(1, 12, 2))
        times = int(rng.integers(1, 40))
        index_map = rng.integers(0, K, shape)
        present_from = rng.integers(0, times + 1, shape)
        present_until = np.minimum(present_from + rng.integers(0, times + 2, shape), times + 1)
        bits = scheme.bits_over_time("medium", index_map, present_from, present_until, times)
        assert bits.shape == (times + 1,)
        for time in range(times + 1):
            assert bits[time] == reference_bits(scheme, "medium", index_map, present_from, present_until, time)


def test_rank_tables_need_a_codebook_of_at_most_4096_codes():
    size = MAX_RANK_CODEBOOK + 1
    with pytest.raises(ModelError, match="up to 4096"):
        NeighbourRankCoding(np.zeros((size, 4)), skewed_counts(size), skewed_counts(size))


def test_rank_coding_writes_smaller_version_3_files_that_round_trip(tiny_weights, tiny_rank_weights):
    plain, ranked = Codec(tiny_weights, device="cpu"), Codec(tiny_rank_weights, device="cpu")
    image = synthetic_photo(64, 96, seed=4)
    old, new = plain.encode(image), ranked.encode_with(image, EncodeOptions(colour_correction=False))
    assert old.data[4] == FORMAT_VERSION and new.data[4] == FORMAT_VERSION_RANK_CODED
    assert parse_file(new.data)[1].rank_coded
    # Same network, same indices: the decoded images are identical.
    assert np.array_equal(plain.decode_array(old.data)[0], ranked.decode_array(new.data)[0])


def test_weights_with_rank_tables_still_decode_files_of_the_same_weights_without(tiny_weights, tiny_rank_weights):
    plain, ranked = load_weights(tiny_weights), load_weights(tiny_rank_weights)
    assert ranked.base_model_id == plain.model_id == plain.base_model_id
    assert ranked.model_id != plain.model_id
    old_file = Codec(tiny_weights, device="cpu").encode(synthetic_photo(32, 48)).data
    assert Codec(tiny_rank_weights, device="cpu").decode(old_file).size == (48, 32)
    # A version-3 file needs the rank tables: the weights without them are another model.
    new_file = Codec(tiny_rank_weights, device="cpu").encode(synthetic_photo(32, 48)).data
    with pytest.raises(ModelError, match=f"needs model {ranked.model_id.hex()}"):
        Codec(tiny_weights, device="cpu").decode(new_file)


def test_a_forged_version_3_file_for_weights_without_rank_tables_is_refused(tiny_weights, tiny_rank_weights):
    data = bytearray(Codec(tiny_rank_weights, device="cpu").encode(synthetic_photo(32, 48)).data)
    data[28:36] = load_weights(tiny_weights).model_id  # the model id field (docs/format.md §3)
    data[56:60] = struct.pack("<I", zlib.crc32(bytes(data[:56])))
    with pytest.raises(ModelError, match="needs rank tables"):
        Codec(tiny_weights, device="cpu").decode(bytes(data))


def test_adding_rank_tables_keeps_the_base_model_and_counts_every_sent_index(tmp_path, tiny_weights):
    from PIL import Image

    from controlgic_cli.train.freeze import USAGE_RATIOS, add_rank_tables

    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in range(2):
        Image.fromarray(synthetic_photo(48, 64, seed=seed)).save(photos / f"p{seed}.png")
    model_id, base_model_id = add_rank_tables(tiny_weights, photos, tmp_path / "ranked.safetensors")
    before, after = load_weights(tiny_weights), load_weights(tmp_path / "ranked.safetensors")
    assert base_model_id == before.model_id and model_id == after.model_id != before.model_id
    assert after.code_usage == before.code_usage and after.metadata.keys() - {"rank_usage"} == before.metadata.keys()
    # 48x64 images at each preset: every sent index is one rank (+1 per rank for codability).
    for level, stride in zip(LEVELS, (4, 8, 16), strict=True):
        cells = (48 // stride) * (64 // stride)
        assert cells <= sum(after.rank_usage[level]) - K <= 2 * len(USAGE_RATIOS) * cells
