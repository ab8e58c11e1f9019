"""Continuous-time Gaussian diffusion on alpha mattes: noising, variance normalisation, times.

Paper: Hu et al., "Diffusion for Natural Image Matting", ECCV 2024 (self-aligned training with
uniform time intervals). Noising follows Chen, "On the Importance of Noise Scheduling for
Diffusion Models", arXiv:2301.10972: ``x_t = alpha(t) x0 + sigma(t) eps`` with
``alpha = scale * sqrt(gamma(t))``, ``sigma = sqrt(1 - gamma(t))`` and, when ``scale < 1``, the
network input divided by its own standard deviation. Exact procedure of the original release:
docs/original_release.md#self-aligned-training and docs/original_release.md#sampling.

The object holds no tensors and no state; every random draw takes an explicit generator.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffmatte.diffusion.schedules import (
    gamma_to_alpha_sigma,
    gamma_to_log_snr,
    get_schedule,
)

__all__ = ["GaussianDiffusion", "STD_CLIP_MIN", "expand_like"]

# Lower bound of the per-sample standard deviation in variance normalisation.
STD_CLIP_MIN = 1e-5


def expand_like(values: Tensor, x: Tensor) -> Tensor:
    """View per-sample values of shape (N,) as (N, 1, ..., 1) to broadcast against ``x``."""
    return values.reshape(values.shape + (1,) * (x.ndim - values.ndim))


def _uniform(
    n: int, generator: torch.Generator | None, device: torch.device | str | None
) -> Tensor:
    """``n`` float32 draws from U[0, 1), from ``generator`` (its own device) or the global RNG."""
    if generator is None:
        return torch.rand(n, device=device)
    return torch.rand(n, generator=generator, device=generator.device).to(device)


class GaussianDiffusion:
    """Continuous-time Gaussian diffusion with time ``t`` in [0, 1] (1 = pure noise).

    Args:
        schedule: gamma schedule name: "linear" (released configs), "cosine", "sigmoid", "power".
        scale: signal scale ``s`` in (0, 1]; the released configs use 0.2.
        normalize_variance: divide the network input by its per-sample standard deviation.
            ``None`` turns it on exactly when ``scale < 1`` (the original's rule).

    Raises:
        ValueError: for an unknown schedule or a scale outside (0, 1].
    """

    def __init__(
        self,
        schedule: str = "linear",
        scale: float = 1.0,
        normalize_variance: bool | None = None,
    ) -> None:
        self.schedule = schedule
        self._gamma_fn = get_schedule(schedule)
        if not 0.0 < scale <= 1.0:
            raise ValueError(f"diffusion scale must be in (0, 1], got {scale}")
        self.scale = float(scale)
        self.normalize_variance = scale < 1.0 if normalize_variance is None else normalize_variance

    def __repr__(self) -> str:
        return (
            f"GaussianDiffusion(schedule={self.schedule!r}, scale={self.scale}, "
            f"normalize_variance={self.normalize_variance})"
        )

    def gamma(self, t: Tensor) -> Tensor:
        """Signal power fraction gamma(t).

        Args:
            t: float32 tensor of any shape (usually (N,)), values in [0, 1].

        Returns:
            gamma, same shape, float32 in (0, 1].
        """
        return self._gamma_fn(t)

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``alpha(t) = scale * sqrt(gamma(t))`` and ``sigma(t) = sqrt(1 - gamma(t))``.

        Args:
            t: float32 tensor of any shape, values in [0, 1].

        Returns:
            ``(alpha, sigma)``, each with the shape of ``t``.
        """
        return gamma_to_alpha_sigma(self.gamma(t), self.scale)

    def log_snr(self, t: Tensor) -> Tensor:
        """``log(max(gamma / (1 - gamma), 1e-5))``: the log-SNR as the original DDPM step uses it,
        i.e. WITHOUT the scale (it cancels in the differences taken, except via the clip).

        Args:
            t: float32 tensor of any shape, values in [0, 1].

        Returns:
            log-SNR, same shape; ``+inf`` at ``t = 0``.
        """
        return gamma_to_log_snr(self.gamma(t))

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Noise a clean state: ``x_t = alpha(t) x0 + sigma(t) noise``.

        Args:
            x0: (N,C,H,W) clean state in [-1, 1] (``2 alpha - 1`` for a matte).
            t: (N,) float32 times in [0, 1].
            noise: (N,C,H,W) standard normal noise.

        Returns:
            x_t, (N,C,H,W) float32.
        """
        alpha, sigma = self.alpha_sigma(t)
        return expand_like(alpha, x0) * x0 + expand_like(sigma, x0) * noise

    def normalize(self, x_t: Tensor) -> Tensor:
        """Network input from a diffusion state: ``x_t / max(std(x_t), 1e-5)`` per sample, with
        the population standard deviation over all of C, H, W; identity when variance
        normalisation is off.

        Args:
            x_t: (N,C,H,W) diffusion state.

        Returns:
            (N,C,H,W) tensor; ``x_t`` itself when normalisation is off.
        """
        if not self.normalize_variance:
            return x_t
        std = torch.std(x_t, dim=tuple(range(1, x_t.ndim)), correction=0, keepdim=True)
        return x_t / std.clamp(min=STD_CLIP_MIN)

    def sample_times(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Training times ``t ~ U(0, 1)``.

        Args:
            n: batch size.
            generator: source of randomness (drawn on its own device); global RNG if None.
            device: device of the result.

        Returns:
            (n,) float32 tensor in [0, 1).
        """
        return _uniform(n, generator, device)

    def self_align_times(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Times of self-aligned training, stage 2 ("uniform time intervals").

        ``d ~ U(0, 1)`` then ``u ~ U(0, 1)`` (in this order), ``t = u (1 - d)``, ``t' = t + d``:
        the first pass denoises at the noisier ``t'``, the second at ``t``.

        Args:
            n: batch size.
            generator: source of randomness (drawn on its own device); global RNG if None.
            device: device of the results.

        Returns:
            ``(t, t_prime)``, each (n,) float32, ``0 <= t <= t_prime <= 1`` up to rounding.
        """
        interval = _uniform(n, generator, device)
        t = _uniform(n, generator, device) * (1 - interval)
        return t, t + interval
