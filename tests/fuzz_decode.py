"""Fuzz the .cgic decoder with mutated files (not collected by pytest; a script).

Every mutated file must either decode or raise a CgicError, within a second,
and never anything else. Half of the mutants get their CRCs recomputed so the
mutation reaches the header validation, mask unpacking and Huffman decoding
behind the checksums instead of stopping at them.

    python -m tests.fuzz_decode --iterations 100000 --seed 1 [--crash-dir DIR]
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import re
import struct
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import torch

from controlgic_cli.api import Codec
from controlgic_cli.coding.container import HEADER_SIZE, ImageMetadata
from controlgic_cli.errors import CgicError
from controlgic_cli.io.image_io import load_image
from controlgic_cli.options import EncodeOptions

from .conftest import build_tiny_weights, synthetic_photo

# Header fields worth setting to absurd values: (offset, struct format).
FIELDS = [(8, "<I"), (12, "<I"), (16, "<I"), (20, "<I"), (24, "<I"), (36, "<I"), (40, "<I"), (44, "<I"), (48, "<I")]
ABSURD = [0, 1, 2, 15, 16, 17, 255, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1, 1_000_000, 1_000_001]


def fix_crcs(data: bytearray) -> None:
    if len(data) < HEADER_SIZE:
        return
    struct.pack_into("<I", data, 52, zlib.crc32(bytes(data[HEADER_SIZE:])))
    struct.pack_into("<I", data, 56, zlib.crc32(bytes(data[:56])))


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    kind = rng.integers(6)
    if kind == 0:  # flip 1-8 bits
        for _ in range(rng.integers(1, 9)):
            position = rng.integers(len(out))
            out[position] ^= 1 << int(rng.integers(8))
    elif kind == 1:  # truncate
        out = out[: rng.integers(len(out))]
    elif kind == 2:  # random bytes somewhere
        position = rng.integers(len(out))
        out[position : position + 4] = rng.integers(0, 256, 4, dtype=np.uint8).tobytes()
    elif kind == 3:  # absurd header field
        offset, fmt = FIELDS[rng.integers(len(FIELDS))]
        struct.pack_into(fmt, out, offset, int(ABSURD[rng.integers(len(ABSURD))]))
    elif kind == 4:  # insert or append junk
        position = rng.integers(len(out) + 1)
        out[position:position] = rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8).tobytes()
    else:  # payload byte rewrite
        if len(out) > HEADER_SIZE:
            position = rng.integers(HEADER_SIZE, len(out))
            out[position] = int(rng.integers(256))
    if rng.random() < 0.5:
        fix_crcs(out)
    return bytes(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--crash-dir", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "tiny.safetensors"
        build_tiny_weights(weights)
        ranked_weights = Path(tmp) / "tiny-rank.safetensors"
        build_tiny_weights(ranked_weights, rank_tables=True)
        # The rank tables' base model is the plain one: this codec decodes all three versions.
        codec = Codec(ranked_weights, device="cpu")
        plain_codec = Codec(weights, device="cpu")
        seeds = [
            plain_codec.encode(synthetic_photo(h, w, seed=i), ratios).data
            for i, ((h, w), ratios) in enumerate(
                [
                    ((16, 16), (0.3, 0.6, 0.1)),
                    ((33, 17), (0.5, 0.4, 0.1)),
                    ((48, 64), (0.0, 0.5, 0.5)),
                    ((32, 32), (1.0, 0.0, 0.0)),
                    ((64, 16), (0.0, 0.0, 1.0)),
                ]
            )
        ]
        # A version-2 file: the metadata records after the image sections get mutated too.
        with_metadata = ImageMetadata(icc=b"\x00" * 40, exif=b"MM\x00\x2a" + bytes(12), xmp=b"<x:xmpmeta/>")
        source = dataclasses.replace(load_image(synthetic_photo(32, 48, seed=5)), metadata=with_metadata)
        seeds.append(plain_codec.encode(source, (0.3, 0.6, 0.1)).data)

        def uncorrected(image, ratios) -> bytes:
            return codec.encode_with(image, EncodeOptions(ratios=ratios, colour_correction=False)).data

        # Version 3 (neighbour-rank streams), with and without metadata records.
        seeds.append(uncorrected(source, (0.3, 0.6, 0.1)))
        seeds.append(uncorrected(synthetic_photo(48, 64, seed=6), (0.2, 0.5, 0.3)))
        # Version 4 (an alpha record before the metadata records), RGBA and grey with alpha.
        cutout = np.where(np.add.outer(np.arange(32), np.arange(48)) < 40, 255, 0).astype(np.uint8)
        rgba_source = dataclasses.replace(source, alpha=cutout, colour_mode=3)
        grey_alpha = np.dstack([synthetic_photo(32, 48, seed=7)[..., 0], cutout])
        seeds.append(uncorrected(rgba_source, (0.3, 0.6, 0.1)))
        seeds.append(uncorrected(grey_alpha, (0.5, 0.4, 0.1)))
        # Version 6 (a colour-correction record first): RGB with metadata, RGB, RGBA, grey with alpha.
        seeds.append(codec.encode(source, (0.3, 0.6, 0.1)).data)
        seeds.append(codec.encode(synthetic_photo(48, 64, seed=8), (0.2, 0.5, 0.3)).data)
        seeds.append(codec.encode(rgba_source, (0.3, 0.6, 0.1)).data)
        seeds.append(codec.encode(grey_alpha, (0.5, 0.4, 0.1)).data)
        assert [seed[4] for seed in seeds[-8:]] == [3, 3, 4, 4, 6, 6, 6, 6]
    rng = np.random.default_rng(args.seed)
    outcomes: collections.Counter[str] = collections.Counter()
    crashes, slowest = [], 0.0
    started = time.perf_counter()
    for iteration in range(args.iterations):
        data = mutate(seeds[iteration % len(seeds)], rng)
        t0 = time.perf_counter()
        try:
            codec.decode(data)
            outcomes["decoded"] += 1
        except CgicError as exc:
            # Numbers vary per file; the kind of message is what to count.
            outcomes[f"{type(exc).__name__}: {re.sub(r'0x[0-9a-f]+|[0-9a-f]{16}|[0-9]+', 'N', str(exc))[:60]}"] += 1
        except Exception as exc:  # noqa: BLE001 - anything else is the bug we are looking for
            crashes.append(f"{type(exc).__name__}: {exc}")
            if args.crash_dir:
                args.crash_dir.mkdir(parents=True, exist_ok=True)
                (args.crash_dir / f"crash-{iteration}.cgic").write_bytes(data)
        slowest = max(slowest, time.perf_counter() - t0)
    report = {
        "iterations": args.iterations,
        "seed": args.seed,
        "seconds": round(time.perf_counter() - started, 1),
        "slowest_decode_s": round(slowest, 4),
        "crashes": len(crashes),
        "crash_examples": crashes[:5],
        "outcomes": dict(outcomes.most_common()),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
