"""The inference form of a trained DiffMatte equals its straightforward sampling (to 1e-4) under
every option, batches like single images, and leaves the trained model untouched.

The reference is ``DiffMatte.sample``: the full 7-channel decoder input padded at every step and
``DUNet.forward``. The default inference form folds BatchNorm, caches step-independent work, runs
in channels-last memory format, attends in query chunks and, for large images, tiles the last up
blocks.
"""

import numpy as np
import pytest
import torch

from diffmatte.diffusion.samplers import Sampler
from diffmatte.inference import InferenceOptions, Predictor, build_inference_model
from diffmatte.inference.functional import predict_alpha, predict_alphas
from diffmatte.modeling.diffmatte import DiffMatte
from diffmatte.utils import cpu

pytestmark = pytest.mark.usefixtures("one_thread")

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


# (64, 64): no padding; (37, 50): both sides padded; (64, 45): the quirk, the side that is
# already a multiple of 32 still grows by 32 (-> 96 x 64).
@pytest.mark.parametrize("size", [(64, 64), (37, 50), (64, 45)])
@pytest.mark.parametrize("strategy", ["ddim1", "ddim4", "ddpm3"])
def test_inference_model_equals_reference(model, make_inputs, size, strategy):
    image, trimap, noise = make_inputs(2, *size)
    runs = {}
    for name, sampling in (("fast", build_inference_model(model)), ("reference", model)):
        runs[name] = sampling.sample(
            image,
            trimap,
            Sampler.from_strategy(strategy),
            noise=noise,
            generator=torch.Generator().manual_seed(3),
            return_trajectory=True,
        )
    unknown = runs["reference"].alpha[trimap == 0.5]
    assert unknown.std() > 0.02  # not saturated: differences would show
    torch.testing.assert_close(runs["fast"].alpha, runs["reference"].alpha, atol=1e-4, rtol=0)
    for fast_step, ref_step in zip(
        runs["fast"].trajectory, runs["reference"].trajectory, strict=True
    ):
        torch.testing.assert_close(fast_step, ref_step, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "changes",
    [
        {"reference": True},
        {"attention": "materialised"},
        {"cached_decoder": False},
        {"low_res_upsample": False},
        {"channels_last": False},
        {"max_attention_bias_bytes": 2048},
    ],
)
def test_every_option_equals_reference(model, make_inputs, changes):
    image, trimap, noise = make_inputs(2, 37, 50)
    sampler = Sampler.from_strategy("ddim3")
    reference = model.sample(image, trimap, sampler, noise=noise).alpha
    inference = build_inference_model(model, InferenceOptions(**changes))
    alpha = inference.sample(image, trimap, sampler, noise=noise).alpha
    torch.testing.assert_close(alpha, reference, atol=1e-4, rtol=0)
    if changes == {"reference": True}:
        assert torch.equal(alpha, reference)
        assert inference.backbone is model.backbone and inference.decoder is None
    if changes == {"cached_decoder": False}:
        assert inference.decoder is None


class _OtherDecoder(torch.nn.Module):
    """A decoder without a cached form (not a DUNet)."""

    def __init__(self, dunet: torch.nn.Module) -> None:
        super().__init__()
        self.dunet = dunet

    def forward(self, x, t, features):
        return self.dunet(x, t, features)


def test_decoder_without_cached_form_runs_at_every_step(model, make_inputs):
    other = DiffMatte(model.backbone, _OtherDecoder(model.decoder), model.diffusion, model.sampler)
    inference = build_inference_model(other.eval())
    assert inference.decoder is None and inference.backbone is not other.backbone
    image, trimap, noise = make_inputs(1, 37, 50)
    sampler = Sampler.from_strategy("ddim2")
    alpha = inference.sample(image, trimap, sampler, noise=noise).alpha
    torch.testing.assert_close(
        alpha, model.sample(image, trimap, sampler, noise=noise).alpha, atol=1e-4, rtol=0
    )


def test_trained_model_is_untouched_and_parameters_are_shared(make_model, make_inputs):
    model = make_model(seed=2)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    modules = dict(model.named_modules())
    attributes = {name: set(vars(module)) for name, module in modules.items()}
    children = {name: dict(module._modules) for name, module in modules.items()}
    inference = build_inference_model(model)
    image, trimap, noise = make_inputs(1, 40, 56)
    inference.sample(image, trimap, Sampler.from_strategy("ddim2"), noise=noise)
    assert dict(model.named_modules()) == modules
    for name, module in modules.items():
        assert set(vars(module)) == attributes[name], name
        assert dict(module._modules) == children[name], name
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    backbone_params = {p.data_ptr() for p in inference.backbone.parameters()}
    assert backbone_params == {p.data_ptr() for p in model.backbone.parameters()}
    assert inference.model is model and inference.sampler is model.sampler


def test_batched_sampling_equals_one_image_at_a_time(model, make_inputs):
    image, trimap, noise = make_inputs(3, 40, 56, seed=2)
    sampler = Sampler.from_strategy("ddim3")
    inference = build_inference_model(model)
    batched = inference.sample(image, trimap, sampler, noise=noise).alpha
    for i in range(3):
        single = inference.sample(
            image[i : i + 1], trimap[i : i + 1], sampler, noise=noise[i : i + 1]
        )
        torch.testing.assert_close(batched[i : i + 1], single.alpha, atol=1e-5, rtol=0)


@pytest.mark.parametrize("strategy", ["ddim3", "ddpm1", "ddpm2"])
def test_predict_alphas_equals_predict_alpha(model, make_inputs, strategy):
    rng = np.random.default_rng(0)
    images = [rng.random((40, 56, 3), dtype=np.float32) for _ in range(3)]
    trimap = make_inputs(1, 40, 56)[1]
    sampler = Sampler.from_strategy(strategy)
    inference = build_inference_model(model)
    batched = predict_alphas(inference, images, [trimap] * 3, sampler, seed=5)
    for image, prediction in zip(images, batched, strict=True):
        single = predict_alpha(inference, image, trimap, sampler, seed=5)
        np.testing.assert_allclose(prediction.alpha, single.alpha, atol=1e-5, rtol=0)
    assert np.abs(batched[0].alpha - batched[1].alpha).max() > 1e-3
    if strategy == "ddim3":
        with pytest.raises(ValueError, match=r"expected \(40, 56, 3\) images"):
            predict_alphas(inference, [images[0], images[0][:30]], [trimap, trimap], sampler)


def test_predictor_predicts_with_the_inference_model_it_built_once(model, make_inputs):
    predictor = Predictor(model, device="cpu")
    inference = predictor.inference_model
    rng = np.random.default_rng(1)
    image = rng.random((40, 56, 3), dtype=np.float32)
    trimap = make_inputs(1, 40, 56)[1][0, 0]
    first = predictor.predict(image, trimap, "ddim2", seed=4)
    again = predictor.predict(image, trimap, "ddim2", seed=4)
    assert predictor.inference_model is inference
    np.testing.assert_array_equal(first.alpha, again.alpha)
    expected = predict_alpha(inference, image, trimap, Sampler.from_strategy("ddim2"), seed=4)
    np.testing.assert_array_equal(first.alpha, expected.alpha)
    reference = predict_alpha(model, image, trimap, Sampler.from_strategy("ddim2"), seed=4)
    np.testing.assert_allclose(first.alpha, reference.alpha, atol=1e-4, rtol=0)


def test_half_precision_and_cuda_graph_are_refused_on_cpu(model, make_inputs, monkeypatch):
    with pytest.raises(ValueError, match="needs a CUDA device.*fp32"):
        build_inference_model(model, InferenceOptions(precision="fp16"))
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    with pytest.raises(ValueError, match="bf16 refused on the CPU: .*no native bf16"):
        build_inference_model(model, InferenceOptions(precision="bf16"))
    with pytest.raises(ValueError, match="cuda_graph needs a CUDA device"):
        build_inference_model(model, InferenceOptions(cuda_graph=True))
    with pytest.raises(ValueError, match="precision must be one of"):
        InferenceOptions(precision="fp8")
    # The straightforward path has no options: it is the float32 reference.
    image, trimap, noise = make_inputs(1, 32, 32)
    assert model.sample(image, trimap, noise=noise).alpha.dtype == torch.float32


@pytest.mark.slow
def test_compiled_decoder_step_equals_eager(model, make_inputs):
    image, trimap, noise = make_inputs(1, 37, 50)
    sampler = Sampler.from_strategy("ddim2")
    eager = build_inference_model(model).sample(image, trimap, sampler, noise=noise).alpha
    compiled_model = build_inference_model(model, InferenceOptions(compile=True))
    compiled = compiled_model.sample(image, trimap, sampler, noise=noise).alpha
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=0)


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_on_cuda_is_close_to_fp32(make_model, make_inputs, precision):
    model = make_model().cuda()
    image, trimap, noise = (x.cuda() for x in make_inputs(2, 96, 80))
    sampler = Sampler.from_strategy("ddim4")
    fp32 = build_inference_model(model).sample(image, trimap, sampler, noise=noise).alpha
    half_model = build_inference_model(model, InferenceOptions(precision=precision))
    half = half_model.sample(image, trimap, sampler, noise=noise).alpha
    assert half_model.decoder.head.conv1_weight.dtype == half_model.options.dtype
    assert half.dtype == torch.float32
    assert (half - fp32).abs().mean() < 1e-2
