"""The inference form of a trained DiffMatte under given options.

:func:`build_inference_model` turns a trained :class:`~diffmatte.modeling.diffmatte.DiffMatte`
into an :class:`InferenceModel`: the backbone with its attention in bounded memory
(:mod:`diffmatte.inference.attention`), the decoder with BatchNorm folded and its
step-independent work cached (:mod:`diffmatte.inference.cached_decoder`), optionally compiled or
replayed from a CUDA graph (:mod:`diffmatte.inference.cuda_graph`). The trained module is only
read: no attribute is set on it and no submodule replaced; the inference form shares its
parameters (copies exist only where a transform needs other values: folded or cast weights,
channels-last layouts). The sampler, its state, the schedule and the post-processing stay those
of ``DiffMatte.sample``, in float32.

Precision (:mod:`diffmatte.inference.bf16`): with "bf16" or "fp16" the inference form owns a copy
of the backbone with its weights in that dtype and the decoder's weights, BatchNorm folded in
float32 first, are cast once to it when the form is built; the backbone's input, the decoder's
cached conditioning and each step's x_t are cast to it once, and the networks run in that dtype
without autocast (LayerNorm and softmax keep float32 statistics inside PyTorch's kernels,
attention runs through SDPA in that dtype). The time embedding's sinusoid, the logits' sigmoid,
the sampler and the post-processing stay float32. The trained decoder of the step without cache
(``cached_decoder=False``) runs under autocast. With "fp32" nothing is cast and results equal the
float32 path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from diffmatte.diffusion.samplers import Sampler, StepCallback
from diffmatte.inference.attention import inference_backbone
from diffmatte.inference.bf16 import cast_module
from diffmatte.inference.cached_decoder import CachedDUNet
from diffmatte.inference.cuda_graph import CudaGraphStep
from diffmatte.inference.options import InferenceOptions
from diffmatte.modeling.decoder.dunet import DUNet
from diffmatte.modeling.diffmatte import Denoiser, DiffMatte, MattingOutput
from diffmatte.modeling.trimap import (
    backbone_input,
    decoder_condition,
    pad_bottom_right,
    padded_size,
)

__all__ = ["InferenceModel", "build_inference_model"]

# step(x_t_padded (N,1,H',W'), t (N,)) -> decoder logits (N,1,H',W').
StepFn = Callable[[Tensor, Tensor], Tensor]


class InferenceModel:
    """A trained DiffMatte in its inference form; build it with :func:`build_inference_model`.

    Decoder weights are derived from the trained model's parameters when this object is built:
    build a new one after changing them (e.g. between evaluations during training).

    Attributes:
        model: the trained model (read only).
        options: the inference options.
        backbone: the backbone as run here (the trained one, a parallel form sharing its
            parameters, or, in reduced precision, a copy of that form with cast weights).
        decoder: the cached decoder, or None when the trained decoder runs at every step.
    """

    def __init__(self, model: DiffMatte, options: InferenceOptions) -> None:
        self.model = model
        self.options = options
        self.backbone = model.backbone
        self.decoder: CachedDUNet | None = None
        self._step: Callable[..., Tensor] | None = None
        if options.reference:
            return
        self.backbone = inference_backbone(
            model.backbone, options.attention, options.max_attention_bias_bytes
        )
        if options.dtype != torch.float32:
            self.backbone = cast_module(self.backbone, options.dtype)
        if options.cached_decoder and isinstance(model.decoder, DUNet):
            self.decoder = CachedDUNet(
                model.decoder,
                dtype=options.dtype,
                channels_last=options.channels_last,
                low_res_upsample=options.low_res_upsample,
                max_tile_bytes=options.max_tile_bytes,
            )
            self._step = self.decoder.step
            if options.compile:
                self._step = torch.compile(self._step, dynamic=False)

    @property
    def device(self) -> torch.device:
        """Device of the trained model."""
        return self.model.device

    @property
    def sampler(self) -> Sampler:
        """The trained model's default sampler."""
        return self.model.sampler

    def sample(
        self,
        image: Tensor,
        trimap: Tensor,
        sampler: Sampler | None = None,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        return_trajectory: bool = False,
        callback: StepCallback | None = None,
    ) -> MattingOutput:
        """Alpha mattes by iterative denoising; arguments and result as ``DiffMatte.sample``,
        which this equals up to float rounding (reduced precision aside).

        Raises:
            ValueError: for mismatched shapes or trimap values outside {0, 0.5, 1}.
        """
        make_denoiser = self.model.denoiser if self.options.reference else self.denoiser
        return self.model.sample_with(
            make_denoiser, image, trimap, sampler, noise, generator, return_trajectory, callback
        )

    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        """Autocast to the compute dtype for the trained decoder run without cache (a no-op for
        fp32)."""
        if self.options.dtype == torch.float32:
            yield
            return
        # No weight-cast cache: each weight is cast once per image anyway.
        with torch.autocast(self.device.type, dtype=self.options.dtype, cache_enabled=False):
            yield

    def denoiser(self, image: Tensor, trimap: Tensor) -> Denoiser:
        """The per-step x0 prediction of one batch (see ``DiffMatte.denoiser``): the backbone
        and the decoder's step-independent work run here, once.

        Args:
            image: (N,3,H,W) float32 RGB in [0, 1] on the model's device.
            trimap: (N,1,H,W) float32 in {0, 0.5, 1}.

        Returns:
            ``denoise(x_t_norm, t)``: (N,1,H,W) float32 x0 in [-1, 1] from the unpadded state.
        """
        model = self.model
        height, width = image.shape[-2:]
        size = padded_size(height, width, model.size_divisibility)
        image_norm = (image - model.pixel_mean) / model.pixel_std
        inputs = backbone_input(image_norm, trimap, model.backbone_trimap)
        features = self.backbone(pad_bottom_right(inputs, size).to(self.options.dtype))
        del inputs
        condition = pad_bottom_right(decoder_condition(image_norm, trimap), size)
        del image_norm
        if self.decoder is None:
            step = self._plain_step(condition, features)
        else:
            step = self._cached_step(condition, features)
        del condition, features

        def denoise(x_t_norm: Tensor, t: Tensor) -> Tensor:
            logits = step(pad_bottom_right(x_t_norm, size), t)
            return torch.sigmoid(logits[:, :, :height, :width].float()) * 2 - 1

        return denoise

    def _plain_step(self, condition: Tensor, features: Tensor) -> StepFn:
        """The trained decoder on the re-assembled 7-channel input, at every step."""
        decoder = self.model.decoder

        def step(x_t_padded: Tensor, t: Tensor) -> Tensor:
            x = torch.cat([condition, x_t_padded.to(condition.dtype)], dim=1)
            with self._autocast():
                return decoder(x, t, features)

        return step

    def _cached_step(self, condition: Tensor, features: Tensor) -> StepFn:
        """The cached decoder's step on one batch, optionally replayed from a CUDA graph."""
        cache = self.decoder.prepare(condition, features)
        cached_step = self._step

        def step(x_t_padded: Tensor, t: Tensor) -> Tensor:
            return cached_step(x_t_padded, t, cache)

        return CudaGraphStep(step) if self.options.cuda_graph else step


def build_inference_model(
    model: DiffMatte, options: InferenceOptions | None = None
) -> InferenceModel:
    """The inference form of a trained model under ``options`` (the trained model is untouched).

    Args:
        model: a trained :class:`DiffMatte` in evaluation mode, on its inference device.
        options: inference options; ``InferenceOptions()`` when None.

    Returns:
        The :class:`InferenceModel`.

    Raises:
        ValueError: options the model's device cannot run.
    """
    options = InferenceOptions() if options is None else options
    options.check_device(model.device)
    return InferenceModel(model, options)
