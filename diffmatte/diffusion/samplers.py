"""DDIM and DDPM samplers for continuous-time Gaussian diffusion with x0 prediction.

Facts: Song et al., "Denoising Diffusion Implicit Models", arXiv:2010.02502 (deterministic
update, eta = 0); Kingma et al., "Variational Diffusion Models", arXiv:2107.00630 (ancestral
posterior in log-SNR form, ``c = -expm1(lambda_s - lambda_t)``); Hu et al., "Diffusion for
Natural Image Matting", ECCV 2024 (x0-predicting decoder, variance-normalised network input).
Exact procedure of the original release: docs/original_release.md#sampling.

Samplers never see networks or images: the caller passes ``denoise_fn(x_t_normalised, t) -> x0``.
The state ``z`` stays float32 at the resolution of the initial noise.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from diffmatte.diffusion.gaussian import GaussianDiffusion, expand_like

__all__ = ["MAX_STEPS", "METHODS", "Sampler", "SamplerOutput", "DenoiseFn", "StepCallback"]

METHODS = ("ddim", "ddpm")
# Upper bound of the number of sampling steps. The model was trained in continuous time, so any
# number of steps runs, but each step is one decoder pass: the run time grows linearly with the
# count, and the paper's results use 10 steps. Larger counts are far more likely a typo.
MAX_STEPS = 1000
_WHY_MAX = (
    " (each step is one decoder pass, so the run time grows linearly with N; the model was "
    "trained in continuous time and the paper's results use 10 steps)"
)
# Lower bound of sigma in the DDIM noise estimate and of the DDPM variance before its log.
SIGMA_CLIP_MIN = 1e-10
VARIANCE_CLIP_MIN = 1e-20

_STRATEGY = re.compile(r"(ddim|ddpm)(\d+)")

DenoiseFn = Callable[[Tensor, Tensor], Tensor]
StepCallback = Callable[[int, int, Tensor], None]


@dataclass
class SamplerOutput:
    """Result of a sampling run.

    Attributes:
        x0: (N,1,H,W) float32 final state divided by the diffusion scale, in [-1, 1] up to
            rounding (exactly the last clamped x0 prediction mapped through the last step).
        trajectory: the clamped x0 prediction of every step, (N,1,H,W) each in [-1, 1], or None
            when not requested.
    """

    x0: Tensor
    trajectory: list[Tensor] | None = None


class Sampler:
    """Iterative sampler from t = 1 to t = 0 in ``steps`` uniform steps.

    Args:
        method: "ddim" (deterministic) or "ddpm" (ancestral, fresh noise each step).
        steps: number of denoiser calls, 1 <= steps <= MAX_STEPS.

    Raises:
        ValueError: for an unknown method or a number of steps out of range.
    """

    def __init__(self, method: str = "ddpm", steps: int = 1) -> None:
        if method not in METHODS:
            raise ValueError(f"sampler method must be one of {METHODS}, got {method!r}")
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
            raise ValueError(
                f"sampler steps must be an integer 1 <= N <= {MAX_STEPS}, got {steps!r}{_WHY_MAX}"
            )
        self.method = method
        self.steps = steps

    @classmethod
    def from_strategy(cls, strategy: str) -> Sampler:
        """Parse a sampling strategy string ``ddimN`` or ``ddpmN`` (1 <= N <= 1000), e.g. "ddim10".

        Raises:
            ValueError: for anything else (e.g. "ddim0", "ddim", "euler5", "ddim 10", "ddim5000").
        """
        match = _STRATEGY.fullmatch(strategy.strip().lower()) if isinstance(strategy, str) else None
        # Leading zeros stripped; the length is compared first because int() of a huge digit
        # string is slow (and refused beyond 4300 digits).
        digits = match.group(2).lstrip("0") if match is not None else ""
        if not digits:
            raise ValueError(
                f"invalid sampling strategy {strategy!r}: expected 'ddimN' or 'ddpmN' with an "
                "integer number of steps N >= 1, e.g. 'ddim10' or 'ddpm1'"
            )
        if len(digits) > len(str(MAX_STEPS)) or int(digits) > MAX_STEPS:
            raise ValueError(
                f"invalid sampling strategy {strategy!r}: the number of steps must be "
                f"1 <= N <= {MAX_STEPS}{_WHY_MAX}"
            )
        return cls(method=match.group(1), steps=int(digits))

    @property
    def strategy(self) -> str:
        """The strategy string of this sampler, e.g. "ddim10"."""
        return f"{self.method}{self.steps}"

    def __repr__(self) -> str:
        return f"Sampler(method={self.method!r}, steps={self.steps})"

    def time_pairs(self) -> list[tuple[float, float]]:
        """``(t_k, t_{k+1})`` for k = 0..steps-1 with ``t_k = 1 - k / steps``.

        The grid is the float32 ``linspace(1, 0, steps + 1)`` of the original, returned as Python
        floats (exactly representable in float32).
        """
        grid = torch.linspace(1.0, 0.0, self.steps + 1, dtype=torch.float32).tolist()
        return list(zip(grid[:-1], grid[1:], strict=True))

    def sample(
        self,
        diffusion: GaussianDiffusion,
        denoise_fn: DenoiseFn,
        noise: Tensor,
        generator: torch.Generator | None = None,
        return_trajectory: bool = False,
        callback: StepCallback | None = None,
    ) -> SamplerOutput:
        """Run the sampler from the initial state ``noise`` at t = 1.

        Each step feeds ``diffusion.normalize(z)`` and the step's time ``t_k`` to ``denoise_fn``,
        clamps its x0 prediction to [-1, 1] and updates the un-normalised state ``z``:

        - DDIM: ``eps = (z - a_k x0) / max(s_k, 1e-10)``; ``z = a_{k+1} x0 + s_{k+1} eps``.
        - DDPM: ``c = -expm1(lambda_k - lambda_{k+1})`` (log-SNR without scale);
          ``mean = a_{k+1} (z (1 - c) / a_k + c x0)``; ``var = s_{k+1}^2 c``;
          ``z = mean + exp(0.5 log max(var, 1e-20)) n``. ``n`` is drawn at every step, the last
          one included, and replaced by 0 where ``t_{k+1} = 0`` (seeded runs consume the RNG
          exactly like the original).

        The result is ``z / scale``; at t = 0 this equals the last clamped x0 prediction.

        Args:
            diffusion: schedule, scale and variance normalisation.
            denoise_fn: ``(x_t_normalised (N,1,H,W), t (N,) float32) -> x0 (N,1,H,W)`` in [-1, 1].
            noise: (N,1,H,W) initial state (standard normal); not modified.
            generator: source of the DDPM step noise (drawn on its own device); the global RNG
                when None. Unused by DDIM.
            return_trajectory: also return each step's clamped x0 prediction.
            callback: called after each step as ``callback(step, steps, x0)`` with the 1-based
                step number and that step's clamped x0 prediction (progress reports, previews).

        Returns:
            :class:`SamplerOutput`.
        """
        z = noise.float()
        batch = z.shape[0]
        trajectory: list[Tensor] | None = [] if return_trajectory else None
        for index, (t_cur, t_next) in enumerate(self.time_pairs(), start=1):
            t = torch.full((batch,), t_cur, dtype=torch.float32, device=z.device)
            t_nxt = torch.full((batch,), t_next, dtype=torch.float32, device=z.device)
            x0 = denoise_fn(diffusion.normalize(z), t).float().clamp(-1.0, 1.0)
            if trajectory is not None:
                trajectory.append(x0)
            alpha, sigma = (expand_like(v, z) for v in diffusion.alpha_sigma(t))
            alpha_next, sigma_next = (expand_like(v, z) for v in diffusion.alpha_sigma(t_nxt))
            if self.method == "ddim":
                eps = (z - alpha * x0) / sigma.clamp(min=SIGMA_CLIP_MIN)
                z = x0 * alpha_next + eps * sigma_next
            else:
                log_snr = expand_like(diffusion.log_snr(t), z)
                log_snr_next = expand_like(diffusion.log_snr(t_nxt), z)
                c = -torch.expm1(log_snr - log_snr_next)
                mean = alpha_next * (z * (1 - c) / alpha + c * x0)
                log_variance = torch.log((sigma_next**2 * c).clamp(min=VARIANCE_CLIP_MIN))
                step_noise = torch.where(
                    expand_like(t_nxt > 0, z), self._randn_like(z, generator), torch.zeros_like(z)
                )
                z = mean + (0.5 * log_variance).exp() * step_noise
            if callback is not None:
                callback(index, self.steps, x0)
        return SamplerOutput(x0=z / diffusion.scale, trajectory=trajectory)

    @staticmethod
    def _randn_like(z: Tensor, generator: torch.Generator | None) -> Tensor:
        if generator is None:
            return torch.randn_like(z)
        return torch.randn(z.shape, generator=generator, device=generator.device).to(z.device)
