"""The exportable graphs of a trained DiffMatte, as torch modules over its parameters.

Three graphs split one inference along what depends on the sampling step:

- :class:`BackboneGraph`: the padded backbone input (normalised RGB + trimap encoding) to the
  features, once per image;
- :class:`DecoderPrepareGraph`: the decoder's step-independent work, once per image: the
  conditioning channels' share of the first down block's two convolutions (BatchNorm folded in)
  and the mid block's two branches on the features (transposed convolution with BN and ReLU, and
  the bilinear-upsample shortcut);
- :class:`DecoderStepGraph`: one sampling step from the padded, variance-normalised ``x_t``, the
  time and the prepared tensors to the x0 prediction ``2 sigmoid(logits) - 1``.

They compute the same functions as ``DiffMatte.backbone`` and ``DUNet.forward`` (the equality
is tested), written so that ``torch.onnx.export`` keeps height, width and batch symbolic: the
ViT's windows are cut with ``reshape`` (no ``view`` of permuted tensors), the absolute and
relative position tables are always resized to the symbolic grid (a resize to the same size is
exact), and attention is written out as matrix products with the decomposed relative-position
bias; the Swin shift mask is built from comparisons, not slice assignments; the res34
backbone's spectral normalisation is folded into plain convolutions. The trained modules are
never modified.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffmatte.inference.fold import fold_conv_bn
from diffmatte.inference.tiling import TAIL_BLOCKS, TAIL_HALO
from diffmatte.modeling.backbone.resnet import ResNetEncoder, SpectralNorm
from diffmatte.modeling.backbone.swin import _MASK_FILL as SWIN_MASK_FILL
from diffmatte.modeling.backbone.swin import _REGION_EPS as SWIN_REGION_EPS
from diffmatte.modeling.backbone.swin import (
    PRIORS_PER_SET,
    PriorSwinTransformer,
    trimap_region_masks,
)
from diffmatte.modeling.backbone.swin import window_partition as swin_window_partition
from diffmatte.modeling.backbone.swin import window_reverse as swin_window_reverse
from diffmatte.modeling.backbone.vit import ViT

__all__ = [
    "BackboneGraph",
    "DEFAULT_BANDS",
    "DEFAULT_QUERY_CHUNKS",
    "DecoderPrepareGraph",
    "DecoderStepGraph",
    "PREPARED_NAMES",
    "fold_spectral_norm",
]

# Pieces of the ViT global attention's queries (see BackboneGraph).
DEFAULT_QUERY_CHUNKS = 16
# Horizontal bands of the banded step graph's full-resolution tail (see DecoderStepGraph).
DEFAULT_BANDS = 8
# Outputs of the prepare graph, inputs of the step graph after x_t and t.
PREPARED_NAMES = ("cond_conv1", "cond_shortcut", "mid_activated", "mid_shortcut")


def fold_spectral_norm(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every :class:`SpectralNorm` replaced by a plain convolution
    holding its normalised kernel ``weight_bar / sigma`` (the evaluation-mode function)."""
    module = copy.deepcopy(module)
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, SpectralNorm):
                conv = child.module
                plain = nn.Conv2d(
                    conv.in_channels,
                    conv.out_channels,
                    conv.kernel_size,
                    conv.stride,
                    conv.padding,
                    conv.dilation,
                    conv.groups,
                    bias=conv.bias is not None,
                )
                with torch.no_grad():
                    plain.weight.copy_(child.normalized_weight())
                    if conv.bias is not None:
                        plain.bias.copy_(conv.bias)
                setattr(parent, name, plain)
    return module


# Keys' cubic convolution coefficient of PyTorch's (and OpenCV's) bicubic interpolation.
_CUBIC_A = -0.75


def bicubic_matrix(n_in: int, n_out, device=None) -> Tensor:
    """(n_out, n_in) matrix of PyTorch's bicubic resize (``align_corners=False``, no antialias)
    along one axis: ``F.interpolate(x, size, mode="bicubic")`` of a grid equals
    ``M_h @ grid @ M_w^T``. Built from ``n_out``, which may be symbolic, so that the exported
    position embedding is two small matrix products (onnxruntime's cubic Resize of the
    (D, h, w) map is slower than the whole rest of a small image's patch embedding)."""
    real = (torch.arange(n_out, device=device).to(torch.float32) + 0.5) * (n_in / n_out) - 0.5
    base = torch.clamp(torch.floor(real), max=n_in - 1)
    t = torch.clamp(real - base, 0.0, 1.0)
    a = _CUBIC_A

    def near(x: Tensor) -> Tensor:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: Tensor) -> Tensor:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    weights = torch.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], dim=1)
    taps = (base.long()[:, None] + torch.arange(-1, 3, device=device)).clamp(0, n_in - 1)
    onehot = taps[:, :, None] == torch.arange(n_in, device=device)
    return (weights[:, :, None] * onehot.to(torch.float32)).sum(1)


def _resized_rel_pos(table: Tensor, size: int) -> Tensor:
    """(size, size, C) relative-position embeddings of a square self-attention axis.

    Entry [i, j] is the table, linearly resized (align_corners=False) to 2 size - 1 rows, at
    row i - j + size - 1. A symbolic ``size`` is always resized (exact when the length agrees).
    """
    rows = 2 * size - 1
    if not isinstance(size, int) or table.shape[0] != rows:
        table = F.interpolate(table.t().unsqueeze(0), size=rows, mode="linear", align_corners=False)
        table = table.squeeze(0).t()
    coords = torch.arange(size, device=table.device)
    return table[coords[:, None] - coords[None, :] + (size - 1)]


def _attend(q: Tensor, k: Tensor, v: Tensor, rel: tuple[Tensor, Tensor] | None, grid, scale):
    """softmax(q k^T scale + bias) v for a block of queries; ``rel`` holds the queries' height
    and width bias terms (B, nH, m, kh) and (B, nH, m, kw) of a (kh, kw) key grid."""
    logits = (q * scale) @ k.transpose(-2, -1)
    if rel is not None:
        b, heads, m, _ = logits.shape
        rel_h, rel_w = rel
        logits = logits.reshape(b, heads, m, grid[0], grid[1])
        logits = logits + rel_h[..., :, None] + rel_w[..., None, :]
        logits = logits.reshape(b, heads, m, grid[0] * grid[1])
    return logits.softmax(dim=-1) @ v


def _vit_attention(attn: nn.Module, x: Tensor, query_chunks: int = 1) -> Tensor:
    """``Attention.forward`` with the decomposed relative-position bias written out.

    With ``query_chunks`` > 1 the queries are cut into that many consecutive pieces (some may be
    empty) and attend one after the other, so that only one piece's logits are alive at a time.
    """
    b, h, w, _ = x.shape
    heads = attn.num_heads
    qkv = attn.qkv(x).reshape(b, h * w, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    rel = None
    if attn.use_rel_pos:
        # The two bias terms as batched matrix products over the grid axis (onnxruntime's
        # Einsum is several times slower here): rel_h[b, n, y, x] = R_h[y] q[b, n, y, x].
        q_rows = q.reshape(b * heads, h, w, -1).transpose(0, 1)  # (h, bn, w, c)
        rel_h = q_rows.reshape(h, b * heads * w, -1) @ _resized_rel_pos(
            attn.rel_pos_h, h
        ).transpose(1, 2)
        rel_h = rel_h.reshape(h, b * heads, w, h).transpose(0, 1)
        q_cols = q.reshape(b * heads, h, w, -1).permute(2, 0, 1, 3)  # (w, bn, h, c)
        rel_w = q_cols.reshape(w, b * heads * h, -1) @ _resized_rel_pos(
            attn.rel_pos_w, w
        ).transpose(1, 2)
        rel_w = rel_w.reshape(w, b * heads, h, w).permute(1, 2, 0, 3)
        rel = (rel_h.reshape(b, heads, h * w, h), rel_w.reshape(b, heads, h * w, w))
    if query_chunks == 1:
        out = _attend(q, k, v, rel, (h, w), attn.scale)
    else:
        pieces = [torch.tensor_split(t, query_chunks, dim=2) for t in (q, *(rel or ()))]
        out = torch.cat(
            [
                _attend(parts[0], k, v, parts[1:] or None, (h, w), attn.scale)
                for parts in zip(*pieces, strict=True)
            ],
            dim=2,
        )
    return attn.proj(out.permute(0, 2, 1, 3).reshape(b, h, w, -1))


def _vit_block(block: nn.Module, x: Tensor, query_chunks: int) -> Tensor:
    """``Block.forward`` (evaluation mode) with reshape-based window partitioning."""
    shortcut = x
    x = block.norm1(x)
    size = block.window_size
    if size > 0:
        b, h, w, c = x.shape
        pad_h, pad_w = (size - h % size) % size, (size - w % size) % size
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        n_h, n_w = (h + pad_h) // size, (w + pad_w) // size
        x = x.reshape(b, n_h, size, n_w, size, c).permute(0, 1, 3, 2, 4, 5)
        x = _vit_attention(block.attn, x.reshape(b * n_h * n_w, size, size, c))
        x = x.reshape(b, n_h, n_w, size, size, c).permute(0, 1, 3, 2, 4, 5)
        x = x.reshape(b, n_h * size, n_w * size, c)[:, :h, :w]
    else:
        x = _vit_attention(block.attn, x, query_chunks)
    x = shortcut + x
    x = x + block.mlp(block.norm2(x))
    if block.use_residual_block:
        x = block.residual(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    return x


class _ViTGraph(nn.Module):
    """``ViT.forward`` with the position embedding always resized to the token grid and the
    global blocks' queries in ``query_chunks`` pieces."""

    def __init__(self, vit: ViT, query_chunks: int) -> None:
        super().__init__()
        self.vit = vit
        self.query_chunks = query_chunks

    def forward(self, x: Tensor) -> Tensor:
        vit = self.vit
        x = vit.patch_embed(x)
        dim = x.shape[-1]
        side = math.isqrt(vit.pos_embed.shape[1] - 1)
        grid = vit.pos_embed[0, 1:].reshape(side, side * dim)
        rows = bicubic_matrix(side, x.shape[1], x.device) @ grid  # (h, side * D)
        rows = rows.reshape(-1, side, dim).transpose(1, 2)  # (h, D, side)
        pos = rows @ bicubic_matrix(side, x.shape[2], x.device).t()  # (h, D, w)
        x = x + pos.transpose(1, 2)[None]
        for block in vit.blocks:
            x = _vit_block(block, x, self.query_chunks)
        return x.permute(0, 3, 1, 2)


def _shifted_window_mask(height, width, window_size: int, shift_size: int, device) -> Tensor:
    """:func:`~diffmatte.modeling.backbone.swin.shifted_window_mask` from comparisons instead
    of slice assignments (whose ONNX form is wrong for symbolic sizes): the region of a row is
    0 above ``height - window_size``, 1 up to ``height - shift_size``, then 2 (likewise for
    columns), and the label is ``3 row region + column region``."""
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    row_region = (rows >= height - window_size).long() + (rows >= height - shift_size).long()
    col_region = (cols >= width - window_size).long() + (cols >= width - shift_size).long()
    labels = (row_region[:, None] * 3 + col_region[None, :]).to(torch.float32)
    windows = swin_window_partition(labels[None, :, :, None], window_size).squeeze(-1)
    diff = windows.unsqueeze(1) - windows.unsqueeze(2)
    return torch.where(diff != 0, SWIN_MASK_FILL, 0.0).to(torch.float32)


def _swin_block(block: nn.Module, x: Tensor, hw, memory: Tensor, masks: Tensor, shift_mask):
    """``PriorSwinBlock.forward`` (evaluation mode) with the region priors' denominator as
    ``max(count, 1e-9)`` instead of ``count + 1e-9``: the same float32 value for the integer
    counts of the 0/1 masks, and an addition the ONNX graph optimiser does not drop."""
    b, _, c = x.shape
    h, w = hw
    shortcut = x
    priors = torch.einsum("brl,blc->brc", masks.to(x.dtype), x)
    priors = priors / masks.sum(-1, keepdim=True).to(x.dtype).clamp(min=SWIN_REGION_EPS)
    memory = torch.cat([memory, priors], dim=1)
    ws, shift = block.window_size, block.shift_size
    tokens = block.norm1(x).reshape(b, h, w, c)
    pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
    tokens = F.pad(tokens, (0, 0, 0, pad_r, 0, pad_b))
    hp, wp = h + pad_b, w + pad_r
    if shift > 0:
        tokens = torch.roll(tokens, shifts=(-shift, -shift), dims=(1, 2))
    attn_out, prior_out = block.attn(
        swin_window_partition(tokens, ws), block.norm1(memory), shift_mask if shift > 0 else None
    )
    tokens = swin_window_reverse(attn_out, ws, hp, wp)
    if shift > 0:
        tokens = torch.roll(tokens, shifts=(shift, shift), dims=(1, 2))
    x = shortcut + tokens[:, :h, :w, :].reshape(b, h * w, c)
    x = x + block.mlp(block.norm2(x))
    memory = memory + prior_out
    return x, memory + block.mlp(block.norm2(memory))


class _SwinGraph(nn.Module):
    """``PriorSwinTransformer.forward`` with the shift mask of :func:`_shifted_window_mask` and
    the blocks of :func:`_swin_block`."""

    def __init__(self, swin: PriorSwinTransformer) -> None:
        super().__init__()
        self.swin = swin

    def forward(self, x: Tensor) -> Tensor:
        swin = self.swin
        trimap = x[:, -PRIORS_PER_SET:]
        tokens, hw = swin.patch_embed(x)
        for i, stage in enumerate(swin.layers):
            masks = trimap_region_masks(trimap, swin.patch_size * 2**i)
            h, w = hw
            ws = stage.window_size
            shift_mask = None
            if stage.shift_size > 0 and len(stage.blocks) > 1:
                # Not -(-h // ws) * ws: the exported integer division truncates toward zero.
                hp, wp = h + (ws - h % ws) % ws, w + (ws - w % ws) % ws
                shift_mask = _shifted_window_mask(hp, wp, ws, stage.shift_size, x.device)
            memory = tokens.new_zeros(tokens.shape[0], 0, tokens.shape[2])
            for block in stage.blocks:
                tokens, memory = _swin_block(block, tokens, hw, memory, masks, shift_mask)
            if stage.downsample is not None:
                tokens, hw = stage.downsample(tokens, hw)
        return tokens.transpose(1, 2).reshape(x.shape[0], swin.out_channels, *hw)


class BackboneGraph(nn.Module):
    """The backbone: (N, 4|6, H', W') padded input -> (N, C, H'/s, W'/s) features.

    Args:
        backbone: the trained backbone (ViT, ResNetEncoder or PriorSwinTransformer).
        query_chunks: ViT global attention runs its queries in this many consecutive pieces,
            one after the other: the largest intermediate (heads x tokens x tokens logits) is
            divided by it (6 GiB at 2048 x 2048 ViT-S in one piece).
    """

    def __init__(self, backbone: nn.Module, query_chunks: int = DEFAULT_QUERY_CHUNKS) -> None:
        super().__init__()
        self.query_chunks = query_chunks
        if isinstance(backbone, ViT):
            self.body = _ViTGraph(backbone, query_chunks)
        elif isinstance(backbone, PriorSwinTransformer):
            self.body = _SwinGraph(backbone)
        elif isinstance(backbone, ResNetEncoder):
            self.body = fold_spectral_norm(backbone)
        else:
            self.body = backbone

    def forward(self, backbone_input: Tensor) -> Tensor:
        return self.body(backbone_input)


class DecoderPrepareGraph(nn.Module):
    """The decoder's step-independent tensors of one batch of images.

    ``(condition (N, 6, H', W'), features) -> (cond_conv1, cond_shortcut, mid_activated,
    mid_shortcut)``: the first down block's BN-folded conv1 (bias included) and its shortcut on
    the conditioning channels, both at H'/2, and the mid block's ``ReLU(BN1(convT(f)))`` and
    upsample shortcut at twice the feature size.

    Args:
        decoder: the trained :class:`~diffmatte.modeling.decoder.dunet.DUNet`.
    """

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder
        first = decoder.down_blks[0]
        cond = decoder.cond_channels
        weight, bias = fold_conv_bn(first.conv1, first.bn1)
        self.register_buffer("conv1_weight", weight[:, :cond].detach())
        self.register_buffer("conv1_bias", bias.detach())
        self.register_buffer("shortcut_weight", first.downsample.op.weight[:, :cond].detach())

    def forward(self, condition: Tensor, features: Tensor) -> tuple[Tensor, ...]:
        mid = self.decoder.mid_blk
        cond_conv1 = F.conv2d(condition, self.conv1_weight, self.conv1_bias, stride=2, padding=1)
        cond_shortcut = F.conv2d(condition, self.shortcut_weight, stride=2, padding=1)
        mid_activated = F.relu(mid.bn1(mid.conv1(features)))
        return cond_conv1, cond_shortcut, mid_activated, mid.shortcut(features)


class DecoderStepGraph(nn.Module):
    """One sampling step: ``(x_t (N, 1, H', W'), t (N,), *prepared) -> x0 (N, 1, H', W')``.

    ``x_t`` is the padded, variance-normalised state; x0 is ``2 sigmoid(logits) - 1`` (not
    clamped, not cropped).

    With ``bands`` > 1 the last ``TAIL_BLOCKS`` up blocks and the head, which work at half and
    full resolution, run in that many horizontal bands of their quarter-resolution input, one
    after the other, each with ``TAIL_HALO`` rows of context above and below (the rule of
    :mod:`diffmatte.inference.tiling`, which the PyTorch backend uses): the same function, with
    the full-resolution buffers of one band alive at a time instead of the whole image's. The
    band count is fixed in the graph, so the bands grow with the image; their halo costs
    2 * TAIL_HALO / (H' / 4 / bands) of the tail's work.

    Args:
        decoder: the trained :class:`~diffmatte.modeling.decoder.dunet.DUNet`.
        bands: horizontal bands of the full-resolution tail; 1 computes it in one piece.
    """

    def __init__(self, decoder: nn.Module, bands: int = 1) -> None:
        super().__init__()
        self.decoder = decoder
        self.bands = bands
        first = decoder.down_blks[0]
        cond = decoder.cond_channels
        weight, _ = fold_conv_bn(first.conv1, first.bn1)
        self.register_buffer("conv1_weight", weight[:, cond:].detach())
        self.register_buffer("shortcut_weight", first.downsample.op.weight[:, cond:].detach())

    def forward(
        self,
        x_t: Tensor,
        t: Tensor,
        cond_conv1: Tensor,
        cond_shortcut: Tensor,
        mid_activated: Tensor,
        mid_shortcut: Tensor,
    ) -> Tensor:
        decoder = self.decoder
        emb = decoder.embed_time(t)
        first = decoder.down_blks[0]
        h = F.conv2d(x_t, self.conv1_weight, stride=2, padding=1) + cond_conv1
        h = F.relu(h) + first.emb_layers(emb)[:, :, None, None]
        residual = F.conv2d(x_t, self.shortcut_weight, stride=2, padding=1) + cond_shortcut
        h = F.relu(first.bn2(first.conv2(h)) + residual)
        skips = [h]
        for block in decoder.down_blks[1:]:
            h = block(h, emb)
            skips.append(h)
        mid = decoder.mid_blk
        h = mid_activated + mid.emb_layers(emb)[:, :, None, None]
        h = F.relu(mid.bn2(mid.conv2(h)) + mid_shortcut)
        up_blocks = decoder.up_blks
        body = len(up_blocks) - (TAIL_BLOCKS if self.bands > 1 else 0)
        for i, block in enumerate(up_blocks[:body]):
            h = block(torch.cat([h, skips[-1 - i]], dim=1), emb)
        if self.bands > 1:
            logits = self._banded_tail(h, skips[-1 - body], skips[-2 - body], emb)
        else:
            logits = decoder.matting_head(h)
        return torch.sigmoid(logits) * 2 - 1

    def _banded_tail(self, h: Tensor, skip_quarter: Tensor, skip_half: Tensor, emb: Tensor):
        """The last two up blocks and the head on ``h`` (N, C, H'/4, W'/4), band by band."""
        tail, head = self.decoder.up_blks[-TAIL_BLOCKS:], self.decoder.matting_head
        rows = h.shape[2]
        pieces = []
        for band in range(self.bands):
            top, bottom = band * rows // self.bands, (band + 1) * rows // self.bands
            # Symbolic bounds: torch.sym_max/sym_min keep them in the graph.
            lo = torch.sym_max(top - TAIL_HALO, 0)
            hi = torch.sym_min(bottom + TAIL_HALO, rows)
            x = tail[0](torch.cat([h[:, :, lo:hi], skip_quarter[:, :, lo:hi]], dim=1), emb)
            x = tail[1](torch.cat([x, skip_half[:, :, 2 * lo : 2 * hi]], dim=1), emb)
            pieces.append(head(x)[:, :, 4 * (top - lo) : 4 * (bottom - lo)])
        return torch.cat(pieces, dim=2)
