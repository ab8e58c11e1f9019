"""Continuous-time noise schedules gamma(t) and their alpha / sigma / log-SNR.

Facts: Chen, "On the Importance of Noise Scheduling for Diffusion Models", arXiv:2301.10972
(gamma-function schedules: linear, cosine and sigmoid with ``start``/``end``/``tau``, clipped
at 1e-9), in the convention of the continuous-time diffusion code DiffMatte builds on
(Hu et al., "Diffusion for Natural Image Matting", ECCV 2024): ``gamma(t)`` is the fraction of
signal power at time ``t`` in [0, 1] (``gamma(0) = 1`` clean, ``gamma(1) ~ 0`` pure noise),
``alpha = scale * sqrt(gamma)``, ``sigma = sqrt(1 - gamma)``.

Every function is pure and works element-wise on float32 tensors; the arithmetic follows the
original's float32 torch operations so that sampling reproduces it to rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "GAMMA_CLIP_MIN",
    "LOG_SNR_CLIP_MIN",
    "SCHEDULES",
    "linear_gamma",
    "cosine_gamma",
    "sigmoid_gamma",
    "power_gamma",
    "get_schedule",
    "gamma_to_alpha_sigma",
    "gamma_to_log_snr",
]

# gamma never reaches 0, so alpha and log-SNR stay finite at t = 1.
GAMMA_CLIP_MIN = 1e-9
# Lower bound of the signal-to-noise ratio before the log (the original's DDPM posterior).
LOG_SNR_CLIP_MIN = 1e-5


def linear_gamma(t: Tensor, clip_min: float = GAMMA_CLIP_MIN) -> Tensor:
    """``gamma(t) = max(1 - t, clip_min)``: the schedule of every released DiffMatte config.

    Args:
        t: time, float32 tensor of any shape, values in [0, 1].
        clip_min: lower bound of gamma.

    Returns:
        gamma, same shape and dtype as ``t``, in [clip_min, 1].
    """
    return (1 - t).clamp(min=clip_min)


def cosine_gamma(
    t: Tensor,
    start: float = 0.0,
    end: float = 1.0,
    tau: float = 1.0,
    clip_min: float = GAMMA_CLIP_MIN,
) -> Tensor:
    """Cosine schedule: ``cos(v * pi / 2) ** (2 tau)`` with ``v = start + t (end - start)``,
    rescaled so that gamma goes from 1 at ``t = 0`` to 0 at ``t = 1``, then clipped.

    Args:
        t: time, float32 tensor of any shape, values in [0, 1].
        start: start of the cosine argument range, in [0, 1).
        end: end of the cosine argument range, in (start, 1].
        tau: temperature; the cosine is raised to ``2 * tau``.
        clip_min: lower bound of gamma.

    Returns:
        gamma, same shape and dtype as ``t``.
    """
    power = 2 * tau
    v_start = math.cos(start * math.pi / 2) ** power
    v_end = math.cos(end * math.pi / 2) ** power
    value = torch.cos((t * (end - start) + start) * math.pi / 2) ** power
    return ((v_end - value) / (v_end - v_start)).clamp(min=clip_min)


def sigmoid_gamma(
    t: Tensor,
    start: float = -3.0,
    end: float = 3.0,
    tau: float = 1.0,
    clip_min: float = GAMMA_CLIP_MIN,
) -> Tensor:
    """Sigmoid schedule: ``1 - sigmoid((start + t (end - start)) / tau)`` rescaled to [0, 1]
    over ``t`` in [0, 1], then clipped to [clip_min, 1].

    Args:
        t: time, float32 tensor of any shape, values in [0, 1].
        start: sigmoid argument at ``t = 0``.
        end: sigmoid argument at ``t = 1``.
        tau: temperature dividing the argument.
        clip_min: lower bound of gamma.

    Returns:
        gamma, same shape and dtype as ``t``.
    """
    # 0-dim float32 end points (valid on any device), as in the original, so it rounds alike.
    v_start = torch.tensor(start / tau).sigmoid()
    v_end = torch.tensor(end / tau).sigmoid()
    value = ((t * (end - start) + start) / tau).sigmoid()
    return ((v_end - value) / (v_end - v_start)).clamp(min=clip_min, max=1.0)


def power_gamma(
    t: Tensor,
    start: float = 0.0,
    end: float = 1.0,
    tau: float = 1.0,
    clip_min: float = GAMMA_CLIP_MIN,
) -> Tensor:
    """Power schedule: ``v ** (2 tau)`` with ``v = start + t (end - start)``, rescaled so that
    gamma goes from 1 at ``t = 0`` to 0 at ``t = 1`` (``1 - t**2`` by default), then clipped.

    Args:
        t: time, float32 tensor of any shape, values in [0, 1].
        start: base at ``t = 0``.
        end: base at ``t = 1``, different from ``start``.
        tau: the base is raised to ``2 * tau``.
        clip_min: lower bound of gamma.

    Returns:
        gamma, same shape and dtype as ``t``.
    """
    power = 2 * tau
    v_start = start**power
    v_end = end**power
    value = (t * (end - start) + start) ** power
    return ((v_end - value) / (v_end - v_start)).clamp(min=clip_min)


SCHEDULES: dict[str, Callable[[Tensor], Tensor]] = {
    "linear": linear_gamma,
    "cosine": cosine_gamma,
    "sigmoid": sigmoid_gamma,
    "power": power_gamma,
}


def get_schedule(name: str) -> Callable[[Tensor], Tensor]:
    """The gamma function registered under ``name`` (one of :data:`SCHEDULES`).

    Raises:
        ValueError: for an unknown name.
    """
    try:
        return SCHEDULES[name]
    except KeyError:
        known = ", ".join(sorted(SCHEDULES))
        raise ValueError(f"unknown noise schedule {name!r}; expected one of: {known}") from None


def gamma_to_alpha_sigma(gamma: Tensor, scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """Signal and noise coefficients: ``alpha = sqrt(gamma) * scale``, ``sigma = sqrt(1 - gamma)``.

    Args:
        gamma: float32 tensor in (0, 1].
        scale: input scaling of the signal (Chen 2023), in (0, 1].

    Returns:
        ``(alpha, sigma)``, each with the shape of ``gamma``.
    """
    return torch.sqrt(gamma) * scale, torch.sqrt(1 - gamma)


def gamma_to_log_snr(gamma: Tensor, clip_min: float = LOG_SNR_CLIP_MIN) -> Tensor:
    """``log(max(gamma / (1 - gamma), clip_min))``, the log-SNR WITHOUT the input scale.

    This is what the original DDPM posterior uses; only differences of it enter the update, so
    the scale cancels except through the clip. ``gamma = 1`` gives ``+inf``.

    Args:
        gamma: float32 tensor in (0, 1].
        clip_min: lower bound of the SNR before the log.

    Returns:
        log-SNR, same shape as ``gamma``.
    """
    return torch.log((gamma / (1 - gamma)).clamp(min=clip_min))
