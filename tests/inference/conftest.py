"""A small real ViT/DUNet DiffMatte with non-trivial weights and BatchNorm statistics, and inputs
whose unknown region is not saturated, for the equivalence tests of the inference transforms."""

import pytest
import torch

from diffmatte.diffusion.gaussian import GaussianDiffusion
from diffmatte.diffusion.samplers import Sampler
from diffmatte.modeling.backbone.vit import ViT
from diffmatte.modeling.decoder.dunet import DUNet
from diffmatte.modeling.diffmatte import DiffMatte


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Random weights of moderate size and non-trivial BatchNorm statistics (so that folding
    them into the convolutions matters)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("weight") and param.ndim > 1:
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=gen) * (1.5 / fan_in) ** 0.5)
            elif name.endswith("weight"):
                param.copy_(1 + 0.2 * torch.randn(param.shape, generator=gen))
            else:
                param.copy_(0.1 * torch.randn(param.shape, generator=gen))
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(0.2 * torch.randn(module.num_features, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(module.num_features, generator=gen))


def tiny_model(seed: int = 0) -> DiffMatte:
    """ViT (one window block, one global block with a residual conv block) and DUNet."""
    backbone = ViT(
        in_chans=4,
        img_size=64,
        embed_dim=32,
        depth=2,
        num_heads=2,
        window_size=4,
        window_block_indexes=(0,),
        residual_block_indexes=(1,),
        pretrain_img_size=32,
    )
    decoder = DUNet(downsample_in=(7, 8, 16, 16), upsample_in=(32, 16, 16, 8, 8))
    model = DiffMatte(backbone, decoder, GaussianDiffusion("linear", scale=0.2), Sampler("ddpm", 1))
    randomize(model, seed)
    return model.eval()


def tiny_inputs(n: int, height: int, width: int, seed: int = 0):
    """image (N,3,H,W), trimap (top fifth background, bottom fifth foreground), noise."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(n, 3, height, width, generator=gen)
    trimap = torch.full((n, 1, height, width), 0.5)
    trimap[:, :, : height // 5] = 0.0
    trimap[:, :, -height // 5 :] = 1.0
    noise = torch.randn(n, 1, height, width, generator=gen)
    return image, trimap, noise


@pytest.fixture(scope="session")
def make_model():
    """``make_model(seed=0)``: a fresh :func:`tiny_model`."""
    return tiny_model


@pytest.fixture(scope="session")
def make_inputs():
    """``make_inputs(n, height, width, seed=0)``: :func:`tiny_inputs`."""
    return tiny_inputs


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="session")
def randomize_weights():
    """``randomize_weights(module, seed)``: :func:`randomize`."""
    return randomize
