"""Kept metadata (--metadata): colour profile, Exif and XMP from input to .cgic to decoded image."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from controlgic_cli.api import Codec
from controlgic_cli.cli import main
from controlgic_cli.coding.container import FORMAT_VERSION, FORMAT_VERSION_METADATA, ImageMetadata, parse_file
from controlgic_cli.errors import OptionsError
from controlgic_cli.io.image_io import encode_image_file, load_image
from controlgic_cli.io.metadata import parse_metadata_kinds

from .colour_profiles import matrix_profile
from .conftest import synthetic_photo

PROFILE = matrix_profile("Test Adobe RGB")
XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/"'
    b' tiff:Orientation="6" dc:format="image/jpeg"/></rdf:RDF></x:xmpmeta>'
)
MAKE, ORIENTATION = 0x010F, 0x0112


def camera_jpeg(orientation: int = 6, height: int = 24, width: int = 40) -> bytes:
    """A JPEG as a camera writes it: Exif with a make and an orientation, XMP, a wide-gamut profile."""
    exif = Image.Exif()
    exif[MAKE] = "cgic test camera"
    exif[ORIENTATION] = orientation
    buffer = io.BytesIO()
    Image.fromarray(synthetic_photo(height, width)).save(
        buffer, "JPEG", quality=95, exif=exif, xmp=XMP, icc_profile=PROFILE
    )
    return buffer.getvalue()


def exif_tags(raw: bytes) -> dict:
    exif = Image.Exif()
    exif.load(raw)
    return dict(exif)


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        ("none", set()),
        ("", set()),
        ("all", {"icc", "exif", "xmp"}),
        ("icc", {"icc"}),
        (" EXIF , xmp ", {"exif", "xmp"}),
    ],
)
def test_metadata_option_parsing(text, kinds):
    assert parse_metadata_kinds(text) == kinds


@pytest.mark.parametrize("text", ["gps", "icc,thumbnail", "all,icc", "none,exif"])
def test_unknown_metadata_kinds_are_refused(text):
    with pytest.raises(OptionsError, match="unknown metadata kind"):
        parse_metadata_kinds(text)


def test_nothing_is_kept_by_default():
    source = load_image(camera_jpeg())
    assert source.metadata == ImageMetadata()
    assert "converted from its colour profile" in source.warnings[0]


def test_kept_exif_and_xmp_lose_their_orientation_because_the_pixels_are_turned():
    source = load_image(camera_jpeg(orientation=6), frozenset({"exif", "xmp"}))
    assert (source.width, source.height) == (24, 40), "orientation 6 turns the 40x24 image upright"
    tags = exif_tags(source.metadata.exif)
    assert tags[MAKE] == "cgic test camera" and ORIENTATION not in tags
    assert source.metadata.exif[:2] in (b"II", b"MM"), "stored as a TIFF structure, without the JPEG prefix"
    assert b"Orientation" not in source.metadata.xmp and b'dc:format="image/jpeg"' in source.metadata.xmp
    assert source.metadata.icc is None


def test_a_kept_profile_leaves_the_values_as_stored():
    image = Image.fromarray(synthetic_photo(16, 32))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", icc_profile=PROFILE)
    source = load_image(buffer.getvalue(), frozenset({"icc"}))
    np.testing.assert_array_equal(source.rgb, np.asarray(image))
    assert source.metadata.icc == PROFILE and source.warnings == []


@pytest.mark.parametrize(
    ("image", "profile_space"),
    [(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), b"RGB "), (Image.new("L", (16, 16), 90), b"RGB ")],
)
def test_a_profile_of_another_colour_space_than_the_output_is_not_kept(image, profile_space):
    # An RGB profile fits neither CMYK input (decoded as RGB from other values) nor grey output.
    assert PROFILE[16:20] == profile_space
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", icc_profile=PROFILE)
    assert load_image(buffer.getvalue(), frozenset({"icc"})).metadata.icc is None


def test_a_grey_profile_is_kept_for_grey_output():
    grey_profile = PROFILE[:16] + b"GRAY" + PROFILE[20:]
    buffer = io.BytesIO()
    Image.new("L", (16, 16), 90).save(buffer, "PNG", icc_profile=grey_profile)
    assert load_image(buffer.getvalue(), frozenset({"icc"})).metadata.icc == grey_profile


@pytest.fixture(scope="module")
def tiny_codec(tiny_weights):
    return Codec(tiny_weights, device="cpu")


def test_metadata_round_trips_through_a_version_2_file(tiny_codec):
    plain = tiny_codec.encode(camera_jpeg(), (0.3, 0.6, 0.1))
    kept = tiny_codec.encode(camera_jpeg(), (0.3, 0.6, 0.1), metadata="all")
    assert plain.data[4] == FORMAT_VERSION and kept.data[4] == FORMAT_VERSION_METADATA
    _, sections = parse_file(kept.data)
    assert sections.metadata.icc == PROFILE
    records = sections.metadata.records()
    assert [kind for kind, _ in records] == ["icc", "exif", "xmp"]
    assert kept.stats.section_bytes["metadata"] == sum(8 + len(part) for _, part in records)

    decoded = tiny_codec.decode(kept.data)
    assert decoded.info["icc_profile"] == PROFILE
    assert exif_tags(decoded.info["exif"])[MAKE] == "cgic test camera"
    assert decoded.info["xmp"] == sections.metadata.xmp
    assert not {"icc_profile", "exif", "xmp"} & set(tiny_codec.decode(plain.data).info)


def test_the_same_image_and_settings_give_the_same_version_2_bytes(tiny_codec):
    first = tiny_codec.encode(camera_jpeg(), metadata=("exif", "xmp")).data
    assert tiny_codec.encode(camera_jpeg(), metadata=("xmp", "exif")).data == first


@pytest.mark.parametrize(("suffix", "xmp_key"), [(".png", "XML:com.adobe.xmp"), (".jpg", "xmp"), (".webp", "xmp")])
def test_decoded_files_carry_the_kept_metadata(tiny_codec, suffix, xmp_key):
    decoded = tiny_codec.decode(tiny_codec.encode(camera_jpeg(), metadata="all").data)
    reopened = Image.open(io.BytesIO(encode_image_file(decoded, "out" + suffix)))
    assert reopened.info["icc_profile"] == PROFILE
    assert exif_tags(reopened.info["exif"])[MAKE] == "cgic test camera"
    packet = reopened.info[xmp_key]
    assert "dc:format" in (packet if isinstance(packet, str) else packet.decode())
    assert reopened.getexif().get(ORIENTATION) is None, "viewers must not turn the upright pixels again"


def test_rate_control_counts_the_metadata(tiny_codec):
    kept = load_image(camera_jpeg(height=64, width=96), frozenset({"exif", "xmp"}))
    bare = dataclasses.replace(kept, metadata=ImageMetadata())
    metadata_bytes = sum(8 + len(part) for _, part in kept.metadata.records())
    sizes = tiny_codec.rate_path(tiny_codec.analyse(bare)).sizes
    limit = int(sizes.min() + sizes.max()) // 2 + metadata_bytes

    with_metadata = tiny_codec.encode_to_target(kept, target_size=limit)
    without = tiny_codec.encode_to_target(bare, target_size=limit - metadata_bytes)
    assert len(with_metadata.data) <= limit and with_metadata.target_reached
    assert len(with_metadata.data) == len(without.data) + metadata_bytes
    assert with_metadata.stats.token_counts == without.stats.token_counts
    bpp = with_metadata.stats.bpp
    assert bpp == 8 * len(with_metadata.data) / (96 * 64), "bpp counts the whole file"


def test_cli_keeps_metadata_only_when_asked(tmp_path, tiny_weights):
    src = tmp_path / "camera.jpg"
    src.write_bytes(camera_jpeg())
    runner = CliRunner()

    def run(*args):
        return runner.invoke(main, [str(a) for a in args])

    assert run("encode", src, "-o", tmp_path / "plain.cgic", "--weights", tiny_weights).exit_code == 0
    result = run("encode", src, "-o", tmp_path / "kept.cgic", "--metadata", "all", "--weights", tiny_weights)
    assert result.exit_code == 0
    info = run("info", tmp_path / "kept.cgic").output
    assert "cgic v2" in info and f"icc {len(PROFILE)} bytes" in info and "exif" in info and "xmp" in info
    assert "cgic v1" in run("info", tmp_path / "plain.cgic").output

    assert run("decode", tmp_path / "kept.cgic", "-o", tmp_path / "kept.png", "--weights", tiny_weights).exit_code == 0
    assert Image.open(tmp_path / "kept.png").info["icc_profile"] == PROFILE

    bad = run("encode", src, "-o", tmp_path / "bad.cgic", "--metadata", "gps", "--weights", tiny_weights)
    assert bad.exit_code == 2 and "unknown metadata kind 'gps'" in bad.output
    assert not (tmp_path / "bad.cgic").exists()


def test_pillow_plugin_saves_and_opens_metadata(tmp_path, tiny_weights):
    with Image.open(io.BytesIO(camera_jpeg())) as photo:
        photo.save(tmp_path / "x.cgic", weights=tiny_weights, metadata=("icc", "exif"))
    with Image.open(tmp_path / "x.cgic") as opened:
        assert opened.info["icc_profile"] == PROFILE
        assert exif_tags(opened.info["exif"])[MAKE] == "cgic test camera"
        assert "xmp" not in opened.info
