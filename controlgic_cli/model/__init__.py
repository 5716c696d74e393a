"""The Control-GIC network and its weights files."""

from .config import ModelConfig
from .network import ControlGIC, Indices, MaskSet

__all__ = ["ControlGIC", "Indices", "MaskSet", "ModelConfig"]
