"""The decoder's full-resolution tail in horizontal tiles with a halo, in bounded memory.

The last ``TAIL_BLOCKS`` up blocks of :class:`~diffmatte.modeling.decoder.dunet.DUNet` and its
head work at 1/2 and full resolution, where one map of a 4096 x 4096 image takes 2 GiB. They are
computed in horizontal tiles of their 1/4-resolution input instead, each with ``TAIL_HALO`` extra
rows above and below that cover the receptive field of the tile's output rows (two up blocks of
transposed conv 4x4/2, bilinear x2 and 3x3 convs, then the 3x3 head); zero padding applies only
at the image border, so the result equals the untiled computation. One halo row fewer changes the
result (tests/inference/test_tiling.py).
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffmatte.inference.fold import FoldedBlock, FoldedHead

__all__ = ["TAIL_BLOCKS", "TAIL_HALO", "tile_rows", "tiled_tail"]

TAIL_BLOCKS = 2
TAIL_HALO = 2


def tile_rows(
    batch: int, height: int, width: int, channels: int, element_size: int, max_tile_bytes: int
) -> int:
    """Tile height at 1/4 resolution so that one full-resolution map stays within the budget.

    Args:
        batch: images per batch N.
        height: padded full-resolution height H (a multiple of 4).
        width: padded full-resolution width W.
        channels: channels of the last up block's output (the head's input).
        element_size: bytes per element of the compute dtype.
        max_tile_bytes: memory bound of one (N, channels, rows, W) full-resolution map.

    Returns:
        Rows per tile at 1/4 resolution, or 0 when the whole map fits (no tiling).
    """
    row_bytes = batch * channels * width * element_size
    rows = max(max_tile_bytes // row_bytes // 4, 1)
    return 0 if rows >= height // 4 else rows


def tiled_tail(
    blocks: list[FoldedBlock],
    head: FoldedHead,
    h: Tensor,
    skips: list[Tensor],
    shifts: list[Tensor],
    rows_per_tile: int,
) -> Tensor:
    """The last two up blocks and the head, tile by tile.

    Args:
        blocks: the last ``TAIL_BLOCKS`` up blocks.
        head: the matting head.
        h: (N, C, H/4, W/4) input of the first tail block.
        skips: down-path outputs; the last is (N, C', H/4, W/4), the one before (N, C'', H/2,
            W/2).
        shifts: the tail blocks' time shifts, (N, C_out, 1, 1) each.
        rows_per_tile: from :func:`tile_rows`.

    Returns:
        (N, 1, H, W) logits.
    """
    skip_quarter, skip_half = skips[-1], skips[-2]
    n, _, rows, width = h.shape
    out = None
    for top in range(0, rows, rows_per_tile):
        bottom = min(top + rows_per_tile, rows)
        lo, hi = max(top - TAIL_HALO, 0), min(bottom + TAIL_HALO, rows)
        x = torch.cat([h[:, :, lo:hi], skip_quarter[:, :, lo:hi]], dim=1)
        x = blocks[0](x, shifts[0])
        x = torch.cat([x, skip_half[:, :, 2 * lo : 2 * hi]], dim=1)
        logits = head(blocks[1](x, shifts[1]))
        del x
        if out is None:
            out = logits.new_empty(n, 1, 4 * rows, 4 * width)
        out[:, :, 4 * top : 4 * bottom] = logits[:, :, 4 * (top - lo) : 4 * (bottom - lo)]
    return out
