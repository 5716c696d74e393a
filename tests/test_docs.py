"""Docs stay in step with the code: every CLI option is in the README, the format spec matches the container."""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import pytest

from controlgic_cli.cli import main
from controlgic_cli.coding import container
from controlgic_cli.errors import OptionsError

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", sorted(main.commands))
def test_every_option_is_documented_in_the_readme(command):
    readme = (REPO / "README.md").read_text()
    assert f"cgic {command}" in readme
    for param in main.commands[command].params:
        for flag in param.opts:
            if flag.startswith("--") and flag not in ("--help",):
                assert flag in readme, f"README does not mention {flag} of cgic {command}"


def header_table() -> dict[str, tuple[int, int, str]]:
    """docs/format.md §3's offset table: field -> (offset, size, valid values)."""
    spec = (REPO / "docs" / "format.md").read_text(encoding="utf-8")
    section = spec[spec.index("## 3. Header") : spec.index("## 4. ")]
    rows = re.findall(r"^\| (\d+) \| (\d+) \| (\w+) \| [^|]+ \| ([^|]+) \|$", section, flags=re.MULTILINE)
    return {name: (int(offset), int(size), valid.strip()) for offset, size, name, valid in rows}


def test_the_header_table_in_the_format_spec_is_where_the_writer_puts_each_field():
    table = header_table()
    spans = sorted((offset, offset + size) for offset, size, _ in table.values())
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False)), "gaps or overlaps"
    header_size = spans[-1][1]
    header = container.CgicHeader(
        width=48,
        height=32,
        colour_mode=container.COLOUR_RGB,
        ratios=(250_000, 350_000, 400_000),
        model_id=bytes(range(11, 19)),
        rate_controlled=True,
    )
    sections = container.CgicSections(masks=b"\x0f", fine=b"\x01\x02\x03", medium=b"\x04\x05", coarse=b"\x06")
    data = container.pack_file(header, sections)
    assert len(data) == header_size + 7

    def field(name: str) -> bytes:
        offset, size, _ = table[name]
        return data[offset : offset + size]

    def number(name: str) -> int:
        return int.from_bytes(field(name), "little")

    magic = re.search(r"`([0-9a-f ]+)`", table["magic"][2]).group(1)
    assert field("magic") == bytes.fromhex(magic)
    assert number("format_version") == 1 and number("colour_mode") == container.COLOUR_RGB
    assert (number("flags"), number("reserved")) == (1, 0)  # flag bit 0: rate controlled
    assert (number("width"), number("height")) == (48, 32)
    assert [number(f"ratio_{name}") for name in ("fine", "medium", "coarse")] == [250_000, 350_000, 400_000]
    assert field("model_id") == bytes(range(11, 19))
    assert [number(f"{part}_bytes") for part in ("mask", "fine", "medium", "coarse")] == [1, 3, 2, 1]
    assert number("payload_crc32") == zlib.crc32(data[header_size:])
    assert number("header_crc32") == zlib.crc32(data[: table["header_crc32"][0]])


def test_the_side_range_in_the_format_spec_is_what_the_writer_accepts():
    table = header_table()
    assert table["width"][2] == table["height"][2]
    low, high = (int(side) for side in re.fullmatch(r"(\d+)\.\.(\d+)", table["width"][2]).groups())
    for width, accepted in ((low - 1, False), (low, True), (high, True), (high + 1, False)):
        header = container.CgicHeader(width, 16, 0, (0, 0, 1_000_000), bytes(8), rate_controlled=False)
        masks = bytes(container.mask_section_size_range(max(width, 1), 16)[0])
        try:
            container.pack_file(header, container.CgicSections(masks=masks, fine=b"", medium=b"", coarse=b""))
        except OptionsError:
            assert not accepted, f"width {width} is in the spec's range but refused"
        else:
            assert accepted, f"width {width} is outside the spec's range but written"


def api_examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / "docs" / "api.md").read_text(), flags=re.S)


def test_api_examples_compile_and_import_what_exists():
    """The quick check of docs/api.md (test_api_examples_run runs the blocks, marked slow): each block
    compiles, and every name it imports from controlgic_cli exists."""
    import importlib

    blocks = api_examples()
    assert len(blocks) >= 8
    for number, block in enumerate(blocks):
        compile(block, f"docs/api.md block {number + 1}", "exec")
        for module, names in re.findall(r"^from (controlgic_cli[\w.]*) import ([\w, ]+)", block, flags=re.M):
            for name in names.split(","):
                assert hasattr(importlib.import_module(module), name.strip()), f"block {number + 1}: {module}.{name}"


def test_module_paths_named_in_the_api_docs_exist():
    """docs/api.md's prose names some functions by module path (controlgic_cli.io.fileio.write_atomic): each one
    imports."""
    import importlib

    text = (REPO / "docs" / "api.md").read_text()
    paths = set(re.findall(r"`(controlgic_cli(?:\.\w+)+)", text))
    assert paths
    for path in paths:
        parts = path.split(".")
        for split in range(len(parts), 0, -1):
            try:
                found = importlib.import_module(".".join(parts[:split]))
            except ModuleNotFoundError:
                continue
            for name in parts[split:]:
                found = getattr(found, name, None)
            assert found is not None, f"docs/api.md names {path}, which does not exist"
            break


def test_every_package_is_in_the_wheel():
    """pyproject.toml lists the packages (the weights folder is mapped in by name), so a new folder of
    controlgic_cli/ must be added there: an editable install finds it anyway, a wheel would lack it."""
    tomllib = pytest.importorskip("tomllib")
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(init.parent.relative_to(REPO).parts) for init in (REPO / "controlgic_cli").rglob("__init__.py")}
    assert on_disk - listed == set(), "packages missing from pyproject.toml's [tool.setuptools] packages"


@pytest.mark.slow
def test_api_examples_run(tmp_path, monkeypatch, shipped_weights):
    """Every python block of docs/api.md, in order, in one namespace, with the shipped model."""
    from PIL import Image

    from .conftest import synthetic_photo

    blocks = api_examples()
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
