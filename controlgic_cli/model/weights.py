"""Weights files: safetensors tensors + typed config + code-usage tables.

A weights file is self-describing. Its safetensors metadata holds:
  "format"      "cgic-weights-1"
  "config"      ModelConfig as JSON (the architecture, loaded strictly)
  "code_usage"  {"fine": [...], "medium": [...], "coarse": [...]}: integer
                code-usage counts per granularity, each count >= 1, from which
                the canonical Huffman tables are built
  "rank_usage"  optional, the same shape: counts of neighbour ranks
                (index_coding.py), for format-version-3 files
  "architecture" absent for model v1 (network.py); "latent-fsq" for model
                v2 (latent_network.py), whose config is a LatentModelConfig and
                whose tables list, per granularity, one list of counts per FSQ group
The model id written into every .cgic file is the first 8 bytes of the sha256
of the whole weights file, so a file can name the exact model it needs.
Version 1 and 2 files do not use the rank tables, so they name the base model
id: that of the same file without "rank_usage". Adding rank tables to a
weights file therefore keeps every older file decodable.
Only safetensors and JSON are parsed: nothing here can execute code.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from ..errors import ModelError
from .config import ModelConfig
from .latent_network import LatentControlGIC, LatentModelConfig
from .network import ControlGIC

WEIGHTS_FORMAT = "cgic-weights-1"
DEFAULT_WEIGHTS_NAME = "cgic-base.safetensors"
GRANULARITIES = ("fine", "medium", "coarse")
MODEL_ID_BYTES = 8


RANK_USAGE_KEY = "rank_usage"
ARCHITECTURE_KEY = "architecture"
LATENT_ARCHITECTURE = "latent-fsq"


@dataclass
class LoadedModel:
    network: ControlGIC | LatentControlGIC
    code_usage: dict[str, list[int]] | dict[str, list[list[int]]]
    model_id: bytes
    path: Path
    metadata: dict[str, str]
    rank_usage: dict[str, list[int]] | None = None
    base_model_id: bytes = b""  # the id version 1 and 2 files name (model_id when there are no rank tables)

    @property
    def config(self) -> ModelConfig | LatentModelConfig:
        return self.network.config

    @property
    def is_latent(self) -> bool:
        """Model v2: FSQ groups on a pretrained autoencoder's latent (format version 5 files)."""
        return isinstance(self.network, LatentControlGIC)


def model_id_of(file_bytes: bytes) -> bytes:
    return hashlib.sha256(file_bytes).digest()[:MODEL_ID_BYTES]


def default_weights_path() -> Path:
    """$CGIC_WEIGHTS if set, else the weights shipped with the package."""
    override = os.environ.get("CGIC_WEIGHTS")
    if override:
        return Path(override)
    return shipped_weights_path(DEFAULT_WEIGHTS_NAME)


def shipped_weights_path(name: str) -> Path:
    """A file of the weights folder shipped with the package."""
    try:
        return Path(str(resources.files("controlgic_cli.shipped_weights").joinpath(name)))
    except ModuleNotFoundError:
        # Running from a source tree that was never installed.
        return Path(__file__).resolve().parents[2] / "weights" / name


@functools.lru_cache(maxsize=1)
def _shipped_model_ids() -> dict[bytes, Path]:
    ids: dict[bytes, Path] = {}
    for path in sorted(shipped_weights_path(DEFAULT_WEIGHTS_NAME).parent.glob("*.safetensors")):
        data = path.read_bytes()
        ids[model_id_of(data)] = path
        if RANK_USAGE_KEY in read_weights_metadata(data):
            ids.setdefault(model_id_of(_canonical_header(data, drop_metadata=RANK_USAGE_KEY)), path)
    return ids


def shipped_weights_for(model_id: bytes) -> Path | None:
    """The shipped weights file that a .cgic file naming this model id needs, if one is shipped."""
    return _shipped_model_ids().get(model_id)


def validate_code_usage(code_usage: object, codebook_size: int, what: str = "code-usage") -> dict[str, list[int]]:
    if not isinstance(code_usage, dict) or set(code_usage) != set(GRANULARITIES):
        raise ModelError(f"{what} table must have exactly the keys {list(GRANULARITIES)}")
    return {name: _checked_counts(code_usage[name], codebook_size, f"{what} table '{name}'") for name in GRANULARITIES}


def _checked_counts(counts: object, size: int, what: str) -> list[int]:
    if (
        not isinstance(counts, list)
        or len(counts) != size
        or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in counts)
    ):
        raise ModelError(f"{what} must list {size} integer counts, each >= 1")
    return counts


def validate_group_usage(code_usage: object, network: LatentControlGIC) -> dict[str, list[list[int]]]:
    """Model v2's tables: per granularity, one list of counts (each >= 1) per FSQ group."""
    if not isinstance(code_usage, dict) or set(code_usage) != set(GRANULARITIES):
        raise ModelError(f"code-usage table must have exactly the keys {list(GRANULARITIES)}")
    checked = {}
    for name, quantizer in zip(GRANULARITIES, network.quantizers, strict=True):
        tables = code_usage[name]
        if not isinstance(tables, list) or len(tables) != quantizer.groups:
            raise ModelError(f"code-usage table '{name}' must hold {quantizer.groups} lists, one per FSQ group")
        checked[name] = [
            _checked_counts(table, quantizer.codes_per_group, f"code-usage table '{name}', group {group}")
            for group, table in enumerate(tables)
        ]
    return checked


def save_weights(
    path: str | Path,
    network: ControlGIC,
    code_usage: dict[str, list[int]],
    extra_metadata: dict[str, str] | None = None,
    rank_usage: dict[str, list[int]] | None = None,
) -> bytes:
    """Write half-precision weights with config and code tables; returns the model id."""
    latent = isinstance(network, LatentControlGIC)
    if latent:
        code_usage = validate_group_usage(code_usage, network)
    else:
        code_usage = validate_code_usage(code_usage, network.config.codebook_size)
    if rank_usage is not None:
        rank_usage = validate_code_usage(rank_usage, network.config.codebook_size, "rank-usage")
    tensors = {
        name: tensor.detach().to("cpu", torch.float16).contiguous() for name, tensor in network.state_dict().items()
    }
    metadata = dict(extra_metadata or {})
    metadata.update(
        {
            "format": WEIGHTS_FORMAT,
            "config": network.config.to_json(),
            "code_usage": json.dumps(code_usage, separators=(",", ":")),
        }
    )
    metadata.pop(RANK_USAGE_KEY, None)
    metadata.pop(ARCHITECTURE_KEY, None)
    if latent:
        metadata[ARCHITECTURE_KEY] = LATENT_ARCHITECTURE
    if rank_usage is not None:
        metadata[RANK_USAGE_KEY] = json.dumps(rank_usage, separators=(",", ":"))
    data = _canonical_header(save_safetensors(tensors, metadata=metadata))
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return model_id_of(data)


def _canonical_header(data: bytes, drop_metadata: str | None = None) -> bytes:
    """Rewrite the safetensors JSON header with sorted keys (without one metadata key, if named).

    safetensors writes its metadata in hash-map order, so the same tensors
    saved twice could differ in bytes, and so in model id. Tensor offsets are
    relative to the data block, so only the header changes.
    """
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    if drop_metadata is not None:
        header.get("__metadata__", {}).pop(drop_metadata, None)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data block stays 8-byte aligned
    return len(text).to_bytes(8, "little") + text + data[8 + header_len :]


def read_weights_metadata(data: bytes) -> dict[str, str]:
    """Parse only the safetensors header (8-byte length + JSON)."""
    if len(data) < 8:
        raise ModelError("weights file is truncated")
    header_len = int.from_bytes(data[:8], "little")
    if header_len > len(data) - 8:
        raise ModelError("weights file is truncated")
    try:
        header = json.loads(data[8 : 8 + header_len])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ModelError("weights file has a damaged header") from None
    if not isinstance(header, dict):
        raise ModelError("weights file has a damaged header")
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ModelError("weights file has a damaged header")
    return metadata


def load_weights(path: str | Path | None = None, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a weights file strictly: any missing, unexpected or misshapen tensor is a ModelError."""
    path = Path(path) if path is not None else default_weights_path()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read weights {path}: {exc.strerror or exc}") from None
    metadata = read_weights_metadata(data)
    if metadata.get("format") != WEIGHTS_FORMAT:
        raise ModelError(f"{path} is not a cgic weights file (format {metadata.get('format')!r})")
    architecture = metadata.get(ARCHITECTURE_KEY)
    if architecture not in (None, LATENT_ARCHITECTURE):
        raise ModelError(f"{path} holds a model of kind {architecture!r}, which this cgic does not know; is it newer?")
    latent = architecture == LATENT_ARCHITECTURE
    config = (LatentModelConfig if latent else ModelConfig).from_json(metadata.get("config", ""))
    # Built on the meta device: random initialisation of every layer (a third of the load time)
    # would only be overwritten; load_state_dict(assign=True) then puts the file's tensors in place.
    with torch.device("meta"):
        network = LatentControlGIC(config) if latent else ControlGIC(config)
    try:
        raw_usage = json.loads(metadata.get("code_usage", "null"))
    except json.JSONDecodeError:
        raise ModelError(f"{path}: code-usage table is not valid JSON") from None
    if latent:
        code_usage = validate_group_usage(raw_usage, network)
    else:
        code_usage = validate_code_usage(raw_usage, config.codebook_size)
    rank_usage = None
    model_id = base_model_id = model_id_of(data)
    if RANK_USAGE_KEY in metadata:
        if latent:
            raise ModelError(f"{path}: model v2 weights carry no rank tables")
        try:
            rank_usage = validate_code_usage(json.loads(metadata[RANK_USAGE_KEY]), config.codebook_size, "rank-usage")
        except json.JSONDecodeError:
            raise ModelError(f"{path}: rank-usage table is not valid JSON") from None
        base_model_id = model_id_of(_canonical_header(data, drop_metadata=RANK_USAGE_KEY))
    try:
        tensors = load_safetensors(data)
    except (SafetensorError, ValueError) as exc:
        raise ModelError(f"cannot read tensors from {path}: {exc}") from None
    expected = network.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ModelError(f"{path} does not match its config: missing {missing[:3]}, unexpected {unexpected[:3]}")
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise ModelError(
                f"{path}: tensor {name} has shape {tuple(tensor.shape)}, config needs {tuple(expected[name].shape)}"
            )
    network.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True, assign=True)
    network.eval().requires_grad_(False).to(device)
    return LoadedModel(network, code_usage, model_id, path, metadata, rank_usage, base_model_id)
