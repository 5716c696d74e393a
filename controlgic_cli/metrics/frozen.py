"""Base class of the pretrained metric networks (LPIPS, DISTS): load, check, freeze."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from ..errors import ModelError
from .weights import MissingMetricWeights, weights_file


class FrozenMetricNet(nn.Module):
    """Holds a metric's pretrained tensors as non-persistent float32 buffers, always in eval mode.

    Buffers rather than parameters: they follow .to(device), yet an optimiser
    never sees them and they never bloat the state_dict of a model that uses
    the metric as a loss. Subclasses name their file and expected shapes.
    """

    NAME: ClassVar[str]
    WEIGHTS_FILENAME: ClassVar[str]

    @staticmethod
    def expected_shapes() -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def __init__(self, tensors: dict[str, Tensor]):
        super().__init__()
        expected = self.expected_shapes()
        missing = sorted(set(expected) - set(tensors))
        if missing:
            raise ModelError(f"{self.NAME} weights lack tensors: {', '.join(missing)}")
        for name, shape in expected.items():
            if tuple(tensors[name].shape) != shape:
                raise ModelError(f"{self.NAME} tensor {name} has shape {tuple(tensors[name].shape)}, expected {shape}")
            # Dots are not allowed in buffer names.
            self.register_buffer(
                name.replace(".", "_"), tensors[name].detach().to(torch.float32).clone(), persistent=False
            )
        self.eval()

    @classmethod
    def from_file(cls, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise MissingMetricWeights(path)
        return cls(load_file(str(path)))

    @classmethod
    def from_dir(cls, weights_dir: str | Path | None = None):
        """Load from a metric-weights folder (``None``: ``$CGIC_METRIC_WEIGHTS``)."""
        return cls.from_file(weights_file(weights_dir, cls.WEIGHTS_FILENAME))

    def train(self, mode: bool = True):
        # Nothing to train; pinning eval keeps a parent's .train() from changing anything.
        return super().train(False)
