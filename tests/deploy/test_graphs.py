"""The export-friendly forms of diffmatte/deploy/graphs.py against the modules they replace."""

import pytest
import torch
import torch.nn.functional as F

from diffmatte.deploy.graphs import BackboneGraph, bicubic_matrix
from diffmatte.modeling.backbone.vit import ViT


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
