"""A tiny random-weight ViT DiffMatte exported once for all deploy tests."""

from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO_ROOT / "tests" / "configs" / "tiny_vit.py"


def randomized(model):
    """Random BatchNorm statistics and affine weights, so that folding them is tested."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            shape = module.running_mean.shape
            module.running_mean.copy_(torch.randn(shape, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)
            module.weight.data.copy_(1 + torch.randn(shape, generator=generator) * 0.1)
            module.bias.data.copy_(torch.randn(shape, generator=generator) * 0.1)
    return model


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from diffmatte.deploy.export import export_model
    from diffmatte.inference.functional import build_model

    torch.manual_seed(0)
    model = randomized(build_model(TINY_CONFIG))
    out = tmp_path_factory.mktemp("tiny_onnx")
    with torch.no_grad():
        manifest = export_model(model, out, "tiny_vit")
    return model, out, manifest
