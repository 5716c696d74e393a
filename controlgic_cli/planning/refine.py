"""Encoder-side refinement for `--tune psnr`: indices the fixed decoder turns into a closer image.

By default every cell gets the code nearest to its latent, which is what the
decoder was trained on and what keeps its texture ("perceptual"). When exact
pixels matter more, a short search does better at the same size: gradient
steps on the latents through the quantizer (straight-through) and the
decoder, against the squared error of the reconstruction. The decoder, the
format and the bitrate are unchanged; only the encoder's choice of indices
differs, so any decoder reads the result.

Each granularity is refined on its own, under a uniform mask (every cell at
that granularity). The result is therefore independent of the plan, and rate
control, dataset budgets and the batch engines work on refined indices
exactly as on plain ones. Of the iterates, the one with the lowest error is
kept, so a granularity's uniform-mask reconstruction never gets worse than
the plain indices' (as measured by the search itself: in float32 on a CPU,
under bf16 autocast on a GPU).

The search runs over tiles (a core plus context, as in tiling.py) small enough
for the backward pass to stay within memory, in raster order; each tile sees
its neighbours' already refined latents in its context and changes only its
core. Everything depends on the image alone, so the same image gives the same
indices.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..model import ControlGIC, MaskSet
from ..model.config import STRIDES
from ..tiling import TileSpec, plan_tiles


@dataclass(frozen=True)
class RefineSettings:
    steps: int = 10  # gradient steps per granularity and tile
    learning_rate: float = 0.02  # Adam, in latent units (neighbouring codes are ~0.2 apart)
    # A 768x768 context keeps the backward pass near 1 GB and a Kodak image in one tile.
    tiles: TileSpec = TileSpec(core=768, margin=64)

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"refinement steps must be >= 0, got {self.steps}")
        if not self.learning_rate > 0:
            raise ValueError(f"refinement learning rate must be > 0, got {self.learning_rate}")


def uniform_masks(granularity: int, height: int, width: int, device: torch.device) -> MaskSet:
    """Masks putting every cell of an (height, width) pixel area at one granularity (0 fine, 1 medium, 2 coarse)."""
    planes = [
        torch.full((1, 1, height // stride, width // stride), float(level == granularity), device=device)
        for level, stride in enumerate(STRIDES)
    ]
    return MaskSet(*planes)


def refine_indices(
    network: ControlGIC,
    x: torch.Tensor,
    latents: list[torch.Tensor],
    settings: RefineSettings | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Refined (fine, medium, coarse) indices (h, w) of one image.

    x: (1, 3, H, W) in [-1, 1], sides multiples of 16; latents: the encoder's
    (1, d, H/s, W/s) outputs for it at strides 4, 8, 16 (float32, overwritten).
    on_progress(done, total) follows the searches (one per tile and
    granularity): a 24 MP photo takes minutes on two cores.
    """
    settings = settings or RefineSettings()
    height, width = x.shape[-2:]
    tiles = plan_tiles(height, width, settings.tiles)
    total = len(tiles) * len(STRIDES)
    done = 0
    for tile in tiles:
        target = x[(..., *tile.context.scaled(1))]
        for granularity, stride in enumerate(STRIDES):
            window = (..., *tile.context.scaled(stride))
            core = torch.zeros_like(latents[granularity][window][:, :1])
            core[(..., *tile.core.within(tile.context, stride))] = 1.0
            current = latents[granularity][window]
            best = _search(network, target, current, core, granularity, settings)
            # Only the core changes: a later tile whose core lies in this margin starts from its own latents.
            latents[granularity][window] = torch.where(core.bool(), best, current)
            done += 1
            if on_progress is not None:
                on_progress(done, total)
    return tuple(network.quantizer.indices(z)[0] for z in latents)


def _search(
    network: ControlGIC,
    target: torch.Tensor,
    latent: torch.Tensor,
    free: torch.Tensor,
    granularity: int,
    settings: RefineSettings,
) -> torch.Tensor:
    """Adam on the latents where `free` is 1; returns the iterate whose reconstruction was closest."""
    masks = uniform_masks(granularity, *target.shape[-2:], device=target.device)
    quantizer = network.quantizer
    z = latent.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([z], lr=settings.learning_rate)
    best, best_error = latent, float("inf")
    for step in range(settings.steps + 1):
        # The last pass only scores the final iterate: no graph needed.
        with torch.set_grad_enabled(step < settings.steps):
            code = quantizer.lookup(quantizer.indices(z.detach()))
            quantized = z + (code - z).detach()
            hybrid = network.hybrid_latent(*_planes(quantized, granularity), masks)
            with torch.autocast(target.device.type, dtype=torch.bfloat16, enabled=_search_in_bf16(target.device)):
                reconstruction = network.decoder(hybrid, masks.fine, masks.medium, masks.coarse)
            error = F.mse_loss(reconstruction.float(), target)
        if error.item() < best_error:
            best, best_error = code.detach(), error.item()
        if step == settings.steps:
            break
        (gradient,) = torch.autograd.grad(error, z)
        z.grad = gradient * free
        optimiser.step()
    return best


def _search_in_bf16(device: torch.device) -> bool:
    """bf16 only on GPUs: on a CPU without AMX or AVX-512 BF16 it is emulated, and the search took minutes.

    (One Kodak image: 6.6 s with bf16 on an AMX Xeon, over 5 minutes on an
    AVX2-only EPYC.) Float32 on every CPU also keeps the refined indices the
    same whichever CPU extensions a machine has.
    """
    return device.type == "cuda"


def _planes(quantized: torch.Tensor, granularity: int) -> list[torch.Tensor]:
    """The (fine, medium, coarse) latents with `quantized` at its granularity and zeros elsewhere.

    Under a uniform mask only that plane is read; the others just need the right size.
    """
    fine_height, fine_width = (side * 2**granularity for side in quantized.shape[-2:])
    return [
        quantized
        if level == granularity
        else quantized.new_zeros(*quantized.shape[:2], fine_height >> level, fine_width >> level)
        for level in range(3)
    ]
