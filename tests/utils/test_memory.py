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


# Holes in the heap: 2,000 blocks of 100 KiB (below glibc's mmap threshold, so on the heap),
# every tenth kept and the rest freed. glibc trims only the top of a heap, so the 176 MiB of
# holes stay resident until release_free_memory.
_HOLES = """
import json, sys
import torch
from diffmatte.utils.memory import release_free_memory, resident_bytes
blocks = [torch.empty(25_600).fill_(1.0) for _ in range(2_000)]
kept = blocks[::10]
del blocks
before = resident_bytes()
released = release_free_memory()
print(json.dumps({"before": before, "after": resident_bytes(), "released": released}))
"""


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_release_free_memory_returns_the_holes_of_the_heap():
    result = subprocess.run(
        [sys.executable, "-c", _HOLES], capture_output=True, text=True, check=True
    )
    data = json.loads(result.stdout)
    assert data["released"]
    assert data["before"] - data["after"] > 150 * 2**20


def test_resident_and_peak_memory_are_consistent():
    from diffmatte.utils.memory import peak_resident_bytes, resident_bytes

    current = resident_bytes()
    if platform.system() == "Linux":
        assert 10 * 2**20 < current <= peak_resident_bytes()


def test_predictor_releases_free_memory_after_each_image(monkeypatch, build_tiny_model):
    import numpy as np

    from diffmatte.inference import predictor as predictor_module

    calls = []
    monkeypatch.setattr(predictor_module, "release_free_memory", lambda: calls.append(1))
    predictor = predictor_module.Predictor(build_tiny_model(0), device="cpu")
    image = np.random.default_rng(0).random((24, 40, 3), dtype=np.float32)
    trimap = np.full((24, 40), 128, np.uint8)
    predictor.predict(image, trimap, strategy="ddim1")
    assert len(calls) == 1
    predictor.predict_batch([image, image], [trimap, trimap], strategy="ddim1")
    assert len(calls) == 2
