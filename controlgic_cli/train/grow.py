"""Continuing a checkpoint as a larger network: more codes, more residual blocks.

A grown network starts as the same function as the checkpoint's, so training
resumes from the checkpoint's quality instead of from noise:
  - added codes are used by nothing until the trainer seeds them from encoder
    outputs at the next step;
  - added residual blocks start as identities: their second conv is zero, so
    the block adds nothing until training moves it.
Optimiser moments follow their parameters by name (Adam keys them by position,
which the added blocks shift); added parameters start with no moments, as a
fresh optimiser would give them. Widths cannot change: a wider layer has no
function-preserving start under the per-position channel norms.
"""

from __future__ import annotations

import re

import torch

from ..model import ControlGIC, ModelConfig

CODEBOOK = "quantizer.codebook"
# A residual block's parameters: ...blocks.N.<part> (decoder stages) or levelK.N.<part> (encoder).
_RESIDUAL_BLOCK = re.compile(r"^(.*\.(?:blocks|level\d+)\.\d+)\.(.+)$")


def grow_checkpoint(state: dict, old_config: ModelConfig, model: ControlGIC) -> torch.Tensor:
    """Rewrite a trainer checkpoint made with old_config for `model`, in place.

    Returns a boolean mask over `model`'s codebook of the added codes (the
    caller seeds them). Raises ValueError for a change that cannot start as
    the same function (a narrower or wider layer, a smaller codebook).
    """
    old_names = [name for name, _ in ControlGIC(old_config).named_parameters()]
    new_parameters = dict(model.named_parameters())
    new_names = list(new_parameters)
    added_codes = _grow_codebook(state, model.config.codebook_size)
    for key in ("model", "ema"):
        state[key] = _grown_weights(state[key], new_parameters)
    state["opt_g"] = _remapped_optimiser(state["opt_g"], old_names, new_names, model.config.codebook_size)
    return added_codes


def _grow_codebook(state: dict, codebook_size: int) -> torch.Tensor:
    old_size = state["model"][CODEBOOK].shape[0]
    if codebook_size < old_size:
        raise ValueError(f"the checkpoint has {old_size} codes; a codebook cannot shrink to {codebook_size}")
    for key in ("model", "ema"):
        state[key][CODEBOOK] = _padded(state[key][CODEBOOK], codebook_size)
    state["code_usage_ema"] = _padded(state["code_usage_ema"], codebook_size)
    added = torch.zeros(codebook_size, dtype=torch.bool)
    added[old_size:] = True
    return added


def _padded(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    extra = rows - tensor.shape[0]
    return torch.cat([tensor, tensor.new_zeros((extra, *tensor.shape[1:]))]) if extra else tensor


def _grown_weights(weights: dict, new_parameters: dict[str, torch.nn.Parameter]) -> dict:
    """The checkpoint's tensors, plus identity-initialised ones for every added residual block."""
    missing = [name for name in new_parameters if name not in weights]
    dropped = [name for name in weights if name not in new_parameters]
    if dropped:
        raise ValueError(f"the network would lose parameters {dropped[:3]}...; blocks can be added, not removed")
    grown = dict(weights)
    for name in missing:
        match = _RESIDUAL_BLOCK.match(name)
        if match is None:
            raise ValueError(f"cannot add {name}: only whole residual blocks can be added to a trained network")
        parameter = new_parameters[name].detach().to(next(iter(weights.values())).device)
        # Zero second conv: the block's output is its input, whatever conv1 holds.
        grown[name] = torch.zeros_like(parameter) if match.group(2).startswith("conv2.") else parameter.clone()
    for name, parameter in new_parameters.items():
        if name != CODEBOOK and grown[name].shape != parameter.shape:
            raise ValueError(
                f"{name} has shape {tuple(grown[name].shape)} in the checkpoint and {tuple(parameter.shape)} here: "
                "widths cannot change when continuing a checkpoint"
            )
    return grown


def _remapped_optimiser(optimiser: dict, old_names: list[str], new_names: list[str], codebook_size: int) -> dict:
    old_state = optimiser["state"]
    position = {name: i for i, name in enumerate(old_names)}
    state = {}
    for new_index, name in enumerate(new_names):
        moments = old_state.get(position.get(name, -1))
        if moments is None:
            continue
        if name == CODEBOOK:
            # Added codes start with zero moments, like a restarted code's.
            moments = {
                key: _padded(value, codebook_size) if key in ("exp_avg", "exp_avg_sq") else value
                for key, value in moments.items()
            }
        state[new_index] = moments
    (group,) = optimiser["param_groups"]
    return {"state": state, "param_groups": [{**group, "params": list(range(len(new_names)))}]}
