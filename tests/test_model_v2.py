"""Model v2: the TAEF2 backbone, grouped FSQ, its weights files and format version 5 through the codec."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from controlgic_cli.api import Codec
from controlgic_cli.coding.container import FORMAT_VERSION_GROUPED, parse_file, read_header
from controlgic_cli.coding.index_coding import GroupUsageCoding
from controlgic_cli.errors import FormatError, ModelError, OptionsError
from controlgic_cli.model.fsq import GroupedFSQ
from controlgic_cli.model.latent_network import LatentControlGIC, LatentModelConfig
from controlgic_cli.model.taef2 import taef2_decoder, taef2_encoder
from controlgic_cli.model.weights import load_weights, save_weights
from tests.conftest import synthetic_photo

SHARED = Path(__file__).resolve().parents[2] / "shared"
TAEF2_DIR = SHARED / "pretrained" / "taef2"
LEVELS = ("fine", "medium", "coarse")


def build_tiny_v2_weights(path: Path, seed: int = 0, config: LatentModelConfig | None = None) -> bytes:
    """A tiny randomly initialised model v2 with skewed usage counts per FSQ group."""
    torch.manual_seed(seed)
    network = LatentControlGIC(config or LatentModelConfig.tiny())
    usage = {
        level: [[1 + 900 // (code + 1 + group) for code in range(q.codes_per_group)] for group in range(q.groups)]
        for level, q in zip(LEVELS, network.quantizers, strict=True)
    }
    return save_weights(path, network, usage)


@pytest.fixture(scope="module")
def tiny_v2_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights-v2") / "tiny-v2.safetensors"
    build_tiny_v2_weights(path)
    return path


@pytest.fixture(scope="module")
def codec(tiny_v2_weights):
    return Codec(tiny_v2_weights, device="cpu")


# ----- FSQ ---------------------------------------------------------------------------------------------


def test_fsq_indices_and_lookup_are_inverse_and_match_the_training_pass():
    quantizer = GroupedFSQ((8, 5, 5, 5), groups=3)
    z = torch.randn(2, quantizer.channels, 5, 7) * 3
    indices = quantizer.indices(z)
    assert indices.shape == (2, 3, 5, 7)
    assert int(indices.min()) >= 0 and int(indices.max()) < quantizer.codes_per_group == 1000
    assert torch.equal(quantizer.lookup(indices), quantizer(z))
    every = torch.arange(1000).view(1, 1, 1, 1000)
    # every code is a different point of the grid
    points = GroupedFSQ((8, 5, 5, 5), groups=1).lookup(every)[0, :, 0].t()
    assert len(torch.unique(points, dim=0)) == 1000


def test_fsq_passes_gradients_straight_through():
    quantizer = GroupedFSQ((4, 3), groups=2)
    z = torch.randn(1, 4, 3, 3, requires_grad=True)
    quantizer(z).sum().backward()
    assert z.grad is not None and bool((z.grad != 0).all())


# ----- the TAEF2 backbone -------------------------------------------------------------------------------


def test_taef2_modules_have_the_published_parameter_counts():
    assert sum(p.numel() for p in taef2_encoder().parameters()) == 1_338_528
    assert sum(p.numel() for p in taef2_decoder().parameters()) == 1_338_499


@pytest.mark.slow
@pytest.mark.skipif(not TAEF2_DIR.is_dir(), reason="needs ../shared/pretrained/taef2 (the TAEF2 weights)")
def test_taef2_reproduces_its_reference_round_trips():
    """The README beside the weights: kodim01 27.18 dB, kodim13 23.60, kodim23 33.34 (float32, whole image)."""
    from safetensors.torch import load_file

    kodak = SHARED / "data" / "kodak"
    if not kodak.is_dir():
        pytest.skip("needs ../shared/data/kodak (the reference images)")
    encoder, decoder = taef2_encoder().eval(), taef2_decoder().eval()
    for module, part in ((encoder, "encoder"), (decoder, "decoder")):
        tensors = load_file(str(TAEF2_DIR / f"taef2_{part}.safetensors"))
        module.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    for name, expected in (("kodim01", 27.18), ("kodim13", 23.60), ("kodim23", 33.34)):
        rgb = np.asarray(Image.open(kodak / f"{name}.png").convert("RGB"))
        x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            y = (decoder(encoder(x)).clamp(0, 1) * 255).round() / 255
        psnr = float(10 * torch.log10(1 / (y - x).square().mean()))
        assert abs(psnr - expected) <= 0.05, (name, psnr)


# ----- weights files -------------------------------------------------------------------------------------


def test_v2_weights_load_back_to_the_same_network(tiny_v2_weights):
    loaded = load_weights(tiny_v2_weights)
    assert loaded.is_latent and loaded.metadata["architecture"] == "latent-fsq"
    assert loaded.config == LatentModelConfig.tiny()
    fresh = load_weights(tiny_v2_weights)
    x = torch.rand(1, 3, 32, 48) * 2 - 1
    a, b = loaded.network.encode_indices(x), fresh.network.encode_indices(x)
    assert all(torch.equal(p, q) for p, q in zip(dataclasses.astuple(a), dataclasses.astuple(b), strict=True))
    assert a.fine.shape == (1, 8, 12, 2) and a.medium.shape == (1, 4, 6, 1) and a.coarse.shape == (1, 2, 3, 1)


def test_each_granularity_can_have_levels_of_its_own(tmp_path):
    config = dataclasses.replace(LatentModelConfig.tiny(), levels_by_granularity=((4, 3), (3, 3, 3), (2, 2, 2, 2)))
    assert [q.codes_per_group for q in LatentControlGIC(config).quantizers] == [12, 27, 16]
    build_tiny_v2_weights(tmp_path / "levels.safetensors", config=config)
    loaded = load_weights(tmp_path / "levels.safetensors")
    assert loaded.config == config and [len(t[0]) for t in loaded.code_usage.values()] == [12, 27, 16]
    codec = Codec(tmp_path / "levels.safetensors", device="cpu")
    image = synthetic_photo(48, 64, seed=4)
    data = codec.encode(image, ratios=(0.3, 0.4, 0.3)).data
    assert codec.decode_array(data)[0].shape == image.shape
    # A config that does not use it keeps its exact text, and so the model ids of its weights.
    assert "levels_by_granularity" not in LatentModelConfig.tiny().to_json()
    with pytest.raises(ModelError, match="fewer than 2 levels"):
        dataclasses.replace(config, levels_by_granularity=((4, 3), (1, 3), (2,)))
    with pytest.raises(ModelError, match="3 granularities"):
        dataclasses.replace(config, levels_by_granularity=((4, 3), (3, 3)))


def test_v2_weights_with_a_wrong_group_table_are_refused(tmp_path):
    network = LatentControlGIC(LatentModelConfig.tiny())
    usage = {level: [[1] * q.codes_per_group] for level, q in zip(LEVELS, network.quantizers, strict=True)}
    with pytest.raises(ModelError, match="'fine' must hold 2 lists, one per FSQ group"):
        save_weights(tmp_path / "bad.safetensors", network, usage)


# ----- group coding --------------------------------------------------------------------------------------


def test_group_coding_round_trips_and_counts_its_bytes_exactly():
    rng = np.random.default_rng(3)
    usage = {level: [[1 + (c * 7 + g) % 13 for c in range(12)] for g in range(3)] for level in LEVELS}
    coding = GroupUsageCoding(usage)
    index_map = rng.integers(0, 12, (6, 9, 3))
    for density in (0.0, 0.3, 1.0):
        mask = rng.random((6, 9)) < density
        data = coding.encode("medium", index_map, mask)
        back = coding.decode("medium", data, mask)
        assert np.array_equal(back[mask], index_map[mask]) and not back[~mask].any()
        # sent during [0, 1) when masked: time 0 is this mask, time 1 is nothing
        bits = coding.bits_over_time("medium", index_map, np.zeros(mask.shape, np.int64), mask.astype(np.int64), 1)
        assert bits[0] == 8 * len(data) and bits[1] == 0
    with pytest.raises(FormatError, match="damaged"):
        coding.decode("medium", data + b"\x00", mask)


# ----- the codec with model v2 ---------------------------------------------------------------------------


def test_v2_files_are_version_5_and_decode_to_the_image_size(codec):
    image = synthetic_photo(40, 72)
    result = codec.encode(image, ratios=(0.3, 0.6, 0.1), planner="entropy")
    assert result.data[4] == FORMAT_VERSION_GROUPED
    header, sections = parse_file(result.data)
    assert sections.grouped and not sections.rank_coded and header.model_id == codec.model_id
    decoded, _ = codec.decode_array(result.data)
    assert decoded.shape == (40, 72, 3)
    assert codec.encode(image, ratios=(0.3, 0.6, 0.1), planner="entropy").data == result.data


@pytest.mark.parametrize("planner", ["entropy", "measured"])
def test_v2_rate_control_predicts_every_size_exactly(codec, planner):
    image = synthetic_photo(64, 96, seed=2)
    analysis = codec.analyse(image, planner=planner)
    path = codec.rate_path(analysis)
    assert path.sizes[0] < path.sizes[-1]
    for target in (0.1, 0.4, 1.0):
        # encode_choice raises if the written size differs from the predicted one
        result = codec.encode_analysis_to_target(analysis, target_bpp=target)
        assert abs(result.stats.bpp - target) < 0.2 or not result.target_reached


def test_v2_keeps_alpha_exactly(codec):
    rgba = np.dstack([synthetic_photo(32, 48), np.tile(np.linspace(0, 255, 48, dtype=np.uint8), (32, 1))])
    result = codec.encode(Image.fromarray(rgba, "RGBA"), planner="entropy")
    assert result.data[4] == FORMAT_VERSION_GROUPED and parse_file(result.data)[1].alpha
    decoded, _ = codec.decode_array(result.data)
    assert np.array_equal(decoded[..., 3], rgba[..., 3])


def test_v2_crop_decodes_the_pixels_of_a_whole_decode(codec):
    data = codec.encode(synthetic_photo(48, 64, seed=4), planner="entropy").data
    whole, _ = codec.decode_array(data)
    part, _ = codec.decode_array(data, crop=(8, 16, 40, 24))
    assert np.array_equal(part, whole[16:40, 8:48])


def test_v2_refuses_the_psnr_tune(codec):
    with pytest.raises(OptionsError, match="needs model v1 weights"):
        codec.encode(synthetic_photo(16, 16), tune="psnr")


def test_files_of_one_model_name_the_other_as_the_one_they_need(codec, tiny_rank_weights):
    image = synthetic_photo(32, 32)
    v1 = Codec(tiny_rank_weights, device="cpu")
    with pytest.raises(ModelError, match=f"needs model {v1.model_id.hex()}"):
        codec.decode_array(v1.encode(image).data)
    with pytest.raises(ModelError, match=f"needs model {codec.model_id.hex()}"):
        v1.decode_array(codec.encode(image, planner="entropy").data)


def test_a_version_5_file_without_its_alpha_record_is_refused(codec):
    rgba = np.dstack([synthetic_photo(16, 16), np.full((16, 16), 128, np.uint8)])
    data = bytearray(codec.encode(Image.fromarray(rgba, "RGBA"), planner="entropy").data)
    assert read_header(bytes(data)).colour_mode == 3
    data[5] = 1  # RGB: the alpha record is then one record too many
    import struct
    import zlib

    struct.pack_into("<I", data, 56, zlib.crc32(bytes(data[:56])))
    with pytest.raises(FormatError):
        parse_file(bytes(data))


def test_files_decode_with_the_shipped_model_they_name(monkeypatch, tiny_v2_weights, tiny_rank_weights):
    from controlgic_cli import api
    from controlgic_cli.model.weights import default_weights_path, model_id_of, shipped_weights_for

    shipped = default_weights_path()
    assert shipped_weights_for(model_id_of(shipped.read_bytes())) == shipped
    assert shipped_weights_for(bytes(8)) is None
    v1, v2 = Codec(tiny_rank_weights, device="cpu"), Codec(tiny_v2_weights, device="cpu")
    by_id = {v1.model_id: tiny_rank_weights, v2.model_id: tiny_v2_weights}
    monkeypatch.setattr(api, "shipped_weights_for", by_id.get)
    monkeypatch.delenv("CGIC_WEIGHTS", raising=False)
    image = synthetic_photo(32, 48)
    for codec in (v1, v2):
        data = codec.encode(image, planner="entropy").data
        expected = codec.decode(data)
        assert np.array_equal(np.asarray(api.decode(data)), np.asarray(expected))
        assert np.array_equal(np.asarray(api.FileDecoder("cpu").decode(data)), np.asarray(expected))
