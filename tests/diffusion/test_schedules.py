"""Known values of the gamma schedules and their alpha / sigma / log-SNR."""

import math

import pytest
import torch

from diffmatte.diffusion.schedules import (
    SCHEDULES,
    cosine_gamma,
    gamma_to_alpha_sigma,
    gamma_to_log_snr,
    get_schedule,
    linear_gamma,
    power_gamma,
    sigmoid_gamma,
)

T = torch.tensor([0.0, 0.25, 0.5, 1.0])


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_linear_gamma_values_and_clip():
    assert linear_gamma(T).tolist() == pytest.approx([1.0, 0.75, 0.5, 1e-9], rel=1e-6)
    assert linear_gamma(torch.tensor([1.5])).item() == pytest.approx(1e-9)


def test_cosine_gamma_values():
    expected = [1.0, math.cos(math.pi / 8) ** 2, 0.5, 1e-9]
    assert cosine_gamma(T).tolist() == pytest.approx(expected, rel=1e-5)


def test_sigmoid_gamma_values():
    lo, hi = _sigmoid(-3), _sigmoid(3)
    quarter = (hi - _sigmoid(-1.5)) / (hi - lo)
    assert sigmoid_gamma(T).tolist() == pytest.approx([1.0, quarter, 0.5, 1e-9], rel=1e-5)


def test_power_gamma_values():
    assert power_gamma(T).tolist() == pytest.approx([1.0, 0.9375, 0.75, 1e-9], rel=1e-6)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedules_decrease_from_one(name):
    gamma = get_schedule(name)(torch.linspace(0, 1, 11))
    assert gamma[0].item() == pytest.approx(1.0)
    assert torch.all(gamma[1:] <= gamma[:-1])
    assert gamma.dtype == torch.float32


def test_unknown_schedule_is_rejected():
    with pytest.raises(ValueError, match="unknown noise schedule 'quadratic'"):
        get_schedule("quadratic")


def test_alpha_sigma_with_scale():
    alpha, sigma = gamma_to_alpha_sigma(torch.tensor([1.0, 0.5, 1e-9]), scale=0.2)
    assert alpha.tolist() == pytest.approx([0.2, 0.2 * math.sqrt(0.5), 0.2 * math.sqrt(1e-9)])
    assert sigma.tolist() == pytest.approx([0.0, math.sqrt(0.5), 1.0])


def test_log_snr_ignores_scale_and_clips():
    log_snr = gamma_to_log_snr(torch.tensor([1e-9, 0.5, 0.9, 1.0]))
    assert log_snr[:3].tolist() == pytest.approx([math.log(1e-5), 0.0, math.log(9.0)], rel=1e-5)
    assert log_snr[3].item() == math.inf
