import re
from pathlib import Path

import pytest
import torch

from diffmatte.utils import cpu

AMD_ZEN4 = "fpu sse2 avx2 avx512f avx512bw avx512vl avx512_vnni avx512_bf16"
SAPPHIRE_RAPIDS = "fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8"
SKYLAKE_X = "fpu sse2 avx2 avx512f avx512bw avx512vl"
HASWELL = "fpu sse2 avx avx2 fma"


@pytest.fixture
def cpuinfo(tmp_path, monkeypatch):
    """Points the detection at a fake /proc/cpuinfo; returns a writer of its flags line."""
    path = tmp_path / "cpuinfo"
    monkeypatch.setattr(cpu, "_CPUINFO", path)
    cpu.cpu_flags.cache_clear()

    def write(flags: str | None) -> None:
        if flags is not None:
            path.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n\n")
        cpu.cpu_flags.cache_clear()

    yield write
    cpu.cpu_flags.cache_clear()


@pytest.mark.parametrize(
    ("flags", "native", "amx", "found"),
    [
        (AMD_ZEN4, True, False, ("avx512_bf16",)),
        (SAPPHIRE_RAPIDS, True, True, ("amx_bf16", "avx512_bf16")),
        (SKYLAKE_X, False, False, ()),
        (HASWELL, False, False, ()),
    ],
)
def test_native_bf16_from_flags(cpuinfo, flags, native, amx, found):
    cpuinfo(flags)
    support = cpu.bf16_support()
    assert (support.native, support.amx, support.flags) == (native, amx, found)
    assert (support.reason is None) == native
    assert cpu.bf16_refusal() == support.reason


def test_refusal_is_one_line_naming_the_missing_feature(cpuinfo):
    cpuinfo(SKYLAKE_X)
    reason = cpu.bf16_refusal()
    assert "\n" not in reason
    assert "avx512_bf16" in reason and "AVX-512 without BF16" in reason
    cpuinfo(HASWELL)
    assert "AVX2 only" in cpu.bf16_refusal()


def test_unreadable_cpuinfo_counts_as_no_native_bf16(cpuinfo):
    cpuinfo(None)
    assert cpu.cpu_flags() is None
    support = cpu.bf16_support()
    assert not support.native and "cannot read the CPU flags" in support.reason


def test_real_detection_agrees_with_this_machine():
    cpu.cpu_flags.cache_clear()
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        assert not cpu.bf16_support().native
        return
    flags_lines = re.findall(r"^flags\s*:(.*)$", path.read_text(), flags=re.MULTILINE)
    first = set(flags_lines[0].split()) if flags_lines else set()
    support = cpu.bf16_support()
    assert support.native == bool(first & {"avx512_bf16", "amx_bf16"})
    assert support.amx == ("amx_bf16" in first)
    assert support.isa == torch.backends.cpu.get_cpu_capability()
