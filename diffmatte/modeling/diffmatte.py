"""DiffMatte: the matting model wrapper (preprocess, iterative sampling, postprocess, training).

Paper: Hu et al., "Diffusion for Natural Image Matting", ECCV 2024 (arXiv:2312.05915). Exact
behaviour of the original release: ORIGINAL_BEHAVIOUR.md §1, §4, §7 and TRAINING_RECIPE.md §3.

Per image, everything that does not depend on the step is computed once: ImageNet
normalisation, trimap encodings, padding (with the original's quirk, see
:func:`diffmatte.modeling.trimap.padded_size`) and the backbone features. Each step then runs
only the decoder on ``[condition (6 ch), pad(x_t normalised) (1 ch)]`` at the step's time and
crops its output back to the image size; the sampler (:mod:`diffmatte.diffusion.samplers`) owns
the update rule. Known trimap regions are forced after sampling: background to 0 AND foreground
to 1 (the original never forces the foreground because it tests ``trimap == 2``).

With a decoder that offers ``prepare`` / ``forward_cached`` (:class:`DUNet`), sampling also
computes the decoder's step-independent work once per image (BatchNorm folded, conditioning
channels' share of the first convolutions, the mid block's feature branches; see
:meth:`DUNet.prepare`); ``sample(..., fast=False)`` keeps the straightforward path (the full
7-channel decoder input re-assembled and :meth:`DUNet.forward` at every step) as the reference.
Options for GPUs (:meth:`DiffMatte.set_inference_options`): autocast to float16 / bfloat16 for
the networks while the sampler's arithmetic stays float32, ``torch.compile`` and CUDA-graph
capture of the decoder step. On the CPU inference runs in float32, or in bfloat16 autocast
where the processor has native bf16 (:mod:`diffmatte.utils.cpu`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from diffmatte.diffusion.gaussian import GaussianDiffusion
from diffmatte.diffusion.samplers import Sampler, StepCallback
from diffmatte.modeling.trimap import (
    BACKBONE_TRIMAP_ENCODINGS,
    backbone_input,
    decoder_condition,
    pad_bottom_right,
    padded_size,
)
from diffmatte.utils.cpu import bf16_refusal

__all__ = [
    "PRECISIONS",
    "DiffMatte",
    "MattingOutput",
    "SELF_ALIGN_MODES",
    "autocast_dtype",
    "postprocess_alpha",
]

logger = logging.getLogger(__name__)

SELF_ALIGN_MODES = ("none", "stage1", "stage2")
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class MattingOutput:
    """Result of :meth:`DiffMatte.sample`.

    Attributes:
        alpha: (N,1,H,W) float32 matte in [0, 1], known regions forced.
        trajectory: the x0 prediction of every sampling step, post-processed like ``alpha``
            ((N,1,H,W) float32 in [0, 1] each), or None when not requested.
    """

    alpha: Tensor
    trajectory: list[Tensor] | None = None


@dataclass
class _Prepared:
    """Step-independent inputs of one batch, already padded."""

    backbone_input: Tensor  # (N,4|6,H',W')
    condition: Tensor  # (N,6,H',W')
    height: int
    width: int

    @property
    def padded_size(self) -> tuple[int, int]:
        return self.condition.shape[-2], self.condition.shape[-1]


def postprocess_alpha(x0: Tensor, trimap: Tensor) -> Tensor:
    """Map a diffusion state to a matte: ``clamp((x0 + 1) / 2, 0, 1)``, then trimap background
    to 0 and trimap foreground to 1.

    Args:
        x0: (N,1,H,W) float state, nominally in [-1, 1].
        trimap: (N,1,H,W) float in {0, 0.5, 1}.

    Returns:
        (N,1,H,W) float32 alpha in [0, 1].
    """
    alpha = ((x0.float() + 1) * 0.5).clamp(0.0, 1.0)
    return alpha.masked_fill(trimap == 0, 0.0).masked_fill(trimap == 1, 1.0)


def autocast_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of an inference precision on a device.

    Args:
        precision: "fp32", "fp16" or "bf16".
        device: where the model runs.

    Returns:
        None for "fp32" (no autocast), else torch.float16 / torch.bfloat16.

    Raises:
        ValueError: unknown precision, fp16 on a non-CUDA device, or bf16 on a CPU without
            native bf16 (:func:`diffmatte.utils.cpu.bf16_refusal`; no silent fallback).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return None
    device_type = torch.device(device).type
    if precision == "bf16" and device_type == "cpu":
        reason = bf16_refusal()
        if reason is not None:
            raise ValueError(f"precision 'bf16' refused on the CPU: {reason}")
    elif device_type != "cuda":
        raise ValueError(
            f"precision {precision!r} needs a CUDA device; inference on "
            f"{device_type} runs in float32 (use precision 'fp32')"
        )
    return PRECISIONS[precision]


class _CudaGraphStep:
    """A decoder step replayed from a CUDA graph captured on the first call.

    The first call runs ``step`` on a side stream (warm-up, its result is returned), then captures
    it into a graph with static input buffers; later calls copy their inputs into those buffers
    and replay. Valid for one cache (one batch of images), i.e. one ``sample`` call.
    """

    def __init__(self, step: Callable[[Tensor, Tensor], Tensor]) -> None:
        self.step = step
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_inputs: tuple[Tensor, Tensor] | None = None
        self.static_output: Tensor | None = None

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:
        if self.graph is None:
            self.static_inputs = (x_t.clone(), t.clone())
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                first = self.step(*self.static_inputs)
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.static_output = self.step(*self.static_inputs)
            return first
        self.static_inputs[0].copy_(x_t)
        self.static_inputs[1].copy_(t)
        self.graph.replay()
        return self.static_output.clone()


def _check_pair(image: Tensor, trimap: Tensor) -> None:
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"image must have shape (N,3,H,W), got {tuple(image.shape)}")
    expected = (image.shape[0], 1, image.shape[2], image.shape[3])
    if tuple(trimap.shape) != expected:
        raise ValueError(
            f"trimap must have shape {expected} to match the image, got {tuple(trimap.shape)}"
        )
    if ((trimap != 0) & (trimap != 0.5) & (trimap != 1)).any():
        raise ValueError(
            "trimap values must be in {0, 0.5, 1}; map 0..255 trimaps with "
            "diffmatte.modeling.trimap.trimap_from_uint8 first"
        )


class DiffMatte(nn.Module):
    """Trimap-based matting by conditional diffusion on the alpha matte.

    Args:
        backbone: encoder ``(N,4|6,H',W') -> (N,C,H'/s,W'/s)``, run once per image.
        decoder: ``(x (N,7,H',W'), t (N,), features) -> logits (N,1,H',W')``.
        diffusion: noise schedule, scale and variance normalisation.
        sampler: default sampler of :meth:`sample` (the released configs: DDPM, 1 step).
        criterion: training loss ``(pred_x0, target_x0, trimap) -> dict of scalars``; only
            :meth:`forward` needs it. Kept outside the module tree so that checkpoints hold
            exactly ``backbone.*`` and ``decoder.*``.
        backbone_trimap: trimap encoding of the backbone input: "value" (ViT configs, 4 input
            channels) or "onehot" (res34, swin_t, 6 input channels).
        pixel_mean: RGB mean of the input normalisation (images in [0, 1]).
        pixel_std: RGB standard deviation of the input normalisation.
        size_divisibility: padding multiple (32 in every released config).

    Raises:
        ValueError: for an unknown trimap encoding or an unusable padding multiple.
    """

    def __init__(
        self,
        backbone: nn.Module,
        decoder: nn.Module,
        diffusion: GaussianDiffusion,
        sampler: Sampler,
        criterion: Callable[[Tensor, Tensor, Tensor], dict[str, Tensor]] | None = None,
        backbone_trimap: str = "value",
        pixel_mean: Sequence[float] = (0.485, 0.456, 0.406),
        pixel_std: Sequence[float] = (0.229, 0.224, 0.225),
        size_divisibility: int = 32,
    ) -> None:
        super().__init__()
        if backbone_trimap not in BACKBONE_TRIMAP_ENCODINGS:
            raise ValueError(
                f"backbone_trimap must be one of {BACKBONE_TRIMAP_ENCODINGS}, "
                f"got {backbone_trimap!r}"
            )
        backbone_multiple = getattr(backbone, "size_divisibility", 1)
        if size_divisibility < 1 or size_divisibility % backbone_multiple:
            raise ValueError(
                f"size_divisibility {size_divisibility} must be a positive multiple of the "
                f"backbone's {backbone_multiple}"
            )
        self.backbone = backbone
        self.decoder = decoder
        self.diffusion = diffusion
        self.sampler = sampler
        # Bypasses module registration: the criterion never belongs in a checkpoint.
        object.__setattr__(self, "criterion", criterion)
        self.backbone_trimap = backbone_trimap
        self.size_divisibility = size_divisibility
        self.register_buffer(
            "pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, -1, 1, 1), False
        )
        self.register_buffer(
            "pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, -1, 1, 1), False
        )
        self.precision = "fp32"
        self.compile_decoder = False
        self.cuda_graph = False
        self._compiled_step: Callable | None = None

    def set_inference_options(
        self, precision: str = "fp32", compile_decoder: bool = False, cuda_graph: bool = False
    ) -> None:
        """Speed options of :meth:`sample` (the fast path); results change only by rounding.

        Args:
            precision: "fp32", or "fp16" (CUDA) / "bf16" (CUDA, or a CPU with native bf16):
                autocast of the backbone and the decoder; the sampler's arithmetic and the
                outputs stay float32.
            compile_decoder: run the decoder step through ``torch.compile`` (compiled on the
                first call, recompiled for new shapes).
            cuda_graph: capture the decoder step into a CUDA graph once per ``sample`` call and
                replay it for the remaining steps (CUDA only).

        Raises:
            ValueError: unknown precision.
        """
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
        self.precision = precision
        self.compile_decoder = compile_decoder
        self.cuda_graph = cuda_graph

    @property
    def device(self) -> torch.device:
        """Device of the model's buffers."""
        return self.pixel_mean.device

    def _prepare(self, image: Tensor, trimap: Tensor) -> _Prepared:
        image_norm = (image - self.pixel_mean) / self.pixel_std
        height, width = image.shape[-2:]
        size = padded_size(height, width, self.size_divisibility)
        return _Prepared(
            backbone_input=pad_bottom_right(
                backbone_input(image_norm, trimap, self.backbone_trimap), size
            ),
            condition=pad_bottom_right(decoder_condition(image_norm, trimap), size),
            height=height,
            width=width,
        )

    def _decode(self, prepared: _Prepared, features: Tensor, x_t_norm: Tensor, t: Tensor) -> Tensor:
        """One decoder pass: x0 prediction ``2 sigmoid(logits) - 1``, (N,1,H,W) in [-1, 1]."""
        x_t_padded = pad_bottom_right(x_t_norm.to(prepared.condition.dtype), prepared.padded_size)
        logits = self.decoder(torch.cat([prepared.condition, x_t_padded], dim=1), t, features)
        return torch.sigmoid(logits[:, :, : prepared.height, : prepared.width]) * 2 - 1

    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        dtype = autocast_dtype(self.precision, self.device)
        if dtype is None:
            yield
            return
        # No weight-cast cache: it must be off for CUDA-graph capture, and each weight is cast
        # once per step anyway.
        with torch.autocast(self.device.type, dtype=dtype, cache_enabled=False):
            yield

    def _has_cached_decoder(self) -> bool:
        return callable(getattr(self.decoder, "prepare", None)) and callable(
            getattr(self.decoder, "forward_cached", None)
        )

    def _fast_denoiser(self, image: Tensor, trimap: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
        """Backbone once and the decoder's static work once; returns the per-step x0 function."""
        if self.cuda_graph and self.device.type != "cuda":
            raise ValueError(f"CUDA-graph capture needs a CUDA device, not {self.device}")
        height, width = image.shape[-2:]
        size = padded_size(height, width, self.size_divisibility)
        with self._autocast():
            image_norm = (image - self.pixel_mean) / self.pixel_std
            features = self.backbone(
                pad_bottom_right(backbone_input(image_norm, trimap, self.backbone_trimap), size)
            )
            condition = pad_bottom_right(decoder_condition(image_norm, trimap), size)
            del image_norm
            cache = self.decoder.prepare(condition, features)
            del condition, features

        forward_cached = self.decoder.forward_cached
        if self.compile_decoder:
            if self._compiled_step is None:
                self._compiled_step = torch.compile(forward_cached, dynamic=False)
            forward_cached = self._compiled_step

        def step(x_t_padded: Tensor, t: Tensor) -> Tensor:
            with self._autocast():
                return forward_cached(x_t_padded, t, cache)

        if self.cuda_graph:
            step = _CudaGraphStep(step)

        def denoise(x_t_norm: Tensor, t: Tensor) -> Tensor:
            logits = step(pad_bottom_right(x_t_norm, size), t)
            return torch.sigmoid(logits[:, :, :height, :width].float()) * 2 - 1

        return denoise

    def _inputs(self, image: Tensor, trimap: Tensor) -> tuple[Tensor, Tensor]:
        image = image.to(device=self.device, dtype=torch.float32)
        trimap = trimap.to(device=self.device, dtype=torch.float32)
        _check_pair(image, trimap)
        return image, trimap

    @torch.inference_mode()
    def sample(
        self,
        image: Tensor,
        trimap: Tensor,
        sampler: Sampler | None = None,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        return_trajectory: bool = False,
        fast: bool = True,
        callback: StepCallback | None = None,
    ) -> MattingOutput:
        """Predict alpha mattes by iterative denoising from Gaussian noise.

        Call ``.eval()`` first: the decoder's BatchNorm layers must use running statistics
        (the fast path folds them into the convolutions).

        Args:
            image: (N,3,H,W) RGB in [0, 1], any H, W (padded internally, cropped back).
            trimap: (N,1,H,W) in {0, 0.5, 1} (background, unknown, foreground).
            sampler: overrides the model's default sampler, e.g.
                ``Sampler.from_strategy("ddim10")``.
            noise: (N,1,H,W) initial state at t = 1, standard normal; drawn when None.
            generator: source of the initial noise when ``noise`` is None
                (``torch.randn((N,1,H,W), generator=generator)`` on the generator's device) and
                of the DDPM step noise; the global RNG when None.
            return_trajectory: also return each step's post-processed x0 prediction.
            fast: use the decoder's cached inference path when it has one.
            callback: ``callback(step, steps, x0)`` after each sampling step (see
                :meth:`Sampler.sample`).

        Returns:
            :class:`MattingOutput` with ``alpha`` (N,1,H,W) float32 in [0, 1] on the model's
            device.

        Raises:
            ValueError: for mismatched shapes, trimap values outside {0, 0.5, 1}, or options
                the device does not support.
        """
        if self.training:
            logger.warning("DiffMatte.sample called in training mode; call .eval() first")
        sampler = self.sampler if sampler is None else sampler
        image, trimap = self._inputs(image, trimap)
        shape = (image.shape[0], 1, image.shape[2], image.shape[3])
        if noise is None:
            if generator is None:
                noise = torch.randn(shape, device=self.device)
            else:
                noise = torch.randn(shape, generator=generator, device=generator.device)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise must have shape {shape}, got {tuple(noise.shape)}")
        noise = noise.to(device=self.device, dtype=torch.float32)

        if fast and self._has_cached_decoder():
            denoise = self._fast_denoiser(image, trimap)
        else:
            prepared = self._prepare(image, trimap)
            features = self.backbone(prepared.backbone_input)

            def denoise(x_t_norm: Tensor, t: Tensor) -> Tensor:
                return self._decode(prepared, features, x_t_norm, t)

        result = sampler.sample(
            self.diffusion,
            denoise,
            noise,
            generator=generator,
            return_trajectory=return_trajectory,
            callback=callback,
        )
        trajectory = None
        if result.trajectory is not None:
            trajectory = [postprocess_alpha(x0, trimap) for x0 in result.trajectory]
        return MattingOutput(alpha=postprocess_alpha(result.x0, trimap), trajectory=trajectory)

    def forward(
        self,
        batch: dict[str, Tensor],
        self_align: str = "none",
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Training losses of one batch (x0 prediction, TRAINING_RECIPE.md §3).

        With target ``x0 = 2 alpha - 1`` and one ``eps ~ N(0, I)`` per sample (drawn first):

        - "none": ``t ~ U(0, 1)``, ``x_t = alpha(t) x0 + sigma(t) eps``, one backbone and one
          decoder pass.
        - "stage2": ``t, t'`` from :meth:`GaussianDiffusion.self_align_times`. Pass (a): backbone
          (with gradient) and decoder at ``t'`` on ``q_sample(x0, t', eps)``, the decoder under
          ``no_grad`` (still in the current mode, so BatchNorm statistics update); its prediction
          is re-noised with the same ``eps`` at ``t`` (not clamped); pass (c): decoder at ``t``
          on the features of (a).
        - "stage1": as stage 2 with ``t' = 1`` and pass (a) on pure ``eps``, ``t ~ U(0, 1)``.

        The decoder always sees ``diffusion.normalize(x_t)``.

        Args:
            batch: "image" (N,3,H,W) RGB in [0, 1], "trimap" (N,1,H,W) in {0, 0.5, 1},
                "alpha" (N,1,H,W) in [0, 1].
            self_align: "none", "stage1" or "stage2".
            generator: source of ``eps`` and the times (drawn on its own device); the global RNG
                when None.

        Returns:
            The criterion's dict of scalar loss tensors.

        Raises:
            RuntimeError: when the model has no criterion.
            ValueError: for an unknown ``self_align`` or malformed batch.
        """
        if self.criterion is None:
            raise RuntimeError("DiffMatte.forward needs a criterion; build the model with one")
        if self_align not in SELF_ALIGN_MODES:
            raise ValueError(f"self_align must be one of {SELF_ALIGN_MODES}, got {self_align!r}")
        image, trimap = self._inputs(batch["image"], batch["trimap"])
        target = batch["alpha"].to(device=self.device, dtype=torch.float32) * 2 - 1
        diffusion, device, n = self.diffusion, self.device, target.shape[0]
        if generator is None:
            eps = torch.randn_like(target)
        else:
            eps = torch.randn(target.shape, generator=generator, device=generator.device)
            eps = eps.to(device)

        prepared = self._prepare(image, trimap)
        if self_align == "none":
            t = diffusion.sample_times(n, generator, device)
            x_t = diffusion.q_sample(target, t, eps)
            features = self.backbone(prepared.backbone_input)
        else:
            if self_align == "stage1":
                t = diffusion.sample_times(n, generator, device)
                t_first = torch.ones(n, device=device)
                x_first = eps
            else:
                t, t_first = diffusion.self_align_times(n, generator, device)
                x_first = diffusion.q_sample(target, t_first, eps)
            features = self.backbone(prepared.backbone_input)
            with torch.no_grad():
                x0_first = self._decode(prepared, features, diffusion.normalize(x_first), t_first)
            x_t = diffusion.q_sample(x0_first.float(), t, eps)
        pred = self._decode(prepared, features, diffusion.normalize(x_t), t)
        return self.criterion(pred, target, trimap)
