"""Trimap conversions, backbone / decoder input encodings and padding, as pure tensor functions.

Paper: Hu et al., "Diffusion for Natural Image Matting", ECCV 2024. Exact behaviour of the
original release (docs/original_release.md#preprocessing): trimaps are {0, 0.5, 1} (bg, unknown,
foreground); the one-hot encoding is that of ``2 t`` with channels (bg, unknown, fg); the decoder
condition is ``2 [x_norm, onehot] - 1`` applied to the already ImageNet-normalised image; padding
is bottom/right with zeros, to ``H + d - H mod d`` and ``W + d - W mod d`` as soon as ONE side is
not a multiple of ``d`` (so a side that already is still grows by ``d``), none otherwise.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "BACKBONE_TRIMAP_ENCODINGS",
    "trimap_from_uint8",
    "trimap_from_gray_demo",
    "trimap_onehot",
    "backbone_input",
    "decoder_condition",
    "padded_size",
    "pad_bottom_right",
]

BACKBONE_TRIMAP_ENCODINGS = ("value", "onehot")


def _as_float_tensor(values: Tensor | np.ndarray) -> Tensor:
    if isinstance(values, Tensor):
        return values.to(torch.float32)
    return torch.tensor(np.asarray(values, dtype=np.float32))


def trimap_from_uint8(values: Tensor | np.ndarray) -> Tensor:
    """Map a 0..255 grey trimap to {0, 0.5, 1}: ``< 85 -> 0``, ``>= 170 -> 1``, else 0.5.

    The rule of the original Composition-1k inference and training pipeline (0/128/255 files).

    Args:
        values: grey levels of any shape, integer or float, in [0, 255].

    Returns:
        float32 tensor of the same shape with values in {0, 0.5, 1}.
    """
    v = _as_float_tensor(values)
    out = torch.full_like(v, 0.5)
    out[v < 85] = 0.0
    out[v >= 170] = 1.0
    return out


def trimap_from_gray_demo(values: Tensor | np.ndarray) -> Tensor:
    """Map a 0..255 grey trimap to {0, 0.5, 1} with the original demo's thresholds on
    ``value / 255``: ``> 0.9 -> 1``, ``< 0.1 -> 0``, otherwise 0.5 (for 8-bit values:
    ``<= 25 -> 0``, ``>= 230 -> 1``).

    Args:
        values: grey levels of any shape, integer or float, in [0, 255].

    Returns:
        float32 tensor of the same shape with values in {0, 0.5, 1}.
    """
    v = _as_float_tensor(values) / 255
    out = torch.full_like(v, 0.5)
    out[v < 0.1] = 0.0
    out[v > 0.9] = 1.0
    return out


def trimap_onehot(trimap: Tensor) -> Tensor:
    """One-hot encoding of ``2 t`` with channels (background, unknown, foreground).

    Args:
        trimap: (N,1,H,W) float in {0, 0.5, 1}.

    Returns:
        (N,3,H,W) float32 in {0, 1}.
    """
    index = torch.round(trimap * 2)
    return torch.cat([index == 0, index == 1, index == 2], dim=1).to(torch.float32)


def backbone_input(image_norm: Tensor, trimap: Tensor, encoding: str = "value") -> Tensor:
    """Backbone input: the normalised image with the trimap appended.

    Args:
        image_norm: (N,3,H,W) float32 ImageNet-normalised RGB, ``(x - mean) / std``.
        trimap: (N,1,H,W) float in {0, 0.5, 1}.
        encoding: "value" (ViT configs: the raw trimap value, 4 channels) or "onehot"
            (res34, swin_t: :func:`trimap_onehot`, 6 channels).

    Returns:
        (N,4,H,W) or (N,6,H,W) float32.

    Raises:
        ValueError: for an unknown encoding.
    """
    if encoding == "value":
        return torch.cat([image_norm, trimap.to(image_norm.dtype)], dim=1)
    if encoding == "onehot":
        return torch.cat([image_norm, trimap_onehot(trimap).to(image_norm.dtype)], dim=1)
    raise ValueError(
        f"unknown backbone trimap encoding {encoding!r}; "
        f"expected one of {BACKBONE_TRIMAP_ENCODINGS}"
    )


def decoder_condition(image_norm: Tensor, trimap: Tensor) -> Tensor:
    """Decoder condition ``2 [x_norm, onehot(t)] - 1`` (the map to [-1, 1] is applied to the
    already normalised image too, as in the original).

    Args:
        image_norm: (N,3,H,W) float32 ImageNet-normalised RGB.
        trimap: (N,1,H,W) float in {0, 0.5, 1}.

    Returns:
        (N,6,H,W) float32; one-hot channels are +-1.
    """
    return torch.cat([image_norm, trimap_onehot(trimap).to(image_norm.dtype)], dim=1) * 2 - 1


def padded_size(height: int, width: int, divisibility: int = 32) -> tuple[int, int]:
    """Padded size of the original: unchanged when both sides are multiples of ``divisibility``,
    otherwise BOTH sides grow to ``side + divisibility - side % divisibility`` (a side that is
    already a multiple still gains ``divisibility``: 640x643 -> 672x672).

    Args:
        height: input height in pixels.
        width: input width in pixels.
        divisibility: required multiple (32 for every released config).

    Returns:
        ``(padded_height, padded_width)``.
    """
    if height % divisibility == 0 and width % divisibility == 0:
        return height, width
    return (
        height + divisibility - height % divisibility,
        width + divisibility - width % divisibility,
    )


def pad_bottom_right(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Zero-pad the last two dimensions at the bottom and right to ``size``.

    Args:
        x: (..., H, W) tensor.
        size: target ``(H', W')`` with ``H' >= H`` and ``W' >= W``.

    Returns:
        (..., H', W') tensor; ``x`` itself when no padding is needed.
    """
    pad_h, pad_w = size[0] - x.shape[-2], size[1] - x.shape[-1]
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h))
