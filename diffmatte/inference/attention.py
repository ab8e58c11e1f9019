"""The ViT backbone's attention in bounded memory, as a parallel form of the trained modules.

:class:`~diffmatte.modeling.backbone.vit.Attention` adds the full decomposed relative-position
bias, (B, heads, tokens, tokens), as the mask of ``F.scaled_dot_product_attention``. In the
global blocks that is 16384 tokens for a 2048 x 2048 image and 65536 for 4096 x 4096 (a full bias
would take 6 heads x 65536^2 x 4 bytes = 96 GiB for ViT-S). :func:`rel_pos_attention` processes
queries in chunks instead, with one bias buffer reused by every chunk (a fresh multi-hundred-MiB
tensor per chunk costs more in page faults than the bias arithmetic itself).

:func:`inference_backbone` returns a backbone that computes with such a kernel while sharing
every parameter with the trained one, which stays untouched: the blocks on the way to each
attention module are shallow copies, the attention modules are wrapped.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffmatte.inference.options import ATTENTION_KERNELS, DEFAULT_MAX_ATTENTION_BIAS_BYTES
from diffmatte.modeling.backbone.vit import Attention, attention_reference, get_rel_pos

__all__ = [
    "KernelAttention",
    "inference_backbone",
    "rel_pos_attention",
    "replace_modules",
]

# (q, k, v, rel_pos_h, rel_pos_w, q_size, k_size, scale) -> (B, nH, L, C) attention output.
AttentionKernel = Callable[..., Tensor]


def _query_chunks(q_size: tuple[int, int], queries: int) -> list[tuple[int, int]]:
    """Ranges of flattened query indices, at most ``queries`` long: whole grid rows when at least
    one row fits, else pieces of single rows (so the bias terms keep their grid structure)."""
    qh, qw = q_size
    if queries >= qw:
        rows = queries // qw
        return [(r * qw, min(r + rows, qh) * qw) for r in range(0, qh, rows)]
    return [
        (r * qw + c, r * qw + min(c + queries, qw))
        for r in range(qh)
        for c in range(0, qw, queries)
    ]


def _chunk_bias(
    q: Tensor,
    r_h: Tensor,
    r_w: Tensor,
    start: int,
    qw: int,
    k_size: tuple[int, int],
    out: Tensor | None = None,
) -> Tensor:
    """Additive bias (B, nH, m, kh*kw) of the m queries ``q`` (B, nH, m, C) starting at flattened
    index ``start``; ``r_h`` (qh, kh, C) and ``r_w`` (qw, kw, C) from :func:`get_rel_pos`.
    ``out``: a contiguous buffer of at least B*nH*m*kh*kw elements to write the bias into."""
    b, n_heads, m, dim = q.shape
    kh, kw = k_size
    row, col = divmod(start, qw)
    if col == 0 and m % qw == 0:
        rows = m // qw
        q_grid = q.reshape(b, n_heads, rows, qw, dim)
        rel_h = torch.einsum("bnhwc,hkc->bnhwk", q_grid, r_h[row : row + rows])
        rel_w = torch.einsum("bnhwc,wkc->bnhwk", q_grid, r_w)
        rel_h, rel_w = rel_h.reshape(b, n_heads, m, kh), rel_w.reshape(b, n_heads, m, kw)
    else:  # part of one grid row
        rel_h = q @ r_h[row].transpose(0, 1)
        rel_w = torch.einsum("bnwc,wkc->bnwk", q, r_w[col : col + m])
    if out is None:
        return (rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, n_heads, m, kh * kw)
    bias = out.view(-1)[: b * n_heads * m * kh * kw].view(b, n_heads, m, kh, kw)
    torch.add(rel_h[..., :, None], rel_w[..., None, :], out=bias)
    return bias.view(b, n_heads, m, kh * kw)


def rel_pos_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    rel_pos_h: Tensor,
    rel_pos_w: Tensor,
    q_size: tuple[int, int],
    k_size: tuple[int, int],
    scale: float,
    max_bias_bytes: int = DEFAULT_MAX_ATTENTION_BIAS_BYTES,
) -> Tensor:
    """Same function as :func:`~diffmatte.modeling.backbone.vit.attention_reference`, computed in
    bounded memory.

    Queries are processed in chunks so that each chunk's additive bias (B, nH, chunk, kh*kw) stays
    under ``max_bias_bytes`` (whole query rows when one fits, else pieces of a row); the bias
    terms are computed per chunk and each chunk goes through ``F.scaled_dot_product_attention``
    with the bias as a float mask. Apart from q, k, v and the output, memory stays O(chunk * kh *
    kw): about 3 * ``max_bias_bytes`` (bias and the kernel's buffers) even for the 65,536 tokens
    of a 4096x4096 image.

    Args:
        q: (B, nH, qh*qw, C) queries in row-major grid order.
        k: (B, nH, kh*kw, C) keys.
        v: (B, nH, kh*kw, C) values.
        rel_pos_h: (Lh, C) height table.
        rel_pos_w: (Lw, C) width table.
        q_size: (qh, qw) query grid.
        k_size: (kh, kw) key grid.
        scale: logit scale, head_dim ** -0.5.
        max_bias_bytes: memory budget of one chunk's bias.

    Returns:
        (B, nH, qh*qw, C) attention output.
    """
    b, n_heads, lq, _ = q.shape
    # Plain ints, also when sizes are traced (fvcore's jit trace).
    q_size, k_size = (int(q_size[0]), int(q_size[1])), (int(k_size[0]), int(k_size[1]))
    kh, kw = k_size
    r_h = get_rel_pos(q_size[0], kh, rel_pos_h).to(q.dtype)
    r_w = get_rel_pos(q_size[1], kw, rel_pos_w).to(q.dtype)
    bytes_per_query = int(b * n_heads) * kh * kw * q.element_size()
    chunks = _query_chunks(q_size, max(1, max_bias_bytes // bytes_per_query))
    if len(chunks) == 1:
        bias = _chunk_bias(q, r_h, r_w, 0, q_size[1], k_size)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
    out = q.new_empty(b, n_heads, lq, v.shape[-1])
    # Without autograd, one bias buffer serves all chunks: a fresh multi-hundred-MiB tensor per
    # chunk costs more in page faults than the bias arithmetic itself.
    buffer = None
    if not torch.is_grad_enabled():
        longest = max(stop - start for start, stop in chunks)
        buffer = q.new_empty(b * n_heads * longest * kh * kw)
    for start, stop in chunks:
        q_chunk = q[:, :, start:stop]
        bias = _chunk_bias(q_chunk, r_h, r_w, start, q_size[1], k_size, out=buffer)
        out[:, :, start:stop] = F.scaled_dot_product_attention(
            q_chunk, k, v, attn_mask=bias, scale=scale
        )
    return out


class KernelAttention(nn.Module):
    """A trained :class:`Attention` (with relative positions) computed by another kernel.

    Reads the wrapped module's parameters; the result equals its forward up to float rounding.

    Args:
        attention: the trained module (kept as a child, not modified).
        kernel: ``kernel(q, k, v, rel_pos_h, rel_pos_w, q_size, k_size, scale)``, e.g.
            :func:`rel_pos_attention` with a budget.
    """

    def __init__(self, attention: Attention, kernel: AttentionKernel) -> None:
        super().__init__()
        self.attention = attention
        self.kernel = kernel

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, H, W, D) tokens -> (B, H, W, D)."""
        attn = self.attention
        b, h, w, _ = x.shape
        qkv = attn.qkv(x).reshape(b, h * w, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        out = self.kernel(q, k, v, attn.rel_pos_h, attn.rel_pos_w, (h, w), (h, w), attn.scale)
        out = out.permute(0, 2, 1, 3).reshape(b, h, w, -1)
        return attn.proj(out)


def replace_modules(root: nn.Module, replace: Callable[[nn.Module], nn.Module | None]) -> nn.Module:
    """A module tree in which every module that ``replace`` maps to a module is replaced by it.

    ``root`` is not modified. Modules on the path from the root to a replaced module are shallow
    copies with their own child list; everything else, parameters and buffers included, is
    shared. ``root`` itself is returned when nothing is replaced.

    Args:
        root: the trained module tree.
        replace: returns the replacement of a module, or None to keep it (and look inside).
    """
    replacement = replace(root)
    if replacement is not None:
        return replacement
    children = {name: replace_modules(child, replace) for name, child in root.named_children()}
    if all(children[name] is child for name, child in root.named_children()):
        return root
    clone = copy.copy(root)
    clone._modules = {**root._modules, **children}
    return clone


def inference_backbone(
    backbone: nn.Module,
    attention: str = "chunked",
    max_bias_bytes: int = DEFAULT_MAX_ATTENTION_BIAS_BYTES,
) -> nn.Module:
    """The backbone with its relative-position attention computed by another kernel.

    Args:
        backbone: the trained backbone (not modified); backbones without ViT attention with
            relative positions are returned as they are.
        attention: "chunked" (:func:`rel_pos_attention` within ``max_bias_bytes``) or
            "materialised" (:func:`~diffmatte.modeling.backbone.vit.attention_reference`, the
            original release's computation, for comparisons).
        max_bias_bytes: budget of one query chunk's bias.

    Returns:
        A module computing the same function, sharing the backbone's parameters.
    """
    if attention not in ATTENTION_KERNELS:
        raise ValueError(f"attention must be one of {ATTENTION_KERNELS}, got {attention!r}")
    if attention == "chunked":
        kernel = functools.partial(rel_pos_attention, max_bias_bytes=max_bias_bytes)
    else:
        kernel = attention_reference

    def replace(module: nn.Module) -> nn.Module | None:
        if isinstance(module, Attention) and module.use_rel_pos:
            return KernelAttention(module, kernel)
        return None

    return replace_modules(backbone, replace)
