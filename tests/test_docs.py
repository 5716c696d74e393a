"""Docs stay in step with the code: every CLI option is in the README, the format spec matches the container."""

from __future__ import annotations

import re
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


def test_api_examples_run(tmp_path, monkeypatch, shipped_weights):
    """Every python block of docs/api.md, in order, in one namespace, with the shipped model."""
    from PIL import Image

    from .conftest import synthetic_photo

    text = (REPO / "docs" / "api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 8
    sample = Image.open(REPO / "docs" / "sample.png").convert("RGB")
    sample.resize((320, 216)).save(tmp_path / "photo.png")
    Image.fromarray(synthetic_photo(96, 128, seed=1)).save(tmp_path / "a.png")
    Image.fromarray(synthetic_photo(80, 112, seed=2)).save(tmp_path / "b.png")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CGIC_WEIGHTS", raising=False)
    namespace: dict = {}
    for number, block in enumerate(blocks):
        try:
            exec(compile(block, f"docs/api.md block {number + 1}", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"docs/api.md python block {number + 1} failed: {exc!r}") from exc
