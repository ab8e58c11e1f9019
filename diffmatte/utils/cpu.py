"""What the CPU can compute natively: bfloat16 support for inference and training.

bfloat16 arithmetic is correct on any CPU (PyTorch and oneDNN emulate it), but it is only fast
where the processor has bf16 instructions: ``avx512_bf16`` (AVX-512 BF16 dot products, e.g. AMD
Zen 4 and later, Intel Cooper Lake and later) or ``amx_bf16`` (Intel AMX tiles, Sapphire Rapids
and later). Elsewhere (AVX2 only, or AVX-512 without BF16) every bf16 product is emulated through
float32 conversions and runs several times slower than plain float32, so the library refuses bf16
on such CPUs instead of silently running slower.

The flags come from ``/proc/cpuinfo`` (Linux). Where that file cannot be read the CPU counts as
having no native bf16.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["BF16_FLAGS", "Bf16Support", "bf16_refusal", "bf16_support", "cpu_flags"]

# CPU feature flags (as /proc/cpuinfo spells them) that give native bf16 arithmetic.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
_CPUINFO = Path("/proc/cpuinfo")


@functools.cache
def cpu_flags() -> frozenset[str] | None:
    """The feature flags of the first CPU in ``/proc/cpuinfo``, or None where unreadable."""
    try:
        text = _CPUINFO.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return None


@dataclass(frozen=True)
class Bf16Support:
    """Native bfloat16 support of this CPU.

    Attributes:
        native: the CPU has ``avx512_bf16`` or ``amx_bf16``.
        amx: the CPU has ``amx_bf16`` (matrix tiles; the largest bf16 speed-up).
        flags: the bf16 flags found, in :data:`BF16_FLAGS` order.
        isa: the widest vector instruction set PyTorch dispatches to here
            (``torch.backends.cpu.get_cpu_capability()``, e.g. "AVX512", "AVX2").
        reason: why bf16 is refused here (one line naming the missing feature); None when
            native.
    """

    native: bool
    amx: bool
    flags: tuple[str, ...]
    isa: str
    reason: str | None


def bf16_support() -> Bf16Support:
    """Detects native bf16 on this CPU (from :func:`cpu_flags`)."""
    flags = cpu_flags()
    isa = torch.backends.cpu.get_cpu_capability()
    if flags is None:
        return Bf16Support(
            native=False,
            amx=False,
            flags=(),
            isa=isa,
            reason=f"cannot read the CPU flags from {_CPUINFO}, so native bf16 "
            f"({' or '.join(BF16_FLAGS)}) cannot be confirmed",
        )
    found = tuple(flag for flag in BF16_FLAGS if flag in flags)
    reason = None
    if not found:
        if "avx512f" in flags:
            vector = "AVX-512 without BF16"
        elif "avx2" in flags:
            vector = "AVX2 only"
        else:
            vector = "no AVX2"
        reason = (
            f"this CPU has no native bf16 (flag avx512_bf16 or amx_bf16 missing; {vector}), "
            "where bf16 runs slower than fp32"
        )
    return Bf16Support(
        native=bool(found), amx="amx_bf16" in found, flags=found, isa=isa, reason=reason
    )


def bf16_refusal() -> str | None:
    """One line saying why bf16 is refused on this CPU, or None when it has native bf16."""
    return bf16_support().reason
