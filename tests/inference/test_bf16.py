"""diffmatte.inference.bf16: weights cast once, replicate padding in bf16, the dtype census."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from diffmatte.inference.bf16 import cast_floating, dtype_census, replicate_pad
from diffmatte.inference.cached_decoder import CachedDUNet
from diffmatte.inference.fold import FoldedBlock
from diffmatte.modeling.decoder.dunet import DUNet

pytestmark = pytest.mark.usefixtures("one_thread")


def _decoder(height: int = 64, width: int = 96):
    torch.manual_seed(0)
    decoder = DUNet(downsample_in=(7, 8, 16, 16), upsample_in=(32, 16, 16, 8, 8)).eval()
    with torch.no_grad():
        for module in decoder.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    cond = torch.rand(1, 6, height, width) * 2 - 1
    features = torch.randn(1, 32, height // 16, width // 16)
    return decoder, cond, features


def _tensors(obj):
    """Every tensor reachable from an object (dataclass fields, lists, modules' parameters)."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, torch.nn.Module):
        yield from obj.parameters()
    elif dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from _tensors(getattr(obj, f.name))
    elif isinstance(obj, list | tuple):
        for item in obj:
            yield from _tensors(item)


def test_cast_floating_casts_every_tensor_once_and_keeps_layouts():
    decoder, cond, features = _decoder()
    folded = CachedDUNet(decoder)
    with torch.inference_mode():
        cache = folded.prepare(cond, features)
    tree = (cache, folded.down, folded.up, folded.head, decoder.time_embed)
    cast = cast_floating(tree, torch.bfloat16)
    before, after = list(_tensors(tree)), list(_tensors(cast))
    assert len(before) == len(after) > 60
    for original, copy in zip(before, after, strict=True):
        assert original.dtype == torch.float32 and copy.dtype == torch.bfloat16
        assert copy.shape == original.shape
        if original.ndim == 4 and original.shape[1] > 1 and original.shape[-1] > 1:
            assert copy.is_contiguous(memory_format=torch.channels_last) == (
                original.is_contiguous(memory_format=torch.channels_last)
            )
        torch.testing.assert_close(copy.float(), original, atol=0, rtol=2**-8)
    assert isinstance(cast[1][0], FoldedBlock) and cast[0].tile_rows == cache.tile_rows
    # The originals are untouched, and modules are copies.
    assert next(decoder.time_embed.parameters()).dtype == torch.float32
    assert cast[4] is not decoder.time_embed


def test_shared_tensors_stay_shared():
    shared = torch.ones(3)
    cast = cast_floating({"a": shared, "b": [shared, torch.arange(3)]}, torch.bfloat16)
    assert cast["a"] is cast["b"][0] and cast["a"].dtype == torch.bfloat16
    assert cast["b"][1].dtype == torch.int64


def test_bf16_decoder_step_runs_in_bf16_without_weight_casts():
    decoder, cond, features = _decoder()
    x_t, t = torch.randn(1, 1, 64, 96), torch.tensor([0.3])
    fp32, bf16 = CachedDUNet(decoder), CachedDUNet(decoder, dtype=torch.bfloat16)
    with torch.inference_mode():
        fp32_cache, bf16_cache = fp32.prepare(cond, features), bf16.prepare(cond, features)
        fp32_logits = fp32.step(x_t, t, fp32_cache)

    def autocast_step():
        with torch.autocast("cpu", torch.bfloat16, cache_enabled=False):
            return fp32.step(x_t, t, fp32_cache)

    autocast_logits, autocast_census = dtype_census(autocast_step)
    bf16_logits, census = dtype_census(bf16.step, x_t, t, bf16_cache)
    to_bf16 = ("torch.float32", "torch.bfloat16")
    weights = sum(1 for w in _tensors(fp32.down + fp32.up) if w.ndim == 4)
    # Plain autocast casts every convolution weight at every step; the bf16 form only casts the
    # step's inputs: x_t and the time embedding's sinusoid.
    assert autocast_census.casts[to_bf16] > weights
    assert census.casts == {to_bf16: 2}
    assert census.calls("aten.conv2d", "float32") == 0
    assert census.calls("aten.conv_transpose2d", "float32") == 0
    assert census.calls("aten.conv2d", "bfloat16") > 20
    assert census.calls("aten.linear", "float32") == 0
    assert census.calls("aten.replication_pad") == 0
    assert bf16_logits.dtype == torch.bfloat16
    torch.testing.assert_close(bf16_logits, autocast_logits, atol=0.05, rtol=0.02)
    assert (bf16_logits.float() - fp32_logits).abs().max() < 0.1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_replicate_pad_equals_f_pad(dtype, channels_last):
    x = torch.randn(2, 5, 6, 7).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out = replicate_pad(x, 2)
    assert torch.equal(out, F.pad(x.float(), (2, 2, 2, 2), mode="replicate").to(dtype))
    assert out.dtype == dtype
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_replicate_pad_stays_bf16_under_autocast():
    x = torch.randn(1, 4, 5, 5, dtype=torch.bfloat16)
    with torch.autocast("cpu", torch.bfloat16):
        assert F.pad(x, (1, 1, 1, 1), mode="replicate").dtype == torch.float32
        assert replicate_pad(x).dtype == torch.bfloat16


def test_census_counts_ops_by_dtype_and_casts():
    a, w = torch.randn(2, 3), torch.randn(4, 3)

    def fn():
        with torch.autocast("cpu", torch.bfloat16):
            return F.linear(a, w).float() + 1

    out, census = dtype_census(fn)
    assert out.dtype == torch.float32
    assert census.calls("aten.linear", "bfloat16") == 1
    assert census.calls("aten.linear", "float32") == 0
    assert census.casts[("torch.float32", "torch.bfloat16")] == 2
    assert census.casts[("torch.bfloat16", "torch.float32")] == 1
