"""The .cgic container: a fixed 60-byte header, then the payload.

Format version 1 is the image alone; version 2 is the same file followed by
metadata records (colour profile, Exif, XMP). Version 3 has the layout of
version 2, metadata records optional, but its index streams are
neighbour-rank coded (index_coding.py) and its masks grouped
(mask_coding.py). Version 4 is version 3 with an alpha plane (alpha_coding.py)
as the first record. Version 5 (model v2) has the layout of version 4, its
alpha record present exactly when the colour mode has alpha, and its index
streams group-coded (index_coding.GroupUsageCoding). Version 6 is version 3
with a colour-correction record (colour_correction.py) first, then the alpha
record exactly when the colour mode has alpha. This cgic reads all six and
writes version 5 with model v2 weights; with model v1, version 6 when the
weights carry rank tables (3 or 4 when asked for no correction), else 1 or 2.

docs/format.md is the specification; this module is its only implementation.
Every length in a file is checked before it is used, and nothing is allocated
from a header field, because .cgic files are untrusted input. The module needs
only the standard library so that `cgic info` and the Pillow plugin can read a
header without loading numpy or torch.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from ..errors import FormatError, OptionsError
from ..planning.ratios import ratios_ppm_problem

MAGIC = b"CGIC"
FORMAT_VERSION = 1
FORMAT_VERSION_METADATA = 2
FORMAT_VERSION_RANK_CODED = 3
FORMAT_VERSION_ALPHA = 4
FORMAT_VERSION_GROUPED = 5
FORMAT_VERSION_CORRECTED = 6
READABLE_VERSIONS = (
    FORMAT_VERSION,
    FORMAT_VERSION_METADATA,
    FORMAT_VERSION_RANK_CODED,
    FORMAT_VERSION_ALPHA,
    FORMAT_VERSION_GROUPED,
    FORMAT_VERSION_CORRECTED,
)
RANK_CODED_VERSIONS = (FORMAT_VERSION_RANK_CODED, FORMAT_VERSION_ALPHA, FORMAT_VERSION_CORRECTED)
GROUPED_MASK_VERSIONS = (*RANK_CODED_VERSIONS, FORMAT_VERSION_GROUPED)  # masks in groups of four (mask_coding.py)
HEADER_SIZE = 60
MAX_DIMENSION = 65535
MODEL_ID_SIZE = 8

COLOUR_GREY = 0
COLOUR_RGB = 1
COLOUR_RGB_ALPHA_DROPPED = 2
COLOUR_RGB_ALPHA = 3
COLOUR_GREY_ALPHA = 4
COLOUR_MODES = (COLOUR_GREY, COLOUR_RGB, COLOUR_RGB_ALPHA_DROPPED, COLOUR_RGB_ALPHA, COLOUR_GREY_ALPHA)
ALPHA_COLOUR_MODES = (COLOUR_RGB_ALPHA, COLOUR_GREY_ALPHA)  # the file holds an alpha record
# The Pillow mode a decoder hands back for each colour mode (docs/format.md §3).
DECODED_PIL_MODES = {
    COLOUR_GREY: "L",
    COLOUR_RGB: "RGB",
    COLOUR_RGB_ALPHA_DROPPED: "RGB",
    COLOUR_RGB_ALPHA: "RGBA",
    COLOUR_GREY_ALPHA: "LA",
}

FLAG_RATE_CONTROLLED = 0x01

# Everything up to and including payload_crc32; header_crc32 follows and covers these 56 bytes.
_HEADER_FIELDS = struct.Struct("<4sBBBBIIIII8sIIIII")
_HEADER_CRC = struct.Struct("<I")
_CRC_COVERED_SIZE = HEADER_SIZE - _HEADER_CRC.size
_COARSE_CELL = 16
_GROUP_CODE_MAX_BITS = 16  # the longest code a Huffman code over 17 symbols can have
# Metadata records (version 2): type, then uint32 length, then the bytes.
_RECORD_HEAD = struct.Struct("<4sI")
RECORD_HEAD_SIZE = _RECORD_HEAD.size
METADATA_RECORD_TYPES = {"icc": b"ICCP", "exif": b"EXIF", "xmp": b"XMP "}
ALPHA_RECORD_TYPE = b"ALPH"  # version 4: before the metadata records
CORRECTION_RECORD_TYPE = b"CORR"  # version 6: the first record


@dataclass(frozen=True)
class CgicHeader:
    """What a .cgic header says about the image; section lengths and checksums are derived on packing.

    ratios: (fine, medium, coarse) area fractions in parts per million, summing to 1_000_000.
    model_id: first 8 bytes of the sha256 of the weights file that encoded the image.
    rate_controlled: the ratios were chosen by rate control (informational only).
    """

    width: int
    height: int
    colour_mode: int
    ratios: tuple[int, int, int]
    model_id: bytes
    rate_controlled: bool


@dataclass(frozen=True)
class ImageMetadata:
    """What a file may carry besides the image (version 2): each part is None or non-empty bytes.

    icc: an ICC colour profile the decoded values are in.
    exif: Exif data as a TIFF structure (starting "II" or "MM"), without orientation.
    xmp: an XMP packet (UTF-8 XML).
    """

    icc: bytes | None = None
    exif: bytes | None = None
    xmp: bytes | None = None

    def records(self) -> list[tuple[str, bytes]]:
        """(kind, bytes) of the parts present, in file order."""
        return [(kind, getattr(self, kind)) for kind in METADATA_RECORD_TYPES if getattr(self, kind) is not None]

    def __bool__(self) -> bool:
        return bool(self.records())


@dataclass(frozen=True)
class CgicSections:
    """The payload: mask section, the fine, medium and coarse index streams, any alpha plane and metadata.

    rank_coded: version 3, whose index streams hold neighbour ranks, not indices, and whose masks are grouped.
    grouped: version 5, whose index streams hold FSQ groups (model v2) and whose masks are grouped.
    alpha: the coded alpha plane (alpha_coding.py), empty for opaque images; versions 4, 5 and 6 only.
    correction: the colour-correction record's bytes (colour_correction.py); version 6 only.
    """

    masks: bytes
    fine: bytes
    medium: bytes
    coarse: bytes
    metadata: ImageMetadata = ImageMetadata()
    rank_coded: bool = False
    alpha: bytes = b""
    grouped: bool = False
    correction: bytes = b""

    @property
    def grouped_masks(self) -> bool:
        return self.rank_coded or self.grouped

    @property
    def format_version(self) -> int:
        """5 for group-coded streams, 6 with a colour correction, 4 with alpha, 3 for rank-coded streams; else 2
        only with metadata, or 1."""
        if self.grouped:
            return FORMAT_VERSION_GROUPED
        if self.correction:
            return FORMAT_VERSION_CORRECTED
        if self.alpha:
            return FORMAT_VERSION_ALPHA
        if self.rank_coded:
            return FORMAT_VERSION_RANK_CODED
        return FORMAT_VERSION_METADATA if self.metadata else FORMAT_VERSION

    def sizes(self) -> dict[str, int]:
        """Bytes of each part of the file these sections make, header included (`cgic info`, encode stats)."""
        return {
            "header": HEADER_SIZE,
            "masks": len(self.masks),
            "fine": len(self.fine),
            "medium": len(self.medium),
            "coarse": len(self.coarse),
            "correction": len(pack_correction_record(self.correction)),
            "alpha": len(pack_alpha_record(self.alpha)),
            "metadata": len(pack_metadata(self.metadata)),
        }


def mask_section_size_range(width: int, height: int, version: int = FORMAT_VERSION) -> tuple[int, int]:
    """Smallest and largest possible mask section in bytes for an image of this size.

    Versions 1 and 2: all-coarse sends one bit per H/16 cell; no coarse cell
    sends one more bit for each of its four H/8 cells. Version 3 codes one
    symbol per 2x2 block of H/16 cells and one per H/16 cell, each with a
    Huffman code over 16 symbols and EOF, so at least 1 and at most 16 bits;
    the exact length is checked when the section is decoded.
    """
    rows, columns = -(-height // _COARSE_CELL), -(-width // _COARSE_CELL)
    cell_count = rows * columns
    if version in GROUPED_MASK_VERSIONS:
        block_count = -(-rows // 2) * -(-columns // 2)
        return -(-block_count // 8), -(-_GROUP_CODE_MAX_BITS * (block_count + cell_count) // 8)
    return -(-cell_count // 8), -(-5 * cell_count // 8)


def _header_problem(header: CgicHeader) -> str | None:
    """What is wrong with the header's fields, in words, or None if they are valid."""
    for name, value in (("width", header.width), ("height", header.height)):
        if not isinstance(value, int) or not 1 <= value <= MAX_DIMENSION:
            return f"{name} {value!r} is not an integer in 1..{MAX_DIMENSION}"
    if not isinstance(header.colour_mode, int) or header.colour_mode not in COLOUR_MODES:
        return (
            f"colour mode {header.colour_mode!r} is not one of 0 (grey), 1 (RGB), 2 (RGB, alpha dropped), "
            "3 (RGB with alpha), 4 (grey with alpha)"
        )
    if not isinstance(header.model_id, bytes) or len(header.model_id) != MODEL_ID_SIZE:
        return f"model id must be {MODEL_ID_SIZE} bytes, got {header.model_id!r}"
    return ratios_ppm_problem(header.ratios)


def pack_file(header: CgicHeader, sections: CgicSections) -> bytes:
    """Serialise a header and its payload sections into a complete .cgic file."""
    problem = _header_problem(header)
    if problem:
        raise OptionsError(f"cannot write .cgic header: {problem}")
    if bool(sections.alpha) != (header.colour_mode in ALPHA_COLOUR_MODES):
        raise OptionsError(
            f"cannot write .cgic file: colour mode {header.colour_mode} "
            f"{'needs' if not sections.alpha else 'has no place for'} an alpha plane"
        )
    if sections.alpha and not sections.grouped_masks:
        raise OptionsError("cannot write .cgic file: an alpha plane needs version 4, 5 or 6 index streams")
    if sections.rank_coded and sections.grouped:
        raise OptionsError("cannot write .cgic file: index streams are rank-coded or group-coded, not both")
    if sections.correction and not sections.rank_coded:
        raise OptionsError("cannot write .cgic file: a colour correction needs version 6 (rank-coded) index streams")
    smallest_masks, largest_masks = mask_section_size_range(header.width, header.height, sections.format_version)
    if not smallest_masks <= len(sections.masks) <= largest_masks:
        raise OptionsError(
            f"cannot write .cgic file: mask section of {len(sections.masks)} bytes is outside "
            f"{smallest_masks}..{largest_masks} for a {header.width}x{header.height} image"
        )
    records = (
        pack_correction_record(sections.correction)
        + pack_alpha_record(sections.alpha)
        + pack_metadata(sections.metadata)
    )
    payload = sections.masks + sections.fine + sections.medium + sections.coarse + records
    fields = _HEADER_FIELDS.pack(
        MAGIC,
        sections.format_version,
        header.colour_mode,
        FLAG_RATE_CONTROLLED if header.rate_controlled else 0,
        0,
        header.width,
        header.height,
        *header.ratios,
        header.model_id,
        len(sections.masks),
        len(sections.fine),
        len(sections.medium),
        len(sections.coarse),
        zlib.crc32(payload),
    )
    return fields + _HEADER_CRC.pack(zlib.crc32(fields)) + payload


def pack_correction_record(correction: bytes) -> bytes:
    """The colour-correction record (empty when there is none)."""
    return _RECORD_HEAD.pack(CORRECTION_RECORD_TYPE, len(correction)) + correction if correction else b""


def pack_alpha_record(alpha: bytes) -> bytes:
    """The alpha record (empty for an opaque image)."""
    return _RECORD_HEAD.pack(ALPHA_RECORD_TYPE, len(alpha)) + alpha if alpha else b""


def pack_metadata(metadata: ImageMetadata) -> bytes:
    """The metadata section (empty when there is no metadata)."""
    out = b""
    for kind, data in metadata.records():
        if not isinstance(data, bytes) or not data:
            raise OptionsError(f"cannot write .cgic metadata: {kind} must be non-empty bytes")
        out += _RECORD_HEAD.pack(METADATA_RECORD_TYPES[kind], len(data)) + data
    return out


def _parse_records(data: bytes, version: int, colour_mode: int) -> tuple[bytes, bytes, ImageMetadata]:
    """Split the records after the index streams into the colour correction (version 6), the alpha plane
    (versions 4, 5 and 6) and metadata.

    Checks order, lengths and types: version 2 needs a metadata record, version
    6 starts with exactly one colour-correction record, version 4 with exactly
    one alpha record, versions 5 and 6 have one (after any correction) when
    their colour mode has alpha, and the others have none.
    """
    if not data and version == FORMAT_VERSION_METADATA:
        raise FormatError("invalid .cgic file: version 2 without metadata records")
    correction = alpha = b""
    if version == FORMAT_VERSION_CORRECTED:
        correction, data = _leading_record(data, CORRECTION_RECORD_TYPE, version, "colour-correction")
    if version == FORMAT_VERSION_ALPHA or (
        version in (FORMAT_VERSION_GROUPED, FORMAT_VERSION_CORRECTED) and colour_mode in ALPHA_COLOUR_MODES
    ):
        alpha, data = _leading_record(data, ALPHA_RECORD_TYPE, version, "alpha")
    return correction, alpha, _parse_metadata(data)


def _leading_record(data: bytes, code: bytes, version: int, name: str) -> tuple[bytes, bytes]:
    """The bytes of the record of this type that `data` must start with, and what follows it."""
    found, length = _RECORD_HEAD.unpack_from(data) if len(data) >= _RECORD_HEAD.size else (b"", 0)
    if found != code:
        raise FormatError(f"invalid .cgic file: version {version} without its {name} record")
    if length == 0 or length > len(data) - _RECORD_HEAD.size:
        raise FormatError(f"invalid .cgic {name} record: says {length} bytes, {len(data) - _RECORD_HEAD.size} remain")
    return data[_RECORD_HEAD.size : _RECORD_HEAD.size + length], data[_RECORD_HEAD.size + length :]


def _parse_metadata(data: bytes) -> ImageMetadata:
    """The metadata records, checking order, lengths and types."""
    kinds = {code: kind for kind, code in METADATA_RECORD_TYPES.items()}
    order = list(METADATA_RECORD_TYPES.values())
    found: dict[str, bytes] = {}
    offset, last = 0, -1
    while offset < len(data):
        if len(data) - offset < _RECORD_HEAD.size:
            raise FormatError("truncated .cgic file: a metadata record header is cut off")
        code, length = _RECORD_HEAD.unpack_from(data, offset)
        if code not in kinds:
            raise FormatError(f"invalid .cgic metadata: unknown record type 0x{code.hex()}")
        position = order.index(code)
        if position <= last:
            raise FormatError(f"invalid .cgic metadata: record {code.decode()!r} is repeated or out of order")
        if length == 0:
            raise FormatError(f"invalid .cgic metadata: empty {code.decode()!r} record")
        offset += _RECORD_HEAD.size
        if len(data) - offset < length:
            raise FormatError(
                f"truncated .cgic file: metadata record {code.decode()!r} says {length} bytes, "
                f"{len(data) - offset} remain"
            )
        found[kinds[code]] = data[offset : offset + length]
        offset += length
        last = position
    return ImageMetadata(**found)


def _parse_header(data: bytes) -> tuple[CgicHeader, tuple[int, int, int, int], int, int]:
    """Validate the fixed header: returns the header, the four section lengths, the payload CRC and the version."""
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        if len(data) < len(MAGIC) and MAGIC.startswith(data):
            raise FormatError(f"truncated .cgic file: {len(data)} bytes, shorter than its {HEADER_SIZE}-byte header")
        raise FormatError("not a .cgic file (bad magic)")
    if len(data) > len(MAGIC) and data[len(MAGIC)] not in READABLE_VERSIONS:
        raise FormatError(
            f"unsupported .cgic format version {data[len(MAGIC)]} "
            f"(this cgic reads versions {', '.join(map(str, READABLE_VERSIONS))})"
        )
    if len(data) < HEADER_SIZE:
        raise FormatError(f"truncated .cgic file: {len(data)} bytes, shorter than its {HEADER_SIZE}-byte header")
    (stored_header_crc,) = _HEADER_CRC.unpack_from(data, _CRC_COVERED_SIZE)
    if zlib.crc32(data[:_CRC_COVERED_SIZE]) != stored_header_crc:
        raise FormatError("header checksum mismatch: the file is damaged")

    (
        _magic,
        version,
        colour_mode,
        flags,
        reserved,
        width,
        height,
        ratio_fine,
        ratio_medium,
        ratio_coarse,
        model_id,
        *section_lengths,
        payload_crc,
    ) = _HEADER_FIELDS.unpack_from(data)
    if flags & ~FLAG_RATE_CONTROLLED:
        raise FormatError(f"invalid .cgic header: unknown flag bits 0x{flags:02x}")
    if reserved != 0:
        raise FormatError(f"invalid .cgic header: reserved byte is {reserved}, must be 0")
    header = CgicHeader(
        width=width,
        height=height,
        colour_mode=colour_mode,
        ratios=(ratio_fine, ratio_medium, ratio_coarse),
        model_id=model_id,
        rate_controlled=bool(flags & FLAG_RATE_CONTROLLED),
    )
    problem = _header_problem(header)
    if problem:
        raise FormatError(f"invalid .cgic header: {problem}")
    mask_bytes = section_lengths[0]
    smallest_masks, largest_masks = mask_section_size_range(width, height, version)
    if not smallest_masks <= mask_bytes <= largest_masks:
        raise FormatError(
            f"invalid .cgic header: mask section of {mask_bytes} bytes is impossible for a "
            f"{width}x{height} image ({smallest_masks}..{largest_masks})"
        )
    return header, tuple(section_lengths), payload_crc, version


def read_header(data: bytes) -> CgicHeader:
    """Read and validate the header from the first 60 bytes of a .cgic file; the rest of `data` is ignored."""
    header, _section_lengths, _payload_crc, _version = _parse_header(_file_bytes(data)[:HEADER_SIZE])
    return header


def _file_bytes(data) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        # bytes("x.cgic") would fail with "string argument without an encoding", which says nothing useful.
        raise TypeError(f"expected the bytes of a .cgic file, not {type(data).__name__} (read the file first)")
    return bytes(data)


def parse_file(data: bytes) -> tuple[CgicHeader, CgicSections]:
    """Validate a complete .cgic file and split it into its header and payload sections."""
    data = _file_bytes(data)
    header, section_lengths, payload_crc, version = _parse_header(data)
    expected_size = HEADER_SIZE + sum(section_lengths)
    if len(data) < expected_size:
        raise FormatError(f"truncated .cgic file: header says {expected_size} bytes, got {len(data)}")
    if version == FORMAT_VERSION and len(data) > expected_size:
        raise FormatError(
            f".cgic file has {len(data) - expected_size} trailing bytes after the {expected_size} bytes "
            "its header accounts for"
        )
    if zlib.crc32(data[HEADER_SIZE:]) != payload_crc:
        raise FormatError("payload checksum mismatch: the file is damaged")
    sections = []
    offset = HEADER_SIZE
    for length in section_lengths:
        sections.append(data[offset : offset + length])
        offset += length
    masks, fine, medium, coarse = sections
    correction, alpha, metadata = (
        _parse_records(data[offset:], version, header.colour_mode)
        if version != FORMAT_VERSION
        else (b"", b"", ImageMetadata())
    )
    if bool(alpha) != (header.colour_mode in ALPHA_COLOUR_MODES):
        raise FormatError(
            f"invalid .cgic file: colour mode {header.colour_mode} in a version-{version} file "
            f"({'with' if alpha else 'without'} an alpha record)"
        )
    return header, CgicSections(
        masks=masks,
        fine=fine,
        medium=medium,
        coarse=coarse,
        metadata=metadata,
        rank_coded=version in RANK_CODED_VERSIONS,
        alpha=alpha,
        grouped=version == FORMAT_VERSION_GROUPED,
        correction=correction,
    )
