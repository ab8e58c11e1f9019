"""Tests of the DUNet decoder: checkpoint layout, time embedding, wiring."""

import math

import pytest
import torch

from diffmatte.modeling.decoder import DUNet, timestep_embedding
from diffmatte.modeling.decoder.dunet import BasicDownBlock, BasicUpBlock

DECODER_PARAMS = {
    "ViTS": 5_268_481,
    "ViTB": 7_726_081,
    "ViTS_1024": 5_268_481,
    "res34": 9_591_681,
    "swin_t": 11_230_081,
}
PREFIX = "model.decoder."


@pytest.mark.parametrize("name", list(DECODER_PARAMS))
def test_state_dict_matches_release(released_keys, released_decoder_channels, name):
    spec = released_keys(name)
    model = DUNet(*released_decoder_channels[name])
    state = model.state_dict()
    expected = [k for k in spec["state_dict_order"] if k.startswith(PREFIX)]
    assert [PREFIX + k for k in state] == expected
    shapes = {**spec["params"], **spec["buffers"]}
    for key in expected:
        assert list(state[key[len(PREFIX) :]].shape) == shapes[key], key
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == spec["params_by_part"]["decoder"] == DECODER_PARAMS[name]
    # Strict load of random tensors with the released shapes.
    gen = torch.Generator().manual_seed(2)
    loaded = {k: torch.randn(v.shape, generator=gen).to(v.dtype) for k, v in state.items()}
    DUNet(*released_decoder_channels[name]).load_state_dict(loaded, strict=True)


@pytest.mark.parametrize("name", ["ViTS", "res34"])
def test_parameter_count_without_spec(released_decoder_channels, name):
    model = DUNet(*released_decoder_channels[name])
    assert sum(p.numel() for p in model.parameters()) == DECODER_PARAMS[name]


def test_mismatched_channel_lists_raise():
    with pytest.raises(ValueError, match="one entry more"):
        DUNet((7, 32, 64, 128), (384, 256, 128, 64))


def test_timestep_embedding_known_values():
    emb = timestep_embedding(torch.tensor([0.0, 1.0, 0.5]), dim=32)
    assert emb.shape == (3, 32) and emb.dtype == torch.float32
    torch.testing.assert_close(emb[0], torch.cat([torch.ones(16), torch.zeros(16)]))
    freqs = [10000 ** (-k / 16) for k in range(16)]
    for row, t in ((1, 1.0), (2, 0.5)):
        expected = [math.cos(t * f) for f in freqs] + [math.sin(t * f) for f in freqs]
        torch.testing.assert_close(emb[row], torch.tensor(expected), atol=1e-6, rtol=0)
    assert emb[1, 0].item() == pytest.approx(math.cos(1.0), abs=1e-7)
    assert emb[1, 16].item() == pytest.approx(math.sin(1.0), abs=1e-7)
    with pytest.raises(ValueError, match="even"):
        timestep_embedding(torch.zeros(1), dim=7)


@pytest.mark.parametrize("name", ["ViTS", "res34"])
def test_forward_shape_determinism_and_time_dependence(random_decoder, name):
    model, (x, t, features) = random_decoder(name)
    with torch.no_grad():
        out = model(x, t, features)
        again = model(x, t, features)
        other_t = model(x, 1.0 - t, features)
    assert out.shape == (2, 1, 32, 64)
    torch.testing.assert_close(out, again, atol=0, rtol=0)
    assert (out - other_t).abs().max() > 1e-4
    # Batch items are independent in eval mode.
    with torch.no_grad():
        single = model(x[1:], t[1:], features[1:])
    torch.testing.assert_close(single, out[1:], atol=1e-4, rtol=1e-4)


def test_feature_size_mismatch_raises(random_decoder):
    model, (x, t, features) = random_decoder("ViTS")
    with pytest.raises(ValueError, match="do not match the decoder input"):
        model(x, t, features[:, :, :, :-1])


def test_skip_concatenation_order_and_resolutions(random_decoder):
    model, (x, t, features) = random_decoder("res34", n=1)
    seen = {}

    def keep(name):
        def hook(_module, args, output):
            seen[name] = (args[0], output)

        return hook

    for i, block in enumerate(model.down_blks):
        block.register_forward_hook(keep(f"down{i}"))
    for i, block in enumerate(model.up_blks):
        block.register_forward_hook(keep(f"up{i}"))
    model.mid_blk.register_forward_hook(keep("mid"))
    with torch.no_grad():
        model(x, t, features)
    assert [seen[f"down{i}"][1].shape[-1] for i in range(4)] == [32, 16, 8, 4]
    assert seen["mid"][1].shape == (1, 256, 2, 4)
    h = seen["mid"][1]
    for i in range(4):
        block_in, block_out = seen[f"up{i}"]
        skip = seen[f"down{3 - i}"][1]
        torch.testing.assert_close(block_in, torch.cat([h, skip], dim=1), atol=0, rtol=0)
        h = block_out
    assert h.shape == (1, 32, 32, 64)


def _identity_bn(bn: torch.nn.BatchNorm2d) -> None:
    bn.reset_parameters()


@pytest.mark.parametrize("kind", ["down", "up"])
def test_time_shift_is_relu_of_linear_added_after_first_relu(kind):
    torch.manual_seed(3)
    block = (BasicDownBlock if kind == "down" else BasicUpBlock)(3, 4, 5).eval()
    with torch.no_grad():
        block.conv1.weight.zero_()
        shortcut = block.downsample.op if kind == "down" else block.upsample.conv
        shortcut.weight.zero_()
        block.conv2.weight.zero_()
        block.conv2.weight[range(4), range(4), 1, 1] = 1.0  # identity 3x3 conv
        _identity_bn(block.bn1)
        _identity_bn(block.bn2)
        block.bn2.bias.copy_(torch.tensor([0.0, -10.0, 0.5, 0.0]))
    emb = torch.randn(2, 5)
    out = block(torch.randn(2, 3, 6, 8), emb)
    size = (3, 4) if kind == "down" else (12, 16)
    assert out.shape == (2, 4, *size)
    shift = torch.relu(emb @ block.emb_layers[0].weight.t() + block.emb_layers[0].bias)
    bn2_scale = 1.0 / math.sqrt(1.0 + block.bn2.eps)
    expected = torch.relu(shift * bn2_scale + block.bn2.bias)
    torch.testing.assert_close(out, expected[:, :, None, None].expand_as(out))


def test_up_block_shortcut_is_bilinear_then_conv():
    torch.manual_seed(4)
    block = BasicUpBlock(2, 2, 3).eval()
    with torch.no_grad():
        block.conv1.weight.zero_()
        block.conv2.weight.zero_()
        block.upsample.conv.weight.zero_()
        block.upsample.conv.weight[range(2), range(2), 1, 1] = 1.0
        _identity_bn(block.bn1)
        _identity_bn(block.bn2)
        block.emb_layers[0].weight.zero_()
        block.emb_layers[0].bias.zero_()
    x = torch.tensor([[0.0, 4.0], [8.0, 12.0]]).expand(1, 2, 2, 2)
    out = block(x, torch.zeros(1, 3))
    # align_corners=False, x2: first output row = [0, 1, 3, 4] (edge clamped, 1/4-3/4 weights).
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([0.0, 1.0, 3.0, 4.0]))
    torch.testing.assert_close(out[0, 0, :, 0], torch.tensor([0.0, 2.0, 6.0, 8.0]))


def test_matting_head_layout(random_decoder):
    model, _ = random_decoder("ViTS")
    convs = model.matting_head.matting_convs
    assert isinstance(convs[1], torch.nn.BatchNorm2d) and convs[1].eps == 1e-5
    assert isinstance(convs[2], torch.nn.ReLU)
    assert convs[0].kernel_size == (3, 3) and convs[3].kernel_size == (1, 1)
