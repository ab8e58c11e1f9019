"""Shared transformer layers: stochastic depth and the feed-forward block."""

import pytest
import torch

from diffmatte.modeling.backbone.layers import DropPath, Mlp


def test_drop_path_drops_whole_samples_and_keeps_the_mean():
    torch.manual_seed(0)
    layer = DropPath(0.25)
    x = torch.ones(4000, 3, 5)
    out = layer(x)
    per_sample = out.flatten(1)
    # Each sample is either all zero or all 1 / (1 - p).
    torch.testing.assert_close(per_sample.unique(), torch.tensor([0.0, 4 / 3]))
    assert (per_sample.min(1).values == per_sample.max(1).values).all()
    assert (per_sample[:, 0] == 0).float().mean().item() == pytest.approx(0.25, abs=0.03)
    assert out.mean().item() == pytest.approx(1.0, abs=0.05)
    layer.eval()
    assert layer(x) is x


def test_drop_path_per_token_with_two_sample_dims():
    torch.manual_seed(1)
    out = DropPath(0.5)(torch.ones(8, 50, 6), sample_dims=2)
    tokens = out.reshape(400, 6)
    assert (tokens.min(1).values == tokens.max(1).values).all()
    assert 0 < (tokens[:, 0] == 0).sum() < 400  # some tokens of one sample kept, some dropped


def test_drop_path_rejects_bad_probability():
    with pytest.raises(ValueError, match="drop_prob must be in"):
        DropPath(1.0)


def test_mlp_is_linear_gelu_linear():
    torch.manual_seed(2)
    mlp = Mlp(4, 8)
    x = torch.randn(2, 3, 4)
    expected = mlp.fc2(torch.nn.functional.gelu(mlp.fc1(x)))
    torch.testing.assert_close(mlp(x), expected)
    assert [name for name, _ in mlp.named_parameters()] == [
        "fc1.weight",
        "fc1.bias",
        "fc2.weight",
        "fc2.bias",
    ]
