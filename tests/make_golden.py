"""Golden bitstreams: .cgic files whose bytes the encoder must reproduce (tests/test_golden.py).

The files under tests/data/golden are checked in, like CompressAI's expected
outputs: a tiny model (ModelConfig.tiny with rank tables, the same network as
conftest's tiny_rank_weights), two small source images, the .cgic files the
CLI writes from them, and the pixels the CLI decodes from those files.
test_golden.py encodes the sources again and needs the same bytes, and
decodes the stored files and needs the same pixels. The weights and sources
are stored rather than rebuilt from seeds so that the goldens do not depend
on torch's or numpy's random streams.

Regenerate only on purpose, when a change to the format or the encoder is
meant to change the bytes, and say why in the commit:

    python -m tests.make_golden            # re-encode and re-decode the stored sources
    python -m tests.make_golden --inputs   # first rebuild the weights and sources from their seeds too
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from controlgic_cli.cli import main as cgic

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"
WEIGHTS = GOLDEN / "tiny-rank.safetensors"
REGENERATE = "python -m tests.make_golden"
COMMON = ("--weights", WEIGHTS, "--device", "cpu", "-q", "-f")

# name -> encode options. The entropy planner's scores are numpy arithmetic on the
# pixels, so the masks do not depend on the CPU's convolution kernels.
CASES = {
    # RGB, sides not multiples of 16, fixed ratios: a version-3 file (rank tables, no colour correction).
    "photo": ["--planner", "entropy", "--ratios", "0.3,0.6,0.1", "--no-colour-correction"],
    # RGBA with partial transparency, rate control to a size: a version-4 file (alpha plane).
    "cutout": ["--planner", "entropy", "--target-size", "230", "--no-colour-correction"],
    # The same photo with the default colour correction: a version-6 file.
    "corrected": ["--planner", "entropy", "--ratios", "0.3,0.6,0.1"],
    # The cutout with colour correction and alpha, rate control to a size: a version-6 file with both records.
    "corrected-cutout": ["--planner", "entropy", "--target-size", "270"],
}
SOURCES = {"corrected": "photo", "corrected-cutout": "cutout"}  # cases that code another case's source


def source_path(name: str) -> Path:
    return GOLDEN / f"{SOURCES.get(name, name)}.png"


def cgic_path(name: str) -> Path:
    return GOLDEN / f"{name}.cgic"


def decoded_path(name: str) -> Path:
    return GOLDEN / f"{name}.decoded.png"


def run_cli(*args) -> None:
    result = CliRunner().invoke(cgic, [str(a) for a in args], catch_exceptions=False)
    if result.exit_code != 0:
        raise RuntimeError(f"cgic {' '.join(map(str, args))} exited {result.exit_code}: {result.stderr}")


def encode(name: str, output: Path) -> bytes:
    """The .cgic bytes the CLI writes for a case's stored source with the stored weights."""
    run_cli("encode", source_path(name), "-o", output, *CASES[name], *COMMON)
    return output.read_bytes()


def decode(data_path: Path, output: Path) -> np.ndarray:
    """The pixels the CLI decodes from a .cgic file with the stored weights, as written to a PNG."""
    run_cli("decode", data_path, "-o", output, *COMMON)
    with Image.open(output) as image:
        return np.asarray(image)


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def build_inputs() -> None:
    """The tiny weights and the sources, from their seeds."""
    from .conftest import build_tiny_weights, synthetic_photo

    build_tiny_weights(WEIGHTS, seed=0, rank_tables=True)
    Image.fromarray(synthetic_photo(52, 72, seed=11)).save(source_path("photo"))
    rgb = synthetic_photo(40, 56, seed=12)
    yy, xx = np.mgrid[:40, :56]
    alpha = np.where((yy - 20) ** 2 + (xx - 28) ** 2 < 16**2, 255, 0).astype(np.uint8)
    alpha[:, 26:30] //= 2  # some partial transparency
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(source_path("cutout"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", action="store_true", help="also rebuild the weights and sources from their seeds")
    args = parser.parse_args(argv)
    GOLDEN.mkdir(parents=True, exist_ok=True)
    if args.inputs or not WEIGHTS.exists():
        build_inputs()
    for name in CASES:
        data = encode(name, cgic_path(name))
        decoded = decode(cgic_path(name), decoded_path(name))
        digest = hashlib.sha256(data).hexdigest()[:16]
        print(f"{cgic_path(name).name}: {len(data)} bytes (sha256 {digest}), decoded {decoded.shape}")


if __name__ == "__main__":
    main()
