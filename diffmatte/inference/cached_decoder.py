"""The decoder's sampling step with its step-independent work done once per image.

Of :class:`~diffmatte.modeling.decoder.dunet.DUNet`, only the down path, the time-dependent parts
of the blocks and everything after the mid block depend on (x_t, t). :class:`CachedDUNet` folds
BatchNorm into the convolutions once (:mod:`diffmatte.inference.fold`), computes the rest once per
batch of images (:meth:`CachedDUNet.prepare`: the conditioning channels' share of the first
convolutions, linear in the input, ``conv(cond ⊕ x_t) = conv_cond(cond) + conv_xt(x_t)``, and the
mid block's two branches on the backbone feature) and runs each step from that
(:meth:`CachedDUNet.step`), with in-place activations, optionally channels-last maps, and the
full-resolution tail in tiles (:mod:`diffmatte.inference.tiling`). Results equal
``DUNet.forward`` up to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from diffmatte.inference.fold import FoldedBlock, FoldedHead, weight_format
from diffmatte.inference.options import DEFAULT_MAX_TILE_BYTES
from diffmatte.inference.tiling import TAIL_BLOCKS, tile_rows, tiled_tail
from diffmatte.modeling.decoder.dunet import DUNet, timestep_embedding

__all__ = ["CachedDUNet", "DUNetCache"]


@dataclass
class DUNetCache:
    """Everything of one batch of images that does not depend on (x_t, t).

    Attributes:
        cond_conv1: (N, C1, H/2, W/2) first down block's BN-folded conv1 on the conditioning
            channels, bias included.
        cond_shortcut: (N, C1, H/2, W/2) its shortcut on the conditioning channels.
        mid_activated: (N, Cm, 2h, 2w) ``ReLU(BN1(conv1(features)))`` of the mid block.
        mid_shortcut: (N, Cm, 2h, 2w) the mid block's upsample branch of the features.
        tile_rows: rows (at 1/4 resolution) of one horizontal tile of the last two up blocks
            and the head; 0 computes them in one piece.
    """

    cond_conv1: Tensor
    cond_shortcut: Tensor
    mid_activated: Tensor
    mid_shortcut: Tensor
    tile_rows: int


class CachedDUNet:
    """Inference form of a trained :class:`DUNet` (which it only reads).

    The folded weights are computed from the decoder's parameters when this object is built;
    build a new one after changing them.

    Args:
        decoder: the trained decoder, in evaluation mode (BatchNorm running statistics).
        dtype: compute dtype of the weights and maps (BatchNorm folded in float32, then cast).
        channels_last: keep maps and weights in channels-last memory format.
        low_res_upsample: run the up blocks' shortcuts at the input resolution
            (:class:`~diffmatte.inference.upsample_conv.UpsampleConv`).
        max_tile_bytes: memory bound of one full-resolution map of the tiled tail.
    """

    def __init__(
        self,
        decoder: DUNet,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = True,
        low_res_upsample: bool = True,
        max_tile_bytes: int = DEFAULT_MAX_TILE_BYTES,
    ) -> None:
        self.dtype = dtype
        self.channels_last = channels_last
        self.max_tile_bytes = max_tile_bytes
        self.cond_channels = decoder.cond_channels
        self.stride = 2 ** (len(decoder.down_blks) + 1)
        self.time_embed_dim = decoder.time_embed_dim
        self.head_channels = decoder.matting_head.matting_convs[0].in_channels
        with torch.no_grad():
            first_linear, _, second_linear = decoder.time_embed
            self.time_weights = tuple(
                weight_format(tensor, dtype, channels_last=False)
                for tensor in (
                    first_linear.weight,
                    first_linear.bias,
                    second_linear.weight,
                    second_linear.bias,
                )
            )
            self.down = [
                FoldedBlock.from_block(block, dtype, channels_last) for block in decoder.down_blks
            ]
            self.up = [
                FoldedBlock.from_block(block, dtype, channels_last, low_res_upsample)
                for block in (decoder.mid_blk, *decoder.up_blks)
            ]
            self.head = FoldedHead.from_head(decoder.matting_head, dtype, channels_last)
        first = self.down[0]
        self.xt_conv1_weight = first.conv1_weight[:, self.cond_channels :]
        self.xt_shortcut_weight = first.shortcut_weight[:, self.cond_channels :]

    def _memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def prepare(self, cond: Tensor, features: Tensor) -> DUNetCache:
        """Computes what does not depend on (x_t, t), once per batch of images.

        Args:
            cond: (N, 6, H, W) the conditioning channels of the decoder input (``x[:, :6]`` of
                ``DUNet.forward``).
            features: backbone features as in ``DUNet.forward``.

        Returns:
            The cache for :meth:`step`.

        Raises:
            ValueError: wrong number of conditioning channels or mismatched feature size.
        """
        if cond.shape[1] != self.cond_channels:
            raise ValueError(
                f"expected {self.cond_channels} conditioning channels, got {cond.shape[1]}"
            )
        expected = (cond.shape[-2] // self.stride, cond.shape[-1] // self.stride)
        if (features.shape[-2], features.shape[-1]) != expected:
            raise ValueError(
                f"backbone features of spatial size {tuple(features.shape[-2:])} do not match "
                f"the decoder input (expected {expected})"
            )
        memory_format = self._memory_format()
        cond = cond.to(self.dtype).contiguous(memory_format=memory_format)
        features = features.to(self.dtype).contiguous(memory_format=memory_format)
        first, mid = self.down[0], self.up[0]
        cond_w = slice(0, self.cond_channels)
        mid_activated = mid.conv1(features).relu_()
        mid_shortcut = mid.shortcut(features)
        cond_conv1 = F.conv2d(
            cond, first.conv1_weight[:, cond_w], first.conv1_bias, stride=2, padding=1
        )
        cond_shortcut = F.conv2d(cond, first.shortcut_weight[:, cond_w], stride=2, padding=1)
        n, _, height, width = cond.shape
        rows = 0
        if len(self.up) - 1 >= TAIL_BLOCKS:
            element_size = torch.empty((), dtype=self.dtype).element_size()
            rows = tile_rows(
                n, height, width, self.head_channels, element_size, self.max_tile_bytes
            )
        return DUNetCache(
            cond_conv1=cond_conv1,
            cond_shortcut=cond_shortcut,
            mid_activated=mid_activated,
            mid_shortcut=mid_shortcut,
            tile_rows=rows,
        )

    def embed_time(self, t: Tensor) -> Tensor:
        """t: (N,) float in [0, 1] -> (N, E) conditioning vector (``DUNet.embed_time``)."""
        w1, b1, w2, b2 = self.time_weights
        emb = timestep_embedding(t, self.time_embed_dim).to(self.dtype)
        return F.linear(F.relu(F.linear(emb, w1, b1)), w2, b2)

    def step(self, x_t: Tensor, t: Tensor, cache: DUNetCache) -> Tensor:
        """One decoder pass from the cache; equals ``DUNet.forward`` up to float rounding.

        Args:
            x_t: (N, 1, H, W) variance-normalised diffusion state (padded like ``cond``).
            t: (N,) float time in [0, 1].
            cache: from :meth:`prepare` on the same images.

        Returns:
            (N, 1, H, W) logits in the compute dtype (contiguous).
        """
        x_t = x_t.to(self.dtype)
        if self.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        emb = self.embed_time(t)
        first = self.down[0]
        h = F.conv2d(x_t, self.xt_conv1_weight, stride=2, padding=1)
        h = h.add_(cache.cond_conv1).relu_().add_(first.time_shift(emb))
        residual = F.conv2d(x_t, self.xt_shortcut_weight, stride=2, padding=1)
        h = first.finish(h, residual.add_(cache.cond_shortcut))
        skips = [h]
        for block in self.down[1:]:
            h = block(h, block.time_shift(emb))
            skips.append(h)
        mid = self.up[0]
        h = mid.finish(cache.mid_activated + mid.time_shift(emb), cache.mid_shortcut)
        shifts = [block.time_shift(emb) for block in self.up[1:]]
        tail_start = len(shifts) - TAIL_BLOCKS if cache.tile_rows else len(shifts)
        for i in range(tail_start):
            h = self.up[1 + i](torch.cat([h, skips.pop()], dim=1), shifts[i])
        if not cache.tile_rows:
            return self.head(h).contiguous()
        return tiled_tail(
            self.up[-TAIL_BLOCKS:], self.head, h, skips, shifts[tail_start:], cache.tile_rows
        )
