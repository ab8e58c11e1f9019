"""The fast inference path equals the straightforward one (to 1e-4), on a small real ViT/DUNet.

The reference is ``DiffMatte.sample(..., fast=False)``: the full 7-channel decoder input padded
at every step and ``DUNet.forward``. The fast path folds BatchNorm, caches step-independent work,
runs in channels-last memory format and, for large images, tiles the last up blocks.
"""

import numpy as np
import pytest
import torch

import diffmatte.modeling.decoder.dunet as dunet
from diffmatte.diffusion.gaussian import GaussianDiffusion
from diffmatte.diffusion.samplers import Sampler
from diffmatte.engine.predictor import predict_alpha, predict_alphas
from diffmatte.modeling.backbone.vit import (
    ViT,
    _query_chunks,
    attention_reference,
    rel_pos_attention,
)
from diffmatte.modeling.decoder.dunet import DUNet, UpsampleConv
from diffmatte.modeling.diffmatte import DiffMatte, autocast_dtype
from diffmatte.utils import cpu

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny convolutions run faster on one thread than on busy shared cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _randomize(model: torch.nn.Module, seed: int) -> None:
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


def _model(seed: int = 0) -> DiffMatte:
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
    _randomize(model, seed)
    return model.eval()


def _inputs(n: int, height: int, width: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(n, 3, height, width, generator=gen)
    trimap = torch.full((n, 1, height, width), 0.5)
    trimap[:, :, : height // 5] = 0.0
    trimap[:, :, -height // 5 :] = 1.0
    noise = torch.randn(n, 1, height, width, generator=gen)
    return image, trimap, noise


@pytest.fixture(scope="module")
def model():
    return _model()


# (64, 64): no padding; (37, 50): both sides padded; (64, 45): the quirk, the side that is
# already a multiple of 32 still grows by 32 (-> 96 x 64).
@pytest.mark.parametrize("size", [(64, 64), (37, 50), (64, 45)])
@pytest.mark.parametrize("strategy", ["ddim1", "ddim4", "ddpm3"])
def test_fast_path_equals_reference(model, size, strategy):
    image, trimap, noise = _inputs(2, *size)
    runs = {}
    for fast in (True, False):
        runs[fast] = model.sample(
            image,
            trimap,
            Sampler.from_strategy(strategy),
            noise=noise,
            generator=torch.Generator().manual_seed(3),
            return_trajectory=True,
            fast=fast,
        )
    unknown = runs[False].alpha[trimap == 0.5]
    assert unknown.std() > 0.02  # not saturated: differences would show
    torch.testing.assert_close(runs[True].alpha, runs[False].alpha, atol=1e-4, rtol=0)
    for fast_step, ref_step in zip(runs[True].trajectory, runs[False].trajectory, strict=True):
        torch.testing.assert_close(fast_step, ref_step, atol=1e-4, rtol=0)


def test_tiled_tail_equals_untiled_and_needs_its_halo(model, monkeypatch):
    image, trimap, noise = _inputs(1, 80, 70)  # padded to 96 x 96: 24 rows at 1/4 resolution
    sampler = Sampler.from_strategy("ddim3")
    whole = model.sample(image, trimap, sampler, noise=noise).alpha
    reference = model.sample(image, trimap, sampler, noise=noise, fast=False).alpha
    # One full-resolution row of the last block's 8 channels: 96 * 8 * 4 bytes; 4 of them are
    # one row at 1/4 resolution, so every tile is 1 or 2 rows there.
    row_bytes = 96 * 8 * 4
    cond, features = torch.zeros(1, 6, 96, 96), torch.zeros(1, 32, 6, 6)
    for rows in (1, 2):
        monkeypatch.setattr(model.decoder, "max_tile_bytes", 4 * rows * row_bytes)
        assert model.decoder.prepare(cond, features).tile_rows == rows
        tiled = model.sample(image, trimap, sampler, noise=noise).alpha
        torch.testing.assert_close(tiled, whole, atol=1e-6, rtol=0)
        torch.testing.assert_close(tiled, reference, atol=1e-4, rtol=0)
    monkeypatch.setattr(dunet, "TAIL_HALO", dunet.TAIL_HALO - 1)
    short_halo = model.sample(image, trimap, sampler, noise=noise).alpha
    assert (short_halo - whole).abs().max() > 1e-3


# The tiny decoder's up blocks have 16 to 48 input channels: a fold threshold of 0 runs their
# shortcuts through the matrix product, the default through the folded (1, 3) convolution.
@pytest.mark.parametrize(
    ("low_res_upsample", "fold_below"), [(False, 0), (True, 0), (True, dunet.FOLD_COLUMNS_BELOW)]
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_prepare_and_cached_step_match_forward(
    channels_last, low_res_upsample, fold_below, monkeypatch
):
    monkeypatch.setattr(dunet, "FOLD_COLUMNS_BELOW", fold_below)
    model = _model(seed=1).decoder
    model.low_res_upsample = low_res_upsample
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 7, 64, 96, generator=gen)
    features = torch.randn(2, 32, 4, 6, generator=gen)
    with torch.no_grad():
        cache = model.prepare(x[:, :6], features, channels_last=channels_last)
        assert all((block.upsample_conv is not None) == low_res_upsample for block in cache.up)
        for t in (torch.tensor([1.0, 0.3]), torch.zeros(2)):
            expected = model(x, t, features)
            out = model.forward_cached(x[:, 6:], t, cache)
            assert out.is_contiguous()
            torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="do not match the decoder input"):
        model.prepare(x[:, :6], features[..., :-1])


@pytest.mark.parametrize("fold_columns", [False, True])
@pytest.mark.parametrize("size", [(5, 7), (1, 3), (4, 1), (2, 2)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_low_resolution_upsample_conv_equals_conv_of_upsampled(size, channels_last, fold_columns):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 6, *size, generator=gen)
    weight = torch.randn(4, 6, 3, 3, generator=gen) / 5
    expected = torch.nn.functional.conv2d(
        torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False),
        weight,
        padding=1,
    )
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    upsample_conv = UpsampleConv.from_weight(weight, fold_columns)
    assert (upsample_conv.columns_weight is not None) == fold_columns
    assert (upsample_conv.matrix is None) == fold_columns
    out = upsample_conv(x)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_batched_sampling_equals_one_image_at_a_time(model):
    image, trimap, noise = _inputs(3, 40, 56, seed=2)
    sampler = Sampler.from_strategy("ddim3")
    batched = model.sample(image, trimap, sampler, noise=noise).alpha
    for i in range(3):
        single = model.sample(image[i : i + 1], trimap[i : i + 1], sampler, noise=noise[i : i + 1])
        torch.testing.assert_close(batched[i : i + 1], single.alpha, atol=1e-5, rtol=0)


@pytest.mark.parametrize("strategy", ["ddim3", "ddpm1", "ddpm2"])
def test_predict_alphas_equals_predict_alpha(model, strategy):
    rng = np.random.default_rng(0)
    images = [rng.random((40, 56, 3), dtype=np.float32) for _ in range(3)]
    trimap = _inputs(1, 40, 56)[1]
    sampler = Sampler.from_strategy(strategy)
    batched = predict_alphas(model, images, [trimap] * 3, sampler, seed=5)
    for image, prediction in zip(images, batched, strict=True):
        single = predict_alpha(model, image, trimap, sampler, seed=5)
        np.testing.assert_allclose(prediction.alpha, single.alpha, atol=1e-5, rtol=0)
    assert np.abs(batched[0].alpha - batched[1].alpha).max() > 1e-3
    if strategy == "ddim3":
        with pytest.raises(ValueError, match=r"expected \(40, 56, 3\) images"):
            predict_alphas(model, [images[0], images[0][:30]], [trimap, trimap], sampler)


def test_half_precision_on_cpu_needs_native_bf16(model, monkeypatch):
    assert autocast_dtype("fp32", "cpu") is None
    with pytest.raises(ValueError, match="needs a CUDA device.*float32"):
        autocast_dtype("fp16", "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        model.set_inference_options(precision="fp8")
    image, trimap, noise = _inputs(1, 32, 32)
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    with pytest.raises(ValueError, match="bf16' refused on the CPU: .*avx512_bf16"):
        autocast_dtype("bf16", "cpu")
    try:
        model.set_inference_options(precision="bf16")
        with pytest.raises(ValueError, match="refused on the CPU"):
            model.sample(image, trimap, noise=noise)
        monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
        assert autocast_dtype("bf16", "cpu") == torch.bfloat16
        model.set_inference_options(precision="fp16")
        with pytest.raises(ValueError, match="needs a CUDA device"):
            model.sample(image, trimap, noise=noise)
        model.set_inference_options(cuda_graph=True)
        with pytest.raises(ValueError, match="CUDA-graph capture needs a CUDA device"):
            model.sample(image, trimap, noise=noise)
    finally:
        model.set_inference_options()
    # The straightforward path ignores the options: it is the float32 reference.
    assert model.sample(image, trimap, noise=noise).alpha.dtype == torch.float32


@pytest.mark.parametrize(
    ("grid", "queries"), [((15, 11), 25), ((15, 11), 7), ((15, 11), 500), ((6, 5), 1)]
)
def test_chunked_attention_in_whole_rows_and_row_pieces(grid, queries):
    gen = torch.Generator().manual_seed(6)
    b, heads, dim = 2, 3, 8
    q, k, v = (torch.randn(b, heads, grid[0] * grid[1], dim, generator=gen) for _ in range(3))
    rel_h, rel_w = torch.randn(9, dim, generator=gen), torch.randn(9, dim, generator=gen)
    budget = queries * b * heads * grid[0] * grid[1] * 4
    with torch.no_grad():
        expected = attention_reference(q, k, v, rel_h, rel_w, grid, grid, dim**-0.5)
        out = rel_pos_attention(q, k, v, rel_h, rel_w, grid, grid, dim**-0.5, budget)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    chunks = _query_chunks(grid, queries)
    assert [start for start, _ in chunks] == [0] + [stop for _, stop in chunks[:-1]]
    assert chunks[-1][1] == grid[0] * grid[1]
    assert max(stop - start for start, stop in chunks) <= queries


def test_global_attention_memory_is_bounded_at_4096():
    # ViT-S at 4096 x 4096: 256 x 256 = 65,536 tokens, 6 heads; each chunk's float32 bias must
    # stay within the budget (a full one would be 96 GiB).
    tokens, heads, budget = 256 * 256, 6, 256 * 2**20
    bytes_per_query = heads * tokens * 4
    chunks = _query_chunks((256, 256), budget // bytes_per_query)
    assert max(stop - start for start, stop in chunks) * bytes_per_query <= budget
    assert chunks[-1][1] == tokens


@pytest.mark.slow
def test_compiled_decoder_step_equals_eager(model):
    image, trimap, noise = _inputs(1, 37, 50)
    sampler = Sampler.from_strategy("ddim2")
    eager = model.sample(image, trimap, sampler, noise=noise).alpha
    try:
        model.set_inference_options(compile_decoder=True)
        compiled = model.sample(image, trimap, sampler, noise=noise).alpha
    finally:
        model.set_inference_options()
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=0)


def test_bf16_on_cpu_is_close_to_fp32(monkeypatch):
    # bf16 is correct (only slow) without native support, so the check runs on every CPU.
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    model = _model()
    image, trimap, noise = _inputs(1, 48, 40)
    sampler = Sampler.from_strategy("ddim3")
    fp32 = model.sample(image, trimap, sampler, noise=noise).alpha
    try:
        model.set_inference_options(precision="bf16")
        bf16 = model.sample(image, trimap, sampler, noise=noise).alpha
    finally:
        model.set_inference_options()
    assert bf16.dtype == torch.float32
    difference = (bf16 - fp32).abs()
    assert 0 < difference.max() < 0.05 and difference.mean() < 5e-3


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_on_cuda_is_close_to_fp32(precision):
    model = _model().cuda()
    image, trimap, noise = (x.cuda() for x in _inputs(2, 96, 80))
    sampler = Sampler.from_strategy("ddim4")
    fp32 = model.sample(image, trimap, sampler, noise=noise).alpha
    try:
        model.set_inference_options(precision=precision)
        half = model.sample(image, trimap, sampler, noise=noise).alpha
    finally:
        model.set_inference_options()
    assert half.dtype == torch.float32
    assert (half - fp32).abs().mean() < 1e-2


@pytest.mark.cuda
@requires_cuda
def test_cuda_graph_and_batching_on_cuda():
    model = _model().cuda()
    image, trimap, noise = (x.cuda() for x in _inputs(2, 96, 80))
    sampler = Sampler.from_strategy("ddim4")
    eager = model.sample(image, trimap, sampler, noise=noise).alpha
    reference = model.sample(image, trimap, sampler, noise=noise, fast=False).alpha
    torch.testing.assert_close(eager, reference, atol=1e-4, rtol=0)
    try:
        model.set_inference_options(cuda_graph=True)
        graphed = model.sample(image, trimap, sampler, noise=noise).alpha
    finally:
        model.set_inference_options()
    torch.testing.assert_close(graphed, eager, atol=1e-5, rtol=0)
    single = model.sample(image[:1], trimap[:1], sampler, noise=noise[:1]).alpha
    torch.testing.assert_close(eager[:1], single, atol=1e-5, rtol=0)
