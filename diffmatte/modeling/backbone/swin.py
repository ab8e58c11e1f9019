"""Swin-T with trimap prior tokens (MatteFormer's PAWSA), the ``swin_t`` backbone of DiffMatte.

Re-implemented so that parameter names, shapes and the state-dict order match the released
DiffMatte ``swin_t`` checkpoints, and the forward matches the original in evaluation mode.

Papers:
    Liu et al., "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows",
    ICCV 2021.
    Park et al., "MatteFormer: Transformer-Based Image Matting via Prior-Tokens", CVPR 2022.
Sources of facts: MatteFormer (github.com/webtoon/matteformer, Apache-2.0),
``networks/encoders/MatteFormer.py``; DiffMatte (github.com/YihanHu-2022/DiffMatte)
``modeling/backbone/swin.py`` and ``pretrained/preprocess.py``; Swin Transformer
(github.com/microsoft/Swin-Transformer, MIT) for the window / shift / relative-position scheme.

Facts this module relies on:
    * Input (N, 6, H, W): normalised RGB, then the one-hot trimap (bg, unknown, fg). Patch
      embedding is a 4x4 stride-4 convolution over all 6 channels followed by LayerNorm.
      Stages: depths (2, 2, 6, 2), heads (3, 6, 12, 24), width 96 * 2**i, window 7, cyclic shift
      7 // 2 = 3 on odd blocks, patch merging between stages (concatenate the 2x2 neighbours in
      the order (0,0), (1,0), (0,1), (1,1), LayerNorm over 4C, Linear 4C -> 2C without bias).
      No final norm: the output is the last stage's tokens as (N, 768, H/32, W/32). LayerNorm
      eps 1e-5, exact GELU, qkv bias, attention scale head_dim**-0.5 applied to q.
    * Windows: tokens are zero-padded bottom/right (after norm1) to a multiple of the window,
      rolled by -shift on shifted blocks; padded tokens take part in attention as keys. Shifted
      blocks always use the -100 region mask, even when the map fits in one window.
    * Region masks: the one-hot trimap channels are nearest-subsampled by 4 (the patch grid),
      then by 2**i for stage i (i.e. element [4 * 2**i * r, 4 * 2**i * c] of the input).
    * Prior tokens: at the start of every block the block input (un-normalised shortcut) is
      averaged over each region, ``sum(mask * x) / (sum(mask) + 1e-9)``, giving 3 tokens ordered
      (unknown = trimap channel 1, background = channel 0, foreground = channel 2) (the original
      calls channel 0 "fg" and channel 2 "bg"; only the order matters). They are appended to the
      prior memory of the stage, which starts empty at every stage, so block i holds 3(i + 1)
      prior tokens: those of earlier blocks (as updated by later blocks) first, its own last.
    * Attention of block i: norm1 is applied to the memory too; every window uses its 49 tokens
      as queries and those 49 tokens plus the 3(i + 1) prior tokens (same qkv projection) as
      keys/values. The relative-position-bias table has 169 + 3(i + 1) rows; the index buffer
      (49, 49 + 3(i + 1)) holds the usual Swin index for the window columns and 169 + c for
      prior column c (169 is hard-coded in the original, which equals (2 * 7 - 1)**2, so only
      window 7 is meaningful; this module uses (2w - 1)**2). The shift mask gets zero columns for
      the prior tokens.
    * Prior update in block i: ``p <- p + DropPath(proj(V(norm1(p))))`` (the value slice of qkv,
      no attention), then ``p <- p + DropPath(mlp(norm2(p)))``, with the block's own weights.
      The memory is passed to the next block; the last block's update is unused.
    * Stochastic depth: rates linspace(0, 0.3, 12) over all blocks, per sample, rescaled by
      1 / keep; inactive in evaluation mode. For the prior tokens each (sample, token) is
      dropped independently, as the original draws separately per token. (With batch size 1 the
      original squeezes the batch axis and drops per channel instead; not reproduced.)
    * Pretrained conversion (``checkpoint_filter_fn``): from an ImageNet Swin-T checkpoint keep
      ``patch_embed.*`` and ``layers.*`` but not ``attn_mask``; the patch-embedding kernel is
      redrawn Xavier-normal for ``in_chans`` channels and its first 3 channels copied; every
      relative-position-bias table is extended to 169 + 3(i + 1) rows (new rows Xavier-normal
      drawn for the whole table, the first 169 rows copied) with the matching extended index.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffmatte.modeling.backbone.layers import DropPath, Mlp

__all__ = [
    "PriorSwinTransformer",
    "PriorSwinBlock",
    "PriorWindowAttention",
    "PatchMerging",
    "PatchEmbed",
    "window_partition",
    "window_reverse",
    "shifted_window_mask",
    "prior_relative_position_index",
    "trimap_region_masks",
    "region_priors",
    "checkpoint_filter_fn",
]

logger = logging.getLogger(__name__)

PRIORS_PER_SET = 3  # unknown, background, foreground
# Trimap one-hot channels (bg, unknown, fg) in the order the prior tokens are laid out.
_PRIOR_CHANNEL_ORDER = (1, 0, 2)
_MASK_FILL = -100.0
_REGION_EPS = 1e-9


def window_partition(x: Tensor, window_size: int) -> Tensor:
    """Split a token map into non-overlapping windows.

    Args:
        x: (B, H, W, C) with H and W multiples of ``window_size``.
        window_size: window side w.

    Returns:
        (B * H/w * W/w, w*w, C): windows in (batch, window row, window column) order, tokens
        row-major inside a window.
    """
    b, h, w, c = x.shape
    x = x.view(b, h // window_size, window_size, w // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size * window_size, c)


def window_reverse(windows: Tensor, window_size: int, height: int, width: int) -> Tensor:
    """Inverse of :func:`window_partition`.

    Args:
        windows: (B * nW, w*w, C).
        window_size: window side w.
        height: H of the padded map (multiple of w).
        width: W of the padded map (multiple of w).

    Returns:
        (B, H, W, C).
    """
    nh, nw = height // window_size, width // window_size
    c = windows.shape[-1]
    x = windows.view(-1, nh, nw, window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, c)


def shifted_window_mask(
    height: int,
    width: int,
    window_size: int,
    shift_size: int,
    device: torch.device | None = None,
) -> Tensor:
    """Additive attention mask of shifted-window attention.

    After a cyclic shift by ``-shift_size`` the last windows of each axis mix tokens from
    opposite borders; pairs from different source regions get -100, others 0.

    Args:
        height: padded map height (multiple of ``window_size``).
        width: padded map width (multiple of ``window_size``).
        window_size: window side w.
        shift_size: cyclic shift s (0 < s < w).
        device: device of the result.

    Returns:
        (nW, w*w, w*w) float32 with values in {0, -100}.
    """
    labels = torch.zeros(1, height, width, 1, device=device)
    bounds = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    region = 0
    for hs in bounds:
        for ws in bounds:
            labels[:, hs, ws, :] = region
            region += 1
    windows = window_partition(labels, window_size).squeeze(-1)
    diff = windows.unsqueeze(1) - windows.unsqueeze(2)
    return torch.where(diff != 0, _MASK_FILL, 0.0).to(torch.float32)


def prior_relative_position_index(window_size: int, num_prior_tokens: int) -> Tensor:
    """Relative-position index of a window with appended prior tokens.

    Args:
        window_size: window side w.
        num_prior_tokens: P extra key tokens (3 per prior set).

    Returns:
        (w*w, w*w + P) int64: the Swin index ``(dh + w - 1) * (2w - 1) + (dw + w - 1)`` for the
        window columns (dh, dw = query minus key coordinates) and ``(2w - 1)**2 + c`` for
        prior column c.
    """
    coords = torch.stack(
        torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
    ).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :] + (window_size - 1)
    index = rel[0] * (2 * window_size - 1) + rel[1]
    n = window_size * window_size
    offset = (2 * window_size - 1) ** 2
    prior_cols = (offset + torch.arange(num_prior_tokens)).expand(n, num_prior_tokens)
    return torch.cat([index, prior_cols], dim=1).long()


def trimap_region_masks(trimap_onehot: Tensor, stride: int) -> Tensor:
    """Nearest-subsampled region masks in prior-token order.

    Args:
        trimap_onehot: (B, 3, H, W) one-hot trimap (bg, unknown, fg), values in [0, 1].
        stride: subsampling factor (4 * 2**stage).

    Returns:
        (B, 3, floor(H/stride) * floor(W/stride)) float: masks (unknown, bg, fg), row-major.
    """
    h, w = trimap_onehot.shape[-2:]
    masks = trimap_onehot[:, _PRIOR_CHANNEL_ORDER, ::stride, ::stride]
    return masks[:, :, : h // stride, : w // stride].flatten(2)


def region_priors(x: Tensor, masks: Tensor) -> Tensor:
    """Mask-weighted mean features of each trimap region.

    Args:
        x: (B, L, C) tokens.
        masks: (B, R, L) region weights.

    Returns:
        (B, R, C): ``sum_l m[r, l] x[l] / (sum_l m[r, l] + 1e-9)`` (0 for an empty region).
    """
    total = torch.einsum("brl,blc->brc", masks.to(x.dtype), x)
    return total / (masks.sum(-1, keepdim=True).to(x.dtype) + _REGION_EPS)


class PriorWindowAttention(nn.Module):
    """Window attention whose keys/values also include prior tokens (MatteFormer's PAWSA).

    Args:
        dim: token channels C.
        num_heads: attention heads.
        window_size: window side w.
        num_prior_tokens: P prior tokens appended to every window's keys/values.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, num_prior_tokens: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.num_prior_tokens = num_prior_tokens
        self.scale = (dim // num_heads) ** -0.5
        num_rel = (2 * window_size - 1) ** 2 + num_prior_tokens
        self.relative_position_bias_table = nn.Parameter(torch.zeros(num_rel, num_heads))
        self.register_buffer(
            "relative_position_index",
            prior_relative_position_index(window_size, num_prior_tokens),
        )
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_position_bias(self) -> Tensor:
        """(heads, w*w, w*w + P) additive bias gathered from the table."""
        n = self.window_size * self.window_size
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n + self.num_prior_tokens, -1).permute(2, 0, 1)

    def forward(
        self, windows: Tensor, priors: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Attend within windows, with the prior tokens as extra keys/values.

        Args:
            windows: (B * nW, w*w, C) normalised window tokens, batch-major.
            priors: (B, P, C) normalised prior tokens.
            mask: (nW, w*w, w*w) shift mask with values in {0, -100}, or None.

        Returns:
            ``(out, prior_out)``: (B * nW, w*w, C) projected attention output and (B, P, C)
            projected value path of the prior tokens.
        """
        bw, n, c = windows.shape
        b, p, _ = priors.shape
        nw = bw // b
        heads, hd = self.num_heads, c // self.num_heads
        q, k, v = self.qkv(windows).view(bw, n, 3, heads, hd).permute(2, 0, 3, 1, 4)
        _, kp, vp = self.qkv(priors).view(b, p, 3, heads, hd).permute(2, 0, 3, 1, 4)
        # Every window of a sample sees the same prior keys/values.
        kp_w = kp.unsqueeze(1).expand(b, nw, heads, p, hd).reshape(bw, heads, p, hd)
        vp_w = vp.unsqueeze(1).expand(b, nw, heads, p, hd).reshape(bw, heads, p, hd)
        k = torch.cat([k, kp_w], dim=2)
        v = torch.cat([v, vp_w], dim=2)

        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn + self.relative_position_bias().unsqueeze(0)
        if mask is not None:
            mask = F.pad(mask, (0, p))
            attn = attn.view(b, nw, heads, n, n + p) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(bw, heads, n, n + p)
        attn = attn.softmax(dim=-1)
        out = self.proj((attn @ v).transpose(1, 2).reshape(bw, n, c))
        prior_out = self.proj(vp.transpose(1, 2).reshape(b, p, c))
        return out, prior_out


class PriorSwinBlock(nn.Module):
    """Swin block with prior-token memory (MatteFormer's PAST block).

    Args:
        dim: token channels C.
        num_heads: attention heads.
        window_size: window side w.
        shift_size: cyclic shift (0 for regular windows).
        num_prior_sets: prior sets this block attends to (block index in the stage + 1).
        mlp_ratio: hidden width of the MLP relative to C.
        drop_path: stochastic-depth rate.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 7,
        shift_size: int = 0,
        num_prior_sets: int = 1,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size must be in [0, {window_size}), got {shift_size}")
        self.window_size = window_size
        self.shift_size = shift_size
        self.num_prior_sets = num_prior_sets
        self.norm1 = nn.LayerNorm(dim)
        self.attn = PriorWindowAttention(
            dim, num_heads, window_size, PRIORS_PER_SET * num_prior_sets
        )
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(
        self,
        x: Tensor,
        hw: tuple[int, int],
        memory: Tensor,
        region_masks: Tensor,
        shift_mask: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        """Run the block on tokens and prior memory.

        Args:
            x: (B, H*W, C) tokens, row-major.
            hw: (H, W) token grid.
            memory: (B, 3 * (num_prior_sets - 1), C) prior tokens of the earlier blocks.
            region_masks: (B, 3, H*W) masks (unknown, bg, fg) on the token grid.
            shift_mask: (nW, w*w, w*w) mask for the padded grid; used when shift_size > 0.

        Returns:
            ``(x, memory)``: (B, H*W, C) tokens and (B, 3 * num_prior_sets, C) updated prior
            memory, this block's own priors last.
        """
        b, length, c = x.shape
        h, w = hw
        if length != h * w:
            raise ValueError(f"token count {length} does not match grid {h}x{w}")
        shortcut = x
        memory = torch.cat([memory, region_priors(x, region_masks)], dim=1)
        if memory.shape[1] != self.attn.num_prior_tokens:
            raise ValueError(
                f"block expects {self.attn.num_prior_tokens} prior tokens, got {memory.shape[1]}"
            )

        ws, shift = self.window_size, self.shift_size
        tokens = self.norm1(x).view(b, h, w, c)
        pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
        tokens = F.pad(tokens, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = h + pad_b, w + pad_r
        if shift > 0:
            tokens = torch.roll(tokens, shifts=(-shift, -shift), dims=(1, 2))
        attn_out, prior_out = self.attn(
            window_partition(tokens, ws), self.norm1(memory), shift_mask if shift > 0 else None
        )
        tokens = window_reverse(attn_out, ws, hp, wp)
        if shift > 0:
            tokens = torch.roll(tokens, shifts=(shift, shift), dims=(1, 2))
        tokens = tokens[:, :h, :w, :].reshape(b, h * w, c)

        x = shortcut + self.drop_path(tokens)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        memory = memory + self.drop_path(prior_out, sample_dims=2)
        memory = memory + self.drop_path(self.mlp(self.norm2(memory)), sample_dims=2)
        return x, memory


class PatchMerging(nn.Module):
    """2x2 patch merging: concatenate neighbours, LayerNorm over 4C, Linear 4C -> 2C (no bias).

    Args:
        dim: input channels C.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        # Registration order (reduction, norm) is the checkpoint's key order.
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: Tensor, hw: tuple[int, int]) -> tuple[Tensor, tuple[int, int]]:
        """Args:
            x: (B, H*W, C) tokens; hw: (H, W).

        Returns:
            ((B, ceil(H/2)*ceil(W/2), 2C) tokens, (ceil(H/2), ceil(W/2))); odd sizes are
            zero-padded bottom/right.
        """
        b, _, c = x.shape
        h, w = hw
        x = x.view(b, h, w, c)
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat(
            [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1
        )
        h2, w2 = x.shape[1:3]
        return self.reduction(self.norm(x.reshape(b, h2 * w2, 4 * c))), (h2, w2)


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding: conv k = s = patch_size, then LayerNorm on tokens.

    Args:
        in_chans: input channels.
        embed_dim: output channels C.
        patch_size: patch side.
    """

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int = 4) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Args: x (B, in_chans, H, W), H and W multiples of patch_size.

        Returns:
            ((B, H/p * W/p, C) normalised tokens, (H/p, W/p)).
        """
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), (h, w)


class PriorSwinStage(nn.Module):
    """One Swin stage: prior-token blocks with alternating shifts, then optional patch merging.

    Args:
        dim: token channels.
        depth: number of blocks.
        num_heads: attention heads.
        window_size: window side.
        mlp_ratio: MLP hidden ratio.
        drop_path: per-block stochastic-depth rates (length ``depth``).
        downsample: whether to end with patch merging.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        drop_path: Sequence[float],
        downsample: bool,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.blocks = nn.ModuleList(
            PriorSwinBlock(
                dim,
                num_heads,
                window_size,
                shift_size=0 if i % 2 == 0 else self.shift_size,
                num_prior_sets=i + 1,
                mlp_ratio=mlp_ratio,
                drop_path=drop_path[i],
            )
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(
        self, x: Tensor, hw: tuple[int, int], region_masks: Tensor
    ) -> tuple[Tensor, tuple[int, int]]:
        """Args:
            x: (B, H*W, C) tokens; hw: (H, W); region_masks: (B, 3, H*W).

        Returns:
            (tokens, grid) after the blocks and, when present, patch merging.
        """
        h, w = hw
        ws = self.window_size
        hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
        shift_mask = None
        if self.shift_size > 0 and len(self.blocks) > 1:
            shift_mask = shifted_window_mask(hp, wp, ws, self.shift_size, device=x.device)
            shift_mask = shift_mask.to(x.dtype)
        memory = x.new_zeros(x.shape[0], 0, x.shape[2])
        for block in self.blocks:
            x, memory = block(x, hw, memory, region_masks, shift_mask)
        if self.downsample is not None:
            x, hw = self.downsample(x, hw)
        return x, hw


class PriorSwinTransformer(nn.Module):
    """MatteFormer's prior-attentive Swin Transformer, DiffMatte ``swin_t`` backbone.

    Args:
        in_chans: input channels; the last 3 must be the one-hot trimap (bg, unknown, fg).
        embed_dim: channels of the first stage (doubled per stage).
        depths: blocks per stage.
        num_heads: attention heads per stage.
        window_size: attention window side (the released weights need 7).
        mlp_ratio: MLP hidden ratio.
        drop_path_rate: stochastic depth of the last block (linear from 0 over all blocks).

    Attributes:
        out_channels: channels of the output feature (embed_dim * 2**(stages-1) = 768).
        size_divisibility: required input multiple (4 * 2**(stages-1) = 32).
    """

    def __init__(
        self,
        in_chans: int = 6,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.3,
    ) -> None:
        super().__init__()
        depths, num_heads = tuple(depths), tuple(num_heads)
        if len(depths) != len(num_heads) or not depths or min(depths) < 1:
            raise ValueError(f"depths {depths} and num_heads {num_heads} must match, all >= 1")
        if in_chans < PRIORS_PER_SET + 1:
            raise ValueError(f"in_chans must include a 3-channel one-hot trimap, got {in_chans}")
        if window_size < 2:
            raise ValueError(f"window_size must be >= 2, got {window_size}")
        self.in_chans = in_chans
        self.patch_size = 4
        num_stages = len(depths)
        self.out_channels = embed_dim * 2 ** (num_stages - 1)
        self.size_divisibility = self.patch_size * 2 ** (num_stages - 1)
        self.patch_embed = PatchEmbed(in_chans, embed_dim, self.patch_size)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList()
        start = 0
        for i, (depth, heads) in enumerate(zip(depths, num_heads, strict=True)):
            self.layers.append(
                PriorSwinStage(
                    embed_dim * 2**i,
                    depth,
                    heads,
                    window_size,
                    mlp_ratio,
                    rates[start : start + depth],
                    downsample=i < num_stages - 1,
                )
            )
            start += depth

    def forward(self, x: Tensor) -> Tensor:
        """Encode an image with its trimap.

        Args:
            x: (N, in_chans, H, W) float32: ImageNet-normalised RGB then the one-hot trimap
                (bg, unknown, fg) in {0, 1} (all zero on padding); H, W multiples of 32.

        Returns:
            (N, 768, H/32, W/32) float32 feature of the last stage (no final norm).
        """
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"PriorSwinTransformer expects (N, {self.in_chans}, H, W) input, "
                f"got {tuple(x.shape)}"
            )
        h, w = x.shape[-2:]
        if h % self.size_divisibility or w % self.size_divisibility:
            raise ValueError(
                f"PriorSwinTransformer needs H and W multiples of {self.size_divisibility}, "
                f"got {h}x{w} (pad the input first)"
            )
        trimap = x[:, -PRIORS_PER_SET:]
        tokens, hw = self.patch_embed(x)
        for i, stage in enumerate(self.layers):
            masks = trimap_region_masks(trimap, self.patch_size * 2**i)
            tokens, hw = stage(tokens, hw, masks)
        # The last stage has no patch merging, so hw is its own grid.
        return tokens.transpose(1, 2).reshape(x.shape[0], self.out_channels, *hw)


_TABLE_KEY = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_bias_table$")


def checkpoint_filter_fn(
    state_dict: Mapping[str, Tensor],
    model: nn.Module,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Turn an ImageNet Swin checkpoint (e.g. ``swin_tiny_patch4_window7_224.pth``) into
    ``PriorSwinTransformer`` weights.

    Keeps ``patch_embed.*`` and ``layers.*`` (dropping ``attn_mask`` buffers, the final norm and
    the head); re-draws the patch-embedding kernel Xavier-normal for the model's input channels
    and copies the pretrained RGB channels into it; extends every relative-position-bias table of
    block i by 3(i + 1) Xavier-normal rows (the table is drawn whole, then the pretrained rows
    are copied) and sets the matching prior index. Tables that already have the extended size
    are kept. Does not modify its input.

    Args:
        state_dict: the checkpoint's state dict (or the checkpoint dict holding ``model``).
        model: the target :class:`PriorSwinTransformer` (its patch projection gives the input
            channels).
        generator: random source of the new entries.

    Returns:
        Backbone-relative state dict (no ``model.backbone.`` prefix; the converter adds it).
    """
    in_chans = model.patch_embed.proj.in_channels
    if "model" in state_dict and isinstance(state_dict["model"], Mapping):
        state_dict = state_dict["model"]
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.split(".")[0] not in ("patch_embed", "layers") or "attn_mask" in key:
            continue
        out[key] = value.float() if value.is_floating_point() else value.clone()

    embed_key = "patch_embed.proj.weight"
    if embed_key in out and out[embed_key].shape[1] != in_chans:
        old = out[embed_key]
        if old.shape[1] > in_chans:
            raise ValueError(f"{embed_key} has {old.shape[1]} input channels, more than {in_chans}")
        new = torch.empty(old.shape[0], in_chans, *old.shape[2:])
        nn.init.xavier_normal_(new, generator=generator)
        new[:, : old.shape[1]] = old
        out[embed_key] = new

    for key in list(out):
        match = _TABLE_KEY.match(key)
        if match is None:
            continue
        num_prior = PRIORS_PER_SET * (int(match.group(2)) + 1)
        table = out[key]
        index_key = key.replace("relative_position_bias_table", "relative_position_index")
        num_window_rows = table.shape[0]
        window_size = round(((num_window_rows**0.5) + 1) / 2)
        if (2 * window_size - 1) ** 2 != num_window_rows:
            window_size = round(((num_window_rows - num_prior) ** 0.5 + 1) / 2)
            if (2 * window_size - 1) ** 2 + num_prior != num_window_rows:
                raise ValueError(f"{key} has {num_window_rows} rows, not a window table")
        else:
            new = torch.empty(num_window_rows + num_prior, table.shape[1])
            nn.init.xavier_normal_(new, generator=generator)
            new[:num_window_rows] = table
            out[key] = new
        out[index_key] = prior_relative_position_index(window_size, num_prior)
    return out
