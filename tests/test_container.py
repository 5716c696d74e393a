"""The .cgic container (controlgic_cli.coding.container) against docs/format.md."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlgic_cli.coding.container import (
    COLOUR_GREY_ALPHA,
    COLOUR_RGB_ALPHA,
    FORMAT_VERSION_ALPHA,
    FORMAT_VERSION_RANK_CODED,
    HEADER_SIZE,
    MAGIC,
    MAX_DIMENSION,
    CgicHeader,
    CgicSections,
    ImageMetadata,
    mask_section_size_range,
    pack_file,
    parse_file,
    read_header,
)
from controlgic_cli.errors import FormatError, OptionsError

REPO_ROOT = Path(__file__).resolve().parents[1]
SPEC_HEADER_SIZE = 60  # docs/format.md §3: the header's last field, header_crc32, is bytes 56..59
FUZZ = settings(max_examples=150, deadline=None)

SMALL_HEADER = CgicHeader(
    width=16,
    height=16,
    colour_mode=1,
    ratios=(500_000, 400_000, 100_000),
    model_id=bytes(range(1, 9)),
    rate_controlled=False,
)
SMALL_SECTIONS = CgicSections(masks=b"\x80", fine=b"\x12\x34\x56", medium=b"\x78\x9a", coarse=b"\xbc")


def spec_file(
    *,
    magic=b"CGIC",
    version=1,
    colour_mode=1,
    flags=0,
    reserved=0,
    width=16,
    height=16,
    ratios=(500_000, 400_000, 100_000),
    model_id=b"\x01" * 8,
    section_lengths=(1, 0, 0, 0),
    payload=None,
    payload_crc=None,
):
    """A file laid out from the offset table in docs/format.md, independently of the module under test."""
    if payload is None:
        payload = bytes(sum(section_lengths))
    header = bytearray(SPEC_HEADER_SIZE)
    header[0:4] = magic
    header[4], header[5], header[6], header[7] = version, colour_mode, flags, reserved
    struct.pack_into("<II", header, 8, width, height)
    struct.pack_into("<III", header, 16, *ratios)
    header[28:36] = model_id
    struct.pack_into("<IIII", header, 36, *section_lengths)
    struct.pack_into("<I", header, 52, zlib.crc32(payload) if payload_crc is None else payload_crc)
    struct.pack_into("<I", header, 56, zlib.crc32(header[:56]))
    return bytes(header) + payload


@pytest.mark.parametrize(("width", "height"), [(65536, 16), (16, 65536), (0, 16), (16, 0)])
def test_sides_outside_the_spec_range_are_refused_by_writer_and_reader(width, height):
    """docs/format.md §3: width and height are 1..65535 (the round trip of 65535 is tested below)."""
    with pytest.raises(OptionsError, match=r"^cannot write"):
        pack_file(dataclasses.replace(SMALL_HEADER, width=width, height=height), SMALL_SECTIONS)
    with pytest.raises(FormatError, match=r"(width|height) \d+ is not an integer in 1\.\.65535$"):
        read_header(spec_file(width=width, height=height))


def test_packed_bytes_follow_the_offset_table():
    payload = b"\x80\x12\x34\x56\x78\x9a\xbc"
    expected = spec_file(model_id=bytes(range(1, 9)), section_lengths=(1, 3, 2, 1), payload=payload)
    assert pack_file(SMALL_HEADER, SMALL_SECTIONS) == expected


def test_hex_example_in_the_format_doc_matches_the_writer():
    doc = (REPO_ROOT / "docs" / "format.md").read_text(encoding="utf-8")
    rows = re.findall(r"^[0-9a-f]{4}: ((?:[0-9a-f]{2} )+)", doc, flags=re.MULTILINE)
    documented = bytes.fromhex("".join(rows))
    header = CgicHeader(16, 16, 0, (0, 0, 1_000_000), bytes.fromhex("0011223344556677"), rate_controlled=False)
    assert pack_file(header, CgicSections(masks=b"\x80", fine=b"", medium=b"", coarse=b"\x5c")) == documented


def test_small_file_round_trip():
    data = pack_file(SMALL_HEADER, SMALL_SECTIONS)
    assert len(data) == SPEC_HEADER_SIZE + 7
    assert parse_file(data) == (SMALL_HEADER, SMALL_SECTIONS)
    assert read_header(data) == SMALL_HEADER
    assert read_header(data[:HEADER_SIZE]) == SMALL_HEADER


@pytest.mark.parametrize("colour_mode", [0, 1, 2])
@pytest.mark.parametrize("rate_controlled", [False, True])
def test_colour_modes_and_flags_round_trip(colour_mode, rate_controlled):
    header = dataclasses.replace(SMALL_HEADER, colour_mode=colour_mode, rate_controlled=rate_controlled)
    assert parse_file(pack_file(header, SMALL_SECTIONS))[0] == header


@pytest.mark.parametrize(("width", "height"), [(1, 1), (1, 65535), (65535, 1), (17, 33), (768, 512), (65535, 65535)])
def test_dimensions_round_trip(width, height):
    header = dataclasses.replace(SMALL_HEADER, width=width, height=height)
    smallest, largest = mask_section_size_range(width, height)
    for mask_bytes in {smallest, largest}:
        sections = CgicSections(masks=bytes(mask_bytes), fine=b"\x01", medium=b"", coarse=b"\x02\x03")
        assert parse_file(pack_file(header, sections)) == (header, sections)


@pytest.mark.parametrize(
    "ratios", [(1_000_000, 0, 0), (0, 1_000_000, 0), (0, 0, 1_000_000), (333_334, 333_333, 333_333), (1, 999_998, 1)]
)
def test_ratio_edge_cases_round_trip(ratios):
    header = dataclasses.replace(SMALL_HEADER, ratios=ratios)
    assert parse_file(pack_file(header, SMALL_SECTIONS))[0].ratios == ratios


@pytest.mark.parametrize("model_id", [bytes(8), b"\xff" * 8, b"CGIC\x01\x00\x00\x00"])
def test_model_id_round_trips(model_id):
    header = dataclasses.replace(SMALL_HEADER, model_id=model_id)
    assert parse_file(pack_file(header, SMALL_SECTIONS))[0].model_id == model_id


def test_empty_index_streams_round_trip():
    sections = CgicSections(masks=b"\x00\x00", fine=b"", medium=b"", coarse=b"")
    header = dataclasses.replace(SMALL_HEADER, width=48, height=32)
    assert parse_file(pack_file(header, sections)) == (header, sections)


def test_every_truncation_is_rejected():
    data = pack_file(SMALL_HEADER, SMALL_SECTIONS)
    for cut in range(len(data)):
        with pytest.raises(FormatError):
            parse_file(data[:cut])
        if cut < HEADER_SIZE:
            with pytest.raises(FormatError):
                read_header(data[:cut])


@pytest.mark.parametrize("metadata", [ImageMetadata(), ImageMetadata(icc=b"profile", xmp=b"<x/>")])
def test_every_single_bit_flip_is_rejected(metadata):
    data = pack_file(SMALL_HEADER, dataclasses.replace(SMALL_SECTIONS, metadata=metadata))
    for position in range(len(data)):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[position] ^= 1 << bit
            with pytest.raises(FormatError):
                parse_file(bytes(damaged))


def test_bit_flips_in_the_header_are_caught_by_read_header_too():
    data = pack_file(SMALL_HEADER, SMALL_SECTIONS)
    for position in range(HEADER_SIZE):
        damaged = bytearray(data)
        damaged[position] ^= 0x10
        with pytest.raises(FormatError):
            read_header(bytes(damaged))


@pytest.mark.parametrize("data", [b"", b"C", b"CGI", b"CGIC"])
def test_short_inputs_are_rejected(data):
    with pytest.raises(FormatError):
        parse_file(data)


@pytest.mark.parametrize("data", [b"\x89PNG\r\n\x1a\n" + bytes(60), b"RIFF", b"cgic" + bytes(60), b"X"])
def test_bad_magic_is_rejected(data):
    with pytest.raises(FormatError, match=r"^not a \.cgic file \(bad magic\)$"):
        parse_file(data)


@pytest.mark.parametrize("version", [0, 7, 255])
def test_other_versions_are_rejected_before_anything_else(version):
    message = rf"^unsupported \.cgic format version {version} \(this cgic reads versions 1, 2, 3, 4, 5, 6\)$"
    with pytest.raises(FormatError, match=message):
        parse_file(spec_file(version=version))
    # Even a future file too short for a version-1 header names the version problem.
    with pytest.raises(FormatError, match=message):
        read_header(spec_file(version=version)[:10])


ICC, EXIF, XMP = b"icc profile bytes", b"MM\x00\x2a exif", b"<x:xmpmeta/>"


def record(kind: bytes, data: bytes) -> bytes:
    return kind + struct.pack("<I", len(data)) + data


@pytest.mark.parametrize(
    "metadata",
    [
        ImageMetadata(icc=ICC),
        ImageMetadata(exif=EXIF),
        ImageMetadata(xmp=XMP),
        ImageMetadata(icc=ICC, exif=EXIF, xmp=XMP),
        ImageMetadata(icc=ICC, xmp=XMP),
    ],
)
def test_metadata_makes_a_version_2_file_laid_out_as_documented(metadata):
    sections = dataclasses.replace(SMALL_SECTIONS, metadata=metadata)
    data = pack_file(SMALL_HEADER, sections)
    records = b"".join(
        record(code, part)
        for code, part in ((b"ICCP", metadata.icc), (b"EXIF", metadata.exif), (b"XMP ", metadata.xmp))
        if part is not None
    )
    payload = b"\x80\x12\x34\x56\x78\x9a\xbc" + records
    assert data == spec_file(version=2, model_id=bytes(range(1, 9)), section_lengths=(1, 3, 2, 1), payload=payload)
    assert parse_file(data) == (SMALL_HEADER, sections)
    assert read_header(data) == SMALL_HEADER


def test_without_metadata_the_file_stays_version_1():
    assert pack_file(SMALL_HEADER, SMALL_SECTIONS)[4] == 1
    assert parse_file(pack_file(SMALL_HEADER, SMALL_SECTIONS))[1].metadata == ImageMetadata()


@pytest.mark.parametrize("metadata", [ImageMetadata(), ImageMetadata(icc=ICC, exif=EXIF)])
def test_rank_coded_streams_make_a_version_3_file_laid_out_as_documented(metadata):
    sections = dataclasses.replace(SMALL_SECTIONS, metadata=metadata, rank_coded=True)
    data = pack_file(SMALL_HEADER, sections)
    records = b"".join(record(code, part) for code, part in ((b"ICCP", ICC), (b"EXIF", EXIF)) if metadata)
    payload = b"\x80\x12\x34\x56\x78\x9a\xbc" + records
    assert data == spec_file(version=3, model_id=bytes(range(1, 9)), section_lengths=(1, 3, 2, 1), payload=payload)
    assert parse_file(data) == (SMALL_HEADER, sections)
    assert sections.format_version == FORMAT_VERSION_RANK_CODED == 3


def test_version_3_metadata_is_checked_like_version_2s():
    data = spec_file(version=3, section_lengths=(1, 0, 0, 0), payload=b"\x80" + record(b"GPS ", b"x"))
    with pytest.raises(FormatError, match="unknown record type"):
        parse_file(data)


ALPHA = b"\x00coded alpha plane"
ALPHA_HEADER = dataclasses.replace(SMALL_HEADER, colour_mode=COLOUR_RGB_ALPHA)


@pytest.mark.parametrize("metadata", [ImageMetadata(), ImageMetadata(exif=EXIF, xmp=XMP)])
@pytest.mark.parametrize("colour_mode", [COLOUR_RGB_ALPHA, COLOUR_GREY_ALPHA])
def test_alpha_makes_a_version_4_file_laid_out_as_documented(metadata, colour_mode):
    header = dataclasses.replace(SMALL_HEADER, colour_mode=colour_mode)
    sections = dataclasses.replace(SMALL_SECTIONS, metadata=metadata, rank_coded=True, alpha=ALPHA)
    data = pack_file(header, sections)
    records = record(b"ALPH", ALPHA) + b"".join(
        record(code, part) for code, part in ((b"EXIF", EXIF), (b"XMP ", XMP)) if metadata
    )
    payload = b"\x80\x12\x34\x56\x78\x9a\xbc" + records
    expected = spec_file(
        version=4, colour_mode=colour_mode, model_id=bytes(range(1, 9)), section_lengths=(1, 3, 2, 1), payload=payload
    )
    assert data == expected
    assert parse_file(data) == (header, sections)
    assert sections.format_version == FORMAT_VERSION_ALPHA == 4
    assert sections.sizes()["alpha"] == 8 + len(ALPHA)


def test_alpha_needs_an_alpha_colour_mode_and_rank_coding_to_be_written():
    with_alpha = dataclasses.replace(SMALL_SECTIONS, rank_coded=True, alpha=ALPHA)
    with pytest.raises(OptionsError, match="has no place for an alpha plane"):
        pack_file(SMALL_HEADER, with_alpha)
    with pytest.raises(OptionsError, match="needs an alpha plane"):
        pack_file(ALPHA_HEADER, dataclasses.replace(with_alpha, alpha=b""))
    with pytest.raises(OptionsError, match="needs version 4, 5 or 6 index streams"):
        pack_file(ALPHA_HEADER, dataclasses.replace(with_alpha, rank_coded=False))


def version_4(records: bytes, colour_mode: int = COLOUR_RGB_ALPHA) -> bytes:
    return spec_file(version=4, colour_mode=colour_mode, section_lengths=(1, 0, 0, 0), payload=b"\x80" + records)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (version_4(b""), "version 4 without its alpha record"),
        (version_4(record(b"ICCP", ICC)), "version 4 without its alpha record"),
        (version_4(b"ALPH\x05\x00"), "version 4 without its alpha record"),
        (version_4(record(b"ALPH", b"")), "alpha record: says 0 bytes"),
        (version_4(record(b"ALPH", ALPHA)[:-1]), "alpha record: says 18 bytes, 17 remain"),
        (version_4(record(b"ALPH", ALPHA) + record(b"ALPH", ALPHA)), "unknown record type"),
        (version_4(record(b"ALPH", ALPHA), colour_mode=1), "colour mode 1 in a version-4 file (with an alpha record)"),
        (
            spec_file(version=3, colour_mode=3, section_lengths=(1, 0, 0, 0), payload=b"\x80"),
            "colour mode 3 in a version-3 file (without an alpha record)",
        ),
        (
            spec_file(version=3, section_lengths=(1, 0, 0, 0), payload=b"\x80" + record(b"ALPH", ALPHA)),
            "unknown record",
        ),
    ],
)
def test_malformed_alpha_records_are_rejected(data, problem):
    with pytest.raises(FormatError, match=re.escape(problem)):
        parse_file(data)


def version_2(metadata_section: bytes) -> bytes:
    return spec_file(version=2, section_lengths=(1, 0, 0, 0), payload=b"\x80" + metadata_section)


@pytest.mark.parametrize(
    ("metadata_section", "problem"),
    [
        (b"", "version 2 without metadata records"),
        (b"ICC", "record header is cut off"),
        (record(b"ICCP", ICC)[:-1], "says 17 bytes, 16 remain"),
        (record(b"ICCP", ICC) + b"\x00", "record header is cut off"),
        (record(b"GPS ", b"x"), "unknown record type"),
        (record(b"ICCP", b""), "empty 'ICCP' record"),
        (record(b"EXIF", EXIF) + record(b"ICCP", ICC), "'ICCP' is repeated or out of order"),
        (record(b"XMP ", XMP) + record(b"XMP ", XMP), "'XMP ' is repeated or out of order"),
    ],
)
def test_malformed_metadata_is_rejected(metadata_section, problem):
    with pytest.raises(FormatError, match=re.escape(problem)):
        parse_file(version_2(metadata_section))


def test_truncated_version_2_file_is_rejected_at_every_length():
    data = pack_file(SMALL_HEADER, dataclasses.replace(SMALL_SECTIONS, metadata=ImageMetadata(icc=ICC, xmp=XMP)))
    for length in range(len(data)):
        with pytest.raises(FormatError):
            parse_file(data[:length])


def test_pack_rejects_empty_metadata_parts():
    with pytest.raises(OptionsError, match="xmp must be non-empty bytes"):
        pack_file(SMALL_HEADER, dataclasses.replace(SMALL_SECTIONS, metadata=ImageMetadata(xmp=b"")))


def test_trailing_bytes_are_rejected():
    data = pack_file(SMALL_HEADER, SMALL_SECTIONS)
    with pytest.raises(FormatError, match="1 trailing bytes"):
        parse_file(data + b"\x00")
    assert read_header(data + b"\x00") == SMALL_HEADER


def test_truncated_payload_message_names_both_sizes():
    data = pack_file(SMALL_HEADER, SMALL_SECTIONS)
    with pytest.raises(
        FormatError, match=rf"^truncated \.cgic file: header says {len(data)} bytes, got {len(data) - 2}$"
    ):
        parse_file(data[:-2])


def test_payload_damage_is_named():
    data = bytearray(pack_file(SMALL_HEADER, SMALL_SECTIONS))
    data[-1] ^= 1
    with pytest.raises(FormatError, match=r"^payload checksum mismatch: the file is damaged$"):
        parse_file(bytes(data))


@pytest.mark.parametrize(
    "section_lengths", [(1, 2**32 - 1, 0, 0), (1, 0, 0, 2**32 - 1), (1, 2**31, 2**31, 2**31 - 1), (1, 7, 7, 7)]
)
def test_absurd_section_lengths_are_rejected_without_allocating(section_lengths):
    with pytest.raises(FormatError, match="truncated"):
        parse_file(spec_file(section_lengths=section_lengths, payload=bytes(1)))


@pytest.mark.parametrize(("width", "height", "mask_bytes"), [(16, 16, 0), (16, 16, 2), (1, 1, 2**32 - 1), (33, 16, 3)])
def test_impossible_mask_section_lengths_are_rejected(width, height, mask_bytes):
    data = spec_file(width=width, height=height, section_lengths=(mask_bytes, 0, 0, 0), payload=bytes(4))
    with pytest.raises(FormatError, match="mask section"):
        read_header(data)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"colour_mode": 5}, "colour mode"),
        ({"flags": 0x02}, "flag"),
        ({"flags": 0x81}, "flag"),
        ({"reserved": 1}, "reserved"),
        ({"width": 0}, "width"),
        ({"height": 0}, "height"),
        ({"width": 65536}, "width"),
        ({"height": 2**32 - 1}, "height"),
        ({"ratios": (500_000, 400_000, 100_001)}, "sum"),
        ({"ratios": (2**32 - 1, 1_000_001, 0)}, "sum"),
        ({"ratios": (0, 0, 0)}, "sum"),
    ],
)
def test_invalid_header_fields_are_rejected(fields, problem):
    data = spec_file(**fields)
    for reader in (read_header, parse_file):
        with pytest.raises(FormatError, match=rf"^invalid \.cgic header: .*{problem}"):
            reader(data)


def test_header_checksum_is_checked_before_fields():
    data = bytearray(spec_file())
    data[5] = 9  # an invalid colour mode, but the CRC no longer matches either
    with pytest.raises(FormatError, match=r"^header checksum mismatch"):
        read_header(bytes(data))


@given(st.binary(max_size=120))
@FUZZ
def test_arbitrary_bytes_raise_only_format_error(data):
    for candidate in (data, MAGIC + data, MAGIC + b"\x01" + data):
        try:
            header, sections = parse_file(candidate)
        except FormatError as error:
            assert "\n" not in str(error)
        else:
            assert pack_file(header, sections) == candidate


@given(st.binary(min_size=HEADER_SIZE - 9, max_size=HEADER_SIZE - 9))
@FUZZ
def test_random_headers_with_valid_checksum_raise_only_format_error(body):
    header = MAGIC + b"\x01" + body
    data = header + struct.pack("<I", zlib.crc32(header))
    with contextlib.suppress(FormatError):
        read_header(data)


@pytest.mark.parametrize(
    "header",
    [
        dataclasses.replace(SMALL_HEADER, width=0),
        dataclasses.replace(SMALL_HEADER, height=MAX_DIMENSION + 1),
        dataclasses.replace(SMALL_HEADER, width=16.0),
        dataclasses.replace(SMALL_HEADER, colour_mode=3),
        dataclasses.replace(SMALL_HEADER, model_id=b"short"),
        dataclasses.replace(SMALL_HEADER, ratios=(500_000, 500_000, 1)),
        dataclasses.replace(SMALL_HEADER, ratios=(0.5, 0.4, 0.1)),
        dataclasses.replace(SMALL_HEADER, ratios=(1_000_000, 0)),
    ],
)
def test_pack_rejects_invalid_headers(header):
    with pytest.raises(OptionsError, match=r"^cannot write"):
        pack_file(header, SMALL_SECTIONS)


@pytest.mark.parametrize("mask_bytes", [0, 2])
def test_pack_rejects_impossible_mask_sections(mask_bytes):
    with pytest.raises(OptionsError, match="mask section"):
        pack_file(SMALL_HEADER, dataclasses.replace(SMALL_SECTIONS, masks=bytes(mask_bytes)))


def test_mask_section_size_range():
    assert mask_section_size_range(1, 1) == (1, 1)
    assert mask_section_size_range(16, 16) == (1, 1)
    assert mask_section_size_range(17, 16) == (1, 2)
    assert mask_section_size_range(768, 512) == (192, 960)
    assert mask_section_size_range(65535, 65535) == (4096 * 4096 // 8, 5 * 4096 * 4096 // 8)


# --- ratios ---------------------------------------------------------------------------------


# --- import weight --------------------------------------------------------------------------


def test_container_and_coders_do_not_import_torch():
    code = (
        "import sys\n"
        "import controlgic_cli.coding.container, controlgic_cli.coding.entropy_coder\n"
        "import controlgic_cli.coding.index_coding\n"
        "heavy = sorted(m for m in ('torch', 'click', 'tqdm') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"importing the container pulled in: {result.stdout.strip()}"
