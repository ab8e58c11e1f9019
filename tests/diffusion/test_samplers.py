"""DDIM / DDPM samplers against hand-computed steps, with a dummy denoiser."""

import math

import numpy as np
import pytest
import torch

from diffmatte.diffusion.gaussian import GaussianDiffusion
from diffmatte.diffusion.samplers import Sampler

SCALE = 0.2
SHAPE = (2, 1, 5, 6)


def _noise(seed: int = 0) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))


class RecordingDenoiser:
    """x0 = tanh(0.7 x + t - 0.3): depends on both inputs; records every call."""

    def __init__(self, gain: float = 0.7):
        self.gain = gain
        self.inputs: list[torch.Tensor] = []
        self.times: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.clone())
        self.times.append(t.clone())
        return torch.tanh(self.gain * x + t.view(-1, 1, 1, 1) - 0.3)

    def numpy(self, x: np.ndarray, t: float) -> np.ndarray:
        return np.tanh(self.gain * x + t - 0.3)


def _normalize(z: np.ndarray) -> np.ndarray:
    std = z.reshape(z.shape[0], -1).std(axis=1, ddof=0)
    return z / np.maximum(std, 1e-5)[:, None, None, None]


def _reference(method, steps, noise, denoiser, step_noises=None):
    """The update rules of docs/original_release.md#sampling, written out in float64."""
    z = noise.numpy().astype(np.float64)

    def coeffs(t):
        gamma = max(1 - t, 1e-9)
        return SCALE * math.sqrt(gamma), math.sqrt(1 - gamma), gamma

    def log_snr(gamma):
        return math.inf if gamma == 1 else math.log(max(gamma / (1 - gamma), 1e-5))

    for k in range(steps):
        t, t_next = 1 - k / steps, 1 - (k + 1) / steps
        x0 = np.clip(denoiser.numpy(_normalize(z), t), -1, 1)
        a, s, g = coeffs(t)
        a_n, s_n, g_n = coeffs(t_next)
        if method == "ddim":
            eps = (z - a * x0) / max(s, 1e-10)
            z = a_n * x0 + s_n * eps
        else:
            # c and 1 - c in float32: 1 - c = 1e-5 at t = 1 is where the original's float32
            # rounding (about 1e-3 relative) dominates everything else.
            c = np.float32(-np.expm1(np.float32(log_snr(g)) - np.float32(log_snr(g_n))))
            one_minus_c = float(np.float32(1) - c)
            c = float(c)
            mean = a_n * (z * one_minus_c / a + c * x0)
            std = math.sqrt(max(s_n**2 * c, 1e-20))
            n = step_noises[k].numpy() if t_next > 0 else 0.0
            z = mean + std * n
    return z / SCALE


@pytest.mark.parametrize(
    ("strategy", "method", "steps"),
    [("ddim10", "ddim", 10), ("ddpm1", "ddpm", 1), ("DDIM5", "ddim", 5), (" ddpm25 ", "ddpm", 25)],
)
def test_from_strategy_parses(strategy, method, steps):
    sampler = Sampler.from_strategy(strategy)
    assert (sampler.method, sampler.steps) == (method, steps)
    assert sampler.strategy == f"{method}{steps}"


@pytest.mark.parametrize(
    "strategy", ["ddim0", "ddim", "ddpm-3", "euler5", "ddim 10", "10", "", "ddim1.5"]
)
def test_from_strategy_rejects(strategy):
    with pytest.raises(ValueError, match="expected 'ddimN' or 'ddpmN'"):
        Sampler.from_strategy(strategy)


def test_constructor_validates():
    with pytest.raises(ValueError, match="method"):
        Sampler(method="euler")
    with pytest.raises(ValueError, match="steps"):
        Sampler(method="ddim", steps=0)
    with pytest.raises(ValueError, match=r"1 <= N <= 1000, got 1001"):
        Sampler(method="ddim", steps=1001)


@pytest.mark.parametrize("strategy", ["ddim1001", "ddpm10000000000", "ddim" + "9" * 5000])
def test_from_strategy_bounds_the_step_count(strategy):
    with pytest.raises(ValueError, match=r"1 <= N <= 1000 \(each step is one decoder pass"):
        Sampler.from_strategy(strategy)
    assert Sampler.from_strategy("ddim1000").steps == 1000
    assert Sampler.from_strategy("ddim0010").steps == 10


def test_time_pairs_uniform_from_one_to_zero():
    pairs = Sampler("ddim", 4).time_pairs()
    assert pairs == [(1.0, 0.75), (0.75, 0.5), (0.5, 0.25), (0.25, 0.0)]
    ten = Sampler("ddpm", 10).time_pairs()
    assert len(ten) == 10 and ten[0][0] == 1.0 and ten[-1][1] == 0.0
    assert all(a == pytest.approx(1 - k / 10) for k, (a, _) in enumerate(ten))


@pytest.mark.parametrize("method", ["ddim", "ddpm"])
def test_one_step_is_one_denoiser_call_and_returns_its_x0(method):
    diffusion = GaussianDiffusion(scale=SCALE)
    denoiser = RecordingDenoiser()
    noise = _noise()
    out = Sampler(method, 1).sample(diffusion, denoiser, noise, torch.Generator().manual_seed(5))
    assert len(denoiser.inputs) == 1
    assert torch.equal(denoiser.times[0], torch.ones(2))
    expected = denoiser(diffusion.normalize(noise), torch.ones(2))
    assert torch.allclose(out.x0, expected, atol=1e-6)
    # The matte the wrapper derives, (x0 + 1) / 2, is the last x0 prediction mapped to [0, 1].
    assert torch.allclose((out.x0 + 1) / 2, (expected + 1) / 2, atol=1e-6)


def test_ddim1_equals_ddpm1():
    diffusion = GaussianDiffusion(scale=SCALE)
    noise = _noise(1)
    ddim = Sampler("ddim", 1).sample(diffusion, RecordingDenoiser(), noise)
    ddpm = Sampler("ddpm", 1).sample(diffusion, RecordingDenoiser(), noise)
    assert torch.allclose(ddim.x0, ddpm.x0, atol=1e-6)


def test_ddim_two_steps_by_hand():
    diffusion = GaussianDiffusion(scale=SCALE)
    denoiser = RecordingDenoiser()
    noise = _noise(2)
    out = Sampler("ddim", 2).sample(diffusion, denoiser, noise)
    z0 = noise.double().numpy()
    x0 = denoiser.numpy(_normalize(z0), 1.0)
    eps = (z0 - SCALE * math.sqrt(1e-9) * x0) / math.sqrt(1 - 1e-9)
    z1 = SCALE * math.sqrt(0.5) * x0 + math.sqrt(0.5) * eps
    np.testing.assert_allclose(denoiser.inputs[1].numpy(), _normalize(z1), rtol=1e-5, atol=1e-5)
    assert denoiser.times[1].tolist() == [0.5, 0.5]
    np.testing.assert_allclose(out.x0.numpy(), denoiser.numpy(_normalize(z1), 0.5), atol=1e-5)


def test_ddpm_two_steps_by_hand_and_rng_consumption():
    diffusion = GaussianDiffusion(scale=SCALE)
    denoiser = RecordingDenoiser()
    noise = _noise(3)
    generator = torch.Generator().manual_seed(11)
    out = Sampler("ddpm", 2).sample(diffusion, denoiser, noise, generator=generator)

    reference = torch.Generator().manual_seed(11)
    draws = [torch.randn(SHAPE, generator=reference) for _ in range(3)]
    z0 = noise.double().numpy()
    x0 = denoiser.numpy(_normalize(z0), 1.0)
    # lambda(1) is clipped at log(1e-5) and lambda(0.5) = 0, WITHOUT the scale.
    c = 1 - 1e-5
    mean = SCALE * math.sqrt(0.5) * (z0 * (1 - c) / (SCALE * math.sqrt(1e-9)) + c * x0)
    z1 = mean + math.sqrt(0.5 * c) * draws[0].double().numpy()
    # 1 - c = 1e-5 carries float32 rounding of about 1e-3 relative (as in the original); a
    # log-SNR WITH the scale would give 1 - c = 2.5e-4 and miss by far more.
    np.testing.assert_allclose(denoiser.inputs[1].numpy(), _normalize(z1), atol=5e-3)
    np.testing.assert_allclose(out.x0.numpy(), denoiser.numpy(_normalize(z1), 0.5), atol=5e-3)
    # A noise tensor was drawn at the last step too (and multiplied by 0).
    assert torch.equal(torch.randn(SHAPE, generator=generator), draws[2])


@pytest.mark.parametrize(("method", "steps"), [("ddim", 3), ("ddim", 10), ("ddpm", 3), ("ddpm", 5)])
def test_matches_float64_reference(method, steps):
    diffusion = GaussianDiffusion(scale=SCALE)
    denoiser = RecordingDenoiser(gain=1.3)
    noise = _noise(4)
    out = Sampler(method, steps).sample(
        diffusion, denoiser, noise, generator=torch.Generator().manual_seed(7)
    )
    reference = torch.Generator().manual_seed(7)
    step_noises = [torch.randn(SHAPE, generator=reference) for _ in range(steps)]
    expected = _reference(method, steps, noise, RecordingDenoiser(gain=1.3), step_noises)
    np.testing.assert_allclose(out.x0.numpy(), expected, atol=2e-5)
    assert out.x0.dtype == torch.float32


def test_trajectory_is_clamped_x0_of_every_step():
    diffusion = GaussianDiffusion(scale=SCALE)

    def loud(x, t):
        return 3 * x

    out = Sampler("ddim", 4).sample(diffusion, loud, _noise(), return_trajectory=True)
    assert len(out.trajectory) == 4
    assert all(x.shape == SHAPE and x.abs().max() <= 1 for x in out.trajectory)
    assert out.trajectory[0].abs().max() == 1.0
    assert torch.allclose(out.x0, out.trajectory[-1], atol=1e-6)
    assert Sampler("ddim", 4).sample(diffusion, loud, _noise()).trajectory is None


def test_ddpm_is_deterministic_with_a_generator():
    diffusion = GaussianDiffusion(scale=SCALE)

    def run(seed):
        generator = torch.Generator().manual_seed(seed)
        return Sampler("ddpm", 4).sample(diffusion, RecordingDenoiser(), _noise(), generator).x0

    assert torch.equal(run(1), run(1))
    assert not torch.allclose(run(1), run(2))


def test_ddpm_without_generator_uses_global_rng():
    diffusion = GaussianDiffusion(scale=SCALE)
    torch.manual_seed(123)
    first = Sampler("ddpm", 3).sample(diffusion, RecordingDenoiser(), _noise()).x0
    torch.manual_seed(123)
    second = Sampler("ddpm", 3).sample(diffusion, RecordingDenoiser(), _noise()).x0
    assert torch.equal(first, second)


def test_noise_is_not_modified():
    noise = _noise(5)
    before = noise.clone()
    Sampler("ddpm", 3).sample(GaussianDiffusion(scale=SCALE), RecordingDenoiser(), noise)
    Sampler("ddim", 3).sample(GaussianDiffusion(scale=SCALE), RecordingDenoiser(), noise)
    assert torch.equal(noise, before)
