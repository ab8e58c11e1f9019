"""Low-resolution form of ``conv3x3(bilinear_x2(x))``, the shortcut of the decoder's up blocks.

The shortcut of :class:`~diffmatte.modeling.decoder.dunet.BasicUpBlock` upsamples its input
(bilinear x2, ``align_corners=False``) and convolves the result with a bias-free 3x3 kernel. The
same function is computed here at the input's resolution (see :class:`UpsampleConv`): a
quarter of the multiply-adds and no upsampled copy of the input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["FOLD_COLUMNS_BELOW", "UpsampleConv"]

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
    def from_weight(
        cls,
        weight: Tensor,
        fold_columns: bool | None = None,
        dtype: torch.dtype | None = None,
    ) -> UpsampleConv:
        """Builds the filters from the convolution's weights.

        Args:
            weight: (C_out, C_in, 3, 3) float32 weights of the convolution after the upsampling.
            fold_columns: fold the horizontal filter into the channel mixing; None chooses by
                C_in (see ``FOLD_COLUMNS_BELOW``).
            dtype: compute dtype; the filters are derived in the weight's dtype, then cast once.
        """
        weight = weight.detach()
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
        dtype = weight.dtype if dtype is None else dtype

        def cast(tensor: Tensor | None) -> Tensor | None:
            return None if tensor is None else tensor.to(dtype)

        return cls(
            weight=weight.to(dtype).contiguous(),
            matrix=cast(matrix),
            x_kernel=cast(x_kernel),
            columns_weight=cast(columns_weight),
            y_kernel=y_kernel.reshape(4 * c_out, 6, 3, 1).to(dtype),
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
