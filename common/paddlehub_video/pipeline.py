"""Run a model over a list of videos: decode the next video while the current one is inferred.

Each video yields its own outcome; a video that fails (missing, corrupt, ...) becomes an error
entry and the others are still answered, in input order.
"""
from __future__ import annotations

import contextvars
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from . import progress
from .errors import PaddleHubVideoError
from .inputs import Frames, Item, as_input
from .names import printable

logger = logging.getLogger("paddlehub_video")

Inputs = TypeVar("Inputs")
Output = TypeVar("Output")


@dataclass
class VideoOutcome(Generic[Output]):
    """What one input video gave: model output, or the reason it failed."""

    path: str
    output: Output | None = None
    error: str | None = None


def validate_paths(paths: object) -> list[Item]:
    """`paths` must be a list (or tuple) of videos (`inputs.as_input`: paths, URLs, bytes, file objects,
    frames); a lone item is a common mistake. Each becomes what `inputs.as_input` gives: a path as `str`
    (bytes and os.PathLike paths as `os.fsdecode` gives them: a name that is not UTF-8 keeps its bytes
    as surrogate escapes, the form results name them by), or an `inputs.Input`. ValueError naming
    `paths[i]` for an item that is none of these."""
    if isinstance(paths, (str, bytes, os.PathLike)) and isinstance(as_input(paths), str):
        raise ValueError(f"paths must be a list of video paths, got a single path {paths!r}: use [{paths!r}]")
    if isinstance(paths, (Frames, np.ndarray, bytes, bytearray, memoryview, str)) or hasattr(paths, "read"):
        raise ValueError(f"paths must be a list of videos, got a single {type(paths).__name__}: put it in a list")
    if not isinstance(paths, (list, tuple)):
        raise ValueError(f"paths must be a list of video paths, got {type(paths).__name__}")
    return [as_input(p, index) for index, p in enumerate(paths)]


def describe_error(path: str, exc: BaseException) -> str:
    """A one-line reason for an error entry, naming the file (our own errors already do)."""
    name = str(as_input(path)) if isinstance(path, str) else str(path)  # a URL less its credentials and query
    if isinstance(exc, PaddleHubVideoError) and name in str(exc):
        return str(exc)
    return f"{name}: {type(exc).__name__}: {exc}"


def report_failure(path: str, exc: Exception) -> str:
    """Log why a video failed (with a traceback if the error is not one of ours); its one-line reason."""
    reason = describe_error(path, exc)
    # Marked, so that `hub run`, which prints the reason itself, can leave this record out (quiet.py).
    # As text any handler can write, whatever its encoding: a file name that is not UTF-8 as \udcXX.
    logger.warning("%s", printable(reason), exc_info=not isinstance(exc, PaddleHubVideoError),
                   extra={"video_failure": True})
    return reason


class VideoPipeline(Generic[Inputs, Output]):
    """`load(path) -> inputs` in a background thread, then `infer(inputs) -> output`, video after video.

    With `ahead` the next video loads while the current one is inferred: at most two videos' inputs
    exist at once. Without it the next one loads once the current one's inference is done and its
    inputs are released: at most one, and a decode never adds its buffers to a network's peak
    (where both share the same CPUs the overlap gains little; README Limits).
    """

    def __init__(self, load: Callable[[str], Inputs], infer: Callable[[Inputs], Output], ahead: bool = True):
        self.load = load
        self.infer = infer
        self.ahead = ahead

    def run(self, paths: list[str], first: Future | None = None) -> Iterator[VideoOutcome[Output]]:
        """Yield one VideoOutcome per path, in order. `first`: `paths[0]`'s loading, if already started
        (`load_soon`)."""
        if not paths:
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="paddlehub_video-decode") as pool:
            pending: Future | None = first if first is not None else self._submit(pool, paths[0])
            first = None  # no longer held here: the video's frames go when it is done
            for index, path in enumerate(paths):
                current, pending = pending, None
                following = paths[index + 1] if index + 1 < len(paths) else None
                if self.ahead and following is not None:
                    pending = self._submit(pool, following)
                outcome = self._infer_one(path, current)
                current = None  # this video's inputs go now, not after the caller took its outcome
                if pending is None and following is not None:
                    pending = self._submit(pool, following)
                yield outcome

    def _submit(self, pool: ThreadPoolExecutor, path: str) -> Future:
        """`load(path)` in the pool, in a copy of the caller's context (it carries e.g. applied limits)."""
        return pool.submit(contextvars.copy_context().run, self.load, path)

    def _infer_one(self, path: str, loading: Future) -> VideoOutcome[Output]:
        report = progress.current()
        try:
            inputs = loading.result()
            report.stage(str(path), "network", 0)  # frame counts, where known, come from the model
            return VideoOutcome(str(path), output=self.infer(inputs))
        except Exception as exc:  # one bad video must not cost the others their results
            return VideoOutcome(str(path), error=report_failure(path, exc))
        finally:
            report.finished(str(path))


def load_soon(load: Callable[[str], Inputs], path: str) -> Future:
    """`load(path)` started now in a thread of its own (in a copy of the caller's context), for
    `VideoPipeline.run(first=...)`: a video decodes while the caller still prepares (loads a model).
    The thread ends when `load` returns, and is a daemon: a caller that fails meanwhile (a missing
    model file) and exits does not wait for a decode nobody will read."""
    future: Future = Future()
    context = contextvars.copy_context()

    def work() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(context.run(load, path))
        except BaseException as exc:  # the reader of the future gets it, as from a pool
            future.set_exception(exc)

    threading.Thread(target=work, name="paddlehub_video-first-decode", daemon=True).start()
    return future


class ParallelPipelines(Generic[Inputs, Output]):
    """Several `VideoPipeline`s side by side, each on its own videos (video i goes to worker i % n),
    outcomes still yielded in input order.

    Worker k runs `pipelines[k]` in a thread of its own. Each worker holds at most two videos'
    frames (the one it infers and the one it decodes ahead; one without `ahead`) plus one finished
    outcome, so memory grows with the workers, not with the number of videos.
    """

    def __init__(self, pipelines: list[VideoPipeline[Inputs, Output]]):
        self.pipelines = pipelines

    def run(self, paths: list[str], firsts: list[Future] | None = None) -> Iterator[VideoOutcome[Output]]:
        """Yield one VideoOutcome per path, in order. `firsts`: the loading of each worker's first
        video (`paths[k]`), if already started."""
        count = min(len(self.pipelines), len(paths))
        # One-slot lists the workers empty: nothing here keeps a first video's frames once it is done.
        handed = [[future] for future in (firsts or [None] * count)]
        firsts = None
        queues: list[queue.Queue] = [queue.Queue(maxsize=1) for _ in range(count)]
        stop = threading.Event()
        threads = [
            threading.Thread(target=contextvars.copy_context().run,
                             args=(self._work, self.pipelines[k], paths[k::count], handed[k], queues[k], stop),
                             name=f"paddlehub_video-worker-{k}", daemon=True)
            for k in range(count)
        ]
        for thread in threads:
            thread.start()
        try:
            for index in range(len(paths)):
                outcome = queues[index % count].get()
                if isinstance(outcome, BaseException):  # not a video's failure: the worker itself broke
                    raise outcome
                yield outcome
        finally:
            stop.set()  # a caller that stops early releases the workers

    @staticmethod
    def _work(
        pipeline: VideoPipeline, paths: list[str], first: list[Future | None], out: queue.Queue,
        stop: threading.Event,
    ) -> None:
        """Run `pipeline` over `paths` (`first`: a one-slot list of the first video's loading, emptied
        here), handing each outcome over as the consumer takes it."""
        try:
            for outcome in pipeline.run(paths, first.pop()):
                if not _put(out, outcome, stop):
                    return
        except BaseException as exc:  # given to the consumer, which raises it in its own thread
            _put(out, exc, stop)


def _put(out: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put `item` once there is room; False if the consumer stopped meanwhile."""
    while not stop.is_set():
        try:
            out.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
