"""cgic: Control-GIC learned generative image codec.

Public API: encode, decode, read_info, Codec, EncodeOptions, and the errors. The network
(and torch) is imported on first use, so reading headers stays instant.
"""

from .errors import CgicError, FormatError, ImageError, ModelError, OptionsError
from .options import EncodeOptions
from .pillow_plugin import register as _register_pillow_plugin

__version__ = "0.1.0"

_register_pillow_plugin()

_LAZY = {"encode", "decode", "read_info", "Codec", "EncodeResult", "EncodeStats", "DEFAULT_RATIOS"}

__all__ = [
    "DEFAULT_RATIOS",
    "CgicError",
    "Codec",
    "EncodeOptions",
    "EncodeResult",
    "EncodeStats",
    "FormatError",
    "ImageError",
    "ModelError",
    "OptionsError",
    "__version__",
    "decode",
    "encode",
    "read_info",
]


def __getattr__(name: str):
    if name == "read_info":  # the header alone: no torch to import
        from .coding.container import read_header

        return read_header
    if name in _LAZY:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'controlgic_cli' has no attribute {name!r}")
