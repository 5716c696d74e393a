"""Typed sizes of the Control-GIC network.

The config is the single source of truth for the architecture: it is written
into the weights file's metadata and read back before any tensor is loaded,
so a weights file always rebuilds the network it was trained as.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from ..errors import ModelError

# Spatial strides of the three granularities (paper: fine H/4, medium H/8, coarse H/16).
FINE_STRIDE = 4
MEDIUM_STRIDE = 8
COARSE_STRIDE = 16
STRIDES = (FINE_STRIDE, MEDIUM_STRIDE, COARSE_STRIDE)


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the encoder, codebook and decoder.

    encoder_channels / encoder_blocks: widths and residual-block counts at
    H/4, H/8 and H/16 (the three granularity taps).
    decoder_channels / decoder_blocks: widths and block counts at H/16, H/8,
    H/4 and H/2; a pixel shuffle produces full resolution from H/2.
    """

    latent_dim: int = 4
    codebook_size: int = 1024
    encoder_channels: tuple[int, int, int] = (64, 128, 192)
    encoder_blocks: tuple[int, int, int] = (1, 2, 2)
    decoder_channels: tuple[int, int, int, int] = (192, 128, 64, 32)
    decoder_blocks: tuple[int, int, int, int] = (2, 2, 2, 1)

    def __post_init__(self) -> None:
        if self.latent_dim < 1 or self.codebook_size < 2:
            raise ModelError("model config: latent_dim must be >= 1 and codebook_size >= 2")
        for name, expected in (
            ("encoder_channels", 3),
            ("encoder_blocks", 3),
            ("decoder_channels", 4),
            ("decoder_blocks", 4),
        ):
            value = getattr(self, name)
            if len(value) != expected or any(int(v) < (1 if "channels" in name else 0) for v in value):
                raise ModelError(f"model config: {name} must hold {expected} positive integers, got {value}")

    @classmethod
    def tiny(cls) -> ModelConfig:
        """A ~50k-parameter network for fast tests."""
        return cls(
            latent_dim=4,
            codebook_size=64,
            encoder_channels=(8, 16, 16),
            encoder_blocks=(1, 1, 1),
            decoder_channels=(16, 16, 8, 8),
            decoder_blocks=(1, 1, 1, 0),
        )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelError(f"model config is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise ModelError("model config must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ModelError(f"model config has unknown keys {unknown}; were these weights made by a newer cgic?")
        missing = sorted(known - set(raw))
        if missing:
            raise ModelError(f"model config lacks keys {missing}")
        for key in ("latent_dim", "codebook_size"):
            if not _is_int(raw[key]):
                raise ModelError(f"model config: {key} must be an integer, got {raw[key]!r}")
        converted = {}
        for key, value in raw.items():
            if key in ("latent_dim", "codebook_size"):
                converted[key] = value
            elif isinstance(value, list) and all(_is_int(v) for v in value):
                converted[key] = tuple(value)
            else:
                raise ModelError(f"model config: {key} must be a list of integers, got {value!r}")
        return cls(**converted)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
