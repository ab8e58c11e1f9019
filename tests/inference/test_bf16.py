"""diffmatte.inference.bf16: weights cast once, replicate padding in bf16, the dtype census."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from diffmatte.inference.bf16 import cast_floating, dtype_census, replicate_pad
from diffmatte.modeling.decoder.dunet import DUNet, FoldedBlock

pytestmark = pytest.mark.usefixtures("one_thread")


def _decoder_and_cache(height: int = 64, width: int = 96):
    torch.manual_seed(0)
    decoder = DUNet(downsample_in=(7, 8, 16, 16), upsample_in=(32, 16, 16, 8, 8)).eval()
    with torch.no_grad():
        for module in decoder.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    cond = torch.rand(1, 6, height, width) * 2 - 1
    features = torch.randn(1, 32, height // 16, width // 16)
    with torch.inference_mode():
        cache = decoder.prepare(cond, features)
    return decoder, cache


def _tensors(obj):
    """Every tensor reachable from a cache (dataclass fields, lists, modules' parameters)."""
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
    _, cache = _decoder_and_cache()
    cast = cast_floating(cache, torch.bfloat16)
    before, after = list(_tensors(cache)), list(_tensors(cast))
    assert len(before) == len(after) > 60
    for original, copy in zip(before, after, strict=True):
        assert original.dtype == torch.float32 and copy.dtype == torch.bfloat16
        assert copy.shape == original.shape
        if original.ndim == 4 and original.shape[1] > 1 and original.shape[-1] > 1:
            assert copy.is_contiguous(memory_format=torch.channels_last) == (
                original.is_contiguous(memory_format=torch.channels_last)
            )
        torch.testing.assert_close(copy.float(), original, atol=0, rtol=2**-8)
    assert isinstance(cast.down[0], FoldedBlock) and cast.tile_rows == cache.tile_rows
    # The cache's own blocks are untouched, and modules are copies.
    assert next(cache.down[0].emb_layers.parameters()).dtype == torch.float32
    assert cast.down[0].emb_layers is not cache.down[0].emb_layers


def test_shared_tensors_stay_shared():
    shared = torch.ones(3)
    cast = cast_floating({"a": shared, "b": [shared, torch.arange(3)]}, torch.bfloat16)
    assert cast["a"] is cast["b"][0] and cast["a"].dtype == torch.bfloat16
    assert cast["b"][1].dtype == torch.int64


def test_a_pre_cast_cache_removes_the_per_step_weight_casts():
    decoder, cache = _decoder_and_cache()
    x_t, t = torch.randn(1, 1, 64, 96), torch.tensor([0.3])

    def step(c):
        with torch.autocast("cpu", torch.bfloat16, cache_enabled=False):
            return decoder.forward_cached(x_t, t, c)

    with torch.inference_mode():
        fp32_logits = decoder.forward_cached(x_t, t, cache)
    autocast_logits, autocast_census = dtype_census(step, cache)
    cast_logits, cast_census = dtype_census(step, cast_floating(cache, torch.bfloat16))
    to_bf16 = ("torch.float32", "torch.bfloat16")
    weights = sum(1 for w in _tensors(cache) if w.ndim == 4 and w.shape[-1] in (1, 3))
    # Plain autocast casts every convolution weight at every step; the pre-cast cache only the
    # step's own inputs (x_t for the first block's two convolutions) and the time embedding MLP.
    assert autocast_census.casts[to_bf16] > weights
    assert cast_census.casts[to_bf16] <= 8
    assert cast_census.calls("aten.conv2d", "float32") == 0
    torch.testing.assert_close(cast_logits, autocast_logits, atol=0.05, rtol=0.02)
    assert (cast_logits.float() - fp32_logits).abs().max() < 0.1


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
