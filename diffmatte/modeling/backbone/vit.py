"""Plain ViT backbone with windowed/global attention, as used by the ViT configs of DiffMatte.

Facts from:
- Dosovitskiy et al., "An Image is Worth 16x16 Words" (ICLR 2021): patch embedding, pre-norm
  blocks, absolute position embedding.
- Li et al., "Exploring Plain Vision Transformer Backbones for Object Detection" (ViTDet,
  ECCV 2022): window attention in most blocks, global attention in a few, residual conv blocks
  after the global blocks, position embedding resized from the pre-training grid.
- Li et al., "MViTv2" (CVPR 2022): decomposed relative position bias.
- Yao et al., "ViTMatte" (2023) and Hu et al., "Diffusion for Natural Image Matting" (DiffMatte,
  2023): the 4-channel (RGB + trimap) variant and its hyper-parameters.

The module layout and parameter names follow the released DiffMatte checkpoints
(``model.backbone.*``), so those checkpoints load strictly.

Attention runs through ``F.scaled_dot_product_attention`` with the relative position bias as an
additive mask. The inference form of the model computes it in query chunks of bounded memory
instead (:mod:`diffmatte.inference.attention`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffmatte.modeling.backbone.layers import DropPath, Mlp

__all__ = [
    "ViT",
    "attention_reference",
    "get_rel_pos",
    "rel_pos_bias",
    "resize_abs_pos_embed",
    "checkpoint_filter_fn",
    "window_partition",
    "window_unpartition",
]

logger = logging.getLogger(__name__)


def resize_abs_pos_embed(pos_embed: Tensor, grid: tuple[int, int]) -> Tensor:
    """Drops the class-token slot and resizes the square position grid to the token grid.

    Args:
        pos_embed: (1, 1 + S*S, D) float, the pre-training embedding with the class slot first.
        grid: (h, w), the token grid of the current input.

    Returns:
        (1, h, w, D) position embedding. Bicubic, align_corners=False, only when (h, w) != (S, S).
    """
    patch_pos = pos_embed[:, 1:]
    side = math.isqrt(patch_pos.shape[1])
    if side * side != patch_pos.shape[1]:
        raise ValueError(f"position embedding has {patch_pos.shape[1]} patch slots, not a square")
    h, w = grid
    patch_pos = patch_pos.reshape(1, side, side, -1)
    if (h, w) == (side, side):
        return patch_pos
    resized = F.interpolate(
        patch_pos.permute(0, 3, 1, 2), size=(h, w), mode="bicubic", align_corners=False
    )
    return resized.permute(0, 2, 3, 1)


def window_partition(x: Tensor, window_size: int) -> tuple[Tensor, tuple[int, int]]:
    """Zero-pads the bottom/right to a multiple of the window and cuts non-overlapping windows.

    Args:
        x: (B, H, W, C) tokens.
        window_size: window side S.

    Returns:
        windows (B * nH * nW, S, S, C) in row-major window order, and the padded size (Hp, Wp).
    """
    b, h, w, c = x.shape
    pad_h = (window_size - h % window_size) % window_size
    pad_w = (window_size - w % window_size) % window_size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window_size, window_size, wp // window_size, window_size, c)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, c)
    return windows, (hp, wp)


def window_unpartition(
    windows: Tensor, window_size: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> Tensor:
    """Inverse of :func:`window_partition`, cropping the padding away.

    Args:
        windows: (B * nH * nW, S, S, C).
        window_size: window side S.
        padded_hw: (Hp, Wp) returned by :func:`window_partition`.
        hw: (H, W) before padding.

    Returns:
        (B, H, W, C) tokens.
    """
    hp, wp = padded_hw
    h, w = hw
    n_h, n_w = hp // window_size, wp // window_size
    b = windows.shape[0] // (n_h * n_w)
    x = windows.view(b, n_h, n_w, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    if (hp, wp) != (h, w):
        x = x[:, :h, :w].contiguous()
    return x


def get_rel_pos(q_size: int, k_size: int, rel_pos: Tensor) -> Tensor:
    """Relative position embeddings for every (query, key) pair along one axis.

    The table is linearly resized (align_corners=False) to 2*max(q_size, k_size) - 1 rows when it
    has another length; coordinates are scaled to the longer axis when q_size != k_size.

    Args:
        q_size: number of query positions along the axis.
        k_size: number of key positions along the axis.
        rel_pos: (L, C) table.

    Returns:
        (q_size, k_size, C) embeddings, entry [i, j] = table[i - j + k_size - 1] (scaled).
    """
    rows = 2 * max(q_size, k_size) - 1
    table = rel_pos
    if table.shape[0] != rows:
        table = F.interpolate(table.t().unsqueeze(0), size=rows, mode="linear", align_corners=False)
        table = table.squeeze(0).t()
    q_scale = max(k_size / q_size, 1.0)
    k_scale = max(q_size / k_size, 1.0)
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * q_scale
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * k_scale
    index = (q_coords - k_coords) + (k_size - 1) * k_scale
    return table[index.long()]


def _rel_pos_terms(
    q: Tensor,
    rel_pos_h: Tensor,
    rel_pos_w: Tensor,
    q_size: tuple[int, int],
    k_size: tuple[int, int],
) -> tuple[Tensor, Tensor]:
    """Per-query height and width bias terms, (B, nH, Lq, kh) and (B, nH, Lq, kw)."""
    qh, qw = q_size
    kh, kw = k_size
    r_h = get_rel_pos(qh, kh, rel_pos_h).to(q.dtype)
    r_w = get_rel_pos(qw, kw, rel_pos_w).to(q.dtype)
    b, n_heads, _, dim = q.shape
    q_grid = q.reshape(b, n_heads, qh, qw, dim)
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", q_grid, r_h).reshape(b, n_heads, qh * qw, kh)
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", q_grid, r_w).reshape(b, n_heads, qh * qw, kw)
    return rel_h, rel_w


def rel_pos_bias(
    q: Tensor,
    rel_pos_h: Tensor,
    rel_pos_w: Tensor,
    q_size: tuple[int, int],
    k_size: tuple[int, int],
) -> Tensor:
    """Decomposed relative position bias (MViTv2), one value per (query, key) pair.

    B[(i, j), (i', j')] = q_ij . R_h[i, i'] + q_ij . R_w[j, j'] with R from :func:`get_rel_pos`.

    Args:
        q: (B, nH, qh*qw, C) queries in row-major grid order (unscaled).
        rel_pos_h: (Lh, C) height table.
        rel_pos_w: (Lw, C) width table.
        q_size: (qh, qw) query grid.
        k_size: (kh, kw) key grid.

    Returns:
        (B, nH, qh*qw, kh*kw) additive attention bias.
    """
    rel_h, rel_w = _rel_pos_terms(q, rel_pos_h, rel_pos_w, q_size, k_size)
    b, n_heads, lq, kh = rel_h.shape
    return (rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, n_heads, lq, kh * rel_w.shape[-1])


def attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    rel_pos_h: Tensor,
    rel_pos_w: Tensor,
    q_size: tuple[int, int],
    k_size: tuple[int, int],
    scale: float,
) -> Tensor:
    """Straightforward attention with decomposed relative positions (materialises everything).

    softmax((q * scale) k^T + B) v with B[(i, j), (i', j')] = q_ij . R_h[i, i'] + q_ij . R_w[j, j']
    (the bias uses the unscaled q), computed as the original release does: the full logits, bias
    and softmax of every head in memory. The model itself attends with
    ``F.scaled_dot_product_attention`` and :func:`rel_pos_bias` as the mask (see
    :class:`Attention`); this form is the written-out formula, for checks and comparisons.

    Args:
        q: (B, nH, qh*qw, C) queries in row-major grid order.
        k: (B, nH, kh*kw, C) keys.
        v: (B, nH, kh*kw, C) values.
        rel_pos_h: (Lh, C) height table.
        rel_pos_w: (Lw, C) width table.
        q_size: (qh, qw) query grid.
        k_size: (kh, kw) key grid.
        scale: logit scale, head_dim ** -0.5.

    Returns:
        (B, nH, qh*qw, C) attention output.
    """
    rel_h, rel_w = _rel_pos_terms(q, rel_pos_h, rel_pos_w, q_size, k_size)
    kh, kw = k_size
    logits = (q * scale) @ k.transpose(-2, -1)
    b, n_heads, lq, _ = logits.shape
    logits = logits.view(b, n_heads, lq, kh, kw) + rel_h[..., :, None] + rel_w[..., None, :]
    weights = logits.view(b, n_heads, lq, kh * kw).softmax(dim=-1)
    return weights @ v


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of an (N, C, H, W) map, per pixel, with affine weights."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ResBottleneckBlock(nn.Module):
    """Residual conv bottleneck (ViTDet): 1x1 D->D/2, 3x3, 1x1 D/2->D, each followed by channel-LN.

    The last LayerNorm starts at zero so that a freshly built block is the identity.
    """

    def __init__(self, dim: int, bottleneck_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim, bottleneck_dim, 1, bias=False)
        self.norm1 = ChannelLayerNorm(bottleneck_dim)
        self.act1 = nn.GELU()
        self.conv2 = nn.Conv2d(bottleneck_dim, bottleneck_dim, 3, padding=1, bias=False)
        self.norm2 = ChannelLayerNorm(bottleneck_dim)
        self.act2 = nn.GELU()
        self.conv3 = nn.Conv2d(bottleneck_dim, dim, 1, bias=False)
        self.norm3 = ChannelLayerNorm(dim)
        for conv in (self.conv1, self.conv2, self.conv3):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.norm3.weight)

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, D, H, W) -> (N, D, H, W)."""
        out = self.act1(self.norm1(self.conv1(x)))
        out = self.act2(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        return x + out


class Attention(nn.Module):
    """Multi-head self-attention with decomposed relative position bias.

    Args:
        dim: token width D.
        num_heads: number of heads; head_dim = D // num_heads.
        qkv_bias: whether the qkv projection has a bias.
        use_rel_pos: add the decomposed relative position bias.
        input_size: (h, w) the tables are sized for: rel_pos_h has 2h-1 rows, rel_pos_w 2w-1.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool,
        use_rel_pos: bool,
        input_size: tuple[int, int],
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, H, W, D) tokens -> (B, H, W, D)."""
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        bias = None
        if self.use_rel_pos:
            bias = rel_pos_bias(q, self.rel_pos_h, self.rel_pos_w, (h, w), (h, w))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        out = out.permute(0, 2, 1, 3).reshape(b, h, w, -1)
        return self.proj(out)


class Block(nn.Module):
    """Pre-norm transformer block with window or global attention and an optional conv block.

    Args:
        dim: token width D.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / D.
        qkv_bias: qkv projection bias.
        drop_path: stochastic depth probability of both residual branches.
        use_rel_pos: decomposed relative position bias.
        window_size: window side, 0 for global attention.
        use_residual_block: append a :class:`ResBottleneckBlock` after the MLP.
        input_size: token grid the global-attention tables are sized for.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        qkv_bias: bool,
        drop_path: float,
        use_rel_pos: bool,
        window_size: int,
        use_residual_block: bool,
        input_size: tuple[int, int],
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        attn_size = input_size if window_size == 0 else (window_size, window_size)
        self.attn = Attention(dim, num_heads, qkv_bias, use_rel_pos, attn_size)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.window_size = window_size
        self.use_residual_block = use_residual_block
        if use_residual_block:
            self.residual = ResBottleneckBlock(dim, dim // 2)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, H, W, D) tokens -> (B, H, W, D)."""
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            hw = (x.shape[1], x.shape[2])
            # Padding happens after the norm: pad tokens are zeros and still act as keys.
            x, padded_hw = window_partition(x, self.window_size)
            x = self.attn(x)
            x = window_unpartition(x, self.window_size, padded_hw, hw)
        else:
            x = self.attn(x)
        x = shortcut + self.drop_path(x)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        if self.use_residual_block:
            x = self.residual(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: (N, C, H, W) -> (N, H/p, W/p, D)."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class ViT(nn.Module):
    """ViTDet-style plain ViT for matting (DiffMatte ViTS / ViTB / ViTS_1024 backbones).

    Args:
        in_chans: input channels (4: normalised RGB + trimap value in {0, 0.5, 1}).
        img_size: training image side; sizes the relative position tables of the global blocks
            (img_size / patch_size positions). Other input sizes work through interpolation.
        patch_size: patch side (16).
        embed_dim: token width D (384 for ViT-S, 768 for ViT-B).
        depth: number of blocks.
        num_heads: attention heads (6 for ViT-S, 12 for ViT-B).
        mlp_ratio: MLP hidden width / D.
        qkv_bias: qkv projection bias.
        drop_path_rate: stochastic depth, linearly increasing from 0 to this over the blocks.
        window_size: window side of the windowed blocks.
        window_block_indexes: blocks with window attention; the others attend globally.
        residual_block_indexes: blocks followed by a residual conv bottleneck.
        use_rel_pos: decomposed relative position bias in every block.
        pretrain_img_size: image side of the pre-training that sized the absolute position
            embedding ((pretrain_img_size / patch_size)^2 + 1 class slot).

    Attributes:
        out_channels: D.
        size_divisibility: 16 (input sides must be multiples of the patch size).
    """

    def __init__(
        self,
        in_chans: int = 4,
        img_size: int = 512,
        patch_size: int = 16,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        window_size: int = 14,
        window_block_indexes: Sequence[int] = (0, 1, 3, 4, 6, 7, 9, 10),
        residual_block_indexes: Sequence[int] = (2, 5, 8, 11),
        use_rel_pos: bool = True,
        pretrain_img_size: int = 224,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.out_channels = embed_dim
        self.size_divisibility = patch_size
        num_positions = (pretrain_img_size // patch_size) ** 2 + 1
        self.pos_embed = nn.Parameter(torch.zeros(1, num_positions, embed_dim))
        self.patch_embed = PatchEmbed(in_chans, embed_dim, patch_size)
        grid = img_size // patch_size
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        window_blocks = set(window_block_indexes)
        residual_blocks = set(residual_block_indexes)
        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop_path=rates[i],
                use_rel_pos=use_rel_pos,
                window_size=window_size if i in window_blocks else 0,
                use_residual_block=i in residual_blocks,
                input_size=(grid, grid),
            )
            for i in range(depth)
        )
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Encodes an image.

        Args:
            x: (N, in_chans, H, W) float, H and W multiples of ``patch_size``.

        Returns:
            (N, embed_dim, H / 16, W / 16) features.
        """
        if x.shape[-2] % self.patch_size or x.shape[-1] % self.patch_size:
            raise ValueError(
                f"ViT input sides must be multiples of {self.patch_size}, got {tuple(x.shape[-2:])}"
            )
        x = self.patch_embed(x)
        x = x + resize_abs_pos_embed(self.pos_embed, (x.shape[1], x.shape[2]))
        for block in self.blocks:
            x = block(x)
        return x.permute(0, 3, 1, 2)


def checkpoint_filter_fn(
    state_dict: Mapping[str, Tensor],
    model: nn.Module,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Maps a plain-ViT pre-training checkpoint (DINO, MAE) onto :class:`ViT` parameter names.

    Keeps ``pos_embed``, ``patch_embed.*`` and ``blocks.*``; drops the class token, final norms,
    heads and anything else. The patch projection is widened to the model's input channels with
    zeros for the extra (trimap) channels. Relative position tables and residual conv blocks are
    not in such checkpoints and keep their initialisation (load with ``strict=False``).

    Args:
        state_dict: the checkpoint's tensors; a ``{"model": ...}`` wrapper is unwrapped.
        model: the target :class:`ViT` (its patch projection gives the input channels).
        generator: unused (nothing is drawn at random); part of the signature shared by every
            backbone's filter.

    Returns:
        A new dict with backbone-level keys (no ``model.backbone.`` prefix).
    """
    in_chans = model.patch_embed.proj.in_channels
    if "model" in state_dict and isinstance(state_dict["model"], Mapping):
        state_dict = state_dict["model"]
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if not key.startswith(("pos_embed", "patch_embed.", "blocks.")):
            continue
        if key == "patch_embed.proj.weight" and value.shape[1] < in_chans:
            extra = value.new_zeros(value.shape[0], in_chans - value.shape[1], *value.shape[2:])
            value = torch.cat([value, extra], dim=1)
        out[key] = value
    dropped = len(state_dict) - len(out)
    logger.info("ViT checkpoint filter kept %d tensors, dropped %d", len(out), dropped)
    return out
