"""DUNet: the time-conditioned U-Net decoder of DiffMatte.

Facts from Hu et al., "Diffusion for Natural Image Matting" (DiffMatte, 2023) and the layer list
of its released checkpoints (``model.decoder.*``): a stride-2 residual down path on the 7-channel
decoder input (conditioning + x_t), a mid block that upsamples the backbone feature, up blocks
with skip concatenation, and the conv head of ViTMatte (Yao et al. 2023). Time conditioning uses
the sinusoidal embedding of Vaswani et al. (2017) as popularised for diffusion by Ho et al. (2020),
applied here to the continuous time t in [0, 1] (not an integer step index).

Only the down path, the time-dependent parts of the blocks and everything after the mid block
depend on (x_t, t). :meth:`DUNet.prepare` computes the rest once per image (the mid block's two
convolutions of the backbone feature, the conditioning channels' share of the first
convolutions) and :meth:`DUNet.forward_cached` runs one sampling step from it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BasicDownBlock",
    "BasicUpBlock",
    "DUNet",
    "DUNetCache",
    "FoldedBlock",
    "FoldedHead",
    "MattingHead",
    "bn_affine",
    "timestep_embedding",
]

# Default memory bound of one full-resolution map in the tiled part of the inference path: images
# up to 1024 x 1024 run untiled, 2048 x 2048 in 4 tiles, 4096 x 4096 in 16.
DEFAULT_MAX_TILE_BYTES = 128 * 2**20
# The last TAIL_BLOCKS up blocks and the head run in tiles. TAIL_HALO rows of their 1/4-resolution
# input on each side of a tile cover the receptive field of the tile's output rows (two up blocks
# of transposed conv 4x4/2, bilinear x2 and 3x3 convs, then the 3x3 head); one row fewer changes
# the result (tests/modeling/test_inference_equivalence.py).
TAIL_BLOCKS = 2
TAIL_HALO = 2


def timestep_embedding(t: Tensor, dim: int = 32, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of a continuous time.

    emb = [cos(t f_0), ..., cos(t f_{d/2-1}), sin(t f_0), ..., sin(t f_{d/2-1})] with
    f_k = max_period^(-k / (d/2)).

    Args:
        t: (N,) float time, in [0, 1] for DiffMatte.
        dim: embedding width d (even).
        max_period: the slowest period.

    Returns:
        (N, dim) float32 embedding.
    """
    if dim % 2:
        raise ValueError(f"timestep embedding width must be even, got {dim}")
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(-math.log(max_period) * k / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _check_mid_size(mid_hw: tuple[int, int], deepest_skip: Tensor) -> None:
    """Raises a clear error when the upsampled feature cannot meet the deepest skip."""
    if mid_hw != (deepest_skip.shape[-2], deepest_skip.shape[-1]):
        feature_hw = (mid_hw[0] // 2, mid_hw[1] // 2)
        expected = (deepest_skip.shape[-2] // 2, deepest_skip.shape[-1] // 2)
        raise ValueError(
            f"backbone features of spatial size {feature_hw} do not match the decoder input "
            f"(expected {expected})"
        )


def _conv_share(conv: nn.Conv2d, x: Tensor, channels: slice) -> Tensor:
    """The contribution of some input channels to a bias-free conv: conv(x) with sliced weights."""
    return F.conv2d(
        x,
        conv.weight[:, channels],
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
    )


class ConvDownsample(nn.Module):
    """Shortcut of a down block: 3x3 conv, stride 2, no bias."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class BilinearUpsample(nn.Module):
    """Shortcut of an up block: bilinear x2 (align_corners=False), then 3x3 conv without bias."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return self.conv(x)


class TimeResidualBlock(nn.Module):
    """Residual block with a per-channel time shift; subclasses add the shortcut branch.

    out = ReLU(BN2(conv2(ReLU(BN1(conv1(x))) + ReLU(Linear(emb)))) + shortcut(x)).

    Args:
        conv1: the resolution-changing first convolution (bias-free), C_in -> C_out.
        out_channels: C_out.
        emb_channels: width E of the time embedding.
    """

    def __init__(self, conv1: nn.Module, out_channels: int, emb_channels: int) -> None:
        super().__init__()
        self.emb_layers = nn.Sequential(nn.Linear(emb_channels, out_channels), nn.ReLU())
        self.conv1 = conv1
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def shortcut(self, x: Tensor) -> Tensor:
        """x: (N, C_in, H, W) -> (N, C_out, H', W'), the residual branch."""
        raise NotImplementedError

    def merge(self, h: Tensor, residual: Tensor, emb: Tensor) -> Tensor:
        """Finishes the block from precomputed ``conv1(x)`` and ``shortcut(x)``.

        Args:
            h: (N, C_out, H', W') ``conv1`` output, before BN.
            residual: (N, C_out, H', W') shortcut output.
            emb: (N, E) time embedding.

        Returns:
            (N, C_out, H', W') block output.
        """
        h = F.relu(self.bn1(h))
        h = h + self.emb_layers(emb)[:, :, None, None]
        h = self.bn2(self.conv2(h))
        return F.relu(h + residual)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """x: (N, C_in, H, W), emb: (N, E) -> (N, C_out, H', W')."""
        return self.merge(self.conv1(x), self.shortcut(x), emb)


class BasicDownBlock(TimeResidualBlock):
    """Halves the resolution: conv1 is a 3x3 stride-2 conv, the shortcut ``downsample.op``."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int) -> None:
        conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False)
        super().__init__(conv1, out_channels, emb_channels)
        self.downsample = ConvDownsample(in_channels, out_channels)

    def shortcut(self, x: Tensor) -> Tensor:
        return self.downsample(x)


class BasicUpBlock(TimeResidualBlock):
    """Doubles the resolution: conv1 is a 4x4 stride-2 transposed conv, the shortcut bilinear."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int) -> None:
        conv1 = nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False)
        super().__init__(conv1, out_channels, emb_channels)
        self.upsample = BilinearUpsample(in_channels, out_channels)

    def shortcut(self, x: Tensor) -> Tensor:
        return self.upsample(x)


class MattingHead(nn.Module):
    """conv3x3 C->16 (bias), BN, ReLU, conv1x1 16->1 (bias): per-pixel logits."""

    def __init__(self, in_channels: int, mid_channels: int = 16) -> None:
        super().__init__()
        self.matting_convs = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, 3, padding=1),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_channels, 1, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, C, H, W) -> (N, 1, H, W) logits."""
        return self.matting_convs(x)


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


def _fold_conv_bn(
    conv: nn.Conv2d | nn.ConvTranspose2d, bn: nn.BatchNorm2d
) -> tuple[Tensor, Tensor]:
    """Weight and bias of ``bn(conv(x))`` as one convolution (exact up to float rounding)."""
    scale, shift = bn_affine(bn)
    if isinstance(conv, nn.ConvTranspose2d):
        weight = conv.weight * scale[None, :, None, None]  # (C_in, C_out, k, k)
    else:
        weight = conv.weight * scale[:, None, None, None]  # (C_out, C_in, k, k)
    bias = shift if conv.bias is None else conv.bias * scale + shift
    return weight, bias


def _weight_format(weight: Tensor, channels_last: bool) -> Tensor:
    if channels_last:
        return weight.contiguous(memory_format=torch.channels_last)
    return weight.contiguous()


# Bilinear x2 (align_corners=False) as seen by a 3x3 convolution: the upsampled position
# 2i + phase + tap - 1 is a blend of the low-resolution neighbours i-1, i, i+1.
_BILINEAR_TAPS = {
    -1: (0.75, 0.25, 0.0),
    0: (0.25, 0.75, 0.0),
    1: (0.0, 0.75, 0.25),
    2: (0.0, 0.25, 0.75),
}


# Below this many input channels UpsampleConv folds the horizontal filter into the channel
# mixing (a (1, 3) convolution instead of a matrix product and a grouped filter): the extra
# 9 C_in C_out MACs per pixel cost less than the memory-bound grouped pass. Measured with 2 threads
# on an AVX-512 Xeon: 1.4x faster at C_in 96, a tie at 192, 1.4x slower at 384.
FOLD_COLUMNS_BELOW = 160


@dataclass
class UpsampleConv:
    """``conv3x3(bilinear_x2(x))`` (zero padding 1, no bias) computed at the low resolution.

    A 3x3 convolution mixes channels per tap and bilinear upsampling acts on each channel alone,
    so ``conv(up(x)) = sum_tap shift_tap(up(W_tap x))``. The channel mixing runs first, as one
    matrix product (C_in -> 9 C_out) at the input resolution: 9 C_in C_out MACs per input pixel
    instead of 36 C_in C_out for the convolution of the upsampled map. The upsampling and the
    tap shifts then become fixed separable filters per output phase: a grouped (1, 3) then (3, 1)
    convolution on the replicate-padded input (the clamping of ``align_corners=False``), and a
    pixel shuffle. For narrow inputs (C_in < ``FOLD_COLUMNS_BELOW``) the horizontal filter is
    folded into the channel mixing instead: one (1, 3) convolution C_in -> 6 C_out, 18 C_in C_out
    MACs per input pixel. Positions just outside the upsampled map are zero for the original
    convolution but not for these filters: their contributions to the first and last output
    rows and columns are subtracted again (corners added back once). Exact up to float rounding.
    """

    weight: Tensor  # (C_out, C_in, 3, 3)
    matrix: Tensor | None  # (C_in, 9 C_out), columns ordered (C_out, ky, kx)
    x_kernel: Tensor | None  # (6 C_out, 3, 1, 3): groups (C_out, ky), taps kx -> phases b
    columns_weight: Tensor | None  # (6 C_out, C_in, 1, 3): the two above folded together
    y_kernel: Tensor  # (4 C_out, 6, 3, 1): groups C_out, (ky, b) -> phases (a, b)

    @classmethod
    def from_weight(cls, weight: Tensor, fold_columns: bool | None = None) -> UpsampleConv:
        """weight: (C_out, C_in, 3, 3) of the convolution after the upsampling; fold_columns:
        None chooses by C_in (see ``FOLD_COLUMNS_BELOW``)."""
        c_out, c_in = weight.shape[:2]
        if fold_columns is None:
            fold_columns = c_in < FOLD_COLUMNS_BELOW
        taps = torch.tensor(
            [[_BILINEAR_TAPS[phase + tap - 1] for tap in range(3)] for phase in range(2)],
            dtype=weight.dtype,
            device=weight.device,
        )  # (phase, tap, neighbour)
        y_kernel = weight.new_zeros(c_out, 2, 2, 3, 2, 3)  # (c, a, b, ky, b', neighbour)
        for b in range(2):
            y_kernel[:, :, b, :, b, :] = taps
        matrix = x_kernel = columns_weight = None
        if fold_columns:
            columns = torch.einsum("oiyx,bxn->oybin", weight, taps)
            columns_weight = columns.reshape(6 * c_out, c_in, 1, 3)
            columns_weight = columns_weight.contiguous(memory_format=torch.channels_last)
        else:
            matrix = weight.permute(0, 2, 3, 1).reshape(9 * c_out, c_in).t().contiguous()
            x_kernel = taps.reshape(1, 2, 3, 1, 3).expand(3 * c_out, 2, 3, 1, 3)
            x_kernel = x_kernel.reshape(6 * c_out, 3, 1, 3).contiguous()
        return cls(
            weight=weight.contiguous(),
            matrix=matrix,
            x_kernel=x_kernel,
            columns_weight=columns_weight,
            y_kernel=y_kernel.reshape(4 * c_out, 6, 3, 1),
        )

    def __call__(self, x: Tensor) -> Tensor:
        """x: (N, C_in, h, w) -> (N, C_out, 2h, 2w), channels-last memory format."""
        c_out = self.weight.shape[0]
        padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
        if self.columns_weight is not None:
            z = F.conv2d(padded, self.columns_weight)  # (N, 6 C_out, h + 2, w)
        else:
            z = torch.matmul(padded.permute(0, 2, 3, 1), self.matrix).permute(0, 3, 1, 2)
            z = F.conv2d(z, self.x_kernel, groups=3 * c_out)  # (N, 6 C_out, h + 2, w)
        del padded
        out = F.pixel_shuffle(F.conv2d(z, self.y_kernel, groups=c_out), 2)
        del z
        weight = self.weight
        out[:, :, :1] -= F.conv2d(_upsample_line(x[:, :, :1], 3), weight[:, :, :1])
        out[:, :, -1:] -= F.conv2d(_upsample_line(x[:, :, -1:], 3), weight[:, :, 2:])
        out[:, :, :, :1] -= F.conv2d(_upsample_line(x[..., :1], 2), weight[..., :1])
        out[:, :, :, -1:] -= F.conv2d(_upsample_line(x[..., -1:], 2), weight[..., 2:])
        for row, col in ((0, 0), (0, -1), (-1, 0), (-1, -1)):
            out[:, :, row, col] += (
                x[:, :, row, col] @ weight[:, :, 2 * (row < 0), 2 * (col < 0)].t()
            )
        return out


def _upsample_line(line: Tensor, dim: int) -> Tensor:
    """Bilinear x2 along ``dim`` (2 or 3) of a one-pixel-thick map, extended by one position on
    each side as the replicate-padded input sees it: (.., n) -> (.., 2n + 2)."""
    pad = (1, 1, 0, 0) if dim == 3 else (0, 0, 1, 1)
    scale = (1, 2) if dim == 3 else (2, 1)
    line = F.pad(line, pad, mode="replicate")
    up = F.interpolate(line, scale_factor=scale, mode="bilinear", align_corners=False)
    return up.narrow(dim, 1, up.shape[dim] - 2)


@dataclass
class FoldedBlock:
    """Inference form of a :class:`TimeResidualBlock`: BatchNorm folded into the convolutions.

    ``out = ReLU(conv2'(ReLU(conv1'(x)) + ReLU(Linear(emb))) + shortcut(x))`` where ``conv1'``
    and ``conv2'`` carry BN1 and BN2 (eval statistics) in their weights and biases.
    """

    emb_layers: nn.Module
    conv1_weight: Tensor
    conv1_bias: Tensor
    conv2_weight: Tensor
    conv2_bias: Tensor
    shortcut_weight: Tensor
    upsampling: bool
    upsample_conv: UpsampleConv | None

    @classmethod
    def from_block(
        cls, block: TimeResidualBlock, channels_last: bool, low_res_upsample: bool = True
    ) -> FoldedBlock:
        """Folds ``block`` (a :class:`BasicDownBlock` or :class:`BasicUpBlock`); an up block's
        shortcut runs as :class:`UpsampleConv` when ``low_res_upsample``."""
        upsampling = isinstance(block, BasicUpBlock)
        shortcut = block.upsample.conv if upsampling else block.downsample.op
        w1, b1 = _fold_conv_bn(block.conv1, block.bn1)
        w2, b2 = _fold_conv_bn(block.conv2, block.bn2)
        return cls(
            emb_layers=block.emb_layers,
            conv1_weight=_weight_format(w1, channels_last),
            conv1_bias=b1,
            conv2_weight=_weight_format(w2, channels_last),
            conv2_bias=b2,
            shortcut_weight=_weight_format(shortcut.weight, channels_last),
            upsampling=upsampling,
            upsample_conv=(
                UpsampleConv.from_weight(shortcut.weight)
                if upsampling and low_res_upsample
                else None
            ),
        )

    def time_shift(self, emb: Tensor) -> Tensor:
        """emb: (N, E) -> (N, C_out, 1, 1) per-channel shift ``ReLU(Linear(emb))``."""
        return self.emb_layers(emb)[:, :, None, None]

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
    def from_head(cls, head: MattingHead, channels_last: bool) -> FoldedHead:
        conv1, bn, _, conv2 = head.matting_convs
        w1, b1 = _fold_conv_bn(conv1, bn)
        return cls(
            conv1_weight=_weight_format(w1, channels_last),
            conv1_bias=b1,
            conv2_weight=_weight_format(conv2.weight, channels_last),
            conv2_bias=conv2.bias,
        )

    def __call__(self, x: Tensor) -> Tensor:
        """x: (N, C, H, W) -> (N, 1, H, W) logits."""
        h = F.conv2d(x, self.conv1_weight, self.conv1_bias, padding=1).relu_()
        return F.conv2d(h, self.conv2_weight, self.conv2_bias)


@dataclass
class DUNetCache:
    """Everything of one batch of images that does not depend on (x_t, t) (see
    :meth:`DUNet.prepare`). Valid while the decoder's weights do not change.

    Attributes:
        down: the down blocks with BatchNorm folded in.
        up: the up blocks (mid block first) with BatchNorm folded in.
        head: the matting head with BatchNorm folded in.
        xt_conv1_weight: (C1, 1, 3, 3) first down block's conv1 (BN-scaled) on the x_t channel.
        xt_shortcut_weight: (C1, 1, 3, 3) its shortcut's weights on the x_t channel.
        cond_conv1: (N, C1, H/2, W/2) first down block's BN-folded conv1 on the conditioning
            channels, bias included.
        cond_shortcut: (N, C1, H/2, W/2) its shortcut on the conditioning channels.
        mid_activated: (N, Cm, 2h, 2w) ``ReLU(BN1(conv1(features)))`` of the mid block.
        mid_shortcut: (N, Cm, 2h, 2w) the mid block's upsample branch of the features.
        channels_last: whether maps are kept in channels-last memory format.
        tile_rows: rows (at 1/4 resolution) of one horizontal tile of the last two up blocks
            and the head; 0 computes them in one piece.
    """

    down: list[FoldedBlock]
    up: list[FoldedBlock]
    head: FoldedHead
    xt_conv1_weight: Tensor
    xt_shortcut_weight: Tensor
    cond_conv1: Tensor
    cond_shortcut: Tensor
    mid_activated: Tensor
    mid_shortcut: Tensor
    channels_last: bool
    tile_rows: int


class DUNet(nn.Module):
    """Time-conditioned U-Net decoder predicting x0 logits from x_t and backbone features.

    The structure is derived from the channel lists: one down block per consecutive pair of
    ``downsample_in``; a mid block ``upsample_in[0] -> upsample_in[1]`` on the feature; then up
    block i maps ``upsample_in[i + 1] + downsample_in[-1 - i]`` (concatenated [h, skip]) to
    ``upsample_in[i + 2]``; a head on ``upsample_in[-1]`` channels.

    Args:
        downsample_in: (7, 32, 64, 128) for the ViT configs, (7, 32, 64, 128, 128) for res34/swin_t.
        upsample_in: (C_feat, 256, 128, 64, 32) for ViT (feature at /16), (C_feat, 256, 256, 128,
            64, 32) for res34/swin_t (feature at /32); one entry more than ``downsample_in``.
        time_embed_dim: width of the sinusoidal embedding and of the time MLP.
    """

    def __init__(
        self,
        downsample_in: Sequence[int] = (7, 32, 64, 128),
        upsample_in: Sequence[int] = (384, 256, 128, 64, 32),
        time_embed_dim: int = 32,
    ) -> None:
        super().__init__()
        if len(upsample_in) != len(downsample_in) + 1:
            raise ValueError(
                f"upsample_in must have one entry more than downsample_in, got "
                f"{list(upsample_in)} and {list(downsample_in)}"
            )
        down, up = list(downsample_in), list(upsample_in)
        self.time_embed_dim = time_embed_dim
        self.cond_channels = down[0] - 1
        self.down_blks = nn.ModuleList(
            BasicDownBlock(down[i], down[i + 1], time_embed_dim) for i in range(len(down) - 1)
        )
        self.time_embed = nn.Sequential(
            nn.Linear(time_embed_dim, time_embed_dim),
            nn.ReLU(),
            nn.Linear(time_embed_dim, time_embed_dim),
        )
        self.mid_blk = BasicUpBlock(up[0], up[1], time_embed_dim)
        self.up_blks = nn.ModuleList(
            BasicUpBlock(up[i + 1] + down[-1 - i], up[i + 2], time_embed_dim)
            for i in range(len(down) - 1)
        )
        self.matting_head = MattingHead(up[-1])
        # Inference-path settings of prepare(), not part of the checkpoint.
        self.channels_last = True
        self.low_res_upsample = True
        self.max_tile_bytes = DEFAULT_MAX_TILE_BYTES

    def embed_time(self, t: Tensor) -> Tensor:
        """t: (N,) float in [0, 1] -> (N, time_embed_dim) conditioning vector."""
        return self.time_embed(timestep_embedding(t, self.time_embed_dim))

    def forward(self, x: Tensor, t: Tensor, features: Tensor) -> Tensor:
        """One denoising step.

        Args:
            x: (N, 7, H, W) float: the 6 conditioning channels (2 * [normalised RGB, one-hot
                trimap] - 1) then the variance-normalised x_t; H and W multiples of the feature
                stride s = 2^(len(down_blks) + 1) (16 for ViT, 32 for res34/swin_t).
            t: (N,) float time in [0, 1].
            features: (N, C_feat, H / s, W / s) backbone features.

        Returns:
            (N, 1, H, W) logits; x̂0 = 2 * sigmoid(logits) - 1.
        """
        emb = self.embed_time(t)
        skips = []
        h = x
        for block in self.down_blks:
            h = block(h, emb)
            skips.append(h)
        _check_mid_size((2 * features.shape[-2], 2 * features.shape[-1]), skips[-1])
        h = self.mid_blk(features, emb)
        return self._decode(h, skips, emb)

    def prepare(
        self,
        cond: Tensor,
        features: Tensor,
        channels_last: bool | None = None,
        max_tile_bytes: int | None = None,
    ) -> DUNetCache:
        """Computes what does not depend on (x_t, t), once per batch of images, for inference.

        BatchNorm (eval statistics) is folded into the preceding convolutions; the conditioning
        channels' share of the first down block's conv1 and shortcut (both linear in the input:
        ``conv(cond ⊕ x_t) = conv_cond(cond) + conv_xt(x_t)``) and the mid block's two branches
        on the backbone feature (``ReLU(BN1(conv1(f)))`` and the upsample shortcut) are computed
        here. Results of :meth:`forward_cached` equal :meth:`forward` up to float rounding.

        Args:
            cond: (N, 6, H, W) the conditioning channels of the decoder input (``x[:, :6]``).
            features: backbone features as in :meth:`forward`.
            channels_last: keep maps in channels-last memory format (faster convolutions on
                CPU and for half precision on CUDA); None uses :attr:`channels_last`.
            max_tile_bytes: memory bound of one full-resolution map (last up block's width) of
                the last two up blocks and the head; larger images run them in horizontal
                tiles with a halo (exact). None uses :attr:`max_tile_bytes`.

        Returns:
            The cache for :meth:`forward_cached`.

        Raises:
            ValueError: wrong number of conditioning channels or mismatched feature size.
        """
        if cond.shape[1] != self.cond_channels:
            raise ValueError(
                f"expected {self.cond_channels} conditioning channels, got {cond.shape[1]}"
            )
        stride = 2 ** (len(self.down_blks) + 1)
        expected = (cond.shape[-2] // stride, cond.shape[-1] // stride)
        if (features.shape[-2], features.shape[-1]) != expected:
            raise ValueError(
                f"backbone features of spatial size {tuple(features.shape[-2:])} do not match "
                f"the decoder input (expected {expected})"
            )
        if channels_last is None:
            channels_last = self.channels_last
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        cond = cond.contiguous(memory_format=memory_format)
        features = features.contiguous(memory_format=memory_format)
        down = [FoldedBlock.from_block(block, channels_last) for block in self.down_blks]
        up = [
            FoldedBlock.from_block(block, channels_last, self.low_res_upsample)
            for block in self.up_blks
        ]
        mid = FoldedBlock.from_block(self.mid_blk, channels_last, self.low_res_upsample)
        first = down[0]
        cond_w = slice(0, self.cond_channels)
        xt_w = slice(self.cond_channels, None)
        mid_activated = mid.conv1(features).relu_()
        mid_shortcut = mid.shortcut(features)
        cond_conv1 = F.conv2d(
            cond, first.conv1_weight[:, cond_w], first.conv1_bias, stride=2, padding=1
        )
        cond_shortcut = F.conv2d(cond, first.shortcut_weight[:, cond_w], stride=2, padding=1)
        budget = self.max_tile_bytes if max_tile_bytes is None else max_tile_bytes
        return DUNetCache(
            down=down,
            up=[mid, *up],
            head=FoldedHead.from_head(self.matting_head, channels_last),
            xt_conv1_weight=first.conv1_weight[:, xt_w],
            xt_shortcut_weight=first.shortcut_weight[:, xt_w],
            cond_conv1=cond_conv1,
            cond_shortcut=cond_shortcut,
            mid_activated=mid_activated,
            mid_shortcut=mid_shortcut,
            channels_last=channels_last,
            tile_rows=self._tile_rows(cond, budget),
        )

    def _tile_rows(self, cond: Tensor, budget: int) -> int:
        """Tile height at 1/4 resolution for the last two up blocks and head, 0 for no tiles."""
        if len(self.up_blks) < TAIL_BLOCKS:
            return 0
        n, _, height, width = cond.shape
        row_bytes = n * self.matting_head.matting_convs[0].in_channels * width * cond.element_size()
        rows = max(budget // row_bytes // 4, 1)
        return 0 if rows >= height // 4 else rows

    def forward_cached(self, x_t: Tensor, t: Tensor, cache: DUNetCache) -> Tensor:
        """Same as :meth:`forward` (up to float rounding) with the static parts from ``cache``.

        Args:
            x_t: (N, 1, H, W) variance-normalised diffusion state (padded like ``cond``).
            t: (N,) float time in [0, 1].
            cache: from :meth:`prepare` on the same images.

        Returns:
            (N, 1, H, W) float logits (contiguous).
        """
        if cache.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        emb = self.embed_time(t)
        first = cache.down[0]
        h = F.conv2d(x_t, cache.xt_conv1_weight, stride=2, padding=1)
        h = h.add_(cache.cond_conv1).relu_().add_(first.time_shift(emb))
        residual = F.conv2d(x_t, cache.xt_shortcut_weight, stride=2, padding=1)
        h = first.finish(h, residual.add_(cache.cond_shortcut))
        skips = [h]
        for block in cache.down[1:]:
            h = block(h, block.time_shift(emb))
            skips.append(h)
        mid = cache.up[0]
        h = mid.finish(cache.mid_activated + mid.time_shift(emb), cache.mid_shortcut)
        shifts = [block.time_shift(emb) for block in cache.up[1:]]
        tail_start = len(shifts) - TAIL_BLOCKS if cache.tile_rows else len(shifts)
        for i in range(tail_start):
            h = cache.up[1 + i](torch.cat([h, skips.pop()], dim=1), shifts[i])
        if not cache.tile_rows:
            return cache.head(h).contiguous()
        return self._tiled_tail(h, skips, shifts[tail_start:], cache)

    def _tiled_tail(
        self, h: Tensor, skips: list[Tensor], shifts: list[Tensor], cache: DUNetCache
    ) -> Tensor:
        """The last two up blocks and the head in horizontal tiles of the 1/4-resolution input.

        Each tile is computed from ``TAIL_HALO`` extra rows above and below (zero padding only
        at the image border) and only rows whose receptive field lies inside are kept, so the
        result equals the untiled computation.
        """
        blocks = cache.up[-TAIL_BLOCKS:]
        skip_quarter, skip_half = skips[-1], skips[-2]
        n, _, rows, width = h.shape
        out = None
        for top in range(0, rows, cache.tile_rows):
            bottom = min(top + cache.tile_rows, rows)
            lo, hi = max(top - TAIL_HALO, 0), min(bottom + TAIL_HALO, rows)
            x = torch.cat([h[:, :, lo:hi], skip_quarter[:, :, lo:hi]], dim=1)
            x = blocks[0](x, shifts[0])
            x = torch.cat([x, skip_half[:, :, 2 * lo : 2 * hi]], dim=1)
            logits = cache.head(blocks[1](x, shifts[1]))
            del x
            if out is None:
                out = logits.new_empty(n, 1, 4 * rows, 4 * width)
            out[:, :, 4 * top : 4 * bottom] = logits[:, :, 4 * (top - lo) : 4 * (bottom - lo)]
        return out

    def _decode(self, h: Tensor, skips: list[Tensor], emb: Tensor) -> Tensor:
        for i, block in enumerate(self.up_blks):
            h = block(torch.cat([h, skips[-1 - i]], dim=1), emb)
        return self.matting_head(h)
