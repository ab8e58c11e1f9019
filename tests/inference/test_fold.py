"""BatchNorm folded into the decoder's convolutions equals the trained blocks, and the folded
weights are computed in float32 and cast once to the compute dtype."""

import pytest
import torch

from diffmatte.inference.fold import FoldedBlock, FoldedHead, bn_affine, fold_conv_bn
from diffmatte.modeling.decoder.dunet import BasicDownBlock, BasicUpBlock, MattingHead


def test_bn_affine_known_values():
    bn = torch.nn.BatchNorm2d(2).eval()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([2.0, 0.5]))
        bn.bias.copy_(torch.tensor([1.0, -1.0]))
        bn.running_mean.copy_(torch.tensor([3.0, 0.0]))
        bn.running_var.copy_(torch.tensor([4.0 - bn.eps, 0.25 - bn.eps]))
    scale, shift = bn_affine(bn)
    torch.testing.assert_close(scale, torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(shift, torch.tensor([-2.0, -1.0]))


@pytest.mark.parametrize("transposed", [False, True])
def test_fold_conv_bn_equals_conv_then_bn(transposed, randomize_weights):
    conv_type = torch.nn.ConvTranspose2d if transposed else torch.nn.Conv2d
    conv = conv_type(3, 4, 3, padding=1, bias=True)
    bn = torch.nn.BatchNorm2d(4)
    randomize_weights(torch.nn.Sequential(conv, bn), seed=1)
    bn.eval()
    x = torch.randn(2, 3, 5, 6, generator=torch.Generator().manual_seed(2))
    weight, bias = fold_conv_bn(conv, bn)
    fn = torch.nn.functional.conv_transpose2d if transposed else torch.nn.functional.conv2d
    with torch.no_grad():
        torch.testing.assert_close(fn(x, weight, bias, padding=1), bn(conv(x)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["down", "up"])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("low_res_upsample", [False, True])
def test_folded_block_equals_block(kind, channels_last, low_res_upsample, randomize_weights):
    block = (BasicDownBlock if kind == "down" else BasicUpBlock)(6, 8, 5)
    randomize_weights(block, seed=3)
    block.eval()
    gen = torch.Generator().manual_seed(4)
    x, emb = torch.randn(2, 6, 8, 10, generator=gen), torch.randn(2, 5, generator=gen)
    folded = FoldedBlock.from_block(block, torch.float32, channels_last, low_res_upsample)
    assert (folded.upsample_conv is not None) == (kind == "up" and low_res_upsample)
    with torch.no_grad():
        expected = block(x, emb)
        out = folded(x, folded.time_shift(emb))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_folded_head_equals_head(randomize_weights):
    head = MattingHead(8)
    randomize_weights(head, seed=5)
    head.eval()
    x = torch.randn(2, 8, 6, 7, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(FoldedHead.from_head(head)(x), head(x), atol=1e-5, rtol=0)


def test_weights_fold_in_float32_then_cast_once_and_share_when_unchanged(randomize_weights):
    block = BasicUpBlock(6, 8, 5)
    randomize_weights(block, seed=7)
    block.eval()
    fp32 = FoldedBlock.from_block(block, torch.float32, channels_last=False)
    bf16 = FoldedBlock.from_block(block, torch.bfloat16, channels_last=False)
    for name in ("time_weight", "conv1_weight", "conv1_bias", "conv2_weight", "shortcut_weight"):
        cast = getattr(bf16, name)
        assert cast.dtype == torch.bfloat16
        assert torch.equal(cast, getattr(fp32, name).to(torch.bfloat16)), name
    assert bf16.upsample_conv.weight.dtype == torch.bfloat16
    # In float32 and NCHW, weights that need no folding share the trained parameters' memory.
    assert fp32.time_weight.data_ptr() == block.emb_layers[0].weight.data_ptr()
    assert fp32.shortcut_weight.data_ptr() == block.upsample.conv.weight.data_ptr()
    assert not fp32.shortcut_weight.requires_grad
