"""Training images: decoded once into memory, served as seeded random crops.

The validation split is a fixed, name-ordered subset of the training folder
(never Kodak, which is the test set).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from ..io.image_io import list_image_files


def list_images(folder: str | Path) -> list[Path]:
    files = list_image_files(folder)
    if not files:
        raise FileNotFoundError(f"no images found in {folder}")
    return files


def split_train_validation(files: list[Path], validation_count: int) -> tuple[list[Path], list[Path]]:
    """A stable split: the validation images are those with the smallest name hashes."""
    ranked = sorted(files, key=lambda p: hashlib.sha256(p.name.encode()).hexdigest())
    validation = sorted(ranked[:validation_count])
    held_out = set(validation)
    return [p for p in files if p not in held_out], validation


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


class CropSampler:
    """Random crops with horizontal flips; images smaller than a crop are skipped."""

    def __init__(self, files: list[Path], crop_size: int):
        self.crop_size = crop_size
        self.images = [img for img in (load_rgb(p) for p in files) if min(img.shape[:2]) >= crop_size]
        if not self.images:
            raise ValueError(f"no training image is at least {crop_size}x{crop_size}")

    def sample(self, rng: np.random.Generator, batch_size: int) -> np.ndarray:
        """uint8 (B, crop, crop, 3)."""
        size = self.crop_size
        batch = np.empty((batch_size, size, size, 3), np.uint8)
        for i in range(batch_size):
            img = self.images[rng.integers(len(self.images))]
            top = rng.integers(img.shape[0] - size + 1)
            left = rng.integers(img.shape[1] - size + 1)
            crop = img[top : top + size, left : left + size]
            batch[i] = crop[:, ::-1] if rng.random() < 0.5 else crop
        return batch


def centre_crops(files: list[Path], size: int) -> np.ndarray:
    """Deterministic validation crops (centre, size x size) from images at least that large."""
    crops = []
    for path in files:
        img = load_rgb(path)
        if min(img.shape[:2]) < size:
            continue
        top, left = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
        crops.append(img[top : top + size, left : left + size])
    if not crops:
        raise ValueError(f"no validation image is at least {size}x{size}; lower validation_crop_size")
    return np.stack(crops)
