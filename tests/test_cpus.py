"""The CPUs a process may use (affinity mask, cgroup v1/v2 quota in a fake cgroup folder) and the
default predictor threads and workers drawn from them: explicit config first, then the env var."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from paddlehub_video import cpus


@pytest.fixture
def two_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cpus.cgroup_cpu_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpus.cgroup_cpu_quota(tmp_path) is None


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    folder = tmp_path / "cpu,cpuacct"
    folder.mkdir()
    (folder / "cpu.cfs_quota_us").write_text("50000\n")
    (folder / "cpu.cfs_period_us").write_text("100000\n")
    assert cpus.cgroup_cpu_quota(tmp_path) == 0.5
    (folder / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpus.cgroup_cpu_quota(tmp_path) is None


def test_usable_cpus_is_the_smaller_of_affinity_and_quota(tmp_path: Path, two_cpus: None) -> None:
    assert cpus.usable_cpus(tmp_path) == 2  # no cgroup files: the affinity mask
    (tmp_path / "cpu.max").write_text("100000 100000\n")
    assert cpus.usable_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("20000 100000\n")  # a fifth of a CPU still runs one thread
    assert cpus.usable_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("800000 100000\n")  # 8 CPUs of quota, 2 cores allowed
    assert cpus.usable_cpus(tmp_path) == 2


def test_usable_cpus_is_not_the_host_count(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert cpus.usable_cpus(tmp_path) == 1


def test_cpu_threads_configured_else_usable_shared_among_workers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                 two_cpus: None) -> None:
    # The environment is applied when the settings are built (tests/test_settings.py), not here.
    monkeypatch.setattr(cpus, "CGROUP_ROOT", tmp_path)
    monkeypatch.setenv(cpus.CPU_THREADS_ENV, "7")
    assert cpus.default_cpu_threads(None) == 2
    (tmp_path / "cpu.max").write_text("100000 100000\n")
    assert cpus.default_cpu_threads(None) == 1
    (tmp_path / "cpu.max").unlink()
    assert cpus.default_cpu_threads(None, workers=2) == 1
    assert cpus.default_cpu_threads(3) == 3  # an explicit setting wins
    with pytest.raises(ValueError, match="runtime.cpu_threads"):
        cpus.default_cpu_threads(0)


def test_workers_configured_else_automatic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cpus.WORKERS_ENV, "2")
    assert cpus.default_workers(None) == cpus.AUTO_WORKERS
    assert cpus.default_workers(1) == 1


def test_a_process_sharing_the_cpus_takes_its_share(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                    two_cpus: None) -> None:
    # A gunicorn worker among 2 on 2 CPUs: 1 thread each, not 2 (the pinned setting still wins).
    monkeypatch.setattr(cpus, "CGROUP_ROOT", tmp_path)
    monkeypatch.setattr(cpus, "_sharing_processes", 1)
    assert cpus.default_cpu_threads(None) == 2
    cpus.share_cpus_with(2)
    assert cpus.default_cpu_threads(None) == 1 and cpus.default_cpu_threads(2) == 2


@pytest.mark.parametrize("threads,workers,sharing,idle", [
    (None, 1, 1, 0), (None, 2, 1, 0), (1, 1, 1, 1), (1, 2, 1, 0), (3, 1, 1, 0), (1, 1, 2, 0),
])
def test_cpus_left_idle_by_the_predictors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, two_cpus: None,
                                          threads: int | None, workers: int, sharing: int, idle: int) -> None:
    """What decides whether a pipeline decodes ahead (VideoModule.decode_ahead): the automatic threads
    leave no CPU idle, whatever the workers or the processes sharing the CPUs."""
    monkeypatch.setattr(cpus, "CGROUP_ROOT", tmp_path)
    monkeypatch.setattr(cpus, "_sharing_processes", sharing)
    assert cpus.cpus_left_idle(cpus.default_cpu_threads(threads, workers), workers) == idle
