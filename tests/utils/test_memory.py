"""Heap reuse for CPU inference: repeated large allocations stop paying page faults."""

import json
import platform
import subprocess
import sys

import pytest

from diffmatte.utils.memory import reuse_freed_heap_memory

GLIBC = platform.libc_ver()[0] == "glibc"

# A sampling step in miniature: large maps (all above glibc's 32 MiB mmap threshold) allocated,
# filled and freed in an overlapping order, four times. Prints the page faults of steps 2 to 4.
_STEPS = """
import json, resource, sys
import torch
from diffmatte.utils.memory import reuse_freed_heap_memory
applied = reuse_freed_heap_memory() if sys.argv[1] == "reuse" else False

def step():
    a = torch.empty(24 * 2**20).fill_(1.0)
    b = torch.empty(16 * 2**20).fill_(1.0)
    del a
    c = torch.empty(20 * 2**20).fill_(1.0)
    del b, c

faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "later_faults": sum(faults[1:])}))
"""


def _later_faults(mode: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _STEPS, mode], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout)


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_reuse_cuts_the_page_faults_of_repeated_steps():
    default, reuse = _later_faults("default"), _later_faults("reuse")
    assert reuse["applied"] and not default["applied"]
    # Each step touches 240 MiB, 61,440 pages: by default all of them fault again every step.
    assert default["later_faults"] > 0.9 * 3 * 61_440
    assert reuse["later_faults"] < 0.5 * default["later_faults"]


@pytest.mark.skipif(GLIBC, reason="only C libraries without mallopt")
def test_without_glibc_nothing_is_changed():
    assert not reuse_freed_heap_memory()
