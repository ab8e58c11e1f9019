"""Tests of the spectral-norm ResNet-34-D encoder (res34 backbone)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffmatte.modeling.backbone.resnet import (
    ResNetEncoder,
    SpectralNorm,
    checkpoint_filter_fn,
    l2_normalize,
)

PREFIX = "model.backbone."


@pytest.fixture(scope="module")
def encoder() -> ResNetEncoder:
    torch.manual_seed(0)
    return ResNetEncoder().eval()


@pytest.fixture(scope="module")
def res34_keys(released_keys):
    return released_keys("res34")


def _randomize_bn(model: nn.Module, seed: int) -> None:
    """Give BatchNorms non-trivial statistics so eval outputs depend on every tensor."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def test_state_dict_matches_released_keys_shapes_and_order(encoder, res34_keys):
    expected = [k for k in res34_keys["state_dict_order"] if k.startswith(PREFIX)]
    state = encoder.state_dict()
    assert [PREFIX + k for k in state] == expected
    shapes = {**res34_keys["params"], **res34_keys["buffers"]}
    for key, value in state.items():
        assert list(value.shape) == shapes[PREFIX + key], key


def test_parameter_counts_match_released_model(encoder, res34_keys):
    total = sum(p.numel() for p in encoder.parameters())
    frozen = sum(p.numel() for p in encoder.parameters() if not p.requires_grad)
    assert total == res34_keys["params_by_part"]["backbone"] == 14_275_894
    assert frozen == res34_keys["spectral_norm_u_v_params(requires_grad=False)"] == 53_110
    # Every frozen parameter is a spectral-norm vector.
    names = [n for n, p in encoder.named_parameters() if not p.requires_grad]
    assert names and all(n.endswith(("weight_u", "weight_v")) for n in names)


def test_strict_load_of_random_state_dict(encoder):
    g = torch.Generator().manual_seed(1)
    random_state = {
        k: torch.randn(v.shape, generator=g) if v.is_floating_point() else v + 3
        for k, v in encoder.state_dict().items()
    }
    fresh = ResNetEncoder()
    fresh.load_state_dict(random_state, strict=True)
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, random_state[key]), key


@pytest.mark.parametrize(("n", "h", "w"), [(2, 64, 96), (1, 96, 128)])
def test_forward_shape(encoder, n, h, w):
    with torch.no_grad():
        out = encoder(torch.randn(n, 6, h, w))
    assert out.shape == (n, 512, h // 32, w // 32)
    assert encoder.out_channels == 512 and encoder.size_divisibility == 32


def test_wrong_channel_count_is_rejected(encoder):
    with pytest.raises(ValueError, match="expects"):
        encoder(torch.randn(1, 4, 64, 64))


def test_stem_and_stage_layout():
    enc = ResNetEncoder(layers=(1, 1, 1, 1))
    convs = [enc.conv1.module, enc.conv2.module, enc.conv3.module]
    assert [c.stride for c in convs] == [(2, 2), (1, 1), (2, 2)]
    assert all(c.bias is None for m in enc.modules() if isinstance(m, nn.Conv2d) for c in [m])
    assert all(m.eps == 1e-5 for m in enc.modules() if isinstance(m, nn.BatchNorm2d))
    assert enc.layer1[0].downsample is None
    pool = enc.layer2[0].downsample[0]
    assert isinstance(pool, nn.AvgPool2d) and pool.kernel_size == 2 and pool.stride == 2
    assert enc.layer2[0].conv1.module.stride == (2, 2)
    # GCA's initialisation: trimap channels and last BN of each residual branch start at zero.
    assert torch.all(enc.conv1.module.weight_bar[:, 3:] == 0)
    assert torch.all(enc.layer3[0].bn2.weight == 0)


def _sn_1x1(weight: torch.Tensor) -> SpectralNorm:
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], 1, bias=False)
    sn = SpectralNorm(conv, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        sn.module.weight_bar.copy_(weight.reshape(conv.weight_bar.shape))
    return sn


def test_spectral_norm_state_layout():
    sn = SpectralNorm(nn.Conv2d(3, 5, 3, bias=False))
    names = [n for n, _ in sn.named_parameters()]
    assert names == ["module.weight_u", "module.weight_v", "module.weight_bar"]
    assert sn.module.weight_u.shape == (5,) and sn.module.weight_v.shape == (27,)
    assert not sn.module.weight_u.requires_grad and not sn.module.weight_v.requires_grad
    assert sn.module.weight_bar.requires_grad
    assert sn.module.weight_u.norm().item() == pytest.approx(1.0, abs=1e-6)


def test_eval_forward_uses_stored_vectors_and_keeps_them():
    torch.manual_seed(2)
    sn = SpectralNorm(nn.Conv2d(4, 6, 3, padding=1, bias=False)).eval()
    u0, v0 = sn.module.weight_u.clone(), sn.module.weight_v.clone()
    x = torch.randn(2, 4, 8, 8)
    out = sn(x)
    assert torch.equal(sn.module.weight_u, u0) and torch.equal(sn.module.weight_v, v0)
    w = sn.module.weight_bar
    sigma = torch.dot(u0, w.reshape(6, -1) @ v0)
    torch.testing.assert_close(out, F.conv2d(x, w / sigma, padding=1), rtol=1e-5, atol=1e-6)


def test_train_forward_does_one_power_iteration_in_place():
    torch.manual_seed(3)
    sn = SpectralNorm(nn.Conv2d(4, 6, 3, padding=1, bias=False)).train()
    w = sn.module.weight_bar.detach().reshape(6, -1)
    u0 = sn.module.weight_u.clone()
    v1 = w.t() @ u0
    v1 = v1 / (v1.norm() + 1e-12)
    u1 = w @ v1
    u1 = u1 / (u1.norm() + 1e-12)
    x = torch.randn(1, 4, 5, 5)
    out = sn(x)
    torch.testing.assert_close(sn.module.weight_v, v1)
    torch.testing.assert_close(sn.module.weight_u, u1)
    sigma = torch.dot(u1, w @ v1)
    expected = F.conv2d(x, sn.module.weight_bar / sigma, padding=1)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    # Gradients reach the raw kernel through sigma, not the frozen vectors.
    out.sum().backward()
    assert sn.module.weight_bar.grad is not None and sn.module.weight_u.grad is None


def test_sigma_converges_to_largest_singular_value():
    # W = U diag(5, 2, 0.5) V^T has spectral norm exactly 5.
    g = torch.Generator().manual_seed(4)
    u_basis, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    v_basis, _ = torch.linalg.qr(torch.randn(4, 3, generator=g, dtype=torch.float64))
    w = u_basis @ torch.diag(torch.tensor([5.0, 2.0, 0.5], dtype=torch.float64)) @ v_basis.T
    sn = _sn_1x1(w.float()).train()
    x = torch.randn(1, 4, 2, 2)
    for _ in range(30):
        sn(x)
    assert sn.sigma().item() == pytest.approx(5.0, rel=1e-5)
    normalized = sn.normalized_weight().reshape(3, 4).double()
    assert torch.linalg.matrix_norm(normalized, ord=2).item() == pytest.approx(1.0, rel=1e-5)
    # Leading singular vectors (up to sign) are recovered.
    assert abs(torch.dot(sn.module.weight_u.double(), u_basis[:, 0]).item()) == pytest.approx(
        1.0, abs=1e-5
    )


def test_l2_normalize_known_values():
    torch.testing.assert_close(l2_normalize(torch.tensor([3.0, 4.0])), torch.tensor([0.6, 0.8]))
    assert torch.equal(l2_normalize(torch.zeros(3)), torch.zeros(3))


def test_encoder_train_mode_changes_u_v_eval_does_not():
    torch.manual_seed(5)
    enc = ResNetEncoder(layers=(1, 1, 1, 1))
    x = torch.randn(2, 6, 32, 32)
    u0 = enc.layer2[0].downsample[1].module.weight_u.clone()
    enc.eval()
    with torch.no_grad():
        a = enc(x)
        b = enc(x)
    assert torch.equal(a, b)
    assert torch.equal(enc.layer2[0].downsample[1].module.weight_u, u0)
    enc.train()
    enc(x)
    assert not torch.allclose(enc.layer2[0].downsample[1].module.weight_u, u0)


def test_checkpoint_filter_widens_first_conv_without_changing_rgb_response():
    torch.manual_seed(6)
    rgb = ResNetEncoder(in_chans=3, layers=(1, 1, 1, 1)).eval()
    _randomize_bn(rgb, 7)
    with torch.no_grad():
        for p in rgb.parameters():
            if p.requires_grad and p.ndim == 4:
                p.add_(torch.randn_like(p) * 0.05)
    # Converged power iterations keep sigma well away from zero (random u, v need not).
    for m in rgb.modules():
        if isinstance(m, SpectralNorm):
            for _ in range(20):
                m.power_iteration()
    checkpoint = {
        "epoch": 3,
        "state_dict": {"module." + k: v for k, v in rgb.state_dict().items()}
        | {"module.fc.weight": torch.zeros(10, 512)},
    }
    target = ResNetEncoder(in_chans=6, layers=(1, 1, 1, 1)).eval()
    converted = checkpoint_filter_fn(checkpoint, target)
    assert "fc.weight" not in converted and "conv1.module.weight_bar" in converted
    assert converted["conv1.module.weight_bar"].shape == (32, 6, 3, 3)
    assert converted["conv1.module.weight_v"].shape == (54,)
    assert torch.all(converted["conv1.module.weight_v"].reshape(6, 3, 3)[3:] == 0)
    target.load_state_dict(converted, strict=True)
    assert target.conv1.sigma().item() == pytest.approx(rgb.conv1.sigma().item(), rel=1e-6)
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = rgb(image)
        got = target(torch.cat([image, torch.zeros(1, 3, 64, 64)], dim=1))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # The input state dict is left as it was.
    assert checkpoint["state_dict"]["module.conv1.module.weight_bar"].shape == (32, 3, 3, 3)
