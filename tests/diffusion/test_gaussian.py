"""GaussianDiffusion: noising, variance normalisation and training times."""

import math

import numpy as np
import pytest
import torch

from diffmatte.diffusion.gaussian import GaussianDiffusion


def test_normalize_variance_defaults_to_scale_below_one():
    assert GaussianDiffusion(scale=0.2).normalize_variance is True
    assert GaussianDiffusion(scale=1.0).normalize_variance is False
    assert GaussianDiffusion(scale=1.0, normalize_variance=True).normalize_variance is True
    assert GaussianDiffusion(scale=0.2, normalize_variance=False).normalize_variance is False


@pytest.mark.parametrize("scale", [0.0, -0.5, 1.5])
def test_scale_outside_unit_interval_is_rejected(scale):
    with pytest.raises(ValueError, match="scale"):
        GaussianDiffusion(scale=scale)


def test_q_sample_matches_formula():
    diffusion = GaussianDiffusion(scale=0.2)
    x0 = torch.tensor([0.5, -1.0]).view(2, 1, 1, 1).expand(2, 1, 2, 3)
    noise = torch.tensor([2.0, 1.0]).view(2, 1, 1, 1).expand(2, 1, 2, 3)
    x_t = diffusion.q_sample(x0, torch.tensor([0.5, 0.0]), noise)
    first = 0.2 * math.sqrt(0.5) * 0.5 + math.sqrt(0.5) * 2.0
    assert torch.allclose(x_t[0], torch.full((1, 2, 3), first))
    assert torch.allclose(x_t[1], torch.full((1, 2, 3), -0.2))


def test_normalize_uses_population_std_per_sample():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 4, 5, generator=generator) * torch.tensor([1.0, 3.0, 0.1]).view(
        3, 1, 1, 1
    )
    out = GaussianDiffusion(scale=0.2).normalize(x)
    std = np.std(x.numpy().reshape(3, -1), axis=1, ddof=0)
    np.testing.assert_allclose(out.numpy(), x.numpy() / std[:, None, None, None], rtol=1e-5)
    assert np.allclose(out.numpy().reshape(3, -1).std(axis=1), 1.0, atol=1e-5)


def test_normalize_clamps_small_std_and_is_identity_without_scale():
    x = torch.full((1, 1, 2, 2), 3.0)
    x[0, 0, 0, 0] = 3.0 + 2e-6
    out = GaussianDiffusion(scale=0.2).normalize(x)
    assert torch.allclose(out, x / 1e-5)
    same = GaussianDiffusion(scale=1.0).normalize(x)
    assert same is x


def test_sample_times_uniform_and_seeded():
    diffusion = GaussianDiffusion(scale=0.2)
    t = diffusion.sample_times(4, torch.Generator().manual_seed(3))
    assert torch.equal(t, torch.rand(4, generator=torch.Generator().manual_seed(3)))
    assert t.dtype == torch.float32 and t.shape == (4,)


def test_self_align_times_draw_interval_then_fraction():
    diffusion = GaussianDiffusion(scale=0.2)
    t, t_prime = diffusion.self_align_times(1000, torch.Generator().manual_seed(1))
    reference = torch.Generator().manual_seed(1)
    interval = torch.rand(1000, generator=reference)
    fraction = torch.rand(1000, generator=reference)
    assert torch.equal(t, fraction * (1 - interval))
    assert torch.equal(t_prime, t + interval)
    assert torch.all(t <= t_prime) and torch.all(t_prime <= 1 + 1e-6)
    # Implied means (docs/original_release.md#self-aligned-training): E[t] = 1/4, E[t'] = 3/4.
    assert t.mean().item() == pytest.approx(0.25, abs=0.03)
    assert t_prime.mean().item() == pytest.approx(0.75, abs=0.03)
