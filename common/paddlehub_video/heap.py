"""glibc's heap, kept compact: at most two malloc arenas, and free pages handed back after each decode.

glibc gives each thread that allocates while others do an arena of its own (up to 8 per core), and
memory freed in one is never used by another thread's allocations. Here the decoders (one thread
each), the pipeline's decode-ahead thread and each predictor's owner thread all allocate: a
10-minute 1080p video left videotag's fp32 peak at 1494 MiB on 2 cores (over the 1.5 GB promised),
1.42 GB with two arenas and the trim below (bench/bench_memory.py; README Limits).
`MALLOC_ARENA_MAX` in the environment, if set, is left to glibc.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading

ARENAS = 2
_M_ARENA_MAX = -8  # mallopt parameter (malloc.h)
_done = False
_lock = threading.Lock()


def _libc() -> ctypes.CDLL | None:
    """glibc, or None elsewhere (musl, macOS: neither knob exists there)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


_LIBC = _libc()


def limit_arenas() -> None:
    """At most ARENAS malloc arenas for the threads made from now on (once per process)."""
    global _done
    with _lock:
        if _done or _LIBC is None or "MALLOC_ARENA_MAX" in os.environ:
            return
        _LIBC.mallopt(_M_ARENA_MAX, ARENAS)
        _done = True


def release_free_memory() -> None:
    """Give the pages free in every arena back to the system (after a decode: its buffers are gone)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
