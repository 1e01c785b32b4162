"""How many CPUs this process may use, and how many threads a predictor gets by default.

The host's count (`os.cpu_count()`) is not what a container, a `taskset` or a batch scheduler
lets the process use: the affinity mask bounds which cores it may run on, a cgroup CPU quota how
much time it gets across them. Sizing thread pools by the host's count oversubscribes (a 2-CPU
quota on a 64-core host would start 64 threads, each waiting for its turn).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from . import environment

CPU_THREADS_ENV = environment.CPU_THREADS
CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cpus(cgroup_root: Path | None = None) -> int:
    """CPUs this process may use: its affinity mask, lowered to any cgroup CPU quota (rounded up).
    `cgroup_root`: the cgroup folder (default `CGROUP_ROOT`)."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root or CGROUP_ROOT)
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def cgroup_cpu_quota(cgroup_root: Path = CGROUP_ROOT) -> float | None:
    """CPUs' worth of time the cgroup allows (quota / period), or None without a quota.

    cgroup v2: `cpu.max` holds "<quota> <period>" or "max <period>"; v1: `cpu.cfs_quota_us`
    (-1: none) and `cpu.cfs_period_us` under the cpu controller's folder.
    """
    v2 = _read(cgroup_root / "cpu.max")
    if v2 is not None:
        fields = v2.split()
        return _ratio(fields[0], fields[1]) if len(fields) == 2 and fields[0] != "max" else None
    for folder in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        quota, period = (_read(cgroup_root / folder / name) for name in ("cpu.cfs_quota_us", "cpu.cfs_period_us"))
        if quota is not None and period is not None:
            return _ratio(quota, period)
    return None


def _ratio(quota: str, period: str) -> float | None:
    """quota / period of a cgroup file's numbers; None for no quota (-1) or an unreadable value."""
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def _read(path: Path) -> str | None:
    """A cgroup file's text, or None where there is none (another cgroup version, not Linux)."""
    try:
        return path.read_text().strip()
    except OSError:
        return None


# Processes sharing this process's usable CPUs (this one is a gunicorn worker among so many): set by
# the server that started the process, before any predictor is made.
_sharing_processes = 1


def share_cpus_with(processes: int) -> None:
    """This process is one of `processes` that share the usable CPUs: automatic thread counts take its share."""
    global _sharing_processes
    _sharing_processes = max(1, processes)


def default_cpu_threads(configured: int | None, workers: int = 1) -> int:
    """Threads per predictor: `configured` (the settings' `runtime.cpu_threads`, where
    $PADDLEHUB_VIDEO_CPU_THREADS was already applied) if set, else this process's share of the
    usable CPUs (`share_cpus_with`) shared among `workers` (at least one each)."""
    if configured is not None:
        return _positive(configured, "runtime.cpu_threads")
    return max(1, usable_cpus() // _sharing_processes // max(1, workers))


def _positive(value: object, name: str) -> int:
    """`value` as a positive int, else a ValueError naming where it came from."""
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        number = 0
    if number < 1 or isinstance(value, bool):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return number


WORKERS_ENV = environment.WORKERS
AUTO_WORKERS = 1  # measured (bench/bench_machine.py split, workers): README "Speed" says why


def default_workers(configured: int | None) -> int:
    """Videos run at once: `configured` (the settings' `runtime.workers`, where $PADDLEHUB_VIDEO_WORKERS
    was already applied) if set, else AUTO_WORKERS."""
    return AUTO_WORKERS if configured is None else _positive(configured, "runtime.workers")
