"""How many CPUs this process may use, and how many threads a predictor gets by default.

The host's count (`os.cpu_count()`) is not what a container, a `taskset` or a batch scheduler
lets the process use: the affinity mask bounds which cores it may run on, a cgroup CPU quota how
much time it gets across them. Sizing thread pools by the host's count oversubscribes (a 2-CPU
quota on a 64-core host would start 64 threads, each waiting for its turn).
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from . import environment
from .errors import DeviceError

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


def process_share() -> int:
    """This process's share of the usable CPUs (`share_cpus_with`), at least one."""
    return max(1, usable_cpus() // _sharing_processes)


def default_cpu_threads(configured: int | None, workers: int = 1) -> int:
    """Threads per predictor: `configured` (the settings' `runtime.cpu_threads`, where
    $PADDLEHUB_VIDEO_CPU_THREADS was already applied) if set, else this process's share of the
    usable CPUs (`share_cpus_with`) shared among `workers` (at least one each)."""
    if configured is not None:
        return _positive(configured, "runtime.cpu_threads")
    return max(1, process_share() // max(1, workers))


def cpus_left_idle(threads: int, workers: int = 1) -> int:
    """CPUs of this process's share (`share_cpus_with`) that `workers` predictors of `threads` threads
    each leave idle (0 when they use them all, as the automatic thread count does)."""
    return max(0, process_share() - threads * workers)


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


# --- numeric precision --------------------------------------------------------------------------

PRECISION_ENV = environment.PRECISION
PRECISIONS = environment.PRECISIONS
# CPU flags (Linux /proc/cpuinfo names) that run bf16 natively: AVX-512 BF16 (Cooper Lake, Zen 4 and
# later) or AMX (Sapphire Rapids and later). Without them oneDNN emulates bf16 at about half fp32's speed.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")
logger = logging.getLogger("paddlehub_video")


def cpu_flags(cpuinfo: Path | None = None) -> frozenset[str]:
    """The instruction-set flags of this machine's first CPU (/proc/cpuinfo; empty where unreadable)."""
    text = _read(cpuinfo or CPUINFO) or ""
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU runs bf16 arithmetic natively (`flags`: default this machine's)."""
    return any(flag in (cpu_flags() if flags is None else flags) for flag in BF16_FLAGS)


_auto_logged: set[str] = set()


def resolve_precision(
    requested: str, use_gpu: bool = False, flags: frozenset[str] | None = None, engine_problem: str | None = None
) -> str:
    """`runtime.precision` -> what the CNN predictors run: `fp32` or `bf16`.

    `bf16` on a CPU without native bf16 (or on a GPU) is a DeviceError rather than a silent emulation
    that runs slower than fp32; `auto` is bf16 where the CPU has it, else fp32 with one log line.
    `engine_problem`: why the bf16 engine cannot run here (not installed), if it cannot.
    """
    if requested == "fp32":
        return "fp32"
    reason = "bf16 runs on CPU only (use_gpu=True)" if use_gpu else _missing_bf16(flags) or engine_problem
    if reason is None:
        return "bf16"
    if requested == "bf16":
        raise DeviceError(f"runtime.precision is bf16, but {reason}: set runtime.precision to fp32 or auto "
                          f"(or {PRECISION_ENV}=fp32)")
    if reason not in _auto_logged:  # once per process and reason
        _auto_logged.add(reason)
        logger.info("runtime.precision auto: running fp32, as %s", reason)
    return "fp32"


def _missing_bf16(flags: frozenset[str] | None) -> str | None:
    if has_native_bf16(flags):
        return None
    names = " or ".join(BF16_FLAGS)
    return f"this CPU has none of the instructions {names} (bf16 would be emulated, slower than fp32)"
