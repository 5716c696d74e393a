"""Vector quantizer: latents <-> codebook indices, in both directions.

Each granularity is quantized at its own resolution (not on a shared H/4
map as in the authors' code), so a coarse cell is one codebook lookup and one
loss term, not sixteen copies of it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Latents per distance computation (see indices()).
DISTANCE_CHUNK = 1024


class VectorQuantizer(nn.Module):
    def __init__(self, codebook_size: int, latent_dim: int, commitment: float = 0.25):
        super().__init__()
        self.codebook = nn.Parameter(torch.empty(codebook_size, latent_dim).uniform_(-1.0, 1.0))
        self.commitment = commitment

    @property
    def codebook_size(self) -> int:
        return self.codebook.shape[0]

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """(N, d, h, w) latents -> (N, h, w) int64 indices of the nearest code (Euclidean)."""
        n, d, h, w = z.shape
        with torch.autocast(z.device.type, enabled=False):
            # Always float32: under bf16 autocast (training) the nearest code would differ from the codec's.
            return self._nearest(z.permute(0, 2, 3, 1).reshape(-1, d).float(), (n, h, w))

    def _nearest(self, flat: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
        codebook = self.codebook.float()
        # |z - c|^2 = |z|^2 - 2 z.c + |c|^2, and |z|^2 is the same for every code,
        # so the nearest code minimises |c|^2 - 2 z.c. With d = 4 the matmul is
        # memory-bound: chunks whose scores stay in cache run 6x faster on a CPU
        # than one positions x codebook matrix (and a 24 MP photo's would be 6 GB).
        scaled_codes = (-2.0 * codebook).t().contiguous()
        code_norms = codebook.square().sum(1)
        nearest = [(chunk @ scaled_codes).add_(code_norms).argmin(dim=1) for chunk in flat.split(DISTANCE_CHUNK)]
        return torch.cat(nearest).view(shape) if nearest else flat.new_zeros(shape, dtype=torch.int64)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """(N, h, w) indices -> (N, d, h, w) code vectors."""
        return F.embedding(indices, self.codebook).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantize with a straight-through gradient; returns (z_q, indices, vq_loss)."""
        idx = self.indices(z.detach())
        z_q = self.lookup(idx)
        # Standard VQ-VAE weighting (codebook 1, commitment beta), not taming's legacy swap.
        vq_loss = F.mse_loss(z_q, z.detach()) + self.commitment * F.mse_loss(z, z_q.detach())
        z_q = z + (z_q - z).detach()
        return z_q, idx, vq_loss
