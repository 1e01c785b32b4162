"""`hub run`'s display of the library's progress hooks on a terminal: one bar of videos (the batch
bar), its text showing each video's stage, and a line while a model is converted."""
from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO

from tqdm import tqdm

from ..progress import Progress
from .quiet import native_output_logged

# Seconds between two redraws caused by frame counts (a frame can take under a millisecond).
REDRAW_INTERVAL_S = 0.2
# Characters of a file name shown in the bar's text: tqdm cuts a line wider than the terminal at its end.
NAME_WIDTH = 32


class TerminalProgress(Progress):
    """`hub run`'s reporter. With `show`, draws the hooks on `stream`: a bar of videos whose text is
    each running video's stage, and a line with the elapsed time while a model is converted. With
    `quiet`, what native code prints during a conversion goes to the log (quiet.native_output_logged).
    Thread-safe: the decode thread and the main thread (network) report at once, on different videos."""

    def __init__(self, stream: IO[str], name: str, show: bool = True, quiet: bool = False):
        self.stream = stream
        self.name = name
        self.show = show
        self.quiet = quiet
        self._lock = threading.Lock()
        self._stages: dict[str, tuple[str, int, int]] = {}  # path -> (stage, done, total), in start order
        self._windows: dict[str, tuple[int, int]] = {}  # path -> (done, total) of a running timeline
        self._bar: tqdm | None = None
        self._drawn = 0.0

    @contextlib.contextmanager
    def converting(self, name: str, sources: list[str]) -> Iterator[None]:
        # Paddle's C++ runtime prints glog lines while a program is built and saved.
        with native_output_logged() if self.quiet else contextlib.nullcontext():
            with self.busy(f"converting {name} from {', '.join(sources)} (once)"):
                yield

    @contextlib.contextmanager
    def busy(self, what: str) -> Iterator[None]:
        """A line `<name>: <what>: <elapsed>`, redrawn every second; kept when done."""
        if not self.show:
            yield
            return
        bar = tqdm(total=None, desc=f"{self.name}: {what}", bar_format="{desc}: {elapsed}", file=self.stream,
                   leave=True)
        done = threading.Event()
        ticker = threading.Thread(target=_tick, args=(bar, done), daemon=True, name="paddlehub_video-progress")
        ticker.start()
        try:
            yield
            bar.bar_format = "{desc}: done in {elapsed}"
        finally:
            done.set()
            ticker.join()
            bar.close()

    @contextlib.contextmanager
    def downloading(self, name: str, total: int | None, done: int) -> Iterator[Callable[[int], None]]:
        """A bar of bytes while the file `name` downloads, gone when it is done."""
        with tqdm(total=total, initial=done, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                  file=self.stream, disable=not self.show, leave=False) as bar:
            yield bar.update

    @contextlib.contextmanager
    def videos(self, total: int) -> Iterator[tqdm]:
        """The bar of videos (`total`); stage reports go into its text while it is open."""
        with tqdm(total=total, desc=self.name, unit="video", file=self.stream, dynamic_ncols=True) as bar:
            self._bar = bar
            self._redraw(force=True)  # a video may be decoding already (while the model loaded)
            try:
                yield bar
            finally:
                self._bar = None

    def stage(self, path: str, stage: str, total: int) -> None:
        with self._lock:
            self._stages[path] = (stage, 0, total)
        self._redraw(force=True)

    def advance(self, path: str, stage: str, count: int = 1) -> None:
        with self._lock:
            current, done, total = self._stages.get(path, (stage, 0, 0))
            if current != stage:
                return  # a late report of a stage already left
            self._stages[path] = (stage, done + count, total)
        self._redraw()

    def network(self, done: int, total: int) -> None:
        with self._lock:
            running = [path for path, (stage, _, _) in self._stages.items() if stage == "network"]
            # A timeline's video decodes its next window while the network runs on this one: its frames
            # through the network are shown in turn with the next window's frames decoded.
            running = running or list(self._windows)
            if not running:
                return
            self._stages[running[-1]] = ("network", done, total)
        self._redraw(force=done == total)

    def windows(self, path: str, done: int, total: int) -> None:
        with self._lock:
            self._windows[path] = (done, total)
        self._redraw(force=True)

    def finished(self, path: str) -> None:
        with self._lock:
            self._stages.pop(path, None)
            self._windows.pop(path, None)
        self._redraw(force=True)

    def describe(self) -> str:
        """The running stages, e.g. `a.mp4 network 64/300 frames | b.mp4 decode 12/300 frames`; a timeline's
        video with its windows first: `c.mp4 window 3/29, network 64/150 frames`."""
        with self._lock:
            stages, windows = dict(self._stages), dict(self._windows)
        parts = []
        for path in dict.fromkeys([*windows, *stages]):
            text = [f"window {windows[path][0]}/{windows[path][1]}"] if path in windows else []
            if path in stages:
                stage, done, total = stages[path]
                text.append(stage + (f" {done}/{total} frames" if total else ""))
            parts.append(f"{short_name(path)} " + ", ".join(text))
        return " | ".join(parts)

    def _redraw(self, force: bool = False) -> None:
        bar = self._bar
        now = time.monotonic()
        if bar is None or (not force and now - self._drawn < REDRAW_INTERVAL_S):
            return
        self._drawn = now
        bar.set_postfix_str(self.describe(), refresh=True)


def short_name(path: str) -> str:
    """The file name of `path`, its middle elided beyond NAME_WIDTH characters."""
    name = os.path.basename(path) or path
    if len(name) <= NAME_WIDTH:
        return name
    half = (NAME_WIDTH - 3) // 2
    return f"{name[:half]}...{name[-half:]}"


def _tick(bar: tqdm, done: threading.Event) -> None:
    """Redraw `bar` every second until `done` (nothing else updates a bar of unknown length)."""
    while not done.wait(1.0):
        bar.refresh()
