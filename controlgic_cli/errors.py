"""Exceptions raised by the cgic library.

The library raises these with messages written for a user (what went wrong
and, where possible, what to do); the CLI prints them as one line and exits
with status 1. Anything else escaping the library is a bug.
"""


class CgicError(Exception):
    """Base class of every error the cgic library raises on purpose."""


class FormatError(CgicError):
    """A .cgic byte stream is damaged, truncated or not a .cgic file at all."""


class ModelError(CgicError):
    """Weights are missing, inconsistent, or not the model a file needs."""


class OptionsError(CgicError, ValueError):
    """An encoding option (ratios, target, device, ...) is out of range."""


class ImageError(CgicError):
    """An input image cannot be read or is not supported."""


class Interrupted(Exception):
    """The user interrupted a run (Ctrl-C) before this file was written; not an error in the file."""
