"""Quiet output for `hub run`: native libraries' lines silenced or routed to our logger, each
failed video reported once, `-v` / $PADDLEHUB_VIDEO_VERBOSE bringing the details back.

What prints what, and how it is kept off the terminal:

- OpenCV's own log (`[ WARN:0@...] global cap.cpp:... open VIDEOIO(FFMPEG)`): its log level, at run time.
- The FFmpeg inside OpenCV (`[mov,mp4,... @ 0x...] moov atom not found`): $OPENCV_FFMPEG_LOGLEVEL, read
  when OpenCV first opens a file with FFmpeg, so it is set before the first video. PyAV's FFmpeg
  logs nothing unless asked (`av.logging`'s level is None by default).
- Paddle's glog (`Paddle static graph(PIR) not support input out tensor`, `New Executor is Running`),
  printed by the C++ runtime while a model is converted: glog reads $GLOG_minloglevel when paddle
  is imported, which `hub` does before it loads a module, so file descriptor 2 is redirected around
  the conversion instead and what was written is logged at DEBUG.
- Python warnings printed by `import paddle` itself (`No ccache found`, `Setuptools is replacing
  distutils`): out of our reach under `hub`, whose package imports paddle before ours (README).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import IO

import cv2
from tqdm import tqdm

from .. import environment

VERBOSE_ENV, PROGRESS_ENV = environment.VERBOSE, environment.PROGRESS
# FFmpeg's AV_LOG_FATAL: an unreadable file is reported by our own error line instead.
FFMPEG_LOG_LEVEL = "8"
logger = logging.getLogger("paddlehub_video")


def is_video_failure(record: logging.LogRecord) -> bool:
    """Whether `record` is the log of a failed video (`pipeline.report_failure`), which `hub run` prints itself."""
    return bool(getattr(record, "video_failure", False))


class TerminalHandler(logging.Handler):
    """Log records as `hub run NAME: warning: ...` lines, printed above any progress bar (tqdm.write).

    A failed video's record is left out unless `verbose`: `hub run` prints its `error:` line itself.
    """

    def __init__(self, stream: IO[str], name: str, verbose: bool):
        super().__init__(logging.DEBUG if verbose else logging.WARNING)
        self.stream = stream
        self.prefix = f"hub run {name}"
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        return self.verbose or not is_video_failure(record)

    def format(self, record: logging.LogRecord) -> str:
        text = f"{self.prefix}: {record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info and self.verbose:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        return text

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # a log line must never break the run
            self.handleError(record)


@contextlib.contextmanager
def routed_logging(stream: IO[str], name: str, verbose: bool) -> Iterator[None]:
    """Our logger's records through one TerminalHandler for the duration; the logger restored after."""
    handler = TerminalHandler(stream, name, verbose)
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING)
    logger.propagate = False  # no second copy through a root handler (or Python's last resort)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


@contextlib.contextmanager
def quiet_decoders() -> Iterator[None]:
    """OpenCV's log at errors only and its FFmpeg's at fatal, for the duration (a user's own
    $OPENCV_FFMPEG_LOGLEVEL is kept)."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    ours = "OPENCV_FFMPEG_LOGLEVEL" not in os.environ
    if ours:
        os.environ["OPENCV_FFMPEG_LOGLEVEL"] = FFMPEG_LOG_LEVEL
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)
        if ours:  # not left for the processes a Python caller starts later
            os.environ.pop("OPENCV_FFMPEG_LOGLEVEL", None)


def stderr_fd() -> int | None:
    """The file descriptor of sys.stderr when it is the process's fd 2, else None (e.g. under capture)."""
    try:
        return 2 if sys.stderr.fileno() == 2 else None
    except (AttributeError, OSError, ValueError):
        return None


@contextlib.contextmanager
def terminal_stream() -> Iterator[IO[str]]:
    """A stream to what stderr is now, which stays there while fd 2 is redirected (`native_output_logged`)."""
    if stderr_fd() is None:
        yield sys.stderr
        return
    sys.stderr.flush()
    # backslashreplace, as Python's own stderr: a file name that is not UTF-8 keeps its bytes (\\udcXX).
    stream = os.fdopen(os.dup(2), "w", buffering=1, encoding=sys.stderr.encoding or "utf-8",
                       errors="backslashreplace")
    try:
        yield stream
    finally:
        stream.close()


@contextlib.contextmanager
def native_output_logged() -> Iterator[None]:
    """What native code writes to fd 2 meanwhile goes to our logger at DEBUG instead of the terminal.

    Process-wide: only for `hub run`, where nothing else writes to stderr meanwhile (the progress
    display writes to a `terminal_stream`).
    """
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 at all: nothing to keep off it
        yield
        return
    sys.stderr.flush()
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode("utf-8", "replace").splitlines():
                if line.strip():
                    logger.debug("%s", line)
