"""Process-wide memory settings for CPU inference, and the process's resident memory."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import resource
import sys

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


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none."""
    try:
        function = ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    function.argtypes = (ctypes.c_size_t,)
    function.restype = ctypes.c_int
    return function


def release_free_memory() -> bool:
    """Returns the memory the allocator holds free to the system (glibc ``malloc_trim(0)``).

    Freed blocks of an image stay mapped in glibc's heaps: below the mmap threshold (which glibc
    raises up to 32 MiB as large blocks are freed) they are not returned, and only the top of a
    heap is trimmed. Images of other sizes then leave holes that later images of yet other sizes
    fit only partly, so a long-running process keeps growing. ``malloc_trim(0)`` gives back every
    free page of every heap (not only the top), so each image starts from the live memory alone.
    Results do not change; the next image faults its pages in again.

    Returns:
        True if memory was returned, False if there was none or the C library has no
        ``malloc_trim``.
    """
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


def resident_bytes() -> int:
    """The process's current resident set size in bytes (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def peak_resident_bytes() -> int:
    """The process's peak resident set size in bytes so far.

    ``ru_maxrss``, or the current size when that is higher: Linux updates the high-water mark
    lazily (when memory is unmapped), so it can trail the current size.
    """
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return max(peak if sys.platform == "darwin" else peak * 1024, resident_bytes())
