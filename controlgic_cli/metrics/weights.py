"""Where the perceptual-metric weight files are looked for, and the error when they are not."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import CgicError

METRIC_WEIGHTS_ENV = "CGIC_METRIC_WEIGHTS"


class MissingMetricWeights(CgicError):
    """A metric's weight file is not where it was looked for.

    ``path`` is the file that was expected (``None`` when no folder was
    configured at all), so callers can report or skip precisely.
    """

    def __init__(self, path: str | Path | None, filename: str | None = None):
        self.path = Path(path) if path is not None else None
        self.filename = filename or (self.path.name if self.path is not None else None)
        if self.path is None:
            message = (
                f"metric weights file {self.filename} not found: no folder given and "
                f"${METRIC_WEIGHTS_ENV} is not set (point it at the folder holding the "
                ".safetensors files)"
            )
        else:
            message = f"metric weights file not found: {self.path}"
        super().__init__(message)


def resolve_metric_weights_dir(path: str | Path | None = None) -> Path | None:
    """The metric-weights folder: ``path`` if given, else ``$CGIC_METRIC_WEIGHTS``, else None.

    Existence is not checked here; loading a file reports what is missing.
    """
    if path is not None and str(path) != "":
        return Path(path).expanduser()
    from_env = os.environ.get(METRIC_WEIGHTS_ENV, "")
    if from_env:
        return Path(from_env).expanduser()
    return None


def weights_file(weights_dir: str | Path | None, filename: str) -> Path:
    """The path of ``filename`` in the resolved folder; raises MissingMetricWeights if absent."""
    resolved = resolve_metric_weights_dir(weights_dir)
    if resolved is None:
        raise MissingMetricWeights(None, filename)
    candidate = resolved / filename
    if not candidate.is_file():
        raise MissingMetricWeights(candidate)
    return candidate
