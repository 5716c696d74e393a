"""Encoding many files: the per-file work and the local pipeline (core.py), and the same on a Dask cluster
(distributed.py, an optional extra).

The engine API of docs/api.md is importable from here: `from controlgic_cli.batch import EncodeSettings, FileTask,
encode_local`.
"""

from .core import EncodeSettings, FileOutcome, FileTask, encode_local

__all__ = ["EncodeSettings", "FileOutcome", "FileTask", "encode_local"]
