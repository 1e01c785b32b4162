"""glibc's heap, kept compact: at most two malloc arenas, big blocks always mapped apart, and free pages
handed back after each decode.

glibc gives each thread that allocates while others do an arena of its own (up to 8 per core), and
memory freed in one is never used by another thread's allocations. Here the decoders (one thread
each), the pipeline's decode-ahead thread and each predictor's owner thread all allocate: a
10-minute 1080p video left videotag's fp32 peak at 1494 MiB on 2 cores (over the 1.5 GB promised),
1.42 GB with two arenas and the trim below (bench/bench_memory.py; README Limits).

glibc also serves a block of 128 KiB or more with mmap, which goes back to the system when freed,
but each such free raises that threshold to the block's size (up to 32 MiB): after the first video,
Paddle's activations and our float32 inputs (a few MB to ~100 MB each) come from the arenas, whose
freed pages stay resident. A fixed threshold (`M_MMAP_THRESHOLD`, which also stops the raising)
keeps them mapped: videotag fp32's peak on the 60 s 1080p clip 1520 -> 1466 MiB (README Limits).
`MALLOC_ARENA_MAX` and `MALLOC_MMAP_THRESHOLD_` in the environment, if set, are left to glibc.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading

ARENAS = 2
MMAP_THRESHOLD = 128 * 1024  # glibc's initial value, made fixed
_M_ARENA_MAX = -8  # mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
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


def configure_malloc() -> None:
    """At most ARENAS malloc arenas for the threads made from now on, and a fixed MMAP_THRESHOLD
    (once per process; each unless its environment variable is set)."""
    global _done
    with _lock:
        if _done or _LIBC is None:
            return
        if "MALLOC_ARENA_MAX" not in os.environ:
            _LIBC.mallopt(_M_ARENA_MAX, ARENAS)
        if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
            _LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        _done = True


def release_free_memory() -> None:
    """Give the pages free in every arena back to the system (after a decode: its buffers are gone)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
