"""Every inference choice in one validated dataclass.

The trained :class:`~diffmatte.modeling.diffmatte.DiffMatte` never changes with these options:
the inference form of a model is built from it under given options (see
:func:`diffmatte.inference.build_inference_model`), so one trained module can serve several
option sets.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from diffmatte.utils.cpu import bf16_refusal

__all__ = [
    "ATTENTION_KERNELS",
    "DEFAULT_MAX_ATTENTION_BIAS_BYTES",
    "DEFAULT_MAX_TILE_BYTES",
    "InferenceOptions",
    "PRECISIONS",
]

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# One full-resolution map of the tiled decoder tail: images up to 1024 x 1024 run untiled,
# 2048 x 2048 in 4 tiles, 4096 x 4096 in 16.
DEFAULT_MAX_TILE_BYTES = 128 * 2**20
# One query chunk's additive attention bias in the ViT backbone (the softmax buffers are of the
# same size).
DEFAULT_MAX_ATTENTION_BIAS_BYTES = 256 * 2**20
# How the ViT backbone's relative-position attention is computed (see InferenceOptions.attention).
ATTENTION_KERNELS = ("chunked", "materialised")


@dataclass(frozen=True)
class InferenceOptions:
    """How a model runs at inference; results change at most by float rounding.

    Attributes:
        precision: "fp32", "fp16" or "bf16": the networks' compute precision. The sampler's
            state and arithmetic and the outputs stay float32. fp16 needs CUDA; bf16 runs on
            CUDA and on CPUs with native bf16 (see :mod:`diffmatte.utils.cpu`).
        reference: run the straightforward path (``DiffMatte.sample``: the networks exactly as
            trained, float32, no folding, caching or tiling); the other model options are then
            ignored. For checks.
        attention: the ViT backbone's relative-position attention: "chunked" (query chunks
            within ``max_attention_bias_bytes``) or "materialised" (full logits, bias and
            softmax per head, as the original release computes it; for comparisons).
        cached_decoder: run the decoder from its step-independent work cached once per image,
            with BatchNorm folded (and the options below); False re-assembles the decoder input
            and runs the trained decoder at every step.
        channels_last: keep decoder maps in channels-last memory format.
        max_tile_bytes: memory bound of one full-resolution map in the decoder's last up blocks
            and head; larger images run them in horizontal tiles with a halo (exact).
        max_attention_bias_bytes: memory bound of one query chunk's relative-position bias in
            the ViT backbone's attention.
        low_res_upsample: compute the up blocks' ``conv3x3(bilinear_x2(x))`` shortcut at the
            input resolution.
        compile: run the decoder step through ``torch.compile``.
        cuda_graph: capture the decoder step into a CUDA graph and replay it (CUDA only).
        heap_reuse: on the CPU, keep freed memory for reuse (faster, higher peak memory);
            process-wide.
        batch_size: images of the same size predicted together by folder runs.
    """

    precision: str = "fp32"
    reference: bool = False
    attention: str = "chunked"
    cached_decoder: bool = True
    channels_last: bool = True
    max_tile_bytes: int = DEFAULT_MAX_TILE_BYTES
    max_attention_bias_bytes: int = DEFAULT_MAX_ATTENTION_BIAS_BYTES
    low_res_upsample: bool = True
    compile: bool = False
    cuda_graph: bool = False
    heap_reuse: bool = False
    batch_size: int = 1

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if self.attention not in ATTENTION_KERNELS:
            raise ValueError(
                f"attention must be one of {', '.join(ATTENTION_KERNELS)}, got {self.attention!r}"
            )
        for name in ("max_tile_bytes", "max_attention_bias_bytes", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in (
            "reference",
            "cached_decoder",
            "channels_last",
            "low_res_upsample",
            "compile",
            "cuda_graph",
            "heap_reuse",
        ):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")

    def replace(self, **changes: object) -> InferenceOptions:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def check_device(self, device: torch.device | str) -> None:
        """Raises ValueError (one line, naming the option) for options the device cannot run."""
        device = torch.device(device)
        if self.cuda_graph and device.type != "cuda":
            raise ValueError(f"cuda_graph needs a CUDA device, not {device}")
        if self.precision == "fp32" or device.type == "cuda":
            return
        if self.precision == "bf16" and device.type == "cpu":
            reason = bf16_refusal()
            if reason is not None:
                raise ValueError(f"precision bf16 refused on the CPU: {reason}")
            return
        raise ValueError(
            f"precision {self.precision} needs a CUDA device (or, for bf16, a CPU with native "
            f"bf16); {device.type} inference runs in fp32"
        )

    @property
    def dtype(self) -> torch.dtype:
        """The networks' compute dtype."""
        return PRECISIONS[self.precision]
