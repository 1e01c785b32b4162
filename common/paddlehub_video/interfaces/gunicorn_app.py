"""gunicorn sized and bounded for video work: `hub serving start --use_multiprocess`, and operators' gunicorn.

PaddleHub 2.4 runs `--use_multiprocess` as gunicorn sync workers with only `bind` and `workers`
set (`paddlehub.serving.http_server.StandaloneApplication`): gunicorn's 30 s worker timeout kills a
worker in the middle of a request of a few videos (and the model it loaded with it), its default of
2 x CPUs + 1 workers loads that many ~1.4 GB models, each on every CPU's threads. `settings()` is
what fits instead, applied to PaddleHub's app by `bound_multiprocess_serving` (called when a module
is made, as `serving.bound_request_bodies`) and given to operators' gunicorn by `gunicorn_conf.py`:

- `timeout`: as long as the longest request the serving limits allow ($PADDLEHUB_VIDEO_WORKER_TIMEOUT_S);
  `graceful_timeout`: how long requests in flight may finish after SIGTERM (same default);
- `workers`: one per WORKER_CPUS usable CPUs, never more than the memory available holds (a count
  asked for is lowered to that too), with one log line saying what was chosen and why;
- `worker_class` = `VideoWorker`: gunicorn's sync worker whose model threads are the usable CPUs
  shared among the workers, whose connections are dropped after $PADDLEHUB_VIDEO_IDLE_TIMEOUT_S
  without a byte (as the development server's), which stops accepting as soon as it is told to stop,
  keeps its temporary files in a folder of its own (removed by the master when the worker exits,
  killed or not) and makes its predictors as soon as it boots (readiness: wsgi.py);
- `preload_app`: the app (PaddleHub's and Paddle's import, ~700 MB) is made once, before the fork, and
  shared by the workers. Each worker fetches (a converted model is found on disk; the first worker to
  need a conversion makes it while the others wait on its file lock) and makes its predictors after
  the fork: Paddle's executor does not survive one.
"""
from __future__ import annotations

import glob
import logging
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from gunicorn.workers.sync import SyncWorker

from .. import environment
from ..cpus import share_cpus_with, usable_cpus
from .serving import idle_timeout_s, max_items
from .wsgi import LOG, log_to_stderr

WORKER_TIMEOUT_ENV = environment.WORKER_TIMEOUT_S
GRACEFUL_TIMEOUT_ENV = environment.GRACEFUL_TIMEOUT_S
WORKER_MEMORY_ENV = environment.WORKER_MEMORY_MB
# Seconds one video may take in the worst case the limits allow, and to make a worker's predictors:
# README "Speed": a 10-minute 1080p video took 63 s for videotag on 2 threads; a worker's first
# request also makes the predictors (seconds, more on a busy machine).
SECONDS_PER_ITEM = 90
LOAD_SECONDS = 120
# Peak RSS of one process serving one module (README: 1.4-1.5 GB for either at their defaults).
MODULE_MEMORY_MB = 1500
WORKER_CPUS = 4  # usable CPUs per default worker: its predictor's threads (TSN scales well to a few)
WORKER_TEMP_PREFIX = "paddlehub_video-worker-"


def worker_timeout_s() -> float:
    """gunicorn's `timeout`: $PADDLEHUB_VIDEO_WORKER_TIMEOUT_S, else the longest request the serving
    limits allow (LOAD_SECONDS + SECONDS_PER_ITEM per item of $PADDLEHUB_VIDEO_MAX_ITEMS)."""
    asked = environment.serving().worker_timeout_s
    return asked if asked is not None else LOAD_SECONDS + SECONDS_PER_ITEM * max_items()


def graceful_timeout_s() -> float:
    """How long requests in flight may finish after SIGTERM: $PADDLEHUB_VIDEO_GRACEFUL_TIMEOUT_S, else
    the worker timeout (a request allowed to run that long is allowed to finish)."""
    asked = environment.serving().graceful_timeout_s
    return asked if asked is not None else worker_timeout_s()


def available_memory_mb(cgroup_root: Path = Path("/sys/fs/cgroup")) -> float:
    """Memory new processes may still take: MemAvailable, lowered to the cgroup's room (v2 memory.max
    - memory.current) where there is a limit."""
    available = math.inf
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        limit = (cgroup_root / "memory.max").read_text().strip()
        if limit != "max":
            used = int((cgroup_root / "memory.current").read_text())
            available = min(available, (int(limit) - used) / 2**20)
    except (OSError, ValueError):
        pass
    return available


def worker_memory_mb(module_count: int) -> float:
    """Memory one worker needs: $PADDLEHUB_VIDEO_WORKER_MEMORY_MB, else MODULE_MEMORY_MB per module served."""
    asked = environment.serving().worker_memory_mb
    return asked if asked is not None else MODULE_MEMORY_MB * max(1, module_count)


def choose_workers(asked: int | None, module_count: int, cpus: int | None = None,
                   memory_mb: float | None = None) -> tuple[int, str]:
    """How many workers to start, and why: `asked` (None: one per WORKER_CPUS usable CPUs), lowered to what
    the available memory holds (at least one)."""
    cpus = usable_cpus() if cpus is None else cpus
    memory_mb = available_memory_mb() if memory_mb is None else memory_mb
    each = worker_memory_mb(module_count)
    fit = max(1, int(memory_mb // each)) if math.isfinite(memory_mb) else sys.maxsize
    wanted = max(1, cpus // WORKER_CPUS) if asked is None else asked
    why = (f"{wanted} asked" if asked is not None else f"one per {WORKER_CPUS} of {cpus} usable CPUs")
    workers = min(wanted, fit)
    if workers < wanted:
        why += (f", lowered to the {fit} that {memory_mb:.0f} MB of available memory holds at {each:.0f} MB "
                f"per worker ({WORKER_MEMORY_ENV})")
    return workers, why


def threads_per_worker(workers: int) -> int:
    """Model threads of each worker: the usable CPUs shared among `workers`, at least one."""
    return max(1, usable_cpus() // max(1, workers))


def settings(module_count: int, asked_workers: int | None = None) -> dict[str, Any]:
    """gunicorn settings for serving `module_count` modules (`asked_workers`: None for the default count)."""
    workers, why = choose_workers(asked_workers, module_count)
    log_to_stderr()

    def when_ready(server: Any) -> None:
        """One line with what gunicorn runs with (flags on its command line may have changed ours)."""
        count, cfg = server.num_workers, server.cfg
        LOG.info("%d gunicorn worker(s) (%s), %d model thread(s) each; worker timeout %d s (%s), graceful stop "
                 "%d s (%s)", count, why if count == workers else "set on gunicorn's command line",
                 threads_per_worker(count), cfg.timeout, WORKER_TIMEOUT_ENV, cfg.graceful_timeout,
                 GRACEFUL_TIMEOUT_ENV)

    return {
        "workers": workers, "worker_class": f"{VideoWorker.__module__}.{VideoWorker.__qualname__}",
        "timeout": math.ceil(worker_timeout_s()), "graceful_timeout": math.ceil(graceful_timeout_s()),  # ints
        "preload_app": True, "when_ready": when_ready, "child_exit": remove_worker_files, "worker_exit": exit_worker,
        "control_socket_disable": True,  # gunicorn 24+: one fixed socket path shared by every server
    }


# ---------------------------------------------------------------- the worker


class VideoWorker(SyncWorker):
    """gunicorn's sync worker, with video serving's threads, idle bound, prompt stop and temporary folder."""

    def init_process(self) -> None:
        """In the new worker process, before the app is loaded and requests are taken."""
        # The modules' settings were made in the master (preload), an operator's pin of the threads among
        # them; an automatic count is made when the predictors are, from this worker's share of the CPUs.
        share_cpus_with(self.cfg.workers)
        tempfile.tempdir = tempfile.mkdtemp(prefix=f"{WORKER_TEMP_PREFIX}{os.getpid()}-")
        self._idle_timeout = idle_timeout_s()
        super().init_process()

    def load_wsgi(self) -> None:
        """Load the app, then start making the predictors in the background (`/ready` says when done)."""
        super().load_wsgi()
        loader = getattr(self.wsgi, "extensions", {}).get("paddlehub_video")
        if loader is not None:
            loader.start()

    def accept(self, listener: Any) -> None:
        """Accept one connection, bounded by the idle timeout; none once told to stop."""
        if not self.alive:
            return
        client, addr = listener.accept()
        client.settimeout(self._idle_timeout)  # each recv/send; a silent client no longer holds the worker
        os.set_inheritable(client.fileno(), False)
        self._in_request = True
        try:
            self.handle(listener, client, addr)
        finally:
            self._in_request = False

    def handle_exit(self, sig: int, frame: Any) -> None:
        """SIGTERM: finish the request in hand, accept no other. A busy worker closes its copies of the
        listening sockets now (an idle one exits at once), so once the master has closed its own, new
        connections are refused instead of waiting in the backlog for a worker that will not take them."""
        super().handle_exit(sig, frame)
        if getattr(self, "_in_request", False):
            for listener in self.sockets:
                listener.close()


def remove_worker_files(server: Any, worker: Any) -> None:
    """gunicorn's `child_exit` (in the master): remove the temporary folder of a worker that exited,
    killed mid-request or not."""
    for folder in glob.glob(os.path.join(tempfile.gettempdir(), f"{WORKER_TEMP_PREFIX}{worker.pid}-*")):
        shutil.rmtree(folder, ignore_errors=True)


def exit_worker(server: Any, worker: Any) -> None:
    """gunicorn's `worker_exit` (the last thing a worker does): end the process without the interpreter's
    teardown, in which Paddle's destructors crash (the master logged every stopped worker as SIGSEGV)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# ---------------------------------------------------------------- `hub serving start --use_multiprocess`


def asked_workers(given: object) -> int | None:
    """The worker count PaddleHub passed, or None where it is its default (2 x CPUs + 1, no `--workers`)."""
    from paddlehub.commands.serving import number_of_workers

    flagged = any(arg in ("--workers", "-w") or arg.startswith("--workers=") for arg in sys.argv)
    count = int(given)
    return count if flagged or count != number_of_workers() else None


def bound_multiprocess_serving() -> None:
    """Make `hub serving start --use_multiprocess` run PaddleHub's gunicorn app with `settings()` and the
    app instrumented (wsgi.py), its models converted before the workers fork.

    PaddleHub makes the modules (so this runs) in `hub serving`'s process before it creates its
    `StandaloneApplication`; the name in `paddlehub.commands.serving` is given a subclass. Nothing
    outside a `hub serving` process is touched.
    """
    command = sys.modules.get("paddlehub.commands.serving")
    if command is None or getattr(command.StandaloneApplication, "bounded_by_paddlehub_video", False):
        return

    class VideoApplication(command.StandaloneApplication):
        bounded_by_paddlehub_video = True

        def __init__(self, app: Any, options: dict | None = None):
            from .wsgi import instrument

            loader = instrument(app)
            options = dict(options or {})
            options.update(settings(len(loader.modules), asked_workers(options.get("workers"))))
            super().__init__(app, options)

    command.StandaloneApplication = VideoApplication
