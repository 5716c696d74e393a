"""A self-contained training pack: the training folder as one tar of at most N bytes.

A machine lent for a short GPU run receives the repository plus one file; the
pack is that file. When the originals fit they are packed as they are;
otherwise every image is re-encoded as JPEG at the single highest quality
(4:4:4, no chroma subsampling) that makes the whole pack fit, so no image is
degraded more than another. File names are kept, so the validation split
(chosen from name hashes, data.py) is the same as on the original folder.

PACK.json inside lists the source, the quality used (null: originals) and
each image's sha256 before and after, so a run can say exactly what it saw.

    python -m controlgic_cli.train pack --data-dir TRAIN_DIR -o train-pack.tar [--every N]
    mkdir train && tar xf train-pack.tar -C train      # then: train run --data-dir train
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..io.fileio import write_atomic
from .data import list_images

DEFAULT_MAX_BYTES = 48_000_000
QUALITIES = range(60, 96)  # below 60 JPEG artifacts would become part of what the model learns
MANIFEST_NAME = "PACK.json"


@dataclass(frozen=True)
class PackInfo:
    images: int
    bytes: int
    quality: int | None  # None: the original files


def _reencode(path: Path, quality: int) -> bytes:
    with Image.open(path) as im:
        buffer = io.BytesIO()
        im.convert("RGB").save(buffer, format="JPEG", quality=quality, subsampling=0, optimize=True)
        return buffer.getvalue()


def _pack_bytes(data_dir: Path, originals: dict[str, bytes], contents: dict[str, bytes], quality: int | None) -> bytes:
    manifest = {
        "source": str(data_dir),
        "quality": quality,
        "images": {
            name: {
                "sha256_original": hashlib.sha256(originals[name]).hexdigest(),
                "sha256_packed": hashlib.sha256(data).hexdigest(),
            }
            for name, data in contents.items()
        },
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in [*sorted(contents.items()), (MANIFEST_NAME, json.dumps(manifest, indent=1).encode())]:
            member = tarfile.TarInfo(name)
            member.size = len(data)
            member.mode = 0o644
            tar.addfile(member, io.BytesIO(data))  # mtime 0: the same folder gives the same pack
    return buffer.getvalue()


def build_pack(data_dir: Path, output: Path, max_bytes: int = DEFAULT_MAX_BYTES, every: int = 1) -> PackInfo:
    """every: take every N-th image (by name) only, where a smaller folder at a higher quality is worth more."""
    if every < 1:
        raise ValueError(f"every must be at least 1, not {every}")
    files = list_images(data_dir)[::every]
    originals = {path.name: path.read_bytes() for path in files}
    pack = _pack_bytes(data_dir, originals, originals, None)
    quality = None
    if len(pack) > max_bytes:
        # Size grows with quality, so bisect for the highest quality that fits.
        # Only the current candidate's bytes are held, never every tried quality.
        def pack_at(q: int) -> bytes:
            return _pack_bytes(data_dir, originals, {p.name: _reencode(p, q) for p in files}, q)

        low, high = QUALITIES.start, QUALITIES.stop - 1
        pack = pack_at(low)
        if len(pack) > max_bytes:
            raise ValueError(
                f"{len(files)} images do not fit in {max_bytes} bytes even at JPEG quality {low}; "
                "use fewer images or a larger --max-mb"
            )
        while low < high:
            middle = (low + high + 1) // 2
            candidate = pack_at(middle)
            if len(candidate) <= max_bytes:
                low, pack = middle, candidate
            else:
                high = middle - 1
        quality = low
    write_atomic(output, pack, overwrite=True)
    return PackInfo(len(files), len(pack), quality)
