"""Minimal ICC v2 matrix/TRC display profiles, written byte by byte for tests.

Pillow can create only sRGB, LAB and XYZ profiles, and the tests must not
depend on profiles installed on the machine, so wide-gamut RGB profiles are
built here from their primaries (ICC.1:2001-04: header, tag table, XYZ,
curve and text tags).
"""

from __future__ import annotations

import struct

D50 = (0.9642, 1.0, 0.8249)
# Adobe RGB (1998) primaries adapted to D50, as in Adobe's own profile.
ADOBE_RGB_COLORANTS = ((0.6097, 0.3111, 0.0195), (0.2053, 0.6257, 0.0609), (0.1492, 0.0632, 0.7446))


def _s15fixed16(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz_tag(xyz: tuple[float, float, float]) -> bytes:
    return b"XYZ " + bytes(4) + b"".join(_s15fixed16(v) for v in xyz)


def _curve_tag(gamma: float) -> bytes:
    return b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256)) + bytes(2)


def _description_tag(text: str) -> bytes:
    ascii_text = text.encode("ascii") + b"\0"
    # ASCII part, an empty Unicode part, an empty ScriptCode part (67 bytes).
    return b"desc" + bytes(4) + struct.pack(">I", len(ascii_text)) + ascii_text + bytes(8) + bytes(3) + bytes(67)


def _text_tag(text: str) -> bytes:
    return b"text" + bytes(4) + text.encode("ascii") + b"\0"


def matrix_profile(description: str, colorants=ADOBE_RGB_COLORANTS, gamma: float = 563 / 256) -> bytes:
    """An RGB display profile with the given D50 colorants and one gamma for all channels."""
    curve = _curve_tag(gamma)
    tags = [
        (b"desc", _description_tag(description)),
        (b"cprt", _text_tag("No copyright, test data")),
        (b"wtpt", _xyz_tag(D50)),
        (b"rXYZ", _xyz_tag(colorants[0])),
        (b"gXYZ", _xyz_tag(colorants[1])),
        (b"bXYZ", _xyz_tag(colorants[2])),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = [], b""
    for signature, body in tags:
        body += bytes(-len(body) % 4)
        table.append(struct.pack(">4sII", signature, offset + len(data), len(body)))
        data += body
    size = offset + len(data)
    header = (
        struct.pack(">I4sI4s4s4s", size, b"none", 0x02100000, b"mntr", b"RGB ", b"XYZ ")
        + bytes(12)  # date
        + b"acsp"
        + bytes(4 + 4 + 4 + 4 + 8 + 4)  # platform, flags, manufacturer, model, attributes, intent
        + b"".join(_s15fixed16(v) for v in D50)
        + bytes(4 + 16 + 28)  # creator, profile id, reserved
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + b"".join(table) + data
