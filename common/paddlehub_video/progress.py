"""What the library reports while it works: the hooks, and which reporter hears them.

The library calls the hooks of `current()`: a file downloaded, model conversion, frames decoded,
frames through the network, a video finished. By default that is a `Progress` that does nothing, so Python callers
see nothing. `hub run` installs its terminal display (`interfaces.terminal.TerminalProgress`) with
`reporting`. The reporter lives in a context variable: the pipeline's decode thread runs in a copy
of the caller's context, and concurrent callers (serving, Ray) keep their own.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator


class Progress:
    """The hooks the library calls; this base ignores them all (the Python API's default)."""

    @contextlib.contextmanager
    def converting(self, name: str, sources: list[str]) -> Iterator[None]:
        """Around the one-time conversion of the weights files `sources` into the model `name`."""
        yield

    @contextlib.contextmanager
    def busy(self, what: str) -> Iterator[None]:
        """Around a one-time step of unknown length, `what` (e.g. extracting a downloaded archive)."""
        yield

    @contextlib.contextmanager
    def downloading(self, name: str, total: int | None, done: int) -> Iterator[Callable[[int], None]]:
        """Around the download of the file `name` (`total` bytes when the server says, `done` of them
        already there from an earlier try); gives the function to call with the size of each chunk."""
        yield _ignore

    def stage(self, path: str, stage: str, total: int) -> None:
        """Video `path` starts `stage` ("decode" or "network") over `total` frames."""

    def advance(self, path: str, stage: str, count: int = 1) -> None:
        """`count` more frames of `path` went through `stage`."""

    def network(self, done: int, total: int) -> None:
        """The video in the "network" stage has had `done` of its `total` frames through the network."""

    def windows(self, path: str, done: int, total: int) -> None:
        """Timeline of video `path`: `done` of its `total` windows are finished (those of an earlier run too)."""

    def finished(self, path: str) -> None:
        """Video `path` has its answer (or its error)."""


def _ignore(count: int) -> None:
    pass


_SILENT = Progress()
_current: contextvars.ContextVar[Progress | None] = contextvars.ContextVar("paddlehub_video_progress", default=None)


def current() -> Progress:
    """The reporter of this context (a do-nothing one unless `reporting` installed another)."""
    return _current.get() or _SILENT


@contextlib.contextmanager
def reporting(progress: Progress) -> Iterator[Progress]:
    """Make `progress` the reporter of this context (and of the threads started in copies of it)."""
    token = _current.set(progress)
    try:
        yield progress
    finally:
        _current.reset(token)


class _Renamed(Progress):
    """`inner`, hearing of the file `old` as `new` (a temporary file as the item it holds)."""

    def __init__(self, inner: Progress, old: str, new: str):
        self.inner, self.old, self.new = inner, old, new

    def converting(self, name: str, sources: list[str]) -> contextlib.AbstractContextManager[None]:
        return self.inner.converting(name, sources)

    def busy(self, what: str) -> contextlib.AbstractContextManager[None]:
        return self.inner.busy(what)

    def downloading(self, name: str, total: int | None, done: int) -> contextlib.AbstractContextManager[Callable]:
        return self.inner.downloading(name, total, done)

    def _name(self, path: str) -> str:
        return self.new if path == self.old else path

    def stage(self, path: str, stage: str, total: int) -> None:
        self.inner.stage(self._name(path), stage, total)

    def advance(self, path: str, stage: str, count: int = 1) -> None:
        self.inner.advance(self._name(path), stage, count)

    def network(self, done: int, total: int) -> None:
        self.inner.network(done, total)

    def finished(self, path: str) -> None:
        self.inner.finished(self._name(path))


def renamed(old: str, new: str) -> contextlib.AbstractContextManager[Progress]:
    """Report the file `old` as `new` in this context (and copies of it made inside)."""
    return reporting(_Renamed(current(), old, new))


def counting(transform: Callable, path: str, stage: str, progress: Progress) -> Callable:
    """`transform`, reporting one frame of `stage` done after each call (decoder threads call it)."""

    def counted(frame: object) -> object:
        result = transform(frame)
        progress.advance(path, stage)
        return result

    return counted


def __getattr__(name: str) -> object:
    """`progress.TerminalProgress` and `progress.short_name`, from before they moved to `interfaces.terminal`."""
    if name in ("TerminalProgress", "short_name"):
        import warnings

        from .interfaces import terminal

        warnings.warn(f"paddlehub_video.progress.{name} moved to paddlehub_video.interfaces.terminal",
                      DeprecationWarning, stacklevel=2)
        return getattr(terminal, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
