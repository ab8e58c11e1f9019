"""The decoder step replayed from a CUDA graph equals the eager step."""

import pytest
import torch

from diffmatte.diffusion.samplers import Sampler
from diffmatte.inference import InferenceOptions, build_inference_model

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.cuda
@requires_cuda
def test_cuda_graph_and_batching_on_cuda(make_model, make_inputs):
    model = make_model().cuda()
    image, trimap, noise = (x.cuda() for x in make_inputs(2, 96, 80))
    sampler = Sampler.from_strategy("ddim4")
    inference = build_inference_model(model)
    eager = inference.sample(image, trimap, sampler, noise=noise).alpha
    reference = model.sample(image, trimap, sampler, noise=noise).alpha
    torch.testing.assert_close(eager, reference, atol=1e-4, rtol=0)
    graphed_model = build_inference_model(model, InferenceOptions(cuda_graph=True))
    graphed = graphed_model.sample(image, trimap, sampler, noise=noise).alpha
    torch.testing.assert_close(graphed, eager, atol=1e-5, rtol=0)
    single = inference.sample(image[:1], trimap[:1], sampler, noise=noise[:1]).alpha
    torch.testing.assert_close(eager[:1], single, atol=1e-5, rtol=0)
