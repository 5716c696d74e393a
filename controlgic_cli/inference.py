"""Running the network on whole images: numpy in and out, tile by tile.

The codec (api.py) works on numpy arrays of any size; the network works on
tensors that must fit in memory. This module is the bridge: it moves data to
the device and back, and splits large images into overlapping tiles
(tiling.py) so peak memory depends on the tile size, not the photo size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .determinism import invariant_convolutions
from .metrics.lpips import unit_normalise
from .model import ControlGIC, Indices, MaskSet
from .model.config import COARSE_STRIDE, FINE_STRIDE, MEDIUM_STRIDE, STRIDES
from .model.latent_network import LatentControlGIC
from .planning.refine import RefineSettings, refine_indices
from .tiling import DEFAULT_TILES, Box, TileSpec, plan_tiles


@dataclass(frozen=True)
class NetworkPass:
    """One image through the encoder: its index maps (fine H/4, medium H/8, coarse H/16), and for an image
    that was one tile in a pass of its own, the encoder's hidden maps at H/4 and H/8 of it, which the
    measured planner compares its decodes against (feature_distances' `source_features`); else None."""

    indices: tuple[np.ndarray, np.ndarray, np.ndarray]
    features: tuple[torch.Tensor, torch.Tensor] | None = None


class TiledNetwork:
    """encode: uint8 image -> index maps; decode: index maps + masks -> uint8 image."""

    def __init__(self, network: ControlGIC, device: torch.device, tiles: TileSpec = DEFAULT_TILES):
        self.network = network
        self.device = device
        self.tiles = tiles

    def with_tiles(self, tiles: TileSpec) -> TiledNetwork:
        """The same network run in other tiles."""
        return TiledNetwork(self.network, self.device, tiles)

    def encode_indices(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """uint8 (H, W, 3), sides multiples of 16 -> int64 indices (fine H/4, medium H/8, coarse H/16).

        Model v1 gives one index per cell; model v2 a trailing axis of one index per FSQ group.
        """
        height, width = rgb.shape[:2]
        maps: list[np.ndarray] = []
        for tile in plan_tiles(height, width, self.tiles):
            indices = self.network.encode_indices(self._input(rgb[tile.context.scaled(1)][None]))
            parts = (indices.fine, indices.medium, indices.coarse)
            if not maps:
                maps = [
                    np.zeros((height // s, width // s, *p.shape[3:]), np.int64)
                    for p, s in zip(parts, STRIDES, strict=True)
                ]
            for full, part, stride in zip(maps, parts, STRIDES, strict=True):
                full[tile.core.scaled(stride)] = part[0][tile.core.within(tile.context, stride)].cpu().numpy()
        return tuple(maps)

    def refined_indices(
        self,
        rgb: np.ndarray,
        settings: RefineSettings | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """encode_indices plus the search of refine.py (`--tune psnr`): indices decoding closer to the image."""
        height, width = rgb.shape[:2]
        latents = [
            torch.zeros(1, self.network.config.latent_dim, height // s, width // s, device=self.device) for s in STRIDES
        ]
        with torch.no_grad():
            for tile in plan_tiles(height, width, self.tiles):
                parts = self.network.encoder(self._input(rgb[tile.context.scaled(1)][None]))
                for full, part, stride in zip(latents, parts, STRIDES, strict=True):
                    full[(..., *tile.core.scaled(stride))] = part[
                        (..., *tile.core.within(tile.context, stride))
                    ].float()
        indices = refine_indices(self.network, self._input(rgb[None]), latents, settings, on_progress)
        return tuple(i.cpu().numpy() for i in indices)

    def encode_indices_many(self, images: list[np.ndarray]) -> list[NetworkPass]:
        """encode_indices of each image; images of one shape that fit in one tile share forward passes.

        A batch gives every image the same result as its own pass (per-sample
        convolutions; tests/test_batch.py checks it), so files stay byte-identical.
        Those one-tile images also keep the encoder's hidden maps (NetworkPass.features).
        """
        results: list[NetworkPass | None] = [None] * len(images)
        groups: dict[tuple[int, ...], list[int]] = {}
        for number, rgb in enumerate(images):
            if len(plan_tiles(rgb.shape[0], rgb.shape[1], self.tiles)) == 1:
                groups.setdefault(rgb.shape, []).append(number)
            else:
                results[number] = NetworkPass(self.encode_indices(rgb))
        for members in groups.values():
            indices, features = self.network.encode_indices_and_features(
                self._input(np.stack([images[n] for n in members]))
            )
            maps = [i.cpu().numpy() for i in (indices.fine, indices.medium, indices.coarse)]
            # Kept for an image in a pass of its own only: its planner pass is then the very same computation,
            # where a batch's convolutions may round differently and move the planner's scores.
            kept = features if len(members) == 1 else None
            for position, number in enumerate(members):
                results[number] = NetworkPass(tuple(m[position] for m in maps), kept)
        return results

    def decode(
        self,
        indices: tuple[np.ndarray, np.ndarray, np.ndarray],
        coarse_mask: np.ndarray,
        medium_mask: np.ndarray,
        on_tile: Callable[[], None] | None = None,
        region: Box | None = None,
    ) -> np.ndarray:
        """Index maps (unsent cells may hold anything) and bool masks -> uint8 (H, W, 3) of the padded image.

        on_tile() is called after each tile (progress on a large photo). region:
        a box of pixels to decode instead of the whole image: only the tiles
        whose core meets it run, each exactly as in a whole decode, so the
        pixels are those of the whole decode and the cost is that of its tiles.
        """
        height, width = (s * COARSE_STRIDE for s in coarse_mask.shape)
        region = region or Box(0, 0, height, width)
        rgb = np.empty((region.height, region.width, 3), np.uint8)
        for tile in plan_tiles(height, width, self.tiles):
            wanted = tile.core.intersection(region)
            if wanted is None:
                continue
            maps = self._tile_indices(indices, tile.context)
            masks = MaskSet.from_coarse_medium(
                self._mask_tensor(coarse_mask[tile.context.scaled(COARSE_STRIDE)]),
                self._mask_tensor(medium_mask[tile.context.scaled(MEDIUM_STRIDE)]),
            )
            with invariant_convolutions():  # the same pixels for any torch thread count (determinism.py)
                x_hat = self.network.decode_indices(maps, masks)[0]
            part = x_hat.float().add(1.0).mul(127.5).round().clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy()
            rgb[wanted.within(region, 1)] = part[wanted.within(tile.context, 1)]
            if on_tile is not None:
                on_tile()
        return rgb

    @property
    def is_latent(self) -> bool:
        """Model v2 (latent_network.py): FSQ tokens on a pretrained autoencoder's latent."""
        return isinstance(self.network, LatentControlGIC)

    def latent_distances(
        self, rgb: np.ndarray, indices: tuple[np.ndarray, ...], source_latent: torch.Tensor | None = None
    ) -> dict[str, np.ndarray]:
        """Model v2: per 8x8 cell, the squared distance from the source's latent of the latent rebuilt from
        all-coarse, all-medium and all-fine tokens: float64 (H/8, W/8) maps by granularity.

        source_latent: the latent from the encoding pass (NetworkPass.features) when the image was one tile.
        """
        height, width = rgb.shape[:2]
        maps = {
            level: np.zeros((height // MEDIUM_STRIDE, width // MEDIUM_STRIDE)) for level in ("coarse", "medium", "fine")
        }
        tiles = plan_tiles(height, width, self.tiles)
        with torch.no_grad():
            for tile in tiles:
                if source_latent is not None and len(tiles) == 1:
                    reference = source_latent.float()
                else:
                    reference = self.network.features(self._input(rgb[tile.context.scaled(1)][None]))[1].float()
                parts = self._tile_indices(indices, tile.context)
                h16, w16 = (side // COARSE_STRIDE for side in (tile.context.height, tile.context.width))
                for level, coarse, medium in (("coarse", 1.0, 0.0), ("medium", 0.0, 1.0), ("fine", 0.0, 0.0)):
                    masks = MaskSet.from_coarse_medium(
                        torch.full((1, 1, h16, w16), coarse, device=self.device),
                        torch.full((1, 1, 2 * h16, 2 * w16), medium, device=self.device),
                    )
                    distance = (self.network.rebuild_latent(parts, masks) - reference).square().sum(dim=1)[0]
                    core = distance[tile.core.within(tile.context, MEDIUM_STRIDE)]
                    maps[level][tile.core.scaled(MEDIUM_STRIDE)] = core.double().cpu().numpy()
        return maps

    def feature_distances(
        self,
        source: np.ndarray,
        decoded: list[np.ndarray],
        on_tile: Callable[[], None] | None = None,
        source_features: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each decoded image, how far the encoder's features of it are from the source's: float64 (H/4, H/8) maps.

        LPIPS's recipe with cgic's own encoder in place of an ImageNet network:
        features unit-normalised over channels at every position, squared
        differences summed over channels. Images are padded uint8 (H, W, 3).
        on_tile() is called after each tile. source_features: the source's
        hidden maps from its encoding pass (NetworkPass.features), which spare
        one encoder pass when the image is one tile here too.
        """
        height, width = source.shape[:2]
        strides = (FINE_STRIDE, MEDIUM_STRIDE)
        maps = [tuple(np.zeros((height // s, width // s)) for s in strides) for _ in decoded]
        tiles = plan_tiles(height, width, self.tiles)
        with torch.no_grad():
            for tile in tiles:
                if source_features is not None and len(tiles) == 1:
                    reference = [unit_normalise(f.float()) for f in source_features]
                else:
                    reference = self._unit_features(source[tile.context.scaled(1)])
                for image, image_maps in zip(decoded, maps, strict=True):
                    features = self._unit_features(image[tile.context.scaled(1)])
                    for full, mine, theirs, stride in zip(image_maps, features, reference, strides, strict=True):
                        distance = (mine - theirs).square().sum(dim=1)[0]
                        core = distance[tile.core.within(tile.context, stride)]
                        full[tile.core.scaled(stride)] = core.double().cpu().numpy()
                if on_tile is not None:
                    on_tile()
        return maps

    def _unit_features(self, rgb: np.ndarray) -> list[torch.Tensor]:
        return [unit_normalise(f.float()) for f in self.network.features(self._input(rgb[None]))]

    def _input(self, batch_u8: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> the network's input: float (N, 3, H, W) in [-1, 1], channels_last, on the device."""
        x = torch.from_numpy(np.ascontiguousarray(batch_u8.transpose(0, 3, 1, 2)))
        return x.to(self.device).float().div_(127.5).sub_(1.0).contiguous(memory_format=torch.channels_last)

    def _tile_indices(self, indices: tuple[np.ndarray, ...], box: Box) -> Indices:
        """The index maps of the cells in a box of pixels, as a batch of one on the device."""
        return Indices(
            *(
                torch.from_numpy(np.ascontiguousarray(full[box.scaled(stride)]))[None].to(self.device)
                for full, stride in zip(indices, STRIDES, strict=True)
            )
        )

    def _mask_tensor(self, mask: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(mask))[None, None].to(self.device)
