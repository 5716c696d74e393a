"""Docs stay in step with the code: every CLI option is in the README, the format spec matches the container."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlgic_cli import container
from controlgic_cli.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", sorted(main.commands))
def test_every_option_is_documented_in_the_readme(command):
    readme = (REPO / "README.md").read_text()
    assert f"cgic {command}" in readme
    for param in main.commands[command].params:
        for flag in param.opts:
            if flag.startswith("--") and flag not in ("--help",):
                assert flag in readme, f"README does not mention {flag} of cgic {command}"


def test_format_spec_states_the_constants():
    spec = (REPO / "docs" / "format.md").read_text()
    assert f"{container.HEADER_SIZE}-byte header" in spec or f"{container.HEADER_SIZE} bytes" in spec
    assert container.MAGIC.decode() in spec
    assert str(container.MAX_DIMENSION) in spec
