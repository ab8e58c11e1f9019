"""BatchNorm folded into the decoder's convolutions, weights cast once to the compute dtype.

In evaluation mode a BatchNorm layer is a per-channel affine map, so ``BN(conv(x))`` is one
convolution with scaled weights and a bias: ``conv_{w*s}(x) + (beta - mean * s)`` with
``s = gamma / sqrt(var + eps)``. The folding is done in float32 from the trained module's
parameters; the results (and the time MLP's weights) are then cast once to the compute dtype,
so each step runs without any weight cast. The trained blocks are only read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffmatte.inference.upsample_conv import UpsampleConv
from diffmatte.modeling.decoder.dunet import BasicUpBlock, MattingHead, TimeResidualBlock

__all__ = ["FoldedBlock", "FoldedHead", "bn_affine", "fold_conv_bn", "weight_format"]


def bn_affine(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Eval-mode BatchNorm as a per-channel affine map ``y = x * scale + shift``.

    Args:
        bn: a BatchNorm2d with running statistics.

    Returns:
        ``scale`` and ``shift``, (C,) float each: ``weight / sqrt(running_var + eps)`` and
        ``bias - running_mean * scale``.
    """
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def fold_conv_bn(conv: nn.Conv2d | nn.ConvTranspose2d, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Weight and bias of ``bn(conv(x))`` as one convolution (exact up to float rounding).

    Args:
        conv: a convolution or transposed convolution, with or without bias.
        bn: the BatchNorm2d after it.

    Returns:
        The folded weight (the layout of ``conv.weight``) and bias (C_out,), in the parameters'
        dtype.
    """
    scale, shift = bn_affine(bn)
    if isinstance(conv, nn.ConvTranspose2d):
        weight = conv.weight * scale[None, :, None, None]  # (C_in, C_out, k, k)
    else:
        weight = conv.weight * scale[:, None, None, None]  # (C_out, C_in, k, k)
    bias = shift if conv.bias is None else conv.bias * scale + shift
    return weight, bias


def weight_format(weight: Tensor, dtype: torch.dtype, channels_last: bool) -> Tensor:
    """``weight`` detached, in the compute dtype and memory format; it shares the parameter's
    memory when both already match."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return weight.detach().to(dtype).contiguous(memory_format=memory_format)


@dataclass
class FoldedBlock:
    """Inference form of a :class:`TimeResidualBlock`: BatchNorm folded into the convolutions.

    ``out = ReLU(conv2'(ReLU(conv1'(x)) + ReLU(Linear(emb))) + shortcut(x))`` where ``conv1'``
    and ``conv2'`` carry BN1 and BN2 (eval statistics) in their weights and biases. Every tensor
    is in the compute dtype.
    """

    time_weight: Tensor  # (C_out, E) of the time MLP's Linear
    time_bias: Tensor  # (C_out,)
    conv1_weight: Tensor
    conv1_bias: Tensor
    conv2_weight: Tensor
    conv2_bias: Tensor
    shortcut_weight: Tensor
    upsampling: bool
    upsample_conv: UpsampleConv | None

    @classmethod
    @torch.no_grad()
    def from_block(
        cls,
        block: TimeResidualBlock,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = True,
        low_res_upsample: bool = True,
    ) -> FoldedBlock:
        """Folds ``block`` (a :class:`BasicDownBlock` or :class:`BasicUpBlock`).

        Args:
            block: the trained block, in evaluation mode (not modified).
            dtype: compute dtype of the folded weights.
            channels_last: store convolution weights in channels-last memory format.
            low_res_upsample: run an up block's shortcut as :class:`UpsampleConv`.
        """
        upsampling = isinstance(block, BasicUpBlock)
        shortcut = block.upsample.conv if upsampling else block.downsample.op
        w1, b1 = fold_conv_bn(block.conv1, block.bn1)
        w2, b2 = fold_conv_bn(block.conv2, block.bn2)
        linear = block.emb_layers[0]
        return cls(
            time_weight=weight_format(linear.weight, dtype, channels_last=False),
            time_bias=weight_format(linear.bias, dtype, channels_last=False),
            conv1_weight=weight_format(w1, dtype, channels_last),
            conv1_bias=b1.to(dtype),
            conv2_weight=weight_format(w2, dtype, channels_last),
            conv2_bias=b2.to(dtype),
            shortcut_weight=weight_format(shortcut.weight, dtype, channels_last),
            upsampling=upsampling,
            upsample_conv=(
                UpsampleConv.from_weight(shortcut.weight, dtype=dtype)
                if upsampling and low_res_upsample
                else None
            ),
        )

    def time_shift(self, emb: Tensor) -> Tensor:
        """emb: (N, E) -> (N, C_out, 1, 1) per-channel shift ``ReLU(Linear(emb))``."""
        return F.linear(emb, self.time_weight, self.time_bias).relu_()[:, :, None, None]

    def conv1(self, x: Tensor) -> Tensor:
        """``BN1(conv1(x))``: (N, C_in, H, W) -> (N, C_out, H', W')."""
        if self.upsampling:
            return F.conv_transpose2d(x, self.conv1_weight, self.conv1_bias, stride=2, padding=1)
        return F.conv2d(x, self.conv1_weight, self.conv1_bias, stride=2, padding=1)

    def shortcut(self, x: Tensor) -> Tensor:
        """The residual branch: (N, C_in, H, W) -> (N, C_out, H', W')."""
        if self.upsample_conv is not None:
            return self.upsample_conv(x)
        if self.upsampling:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            return F.conv2d(x, self.shortcut_weight, padding=1)
        return F.conv2d(x, self.shortcut_weight, stride=2, padding=1)

    def finish(self, h: Tensor, residual: Tensor) -> Tensor:
        """``ReLU(conv2'(h) + residual)`` from the shifted activation ``h`` (overwritten)."""
        out = F.conv2d(h, self.conv2_weight, self.conv2_bias, padding=1)
        del h
        return out.add_(residual).relu_()

    def __call__(self, x: Tensor, shift: Tensor) -> Tensor:
        """x: (N, C_in, H, W), shift: (N, C_out, 1, 1) -> (N, C_out, H', W')."""
        h = self.conv1(x).relu_().add_(shift)
        out = F.conv2d(h, self.conv2_weight, self.conv2_bias, padding=1)
        del h
        return out.add_(self.shortcut(x)).relu_()


@dataclass
class FoldedHead:
    """Inference form of :class:`MattingHead`: conv3x3 with BN folded, ReLU, conv1x1."""

    conv1_weight: Tensor
    conv1_bias: Tensor
    conv2_weight: Tensor
    conv2_bias: Tensor

    @classmethod
    @torch.no_grad()
    def from_head(
        cls, head: MattingHead, dtype: torch.dtype = torch.float32, channels_last: bool = True
    ) -> FoldedHead:
        """Folds the trained ``head`` (not modified) into weights of the compute ``dtype``."""
        conv1, bn, _, conv2 = head.matting_convs
        w1, b1 = fold_conv_bn(conv1, bn)
        return cls(
            conv1_weight=weight_format(w1, dtype, channels_last),
            conv1_bias=b1.to(dtype),
            conv2_weight=weight_format(conv2.weight, dtype, channels_last),
            conv2_bias=weight_format(conv2.bias, dtype, channels_last=False),
        )

    def __call__(self, x: Tensor) -> Tensor:
        """x: (N, C, H, W) -> (N, 1, H, W) logits."""
        h = F.conv2d(x, self.conv1_weight, self.conv1_bias, padding=1).relu_()
        return F.conv2d(h, self.conv2_weight, self.conv2_bias)
