"""The bfloat16 inference path: weights cast once, no per-step weight casts, and its checks.

Plain ``torch.autocast("cpu", torch.bfloat16)`` around the float32 inference form works, but at
every step it casts each float32 weight again (the weight-cast cache must stay off for CUDA-graph
capture) and runs the ops of its float32 list in float32, e.g. ``F.pad(mode="replicate")``
(``replication_pad2d``) of the up blocks' low-resolution shortcut, whose bf16 map goes to float32
and back (see docs/performance.md, "bf16 on CPU"). The inference form with precision "bf16"
(:func:`diffmatte.inference.build_inference_model`) runs without autocast instead: the decoder's
BatchNorm is folded in float32 and the folded weights cast once (:mod:`diffmatte.inference.fold`),
the backbone is a copy with cast weights (:func:`cast_module`), and every op then sees bf16
inputs, so the replicate padding stays bf16 too. The functions here:

- :func:`cast_module` and :func:`cast_floating` cast a module, or any tree of dataclasses, lists
  and tensors, once, keeping each tensor's memory format;
- :func:`replicate_pad` pads by edge replication in the input's dtype by plain indexing, which
  autocast leaves alone (only needed under autocast: without it ``F.pad`` keeps bf16 and is many
  times faster);
- :func:`dtype_census` counts, for one call, the aten ops by the dtypes of their floating
  inputs and the casts among them: the check that a bf16 path really runs in bf16.

The sampler's state and arithmetic, the schedule, the time embedding's sinusoid, the final
sigmoid and the post-processing stay float32 (see :mod:`diffmatte.inference.model`).
"""

from __future__ import annotations

import copy
import dataclasses
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["DtypeCensus", "cast_floating", "cast_module", "dtype_census", "replicate_pad"]

_CAST_OPS = frozenset(
    {"aten.to.dtype", "aten.to.dtype_layout", "aten._to_copy.default", "aten.copy_.default"}
)


def _memory_format(tensor: Tensor) -> torch.memory_format:
    if (
        tensor.ndim == 4
        and not tensor.is_contiguous()
        and tensor.is_contiguous(memory_format=torch.channels_last)
    ):
        return torch.channels_last
    return torch.contiguous_format


def cast_module(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of ``module`` whose floating parameters and buffers are in ``dtype``.

    Each floating tensor is cast straight into the copy (no float32 copy of the whole module is
    made first); the copy's parameters do not require gradients. Integer and boolean buffers are
    shared with ``module``, which is not modified.

    Args:
        module: e.g. a trained backbone (or its inference form, sharing its parameters).
        dtype: the compute dtype, e.g. ``torch.bfloat16``.

    Returns:
        The cast copy, in ``module``'s training mode.
    """
    memo: dict[int, Any] = {}
    for tensor in (*module.parameters(), *module.buffers()):
        if id(tensor) in memo:
            continue
        if not tensor.is_floating_point():
            memo[id(tensor)] = tensor
        elif isinstance(tensor, nn.Parameter):
            memo[id(tensor)] = nn.Parameter(tensor.detach().to(dtype), requires_grad=False)
        else:
            memo[id(tensor)] = tensor.to(dtype)
    return copy.deepcopy(module, memo)


def cast_floating(obj: Any, dtype: torch.dtype, _memo: dict[int, Any] | None = None) -> Any:
    """A copy of ``obj`` with every floating-point tensor cast to ``dtype``, layouts kept.

    Walks tensors, modules (copied by :func:`cast_module`), dataclasses, lists, tuples and
    dicts; anything else is returned as is. A tensor shared by several fields is cast once and
    stays shared. Integer and boolean tensors are kept.

    Args:
        obj: e.g. a ``DUNetCache`` built from float32 weights (BatchNorm already folded).
        dtype: the compute dtype, e.g. ``torch.bfloat16``.

    Returns:
        The cast copy; ``obj`` is not modified.
    """
    memo = {} if _memo is None else _memo
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, Tensor):
        result = obj
        if obj.is_floating_point() and obj.dtype != dtype:
            result = obj.to(dtype).contiguous(memory_format=_memory_format(obj))
    elif isinstance(obj, nn.Module):
        result = cast_module(obj, dtype)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {
            f.name: cast_floating(getattr(obj, f.name), dtype, memo)
            for f in dataclasses.fields(obj)
            if f.init
        }
        result = dataclasses.replace(obj, **changes)
    elif isinstance(obj, list | tuple):
        result = type(obj)(cast_floating(item, dtype, memo) for item in obj)
    elif isinstance(obj, dict):
        result = {key: cast_floating(value, dtype, memo) for key, value in obj.items()}
    else:
        result = obj
    memo[id(obj)] = result
    return result


def replicate_pad(x: Tensor, pad: int = 1) -> Tensor:
    """``F.pad(x, (pad,) * 4, mode="replicate")`` in ``x``'s dtype and memory format.

    Under CPU autocast ``replication_pad2d`` runs in float32 (its output is float32 whatever the
    input); edge replication by index gathering has no such rule and moves only bytes.

    Args:
        x: (N, C, H, W) any float dtype.
        pad: pixels added on each side.

    Returns:
        (N, C, H + 2 pad, W + 2 pad), same dtype, channels-last if ``x`` is.
    """
    height, width = x.shape[-2:]
    rows = torch.arange(-pad, height + pad, device=x.device).clamp_(0, height - 1)
    cols = torch.arange(-pad, width + pad, device=x.device).clamp_(0, width - 1)
    out = x.index_select(2, rows).index_select(3, cols)
    return out.contiguous(memory_format=_memory_format(x))


@dataclass
class DtypeCensus:
    """What one call ran, by aten op and the dtypes of its floating tensor inputs.

    Attributes:
        ops: ``(op, dtypes) -> calls``; ``dtypes`` is the sorted tuple of the floating input
            dtypes' names, e.g. ``("aten.conv2d.default", ("bfloat16",))``. Ops are seen as
            called (after autocast has cast their inputs), not the kernels they decompose into.
        casts: ``(source dtype, target dtype) -> calls`` of dtype-changing copies (those of
            autocast included).
    """

    ops: Counter = field(default_factory=Counter)
    casts: Counter = field(default_factory=Counter)

    def calls(self, op_prefix: str, dtype: str | None = None) -> int:
        """Calls of ops whose name starts with ``op_prefix`` (with ``dtype`` among its floating
        inputs when given)."""
        return sum(
            count
            for (op, dtypes), count in self.ops.items()
            if op.startswith(op_prefix) and (dtype is None or dtype in dtypes)
        )


def _dtype_names(args: Any) -> tuple[str, ...]:
    names = set()
    for arg in torch.utils._pytree.tree_leaves(args):
        if isinstance(arg, Tensor) and arg.is_floating_point():
            names.add(str(arg.dtype).removeprefix("torch."))
    return tuple(sorted(names))


class _Census(TorchDispatchMode):
    def __init__(self, census: DtypeCensus) -> None:
        super().__init__()
        self.census = census

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = str(func)
        self.census.ops[(name, _dtype_names((args, kwargs)))] += 1
        if name in _CAST_OPS:
            source = args[-1] if name == "aten.copy_.default" else args[0]
            if isinstance(source, Tensor) and isinstance(out, Tensor) and source.dtype != out.dtype:
                self.census.casts[(str(source.dtype), str(out.dtype))] += 1
        return out


def dtype_census(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, DtypeCensus]:
    """Runs ``fn(*args, **kwargs)`` under inference mode and records the aten ops it dispatched,
    with the casts autocast inserts before them.

    Returns:
        ``fn``'s result and the :class:`DtypeCensus`.
    """
    census = DtypeCensus()
    # Under inference mode the ops are seen as called (conv2d, linear, to), as inference runs
    # them; with autograd on they would be seen decomposed.
    with torch.inference_mode(), _Census(census):
        result = fn(*args, **kwargs)
    return result, census
