"""A tiny ViT DiffMatte for fast CPU tests of the inference tools (random weights only)."""

from diffmatte.config import LazyCall as L
from diffmatte.diffusion.gaussian import GaussianDiffusion
from diffmatte.diffusion.samplers import Sampler
from diffmatte.modeling.backbone.vit import ViT
from diffmatte.modeling.decoder.dunet import DUNet
from diffmatte.modeling.diffmatte import DiffMatte

model = L(DiffMatte)(
    backbone=L(ViT)(
        img_size=64,
        embed_dim=32,
        depth=2,
        num_heads=2,
        window_size=4,
        window_block_indexes=[0],
        residual_block_indexes=[1],
    ),
    decoder=L(DUNet)(downsample_in=[7, 8, 8, 8], upsample_in=[32, 16, 8, 8, 8]),
    diffusion=L(GaussianDiffusion)(schedule="linear", scale=0.2),
    sampler=L(Sampler)(method="ddpm", steps=1),
    backbone_trimap="value",
)
