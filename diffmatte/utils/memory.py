"""Process-wide memory settings for CPU inference."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

# mallopt parameters of glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# Free memory at the top of the heap that is kept rather than returned to the system.
_TRIM_THRESHOLD_BYTES = 2**31 - 1


@functools.cache
def reuse_freed_heap_memory() -> bool:
    """Serves large CPU allocations from the heap and keeps freed memory for reuse (glibc only).

    Sampling frees and re-allocates the decoder's large maps at every step. glibc serves each
    block above 32 MiB with a fresh ``mmap`` and returns it with ``munmap`` when freed, so every
    step pays page faults on first touch again: at 1024 x 1024 ViT-S ddim10 a quarter of the CPU
    time went to the kernel. With ``mmap`` off and heap trimming only above 2 GiB of free top
    memory, freed blocks are reused instead. Measured there: 1.3x faster, system time 9.3 s ->
    1.0 s, peak RSS about 0.4 GiB higher. The setting lasts for the process; results do not
    change.

    Returns:
        True if the settings were applied, False where the C library has no ``mallopt``.
    """
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES))
