"""Keep freed large blocks in the process instead of handing them back to the kernel (glibc only).

glibc's ``malloc`` serves every block above ``M_MMAP_THRESHOLD`` (dynamic, at most 32 MiB by default)
with a fresh ``mmap`` and returns it with ``munmap`` on ``free``; blocks below it that leave more
than ``M_TRIM_THRESHOLD`` free at the top of the heap are trimmed away. Either way the next tensor of
that size costs a page fault per 4 KiB page, each zero-filling its page in the kernel. A 320x320
16-coil sampler with 8 chains allocates ~100 MiB tensors many times per step: before this setting
one third of its CPU time was system time (pULA, 3 NFE: 35.6 s user + 18.1 s system; with it,
36.0 s + 0.1 s; docs/speed.md). Raising both thresholds makes freed blocks reusable; the resident
size then stays at its peak instead of shrinking between steps, which is the price.
"""
from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["retain_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_done: bool | None = None


def retain_freed_memory(threshold: int = 2**31 - 1) -> bool:
    """Raise glibc's mmap and trim thresholds to ``threshold`` bytes (process-wide, idempotent).

    Returns True if the setting is in effect. A no-op returning False off Linux/glibc or when the
    environment variable ``BAYESMRI_MALLOC=system`` asks to leave the allocator alone (glibc's own
    ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` variables work too, set before start).
    """
    global _done
    if _done is not None:
        return _done
    _done = False
    if not sys.platform.startswith("linux") or os.environ.get("BAYESMRI_MALLOC", "").lower() == "system":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc: leave it
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    value = int(min(max(threshold, 0), 2**31 - 1))
    _done = bool(mallopt(_M_MMAP_THRESHOLD, value)) and bool(mallopt(_M_TRIM_THRESHOLD, value))
    return _done
