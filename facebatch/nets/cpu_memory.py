"""Keep freed CPU memory in the process instead of handing it back to the OS after every step.

glibc serves allocations above its mmap threshold (at most 32 MiB) with fresh mmap()s and unmaps
them on free. A StyleGAN2 step at 256 px allocates activations of 10-130 MiB, so every step
page-faults its whole working set in again: at batch 8 that was 60 % of the step time
(bench/synthesis.py: 7.9 s/step with glibc's defaults, 4.4 s/step with this; sys time 2m10s -> 5s).
No library sets this for us (torch leaves the CPU allocator to libc), so it is a mallopt() call.
The cost: the process keeps its peak heap until it exits, which a batch worker reaches anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Apply once per process; True when in effect. No-op off glibc or with FACEBATCH_GLIBC_MALLOC=default."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux") or os.environ.get("FACEBATCH_GLIBC_MALLOC") == "default":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = all(
        (
            mallopt(_M_MMAP_MAX, 0),  # big blocks come from the heap, which is reused
            mallopt(_M_TRIM_THRESHOLD, 2**31 - 1),  # and is not trimmed back after each step
            mallopt(_M_TOP_PAD, 64 << 20),  # grow it in 64 MiB steps, not page by page
        )
    )
    _applied = bool(ok)
    return _applied
