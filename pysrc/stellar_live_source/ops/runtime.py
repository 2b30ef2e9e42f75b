"""Process-wide tuning for serving.

glibc hands every allocation above its mmap threshold (128 KiB, rising only
as big blocks are freed) fresh pages from the kernel, and gives them back on
free: each decompressed object then costs a page fault per 4 KiB and zeroing
by the kernel: a large share of decoding's cost (docs/benchmarks.md, "malloc
tuning"). Keeping blocks up to
64 MiB in the heap, and up to 128 MiB of freed heap before trimming, reuses
warm pages instead. Objects are bounded by the cache and read-ahead caps, so
this moves the process's memory ceiling by at most the trim threshold.

One arena for every thread, too: glibc gives each new thread its own, so a
decode thread's buffers, freed by the event loop when the cache evicts them,
go back to an arena the next object's decoding may not be using, and pages
keep being handed back and faulted in again (thousands of page faults a pass,
none with one arena; docs/benchmarks.md). The threads that allocate big
blocks are few (the decode workers), so
the one arena's lock is not contended.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("stellar_live_source.runtime")

# from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 64 << 20
TRIM_THRESHOLD = 128 << 20


def tune_malloc() -> bool:
    """Raise glibc's mmap and trim thresholds and keep one arena; False where
    there is no glibc. Call it before starting threads: a thread that has
    already allocated keeps the arena it was given."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl, macOS, Windows: nothing to tune
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    ok = all(
        mallopt(opt, value) == 1
        for opt, value in ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_ARENA_MAX, 1))
    )
    log.debug("malloc %s", "tuned" if ok else "left as it was")
    return ok
