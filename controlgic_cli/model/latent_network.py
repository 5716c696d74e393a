"""Control-GIC on a pretrained autoencoder's latent (model v2).

The frozen TAEF2 encoder maps an image to a 32-channel latent at H/8. A
learned analysis network turns that latent into tokens at the paper's three
granularities, fine H/4, medium H/8 and coarse H/16, each a few FSQ groups
(one index per group). The masks choose one granularity for every H/4
position, as in the paper's Eq. 5; the sent tokens are merged into one map
at H/8, and a synthesis network, told by the masks which granularity each
position came from, rebuilds the latent for the (fine-tuned) TAEF2 decoder.

Faces, as in network.py:
  forward()           differentiable training pass from a latent
  encode_indices()    image -> indices of every cell at all three granularities
  decode_indices()    indices + masks -> image
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from .fsq import GroupedFSQ
from .network import Indices, MaskSet
from .taef2 import LATENT_CHANNELS, taef2_decoder, taef2_encoder

# Token grids relative to the latent (H/8): fine H/4, medium H/8, coarse H/16, the geometry of model v1,
# so masks, planners, rate control and tiling serve both models unchanged.
FINE_UPSCALE = 2
COARSE_DOWNSCALE = 2
# The backbone encoder's last layer at H/4 (taef2_encoder: conv, block, then per stage a strided conv and 3 blocks).
QUARTER_RESOLUTION_LAYER = 9


@dataclass(frozen=True)
class LatentModelConfig:
    """Sizes of model v2. groups: FSQ groups per token (fine, medium, coarse); levels: per channel of a group.

    levels_by_granularity, when set, gives each granularity (fine, medium, coarse) levels of its own
    instead of `levels`: more channels of fewer levels keep more of the latent at the coarser grids.
    """

    levels: tuple[int, ...] = (8, 5, 5, 5)
    groups: tuple[int, int, int] = (2, 2, 2)
    width: int = 160
    analysis_blocks: tuple[int, int, int] = (2, 1, 2)
    synthesis_blocks: int = 4
    levels_by_granularity: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None

    def __post_init__(self) -> None:
        if len(self.groups) != 3 or len(self.analysis_blocks) != 3 or min(self.groups) < 1 or self.width < 1:
            raise ModelError(f"latent model config is inconsistent: {self}")
        if self.levels_by_granularity is not None and len(self.levels_by_granularity) != 3:
            raise ModelError(f"latent model config needs levels for 3 granularities: {self}")
        if any(not levels or min(levels) < 2 for levels in self.granularity_levels):
            raise ModelError(f"latent model config has a channel of fewer than 2 levels: {self}")

    @property
    def granularity_levels(self) -> tuple[tuple[int, ...], ...]:
        """The FSQ levels of each granularity (fine, medium, coarse)."""
        return self.levels_by_granularity if self.levels_by_granularity is not None else (self.levels,) * 3

    @classmethod
    def tiny(cls) -> LatentModelConfig:
        return cls(levels=(4, 3), groups=(2, 1, 1), width=16, analysis_blocks=(1, 0, 0), synthesis_blocks=1)

    def to_json(self) -> str:
        # An unset levels_by_granularity is left out, so configs that do not use it keep their exact text
        # (it is part of a weights file, and so of its model id).
        fields = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        return json.dumps(fields, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LatentModelConfig:
        try:
            raw = json.loads(text)
            return cls(**{k: _tuples(v) for k, v in raw.items()})
        except (json.JSONDecodeError, TypeError, AttributeError) as exc:
            raise ModelError(f"latent model config is not valid: {exc}") from None


def _tuples(value: object) -> object:
    """JSON's lists back to the config's (nested) tuples."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


class ResBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


def zero_initialised(conv: nn.Conv2d) -> nn.Conv2d:
    """A layer that adds nothing until trained: a network grown by it computes what it did before."""
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def blocks(width: int, count: int) -> nn.Sequential:
    return nn.Sequential(*(ResBlock(width) for _ in range(count)))


class Analysis(nn.Module):
    """Latent (N, 32, H/8, W/8) -> pre-quantization tokens at H/4, H/8 and H/16."""

    def __init__(self, config: LatentModelConfig, channels: tuple[int, int, int]):
        super().__init__()
        width = config.width
        trunk, medium, coarse = config.analysis_blocks
        self.trunk = nn.Sequential(nn.Conv2d(LATENT_CHANNELS, width, 3, padding=1), blocks(width, trunk))
        # Fine tokens are made at H/8 and unfolded to H/4: the latent holds no detail finer than that.
        self.fine_head = nn.Sequential(nn.ReLU(), nn.Conv2d(width, channels[0] * FINE_UPSCALE**2, 1))
        self.medium = nn.Sequential(blocks(width, medium), nn.ReLU(), nn.Conv2d(width, channels[1], 1))
        self.coarse = nn.Sequential(
            nn.Conv2d(width, width, 3, stride=COARSE_DOWNSCALE, padding=1),
            blocks(width, coarse),
            nn.ReLU(),
            nn.Conv2d(width, channels[2], 1),
        )
        # Linear paths from the latent straight to each head: the nearly linear part of the map is there
        # from the first step, and the blocks learn what is left (latent MSE fell about 1.5x faster).
        self.fine_skip = zero_initialised(nn.Conv2d(LATENT_CHANNELS, channels[0] * FINE_UPSCALE**2, 1))
        self.medium_skip = zero_initialised(nn.Conv2d(LATENT_CHANNELS, channels[1], 1))
        self.coarse_skip = zero_initialised(
            nn.Conv2d(LATENT_CHANNELS, channels[2], COARSE_DOWNSCALE, stride=COARSE_DOWNSCALE)
        )

    def forward(self, latent: torch.Tensor) -> list[torch.Tensor]:
        h = self.trunk(latent)
        return [
            F.pixel_shuffle(self.fine_head(h) + self.fine_skip(latent), FINE_UPSCALE),
            self.medium(h) + self.medium_skip(latent),
            self.coarse(h) + self.coarse_skip(latent),
        ]


class Synthesis(nn.Module):
    """Masked tokens of the three grids + their masks -> latent for the decoder (N, 32, H/8, W/8)."""

    def __init__(self, config: LatentModelConfig, channels: tuple[int, int, int]):
        super().__init__()
        width = config.width
        # One embedding per granularity: the same FSQ value means different things at different scales.
        self.fine_embed = nn.Conv2d(channels[0] * FINE_UPSCALE**2, width, 1)
        self.medium_embed = nn.Conv2d(channels[1], width, 1)
        self.coarse_embed = nn.Conv2d(channels[2], width, 1)
        self.mask_embed = nn.Conv2d(FINE_UPSCALE**2 + 2, width, 1, bias=False)
        self.body = blocks(width, config.synthesis_blocks)
        self.out = nn.Conv2d(width, LATENT_CHANNELS, 3, padding=1)
        self.skip = zero_initialised(nn.Conv2d(width, LATENT_CHANNELS, 1))  # as Analysis's skips

    def forward(self, tokens: list[torch.Tensor], masks: list[torch.Tensor]) -> torch.Tensor:
        fine, medium, coarse = tokens
        fine_mask, medium_mask, coarse_mask = masks
        # Unsent cells are zeroed before anything mixes them in.
        fine = F.pixel_unshuffle(fine * fine_mask, FINE_UPSCALE)
        coarse_here = F.interpolate(coarse_mask, scale_factor=float(COARSE_DOWNSCALE))
        coarse = F.interpolate(self.coarse_embed(coarse * coarse_mask), scale_factor=float(COARSE_DOWNSCALE))
        mask_planes = torch.cat([F.pixel_unshuffle(fine_mask, FINE_UPSCALE), medium_mask, coarse_here], dim=1)
        merged = (
            self.mask_embed(mask_planes)
            + self.fine_embed(fine) * mask_planes[:, :1].gt(0).float()
            + self.medium_embed(medium * medium_mask) * medium_mask
            + coarse * coarse_here
        )
        return self.out(F.relu(self.body(merged))) + self.skip(merged)


class LatentControlGIC(nn.Module):
    def __init__(self, config: LatentModelConfig):
        super().__init__()
        self.config = config
        self.quantizers = nn.ModuleList(
            GroupedFSQ(levels, groups) for levels, groups in zip(config.granularity_levels, config.groups, strict=True)
        )
        channels = tuple(q.channels for q in self.quantizers)
        self.backbone_encoder = taef2_encoder()
        self.analysis = Analysis(config, channels)
        self.synthesis = Synthesis(config, channels)
        self.backbone_decoder = taef2_decoder()

    @staticmethod
    def masks(coarse: torch.Tensor, medium: torch.Tensor) -> list[torch.Tensor]:
        """Float {0,1} masks at their own grids, fine (H/4), medium (H/8), coarse (H/16), from coarse and medium."""
        masks = MaskSet.from_coarse_medium(coarse, medium)
        return [masks.fine, masks.medium, masks.coarse]

    def encode_latent(self, image: torch.Tensor) -> torch.Tensor:
        """Image in [-1, 1] -> TAEF2 latent (the backbone takes [0, 1])."""
        return self.backbone_encoder(image * 0.5 + 0.5)

    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent -> image in [-1, 1]."""
        return self.backbone_decoder(latent) * 2.0 - 1.0

    def rebuild(self, latent: torch.Tensor, masks: list[torch.Tensor]) -> torch.Tensor:
        """Training pass up to the decoder: the latent rebuilt from the quantized tokens the masks select."""
        tokens = [q(z) for q, z in zip(self.quantizers, self.analysis(latent), strict=True)]
        return self.synthesis(tokens, masks)

    def forward(self, latent: torch.Tensor, masks: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass from a backbone latent: (rebuilt latent, image in [-1, 1], unclamped)."""
        rebuilt = self.rebuild(latent, masks)
        return rebuilt, self.decode_latent(rebuilt)

    # ----- the codec's faces (inference.TiledNetwork), as ControlGIC's -----------------------------------
    # Index maps are (N, H/s, W/s, groups): cells first, so a bool mask of cells selects whole tokens.
    @torch.no_grad()
    def encode_indices(self, image: torch.Tensor) -> Indices:
        return self.encode_indices_and_features(image)[0]

    @torch.no_grad()
    def encode_indices_and_features(self, image: torch.Tensor) -> tuple[Indices, tuple[torch.Tensor, torch.Tensor]]:
        """Image (N, 3, H, W) in [-1, 1], sides multiples of 16 -> indices at H/4, H/8, H/16, and features().

        The features are the backbone's hidden maps at H/4 and the latent at H/8, from the same pass.
        """
        features, latent = self._encoder_pass(image)
        pre = self.analysis(latent)
        maps = [q.indices(z).permute(0, 2, 3, 1) for q, z in zip(self.quantizers, pre, strict=True)]
        return Indices(*maps), (features, latent)

    @torch.no_grad()
    def features(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The backbone encoder's hidden map at H/4 and its latent at H/8 (the measured planner's distances)."""
        return self._encoder_pass(image)

    def _encoder_pass(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = image * 0.5 + 0.5
        for number, layer in enumerate(self.backbone_encoder):
            h = layer(h)
            if number == QUARTER_RESOLUTION_LAYER:
                quarter = h
        return quarter, h

    @torch.no_grad()
    def rebuild_latent(self, indices: Indices, masks: MaskSet) -> torch.Tensor:
        """Index maps (unsent cells may hold anything) + masks -> the latent the decoder gets."""
        maps = (indices.fine, indices.medium, indices.coarse)
        tokens = [q.lookup(i.permute(0, 3, 1, 2)) for q, i in zip(self.quantizers, maps, strict=True)]
        return self.synthesis(tokens, [masks.fine, masks.medium, masks.coarse])

    @torch.no_grad()
    def decode_indices(self, indices: Indices, masks: MaskSet) -> torch.Tensor:
        """Index maps + masks -> image in [-1, 1]."""
        return self.decode_latent(self.rebuild_latent(indices, masks)).clamp(-1.0, 1.0)
