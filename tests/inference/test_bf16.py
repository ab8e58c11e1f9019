"""diffmatte.inference.bf16: weights cast once, replicate padding in bf16, the dtype census."""

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from diffmatte.diffusion.samplers import Sampler
from diffmatte.inference import InferenceOptions, build_inference_model
from diffmatte.inference.benchmark import (
    PRECISION_VARIANTS,
    interleaved_times,
    precision_variant,
    step_census,
)
from diffmatte.inference.bf16 import cast_floating, dtype_census, replicate_pad
from diffmatte.inference.cached_decoder import CachedDUNet
from diffmatte.inference.fold import FoldedBlock
from diffmatte.inference.functional import build_model
from diffmatte.modeling.decoder.dunet import DUNet

REPO = Path(__file__).resolve().parents[2]

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
    # The up blocks' replicate padding stays bf16 (autocast would run it in float32).
    assert census.calls("aten.pad", "bfloat16") > 0 and census.calls("aten.pad", "float32") == 0
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


def _bf16_flops(census, dtype: str) -> int:
    return sum(
        census.calls(op, dtype)
        for op in (
            "aten.conv2d",
            "aten.conv_transpose2d",
            "aten.linear",
            "aten.matmul",
            "aten.scaled_dot_product_attention",
            "aten.layer_norm",
        )
    )


def test_bf16_inference_form_casts_weights_once_and_runs_in_bf16(make_model, make_inputs):
    model = make_model()
    trained = {name: value.clone() for name, value in model.state_dict().items()}
    form = build_inference_model(model, InferenceOptions(precision="bf16"))
    # A bf16 copy of the backbone owned by the inference form; the trained model is untouched.
    assert {p.dtype for p in form.backbone.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in form.backbone.parameters())
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    fp32_form = build_inference_model(model)
    assert all(
        a is b
        for a, b in zip(fp32_form.backbone.parameters(), model.backbone.parameters(), strict=True)
    )

    image, trimap, noise = make_inputs(1, 64, 96)
    denoise, per_image = dtype_census(form.denoiser, image, trimap)
    logits_x0, per_step = dtype_census(denoise, noise, torch.tensor([0.5]))
    to_bf16, to_fp32 = ("torch.float32", "torch.bfloat16"), ("torch.bfloat16", "torch.float32")
    # Once per image: the backbone input and the decoder's conditioning are cast, nothing else
    # (no weight); every convolution, linear, attention and LayerNorm runs in bf16.
    assert per_image.casts[to_bf16] == 2 and per_image.casts[to_fp32] == 0
    assert _bf16_flops(per_image, "float32") == 0
    assert per_image.calls("aten.scaled_dot_product_attention", "bfloat16") == 2
    assert _bf16_flops(per_image, "bfloat16") > 20
    # Once per step: x_t and the time embedding's sinusoid in, the logits out.
    assert per_step.casts == {to_bf16: 2, to_fp32: 1}
    assert _bf16_flops(per_step, "float32") == 0 and _bf16_flops(per_step, "bfloat16") > 40
    assert logits_x0.dtype == torch.float32
    for name, value in model.state_dict().items():
        assert torch.equal(value, trained[name])


def _alphas(model, size: int, strategy: str):
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, size, size, generator=gen)
    trimap = torch.full((1, 1, size, size), 0.5)
    trimap[..., : size // 4, :] = 0.0
    trimap[..., -size // 4 :, :] = 1.0
    noise = torch.randn(1, 1, size, size, generator=gen)
    sampler = Sampler.from_strategy(strategy)
    return [
        build_inference_model(model, InferenceOptions(precision=precision))
        .sample(image, trimap, sampler, noise=noise)
        .alpha
        for precision in ("fp32", "bf16")
    ]


def test_bf16_alphas_of_a_default_initialised_vit_are_within_a_level(build_tiny_model):
    fp32, bf16 = _alphas(build_tiny_model().eval(), 64, "ddim4")
    delta = (bf16 - fp32).abs()
    assert bf16.dtype == torch.float32
    assert 0 < delta.max() <= 1 / 255 and delta.mean() <= 0.25 / 255


@pytest.mark.parametrize("config", ["ViTS", pytest.param("ViTB", marks=pytest.mark.slow)])
def test_bf16_alphas_of_default_initialised_released_configs(config):
    torch.manual_seed(0)
    model = build_model(REPO / "configs" / f"{config}.py")
    fp32, bf16 = _alphas(model, 96, "ddim10")
    delta = (bf16 - fp32).abs()
    assert 0 < delta.max() <= 2 / 255 and delta.mean() <= 0.25 / 255


def test_profiling_variants_time_and_count_casts(make_model, make_inputs):
    model = make_model()
    image, trimap, noise = make_inputs(1, 32, 48)
    runs = {name: precision_variant(model, name) for name in PRECISION_VARIANTS}
    results = interleaved_times(runs, image, trimap, noise, Sampler.from_strategy("ddim2"), 1)
    assert list(results) == ["fp32", "bf16-autocast", "bf16"]
    assert results["fp32"][1:] == (1.0, 0.0)
    assert all(median > 0 and 0 < delta < 0.1 for median, _, delta in list(results.values())[1:])
    to_bf16 = ("torch.float32", "torch.bfloat16")
    autocast_casts = step_census(runs["bf16-autocast"], image, trimap).casts[to_bf16]
    assert autocast_casts > 30
    assert step_census(runs["bf16"], image, trimap).casts[to_bf16] == 2
    assert step_census(runs["fp32"], image, trimap).casts == {}
    with pytest.raises(ValueError, match="variant must be one of"):
        precision_variant(model, "fp8")
