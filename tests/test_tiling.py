"""Tiled inference: tile geometry, tiled == untiled results, and the margin covering the receptive field."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from controlgic_cli.api import Codec
from controlgic_cli.coding.container import COLOUR_RGB, CgicHeader, CgicSections, pack_file
from controlgic_cli.coding.entropy_coder import pack_masks
from controlgic_cli.errors import ImageError
from controlgic_cli.io.image_io import MAX_PIXELS
from controlgic_cli.model import ControlGIC, MaskSet, ModelConfig
from controlgic_cli.tiling import DEFAULT_TILES, TileSpec, plan_tiles, split_axis

from .conftest import synthetic_photo

UNTILED = TileSpec(core=1 << 16, margin=0)


@given(cells=st.integers(1, 400), core_cells=st.integers(1, 64))
def test_split_axis_covers_the_axis_with_aligned_near_equal_spans(cells, core_cells):
    length, core = cells * 16, core_cells * 16
    spans = split_axis(length, core)
    assert spans[0][0] == 0 and spans[-1][1] == length
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    sizes = [end - start for start, end in spans]
    assert all(size % 16 == 0 and 0 < size <= core for size in sizes)
    assert len(spans) == -(-length // core)  # the fewest tiles
    assert max(sizes) - min(sizes) <= 16


@given(
    h_cells=st.integers(1, 60),
    w_cells=st.integers(1, 60),
    core_cells=st.integers(1, 20),
    margin_cells=st.integers(0, 8),
)
def test_tile_cores_partition_the_image_and_contexts_add_the_clipped_margin(h_cells, w_cells, core_cells, margin_cells):
    height, width, margin = h_cells * 16, w_cells * 16, margin_cells * 16
    cover = np.zeros((height // 16, width // 16), np.int32)
    for tile in plan_tiles(height, width, TileSpec(core=core_cells * 16, margin=margin)):
        cover[tile.core.scaled(16)] += 1
        assert tile.context.top == max(0, tile.core.top - margin)
        assert tile.context.left == max(0, tile.core.left - margin)
        assert tile.context.bottom == min(height, tile.core.bottom + margin)
        assert tile.context.right == min(width, tile.core.right + margin)
    assert (cover == 1).all()


def test_tile_spec_rejects_unaligned_sizes():
    for core, margin in ((0, 0), (100, 16), (64, 8), (64, -16)):
        with pytest.raises(ValueError):
            TileSpec(core=core, margin=margin)


@pytest.fixture(scope="module")
def image():
    return synthetic_photo(88, 136, seed=3)  # padded to 96 x 144: 2 x 3 tiles of 64 px


def test_tiled_coding_matches_untiled_when_the_margin_covers_the_receptive_field(tiny_weights, image):
    untiled = Codec(tiny_weights, "cpu", tiles=UNTILED)
    tiled = Codec(tiny_weights, "cpu", tiles=TileSpec(core=64, margin=192))
    assert len(plan_tiles(96, 144, tiled.network.tiles)) == 2 * 3
    reference = untiled.encode(image)
    result = tiled.encode(image)
    assert result.data == reference.data
    np.testing.assert_array_equal(tiled.decode_array(reference.data)[0], untiled.decode_array(reference.data)[0])


def test_tiles_without_margin_do_differ(tiny_weights, image):
    # The check above would pass vacuously if tiling changed nothing at all.
    untiled = Codec(tiny_weights, "cpu", tiles=UNTILED)
    seamy = Codec(tiny_weights, "cpu", tiles=TileSpec(core=64, margin=0))
    data = untiled.encode(image).data
    assert not np.array_equal(seamy.decode_array(data)[0], untiled.decode_array(data)[0])


def _radius(grad: torch.Tensor, centre: tuple[int, int], scale: int) -> int:
    """Largest distance (in pixels) from centre at which grad is non-zero, grad on a grid of `scale` pixels."""
    rows, cols = torch.nonzero(grad.abs().sum(dim=(0, 1)) > 0, as_tuple=True)
    return int(max((rows - centre[0]).abs().max(), (cols - centre[1]).abs().max()) + 1) * scale


@pytest.mark.slow
def test_default_margin_covers_the_receptive_field_of_the_default_network():
    """Perturbing anything farther than the margin from a tile core cannot change its output."""
    torch.manual_seed(0)
    network = ControlGIC(ModelConfig()).eval()
    for module in network.modules():
        # Zero-initialised condition convs would hide the receptive field of the condition path.
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.normal_(module.weight, std=0.05)
    size = 512
    x = torch.randn(1, 3, size, size, requires_grad=True)
    z_fine, z_medium, z_coarse = network.encoder(x)
    for z, stride in ((z_fine, 4), (z_medium, 8), (z_coarse, 16)):
        centre = size // stride // 2
        (grad,) = torch.autograd.grad(z[0, :, centre, centre].sum(), x, retain_graph=True)
        # Distance from the output cell's pixel box to the farthest input pixel that reaches it.
        assert _radius(grad, (centre * stride, centre * stride), 1) - stride <= DEFAULT_TILES.margin

    cells = size // 4
    # All-coarse is the widest case: fine and medium cells replace the deep H/16 and H/8 features.
    for coarse_value, medium_value in ((1.0, 0.0), (0.0, 1.0), (0.0, 0.0)):
        masks = MaskSet.from_coarse_medium(
            torch.full((1, 1, cells // 4, cells // 4), coarse_value),
            torch.full((1, 1, cells // 2, cells // 2), medium_value),
        )
        z_hat = torch.randn(1, 4, cells, cells, requires_grad=True)
        out = network.decoder(z_hat, masks.fine, masks.medium, masks.coarse)
        (grad,) = torch.autograd.grad(out[0, :, size // 2, size // 2].sum(), z_hat)
        assert _radius(grad, (cells // 2, cells // 2), 4) <= DEFAULT_TILES.margin


def test_files_claiming_too_many_pixels_are_refused_before_decoding(tiny_weights):
    codec = Codec(tiny_weights, "cpu")
    side = 16 * 1024  # 268 megapixels
    cells = (side // 16) ** 2
    header = CgicHeader(side, side, COLOUR_RGB, (0, 0, 1_000_000), codec.model_id, rate_controlled=False)
    masks = pack_masks(np.ones((side // 16, side // 16), bool), np.zeros((side // 8, side // 8), bool))
    assert len(masks) == cells // 8
    data = pack_file(header, CgicSections(masks, b"", b"", b""))
    with pytest.raises(ImageError, match="megapixels"):
        codec.decode_array(data)
    assert side * side > MAX_PIXELS
