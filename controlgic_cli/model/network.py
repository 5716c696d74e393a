"""The Control-GIC network: encoder, shared codebook, conditional decoder.

Two faces, as in CompressAI's models:
  forward()                 differentiable training pass
  encode_indices() /        codec pass: image -> indices of every cell at all
  decode_indices()          three granularities (independent of the ratios),
                            and indices + masks -> image
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .decoder import Decoder
from .encoder import Encoder
from .quantizer import VectorQuantizer


@dataclass
class MaskSet:
    """Granularity masks as float {0,1} tensors: fine (N,1,H/4,W/4), medium (H/8), coarse (H/16).

    Every H/4 position is covered by exactly one granularity.
    """

    fine: torch.Tensor
    medium: torch.Tensor
    coarse: torch.Tensor

    @classmethod
    def from_coarse_medium(cls, coarse: torch.Tensor, medium: torch.Tensor) -> MaskSet:
        """Derive the fine mask (never transmitted) from the coarse and medium ones."""
        coarse = coarse.float()
        medium = medium.float()
        covered = F.interpolate(coarse, scale_factor=4.0) + F.interpolate(medium, scale_factor=2.0)
        return cls(fine=(1.0 - covered).clamp_(0.0, 1.0), medium=medium, coarse=coarse)


@dataclass
class Indices:
    """Codebook indices of every cell: fine (N,H/4,W/4), medium (N,H/8,W/8), coarse (N,H/16,W/16)."""

    fine: torch.Tensor
    medium: torch.Tensor
    coarse: torch.Tensor


@dataclass
class ForwardOutput:
    reconstruction: torch.Tensor
    vq_loss: torch.Tensor
    indices: Indices


class ControlGIC(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.quantizer = VectorQuantizer(config.codebook_size, config.latent_dim)
        self.decoder = Decoder(config)

    @staticmethod
    def hybrid_latent(fine: torch.Tensor, medium: torch.Tensor, coarse: torch.Tensor, masks: MaskSet) -> torch.Tensor:
        """Eq. 5: z_hat = z1*m1 + up2(z2*m2) + up4(z3*m3), nearest upsampling."""
        return (
            fine * masks.fine
            + F.interpolate(medium * masks.medium, scale_factor=2.0)
            + F.interpolate(coarse * masks.coarse, scale_factor=4.0)
        )

    def forward(self, x: torch.Tensor, masks: MaskSet) -> ForwardOutput:
        z_fine, z_medium, z_coarse = self.encoder(x)
        q_fine, i_fine, l_fine = self.quantizer(z_fine)
        q_medium, i_medium, l_medium = self.quantizer(z_medium)
        q_coarse, i_coarse, l_coarse = self.quantizer(z_coarse)
        z_hat = self.hybrid_latent(q_fine, q_medium, q_coarse, masks)
        reconstruction = self.decoder(z_hat, masks.fine, masks.medium, masks.coarse)
        return ForwardOutput(reconstruction, l_fine + l_medium + l_coarse, Indices(i_fine, i_medium, i_coarse))

    @torch.no_grad()
    def encode_indices(self, x: torch.Tensor) -> Indices:
        """Indices of every cell at every granularity; the ratios only decide which are sent."""
        return self.encode_indices_and_features(x)[0]

    @torch.no_grad()
    def encode_indices_and_features(self, x: torch.Tensor) -> tuple[Indices, tuple[torch.Tensor, torch.Tensor]]:
        """encode_indices, and the encoder's hidden maps at H/4 and H/8 it passed through (Encoder.features)."""
        features = self.encoder.features(x)
        z_fine, z_medium, z_coarse = self.encoder.heads(*features)
        indices = Indices(
            self.quantizer.indices(z_fine), self.quantizer.indices(z_medium), self.quantizer.indices(z_coarse)
        )
        return indices, features

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's hidden maps at H/4 and H/8 (the measured planner's distances)."""
        return self.encoder.features(x)

    @torch.no_grad()
    def decode_indices(self, indices: Indices, masks: MaskSet) -> torch.Tensor:
        """Indices (unselected cells may hold anything) + masks -> image in [-1, 1]."""
        z_hat = self.hybrid_latent(
            self.quantizer.lookup(indices.fine),
            self.quantizer.lookup(indices.medium),
            self.quantizer.lookup(indices.coarse),
            masks,
        )
        return self.decoder(z_hat, masks.fine, masks.medium, masks.coarse).clamp(-1.0, 1.0)
