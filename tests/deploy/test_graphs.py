"""The export-friendly forms of diffmatte/deploy/graphs.py against the modules they replace."""

import pytest
import torch
import torch.nn.functional as F

from diffmatte.deploy.graphs import (
    BackboneGraph,
    DecoderPrepareGraph,
    DecoderStepGraph,
    bicubic_matrix,
)
from diffmatte.modeling.backbone.vit import ViT
from diffmatte.modeling.decoder.dunet import DUNet


@pytest.mark.parametrize("side", [14, 32])
def test_bicubic_matrix_equals_torch_interpolate(side):
    grid = torch.randn(8, side, side, generator=torch.Generator().manual_seed(side))
    for height, width in [(1, 1), (2, 7), (side, side), (side + 1, 3), (45, 64), (128, 97)]:
        expected = F.interpolate(
            grid[None], size=(height, width), mode="bicubic", align_corners=False
        )[0]
        resized = bicubic_matrix(side, height) @ grid @ bicubic_matrix(side, width).t()
        assert torch.allclose(resized, expected, rtol=0, atol=2e-5), (height, width)


def test_bicubic_matrix_is_the_identity_at_the_same_size():
    assert torch.equal(bicubic_matrix(14, 14), torch.eye(14))


@torch.no_grad()
def test_vit_graph_equals_the_backbone_on_odd_grids():
    # Window and global blocks with relative positions, a position table of 4 x 4 slots.
    vit = ViT(
        img_size=64,
        patch_size=16,
        in_chans=4,
        embed_dim=32,
        depth=2,
        num_heads=2,
        window_size=3,
        window_block_indexes=(0,),
        residual_block_indexes=(1,),
        use_rel_pos=True,
        pretrain_img_size=64,
    ).eval()
    graph = BackboneGraph(vit, query_chunks=3)
    for height, width in [(64, 64), (48, 112), (160, 32)]:
        x = torch.randn(1, 4, height, width, generator=torch.Generator().manual_seed(height))
        assert torch.allclose(graph(x), vit(x), rtol=0, atol=1e-5), (height, width)


@torch.no_grad()
@pytest.mark.parametrize(
    ("downsample_in", "upsample_in", "stride"),
    [((7, 8, 8, 8), (16, 16, 8, 8, 8), 16), ((7, 8, 8, 8, 8), (16, 16, 16, 8, 8, 8), 32)],
    ids=["vit_decoder", "res34_swin_decoder"],
)
def test_banded_step_equals_the_plain_step(downsample_in, upsample_in, stride):
    decoder = DUNet(downsample_in, upsample_in, time_embed_dim=8).eval()
    generator = torch.Generator().manual_seed(0)
    for module in decoder.modules():  # BatchNorm statistics away from the identity
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator))
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    prepare = DecoderPrepareGraph(decoder)
    plain, banded = DecoderStepGraph(decoder), DecoderStepGraph(decoder, bands=3)
    for height, width in [(32, 64), (96, 32), (160, 96)]:
        condition = torch.randn(2, 6, height, width, generator=generator)
        features = torch.randn(2, 16, height // stride, width // stride, generator=generator)
        args = (torch.randn(2, 1, height, width, generator=generator), torch.rand(2))
        args += prepare(condition, features)
        assert torch.allclose(banded(*args), plain(*args), rtol=0, atol=1e-6), (height, width)
