"""The `cgic` command: its commands, option types, output, and which files a command reads and writes.

`main` is the console script's entry point (pyproject.toml: controlgic_cli.cli:main) and `python -m controlgic_cli`'s.
"""

from .commands import main

__all__ = ["main"]
