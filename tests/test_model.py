"""The Control-GIC network, its config and its weights files."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from controlgic_cli.errors import ModelError
from controlgic_cli.model import ControlGIC, Indices, MaskSet, ModelConfig
from controlgic_cli.model.quantizer import VectorQuantizer
from controlgic_cli.model.weights import WEIGHTS_FORMAT, load_weights, model_id_of, save_weights

from .conftest import entropy_plan, synthetic_photo

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def single_torch_thread():
    """The tiny network is far too small to gain from threads; on a busy 2-core machine OpenMP threads
    waiting on each other make a forward pass ~100x slower. Restored afterwards for other modules."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_network(seed: int = 0) -> ControlGIC:
    torch.manual_seed(seed)
    return ControlGIC(ModelConfig.tiny()).eval()


def usage_table(k: int, offset: int = 0) -> dict[str, list[int]]:
    names = ("fine", "medium", "coarse")
    return {name: [1 + (i * 7 + j + offset) % 13 for i in range(k)] for j, name in enumerate(names)}


def image_batch(height: int, width: int, seeds=(0, 1)) -> tuple[torch.Tensor, list[np.ndarray]]:
    """(N, 3, H, W) float in [-1, 1] from synthetic photos, plus the uint8 sources."""
    sources = [synthetic_photo(height, width, seed=s) for s in seeds]
    x = torch.stack([torch.from_numpy(s).permute(2, 0, 1).float() / 127.5 - 1.0 for s in sources])
    return x, sources


def planned_masks(sources: list[np.ndarray], ratios=(0.4, 0.3, 0.3)) -> MaskSet:
    """Per-image masks from the real planner, stacked into a batch."""
    plans = [entropy_plan(s, ratios) for s in sources]
    coarse = torch.stack([torch.from_numpy(p.coarse) for p in plans])[:, None]
    medium = torch.stack([torch.from_numpy(p.medium) for p in plans])[:, None]
    return MaskSet.from_coarse_medium(coarse, medium)


def nearest_up(t: torch.Tensor, factor: int) -> torch.Tensor:
    """Nearest-neighbour upsampling written out as value replication (independent of F.interpolate)."""
    return t.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


TINY_JSON_KEYS = {f.name for f in dataclasses.fields(ModelConfig)}

# ---------------------------------------------------------------------------
# ModelConfig
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        ModelConfig(),
        ModelConfig.tiny(),
        ModelConfig(latent_dim=8, codebook_size=2, encoder_blocks=(0, 0, 0), decoder_blocks=(0, 0, 0, 0)),
    ],
    ids=["default", "tiny", "custom"],
)
def test_config_json_round_trip(config):
    text = config.to_json()
    assert set(json.loads(text)) == TINY_JSON_KEYS
    back = ModelConfig.from_json(text)
    assert back == config
    # Tuples stay tuples (a list would make the frozen dataclass unhashable and unequal).
    assert isinstance(back.encoder_channels, tuple) and isinstance(back.decoder_blocks, tuple)
    assert hash(back) == hash(config)


def test_config_unknown_key_is_a_model_error():
    raw = json.loads(ModelConfig.tiny().to_json())
    raw["attention_heads"] = 4
    with pytest.raises(ModelError, match="unknown keys.*attention_heads"):
        ModelConfig.from_json(json.dumps(raw))


def test_config_missing_key_is_a_model_error():
    raw = json.loads(ModelConfig.tiny().to_json())
    del raw["codebook_size"]
    with pytest.raises(ModelError, match="lacks keys.*codebook_size"):
        ModelConfig.from_json(json.dumps(raw))


@pytest.mark.parametrize("text", ["", "{", "{'latent_dim': 4}", "not json", "[1, 2]", '"text"', "null", "4"])
def test_config_bad_json_is_a_model_error(text):
    with pytest.raises(ModelError, match="model config"):
        ModelConfig.from_json(text)


@pytest.mark.parametrize(
    "changes",
    [
        {"latent_dim": 0},
        {"codebook_size": 1},
        {"encoder_channels": (8, 16)},
        {"encoder_channels": (8, 0, 16)},
        {"decoder_channels": (16, 16, 8)},
        {"decoder_blocks": (1, 1, -1, 0)},
        {"encoder_blocks": (1, 1, 1, 1)},
    ],
)
def test_config_rejects_impossible_sizes(changes):
    with pytest.raises(ModelError, match="model config"):
        dataclasses.replace(ModelConfig.tiny(), **changes)


@pytest.mark.parametrize(
    ("key", "value"),
    [("latent_dim", "4"), ("latent_dim", None), ("encoder_channels", 8), ("encoder_channels", [8, 16, "x"])],
)
def test_config_wrongly_typed_values_are_model_errors(key, value):
    raw = json.loads(ModelConfig.tiny().to_json())
    raw[key] = value
    with pytest.raises(ModelError):
        ModelConfig.from_json(json.dumps(raw))


def test_tiny_config_is_valid_and_small():
    config = ModelConfig.tiny()
    network = ControlGIC(config)
    assert network.quantizer.codebook.shape == (config.codebook_size, config.latent_dim)
    # "Tiny" must stay tiny, or every test using it gets slow.
    assert sum(p.numel() for p in network.parameters()) < 200_000


# ---------------------------------------------------------------------------
# Network: shapes, gradients, Eq. 5, masks
# ---------------------------------------------------------------------------


def test_forward_shapes_loss_and_gradients():
    network = tiny_network().train()
    x, sources = image_batch(64, 48)
    masks = planned_masks(sources)
    out = network(x, masks)
    assert out.reconstruction.shape == (2, 3, 64, 48)
    assert out.indices.fine.shape == (2, 16, 12)
    assert out.indices.medium.shape == (2, 8, 6)
    assert out.indices.coarse.shape == (2, 4, 3)
    assert out.vq_loss.ndim == 0 and torch.isfinite(out.vq_loss) and out.vq_loss > 0
    assert torch.isfinite(out.reconstruction).all()

    (F.mse_loss(out.reconstruction, x) + out.vq_loss).backward()
    # The straight-through estimator carries the decoder's gradient into the encoder, at every tap;
    # the codebook learns through the codebook term of the VQ loss.
    encoder = network.encoder
    for name, param in [
        ("stem", encoder.stem[1].weight),
        ("down16", encoder.down16.weight),
        *[(f"{n}_head", p) for n in ("fine", "medium", "coarse") for p in getattr(encoder, f"{n}_head").parameters()],
    ]:
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    codebook_grad = network.quantizer.codebook.grad
    assert codebook_grad is not None and codebook_grad.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in network.parameters() if p.grad is not None)


def test_mask_set_fine_is_complement_of_coarse_and_medium():
    _, sources = image_batch(64, 48)
    masks = planned_masks(sources, ratios=(0.35, 0.4, 0.25))
    assert masks.fine.shape == (2, 1, 16, 12)
    assert masks.medium.shape == (2, 1, 8, 6)
    assert masks.coarse.shape == (2, 1, 4, 3)
    for m in (masks.fine, masks.medium, masks.coarse):
        assert m.dtype == torch.float32 and set(m.unique().tolist()) <= {0.0, 1.0}
    # Every H/4 position is covered by exactly one granularity.
    total = masks.fine + nearest_up(masks.medium, 2) + nearest_up(masks.coarse, 4)
    assert torch.equal(total, torch.ones_like(total))
    # The planner's own fine mask agrees.
    plan = entropy_plan(sources[0], (0.35, 0.4, 0.25))
    assert torch.equal(masks.fine[0, 0].bool(), torch.from_numpy(plan.fine))
    # Each granularity is actually used, so the check above is not vacuous.
    assert masks.fine.any() and masks.medium.any() and masks.coarse.any()


def test_hybrid_latent_is_eq_5():
    torch.manual_seed(3)
    z1, z2, z3 = torch.randn(2, 4, 16, 12), torch.randn(2, 4, 8, 6), torch.randn(2, 4, 4, 3)
    _, sources = image_batch(64, 48)
    masks = planned_masks(sources)
    expected = z1 * masks.fine + nearest_up(z2 * masks.medium, 2) + nearest_up(z3 * masks.coarse, 4)
    actual = ControlGIC.hybrid_latent(z1, z2, z3, masks)
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)
    # Where a granularity is selected, the hybrid latent is exactly that granularity's latent.
    fine = masks.fine.bool().expand_as(z1)
    assert torch.equal(actual[fine], z1[fine])
    coarse = nearest_up(masks.coarse, 4).bool().expand_as(z1)
    assert torch.equal(actual[coarse], nearest_up(z3, 4)[coarse])


def test_encode_and_decode_indices_shapes_and_ranges():
    network = tiny_network()
    x, sources = image_batch(64, 48)
    indices = network.encode_indices(x)
    k = network.config.codebook_size
    for got, shape in ((indices.fine, (2, 16, 12)), (indices.medium, (2, 8, 6)), (indices.coarse, (2, 4, 3))):
        assert got.shape == shape and got.dtype == torch.int64
        assert int(got.min()) >= 0 and int(got.max()) < k
    out = network.decode_indices(indices, planned_masks(sources))
    assert out.shape == (2, 3, 64, 48)
    assert float(out.min()) >= -1.0 and float(out.max()) <= 1.0
    # encode_indices is the argmin of forward's quantizer: the same indices.
    forward_indices = network(x, planned_masks(sources)).indices
    for a, b in zip((indices.fine, indices.medium, indices.coarse), dataclasses.astuple(forward_indices), strict=True):
        assert torch.equal(a, b)


def test_encode_indices_is_deterministic():
    network = tiny_network()
    x, _ = image_batch(48, 64, seeds=(4,))
    first, second = network.encode_indices(x), network.encode_indices(x.clone())
    for a, b in zip(dataclasses.astuple(first), dataclasses.astuple(second), strict=True):
        assert torch.equal(a, b)


def test_decoder_uses_only_transmitted_indices():
    network = tiny_network()
    x, sources = image_batch(64, 64, seeds=(5,))
    masks = planned_masks(sources, ratios=(0.4, 0.3, 0.3))
    indices = network.encode_indices(x)
    reference = network.decode_indices(indices, masks)

    # Scramble every index whose cell is NOT selected by its mask.
    gen = torch.Generator().manual_seed(0)
    k = network.config.codebook_size
    scrambled = {}
    for name in ("fine", "medium", "coarse"):
        idx = getattr(indices, name)
        unused = getattr(masks, name)[:, 0] == 0
        assert unused.any()
        noise = torch.randint(0, k, idx.shape, generator=gen)
        scrambled[name] = torch.where(unused, noise, idx)
        assert not torch.equal(scrambled[name], idx)
    out = network.decode_indices(Indices(**scrambled), masks)
    assert torch.equal(out, reference)

    # Control: changing one transmitted index does change the output.
    fine = indices.fine.clone()
    y, xx = (masks.fine[0, 0] == 1).nonzero()[0].tolist()
    fine[0, y, xx] = (fine[0, y, xx] + 1) % k
    changed = network.decode_indices(Indices(fine, indices.medium, indices.coarse), masks)
    assert not torch.equal(changed, reference)


# ---------------------------------------------------------------------------
# Quantizer
# ---------------------------------------------------------------------------


def test_quantizer_indices_are_euclidean_argmin():
    torch.manual_seed(1)
    quantizer = VectorQuantizer(64, 4)
    z = torch.randn(3, 4, 7, 5) * 0.8
    idx = quantizer.indices(z)
    assert idx.shape == (3, 7, 5)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 4).double()
    distances = torch.cdist(flat, quantizer.codebook.detach().double())
    brute = distances.argmin(dim=1).view(3, 7, 5)
    chosen = distances.gather(1, idx.reshape(-1, 1))[:, 0]
    # The chosen code is (one of) the nearest; where the nearest is clear, it is that exact code.
    torch.testing.assert_close(chosen, distances.min(dim=1).values, rtol=0, atol=1e-5)
    top2 = distances.topk(2, largest=False).values
    clear = (top2[:, 1] - top2[:, 0] > 1e-4).view(3, 7, 5)
    assert clear.float().mean() > 0.9
    assert torch.equal(idx[clear], brute[clear])


def test_quantizer_lookup_returns_codebook_rows_and_round_trips():
    torch.manual_seed(2)
    quantizer = VectorQuantizer(32, 6)
    idx = torch.randint(0, 32, (2, 3, 4))
    vectors = quantizer.lookup(idx)
    assert vectors.shape == (2, 6, 3, 4)
    for n, y, x in np.ndindex(2, 3, 4):
        assert torch.equal(vectors[n, :, y, x], quantizer.codebook[idx[n, y, x]])
    # Code vectors are their own nearest codes (codebook rows are distinct).
    assert torch.equal(quantizer.indices(vectors), idx)


def test_quantizer_forward_is_straight_through():
    torch.manual_seed(4)
    quantizer = VectorQuantizer(16, 4)
    z = torch.randn(1, 4, 3, 3, requires_grad=True)
    z_q, idx, loss = quantizer(z)
    torch.testing.assert_close(z_q, quantizer.lookup(idx))
    z_q.sum().backward()
    # Straight-through: d(sum z_q)/dz is exactly one everywhere.
    assert torch.equal(z.grad, torch.ones_like(z))
    assert loss.ndim == 0 and loss > 0


# ---------------------------------------------------------------------------
# Weights files
# ---------------------------------------------------------------------------


def test_weights_round_trip(tmp_path):
    network = tiny_network(seed=7)
    usage = usage_table(network.config.codebook_size)
    path = tmp_path / "model.safetensors"
    returned_id = save_weights(path, network, usage, extra_metadata={"note": "hello"})
    loaded = load_weights(path)
    assert loaded.config == network.config
    assert loaded.code_usage == usage
    assert loaded.metadata["note"] == "hello" and loaded.metadata["format"] == WEIGHTS_FORMAT
    # The model id is the first 8 bytes of the sha256 of the whole file.
    digest = hashlib.sha256(path.read_bytes()).digest()[:8]
    assert loaded.model_id == returned_id == digest == model_id_of(path.read_bytes())
    assert len(loaded.model_id) == 8
    original = network.state_dict()
    restored = loaded.network.state_dict()
    assert set(original) == set(restored)
    for name, tensor in original.items():
        # Weights are stored in half precision.
        assert torch.equal(restored[name], tensor.half().float()), name
    # Loaded models are frozen, in eval mode, and on the CPU by default.
    assert not loaded.network.training
    assert not any(p.requires_grad for p in loaded.network.parameters())
    assert not tmp_path.joinpath("model.safetensors.tmp").exists()


def test_loaded_weights_encode_like_the_original(tiny_weights):
    loaded_a, loaded_b = load_weights(tiny_weights), load_weights(tiny_weights)
    assert loaded_a.model_id == loaded_b.model_id
    x, _ = image_batch(32, 48, seeds=(8,))
    a, b = loaded_a.network.encode_indices(x), loaded_b.network.encode_indices(x)
    for u, v in zip(dataclasses.astuple(a), dataclasses.astuple(b), strict=True):
        assert torch.equal(u, v)


def test_model_id_changes_with_every_tensor_and_the_usage_table(tmp_path):
    network = tiny_network(seed=9)
    usage = usage_table(network.config.codebook_size)
    base_id = save_weights(tmp_path / "base.safetensors", network, usage)
    seen = {base_id}
    state = network.state_dict()
    for i, name in enumerate(state):
        changed = {k: v.clone() for k, v in state.items()}
        changed[name].view(-1)[0] += 1.0  # survives the float16 rounding
        variant = tiny_network(seed=9)
        variant.load_state_dict(changed)
        path = tmp_path / f"t{i}.safetensors"
        model_id = save_weights(path, variant, usage)
        assert model_id == hashlib.sha256(path.read_bytes()).digest()[:8]
        assert model_id not in seen, name
        seen.add(model_id)
        # The file really holds the changed tensor (read directly: building 97 networks would be slow).
        assert torch.equal(load_safetensors(path.read_bytes())[name], changed[name].half())
    for name in ("fine", "medium", "coarse"):
        other = {k: list(v) for k, v in usage.items()}
        other[name][-1] += 1
        path = tmp_path / f"u-{name}.safetensors"
        model_id = save_weights(path, network, other)
        assert model_id not in seen
        seen.add(model_id)
        assert load_weights(path).code_usage == other


def test_saving_the_same_model_twice_gives_the_same_model_id(tmp_path):
    network = tiny_network(seed=3)
    usage = usage_table(network.config.codebook_size)
    ids = {save_weights(tmp_path / f"w{i}.safetensors", network, usage) for i in range(10)}
    assert len(ids) == 1


@pytest.mark.parametrize(
    "usage",
    [
        {"fine": [1] * 64, "medium": [1] * 64},
        {"fine": [1] * 64, "medium": [1] * 64, "coarse": [1] * 63},
        {"fine": [1] * 64, "medium": [0] + [1] * 63, "coarse": [1] * 64},
        {"fine": [1] * 64, "medium": [1] * 64, "coarse": [1.5] * 64},
        {"fine": [1] * 64, "medium": [True] * 64, "coarse": [1] * 64},
    ],
    ids=["missing-key", "short", "zero-count", "float", "bool"],
)
def test_save_weights_rejects_bad_usage_tables(tmp_path, usage):
    with pytest.raises(ModelError, match="code-usage"):
        save_weights(tmp_path / "w.safetensors", tiny_network(), usage)
    assert not (tmp_path / "w.safetensors").exists()


# Strict loading: files crafted with safetensors directly.


def valid_parts() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    network = tiny_network(seed=5)
    tensors = {k: v.half().contiguous() for k, v in network.state_dict().items()}
    metadata = {
        "format": WEIGHTS_FORMAT,
        "config": network.config.to_json(),
        "code_usage": json.dumps(usage_table(network.config.codebook_size)),
    }
    return tensors, metadata


def write(tmp_path, tensors, metadata, name="crafted.safetensors"):
    path = tmp_path / name
    path.write_bytes(save_safetensors(tensors, metadata=metadata))
    return path


def test_crafted_valid_file_loads(tmp_path):
    # Sanity check for the helpers below: unmodified parts make a loadable file.
    tensors, metadata = valid_parts()
    loaded = load_weights(write(tmp_path, tensors, metadata))
    assert loaded.config == ModelConfig.tiny()


def _missing_tensor(tensors, metadata):
    del tensors["decoder.conv_out.bias"]


def _extra_tensor(tensors, metadata):
    tensors["decoder.extra.weight"] = torch.zeros(3, dtype=torch.float16)


def _wrong_shape(tensors, metadata):
    tensors["quantizer.codebook"] = torch.zeros(65, 4, dtype=torch.float16)


def _wrong_shape_same_numel(tensors, metadata):
    tensors["quantizer.codebook"] = torch.zeros(4, 64, dtype=torch.float16)


def _bad_format(tensors, metadata):
    metadata["format"] = "cgic-weights-2"


def _no_format(tensors, metadata):
    del metadata["format"]


def _zero_usage(tensors, metadata):
    usage = json.loads(metadata["code_usage"])
    usage["coarse"][5] = 0
    metadata["code_usage"] = json.dumps(usage)


def _short_usage(tensors, metadata):
    usage = json.loads(metadata["code_usage"])
    usage["fine"] = usage["fine"][:-1]
    metadata["code_usage"] = json.dumps(usage)


def _long_usage(tensors, metadata):
    usage = json.loads(metadata["code_usage"])
    usage["medium"].append(3)
    metadata["code_usage"] = json.dumps(usage)


def _usage_not_json(tensors, metadata):
    metadata["code_usage"] = "{fine: 1"


def _no_usage(tensors, metadata):
    del metadata["code_usage"]


def _config_unknown_key(tensors, metadata):
    config = json.loads(metadata["config"])
    config["heads"] = 2
    metadata["config"] = json.dumps(config)


def _config_other_architecture(tensors, metadata):
    metadata["config"] = dataclasses.replace(ModelConfig.tiny(), codebook_size=128).to_json()


def _no_config(tensors, metadata):
    del metadata["config"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_missing_tensor, "missing"),
        (_extra_tensor, "unexpected"),
        (_wrong_shape, "shape"),
        (_wrong_shape_same_numel, "shape"),
        (_bad_format, "not a cgic weights file"),
        (_no_format, "not a cgic weights file"),
        (_zero_usage, "code-usage"),
        (_short_usage, "code-usage"),
        (_long_usage, "code-usage"),
        (_usage_not_json, "code-usage"),
        (_no_usage, "code-usage"),
        (_config_unknown_key, "unknown keys"),
        (_config_other_architecture, "code-usage|shape"),
        (_no_config, "model config"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else None,
)
def test_strict_loading_rejects_inconsistent_files(tmp_path, mutate, message):
    tensors, metadata = valid_parts()
    mutate(tensors, metadata)
    with pytest.raises(ModelError, match=message):
        load_weights(write(tmp_path, tensors, metadata))


def test_truncated_weights_files_are_model_errors(tmp_path, tiny_weights):
    data = tiny_weights.read_bytes()
    path = tmp_path / "cut.safetensors"
    # Cuts inside the length prefix, the JSON header, and the tensor data.
    header_end = 8 + int.from_bytes(data[:8], "little")
    cuts = sorted(
        {0, 1, 7, 8, 9, header_end // 2, header_end - 1, header_end, header_end + 1, len(data) // 2}
        | {len(data) - d for d in (1, 2, 100)}
    )
    for cut in cuts:
        path.write_bytes(data[:cut])
        with pytest.raises(ModelError):
            load_weights(path)
    # Trailing junk is not a valid file either.
    path.write_bytes(data + b"\0" * 16)
    with pytest.raises(ModelError):
        load_weights(path)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"this is a text file, not weights\n" * 3,
        b"\x89PNG\r\n\x1a\n" + bytes(64),
        bytes(32),
        b"\xff" * 32,
        (6).to_bytes(8, "little") + b"{bad}!",
    ],
    ids=["empty", "text", "png", "zeros", "ones", "bad-header-json"],
)
def test_non_safetensors_files_are_model_errors(tmp_path, content):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(content)
    with pytest.raises(ModelError):
        load_weights(path)


def test_unreadable_paths_are_model_errors(tmp_path):
    with pytest.raises(ModelError, match="cannot read"):
        load_weights(tmp_path / "missing.safetensors")
    with pytest.raises(ModelError, match="cannot read"):
        load_weights(tmp_path)


def _header_file(tmp_path, header: bytes):
    path = tmp_path / "odd.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    return path


@pytest.mark.parametrize("header", [b"[]", b"123", b'"text"', b"null"])
def test_header_that_is_not_a_json_object_is_a_model_error(tmp_path, header):
    with pytest.raises(ModelError):
        load_weights(_header_file(tmp_path, header))


@pytest.mark.parametrize("key", ["config", "code_usage"])
def test_non_string_metadata_values_are_model_errors(tmp_path, key):
    metadata = {"format": WEIGHTS_FORMAT, "config": ModelConfig.tiny().to_json(), "code_usage": "{}"}
    metadata[key] = 5
    header = json.dumps({"__metadata__": metadata}).encode()
    with pytest.raises(ModelError):
        load_weights(_header_file(tmp_path, header))
