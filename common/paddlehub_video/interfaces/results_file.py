"""`hub run --output`: a JSON Lines file of result entries, one per video, written as each finishes.

A rerun with the same file goes on where the last one stopped: videos with an answer in the file
are skipped (matched by their path as written), failed ones are tried again (their old line is
dropped), and a last line cut short by a killed run is dropped and written again.

Only a file this project wrote is ever changed. A results file is recognised positively: every
complete line is a result entry (a JSON object with exactly the keys `path`, `prediction` and,
for a failed video, `error`; for `--timeline` runs, a file of its own, `path`, `duration`, `windows`,
`segments` (absent in files written before segments existed) and, for a failed video, `error`), and
the only damage tolerated is a last line without its newline that is such an entry, or, after at
least one entry, the start of one (a run killed mid-write).
Anything else (a token, a config, a binary file, a directory, a FIFO, a device, a read-only file,
a file with other hard links) is refused before a byte is written, and left as it was
(`output_files.py`: the care every file the command line writes gets).

A `--timeline` run also keeps `<output>.windows` (`WindowsFile`): each finished window of the
video in progress, one line each, so that a rerun of the same command goes on after the last
finished window of a video it was stopped in; the lines of a video go once its entry is written.
"""
from __future__ import annotations

import codecs
import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, BinaryIO, NamedTuple

from ..timeline import WindowStore
from .output_files import OutputFileError, Refused, check_usable, open_regular, replace_atomically, target_of

# Longer than any line this project writes (3,396 labels with their probabilities and a 4 KiB path
# stay under 0.5 MiB), so a huge file without newlines is refused after reading this much of it.
MAX_LINE_BYTES = 1 << 20
# How every line the writer emits starts (json.dumps keeps the key order of VideoModule._entry).
ENTRY_START = b'{"path": "'
LEFT_AS_IT_WAS = "the file was left as it was (name a new file, or one written by hub run --output)"
ENTRY_KEYS = ({"path", "prediction"}, {"path", "prediction", "error"})
# With `segments`; without: a file written before segments existed, still resumed (the report makes them).
TIMELINE_KEYS = ({"path", "duration", "windows", "segments"}, {"path", "duration", "windows", "segments", "error"},
                 {"path", "duration", "windows"}, {"path", "duration", "windows", "error"})
WINDOW_KEYS = {"start", "end", "prediction"}
SEGMENT_KEYS = {"label", "start", "end", "confidence"}
WINDOWS_SUFFIX = ".windows"
KEPT_WINDOW_KEYS = {"path", "options", "video", "window"}


class ResultsFileError(OutputFileError):
    """The --output file is not a results file (so it is left untouched), or cannot be written."""


class NotResultsFile(ResultsFileError, Refused):
    """Why a file is not a results file of hub run (so it is never written)."""


class Scan(NamedTuple):
    """What reading a results file found: the answered paths, and whether lines must be dropped."""

    done: set[str]
    rewrite: bool


def parse_entry(line: bytes, timeline: bool = False) -> dict | None:
    """The result entry a line holds, or None if it holds none: exactly the shape the writer gives
    (a `classify_timeline` entry when `timeline`, else a `classify` one)."""
    if not (line.startswith(ENTRY_START) and line.endswith(b"}")):  # no other spacing, no \r
        return None
    try:
        entry = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        return None
    if not isinstance(entry.get("error", ""), str):
        return None
    return entry if (is_timeline_entry(entry) if timeline else is_classify_entry(entry)) else None


def is_classify_entry(entry: dict) -> bool:
    """`{path, prediction[, error]}`, a failed video without prediction."""
    if set(entry) not in ENTRY_KEYS:
        return False
    prediction = entry["prediction"]
    return is_prediction(prediction) and not ("error" in entry and prediction)


def is_timeline_entry(entry: dict) -> bool:
    """`{path, duration, windows[, segments][, error]}`, a failed video without duration, window or segment."""
    if set(entry) not in TIMELINE_KEYS:
        return False
    duration, windows, segments = entry["duration"], entry["windows"], entry.get("segments", [])
    if "error" in entry:
        return duration is None and windows == [] and segments == []
    return (is_seconds(duration) and isinstance(windows, list) and all(is_window(w) for w in windows)
            and isinstance(segments, list) and all(is_segment(s) for s in segments))


def is_window(window: object) -> bool:
    """`{start, end, prediction}` with times in seconds."""
    return (isinstance(window, dict) and set(window) == WINDOW_KEYS and is_seconds(window["start"])
            and is_seconds(window["end"]) and is_prediction(window["prediction"]))


def is_segment(segment: object) -> bool:
    """`{label, start, end, confidence}`, a span of at least no time."""
    return (isinstance(segment, dict) and set(segment) == SEGMENT_KEYS and isinstance(segment["label"], str)
            and is_seconds(segment["start"]) and is_seconds(segment["end"]) and segment["start"] <= segment["end"]
            and is_probability(segment["confidence"]))


def is_seconds(value: object) -> bool:
    """A JSON number >= 0 (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def is_prediction(prediction: object) -> bool:
    """A `{label: probability}` dict."""
    return isinstance(prediction, dict) and all(is_probability(value) for value in prediction.values())


def is_probability(value: object) -> bool:
    """A JSON number in [0, 1] (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0


def is_cut_entry(tail: bytes) -> bool:
    """Whether `tail` can be the start of a line the writer emits, cut short (possibly inside a character).

    The writer escapes control characters, so a cut line holds none; it is UTF-8 up to its last byte.
    """
    starts_right = tail.startswith(ENTRY_START) or ENTRY_START.startswith(tail)
    if not starts_right or any(byte < 0x20 for byte in tail):
        return False
    try:
        codecs.getincrementaldecoder("utf-8")().decode(tail, final=False)
    except UnicodeDecodeError:
        return False
    return True


def keep_answered(target: Path, timeline: bool = False) -> set[str]:
    """The paths answered in the results file `target` (none if absent), once its failed entries and
    a cut-short last line are dropped; NotResultsFile if it is not a results file."""
    if not check_usable(target):
        return set()
    with os.fdopen(open_regular(target, os.O_RDONLY), "rb") as fh:
        found = scan(fh, timeline)
        if found.rewrite:
            fh.seek(0)
            replace_atomically(target, answered_lines(fh, timeline))
    return found.done


def read_lines(fh: BinaryIO) -> Iterator[bytes]:
    """The lines of `fh` with their newline (the last may lack it); NotResultsFile past MAX_LINE_BYTES."""
    for number in itertools.count(1):
        line = fh.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_LINE_BYTES:
            raise NotResultsFile(f"line {number} is longer than {MAX_LINE_BYTES} bytes, not a result entry")
        yield line


def scan(fh: BinaryIO, timeline: bool = False) -> Scan:
    """Check that `fh` is a results file; the answered paths, and whether some line must be dropped.

    Raises NotResultsFile with the reason when it is not one.
    """
    done: set[str] = set()
    rewrite, entries = False, 0
    for number, line in enumerate(read_lines(fh), 1):
        complete = line.endswith(b"\n")
        entry = parse_entry(line[:-1] if complete else line, timeline)
        if entry is None and not complete and entries and is_cut_entry(line):
            return Scan(done, True)  # a run was killed while writing this line: it is redone
        if entry is None:
            where = f"line {number}" if complete else f"its last line (line {number}, without a newline)"
            kind = "a timeline entry of hub run --timeline" if timeline else "a result entry of hub run"
            raise NotResultsFile(f"{where} is not {kind}")
        entries += 1
        rewrite |= not complete or "error" in entry  # a newline to add, a failed video to try again
        if "error" not in entry:
            done.add(entry["path"])
    return Scan(done, rewrite)


def answered_lines(fh: BinaryIO, timeline: bool = False) -> Iterator[bytes]:
    """The lines of a scanned results file that are kept: complete answers, each with its newline."""
    for line in read_lines(fh):
        entry = parse_entry(line.rstrip(b"\n"), timeline)
        if entry is not None and "error" not in entry:
            yield line if line.endswith(b"\n") else line + b"\n"


class ResultsFile:
    """An open --output file: `done` holds the paths answered by earlier runs; `append` adds one entry.

    `timeline`: a file of `classify_timeline` entries (`hub run --timeline`), which is refused
    otherwise, as a file of `classify` entries is refused for a timeline.

    A symlink is followed: its target is read, rewritten in place and appended to, and the link
    stays a link (appending follows it anyway, so the rewrite must too).
    """

    def __init__(self, path: str | Path, timeline: bool = False):
        self.path = Path(path)
        try:
            target = target_of(path)
            self.done = keep_answered(target, timeline)
            fd = open_regular(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        except Refused as exc:
            raise ResultsFileError(f"refused: {exc}; {LEFT_AS_IT_WAS}") from None
        except OSError as exc:  # the rewrite renames only a complete new file: the old one is still whole
            raise ResultsFileError(f"cannot use it ({exc.strerror or exc}); {LEFT_AS_IT_WAS}") from exc
        self._file: IO[str] = open(fd, "a", encoding="utf-8", newline="\n")

    def append(self, entry: dict) -> None:
        """Write one entry as a line and flush it, so a killed run keeps every finished video."""
        try:
            self._file.write(_json_line(entry))
            self._file.flush()
        except OSError as exc:  # a full disk ends the run: the next video could not be kept either
            raise ResultsFileError(f"cannot write {self.path}: {exc}") from exc

    def entries(self) -> list[dict]:
        """Every entry the file holds now (this run's and earlier runs')."""
        self._file.flush()
        with open(self.path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    def close(self) -> None:
        """Close the file."""
        try:
            self._file.close()
        except OSError:
            pass  # every entry was flushed already; only a write that failed (and was reported) is left

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


def _json_line(entry: dict) -> str:
    """`entry` as one JSON line: UTF-8 text as it is, escaped where a path is not valid UTF-8.

    A file name that is not UTF-8 reaches Python with surrogate escapes, which the UTF-8 file
    cannot hold; `\\udcxx` escapes read back to the same string, so resuming still finds it.
    """
    line = json.dumps(entry, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(entry)
    return line + "\n"


def windows_path(output: str | Path) -> Path:
    """Where a `--timeline --output FILE` run keeps the finished windows of the video in progress."""
    return Path(f"{output}{WINDOWS_SUFFIX}")


def parse_kept_window(line: bytes) -> dict | None:
    """The kept window a line of a windows file holds, or None: `{path, options, video, window}`."""
    if not (line.startswith(ENTRY_START) and line.endswith(b"}")):
        return None
    try:
        kept = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(kept, dict) or set(kept) != KEPT_WINDOW_KEYS or not isinstance(kept["path"], str):
        return None
    return kept if isinstance(kept["options"], dict) and is_window(kept["window"]) else None


def video_identity(path: str) -> list[int] | None:
    """[size, mtime in ns] of the file at `path` (None if it cannot be read): a replaced video is another."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return [info.st_size, info.st_mtime_ns]


class WindowsFile(WindowStore):
    """The finished windows of timelines whose entry is not yet in the results file (`<output>.windows`).

    One JSON line per window: the video's path, the timeline's options (module, window, stride, top_k,
    threshold), the video file's size and mtime, and the window entry. A video's windows are resumed only
    under the same options from the same file. Recognised and refused as the results file is (a cut last
    line is dropped); `forget(path)` drops a video's lines once its entry is written (the file goes when
    it holds none).
    """

    def __init__(self, path: str | Path, answered: set[str]):
        self.path = Path(path)
        self.target = Path(os.path.realpath(self.path))
        try:
            self.kept = [k for k in self._read() if k["path"] not in answered]
            self._rewrite()
        except Refused as exc:
            raise ResultsFileError(f"{self.path}: refused: {exc}; {LEFT_AS_IT_WAS}") from None
        except OSError as exc:
            raise ResultsFileError(f"cannot use {self.path} ({exc.strerror or exc}); {LEFT_AS_IT_WAS}") from exc
        self._file: IO[str] | None = None  # opened by the first window added

    def _read(self) -> list[dict]:
        """The kept windows the file holds (none if absent); NotResultsFile if it is not a windows file."""
        if not check_usable(self.target):
            return []
        kept: list[dict] = []
        with os.fdopen(open_regular(self.target, os.O_RDONLY), "rb") as fh:
            for number, line in enumerate(read_lines(fh), 1):
                complete = line.endswith(b"\n")
                found = parse_kept_window(line[:-1] if complete else line)
                if found is None and not complete and kept and is_cut_entry(line):
                    break  # a run was killed while writing this line
                if found is None:
                    raise NotResultsFile(f"line {number} is not a finished window of hub run --timeline --output")
                kept.append(found)
        return kept

    def _rewrite(self) -> None:
        """The file made to hold exactly `kept` (removed when empty)."""
        if not self.kept:
            if check_usable(self.target):
                os.unlink(self.target)
            return
        replace_atomically(self.target, (_json_line(k).encode("utf-8") for k in self.kept))

    def finished(self, path: str, options: dict) -> list[dict]:
        video = video_identity(path)
        return [k["window"] for k in self.kept if (k["path"], k["options"], k["video"]) == (path, options, video)]

    def add(self, path: str, options: dict, entry: dict) -> None:
        kept = {"path": path, "options": options, "video": video_identity(path), "window": entry}
        try:
            if self._file is None:
                fd = open_regular(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
                self._file = open(fd, "a", encoding="utf-8", newline="\n")
            self._file.write(_json_line(kept))
            self._file.flush()
        except (OSError, Refused) as exc:
            raise ResultsFileError(f"cannot write {self.path}: {exc}") from exc
        self.kept.append(kept)

    def forget(self, path: str) -> None:
        """`path` has its entry in the results file: its windows are no longer kept."""
        if any(k["path"] == path for k in self.kept):
            self.kept = [k for k in self.kept if k["path"] != path]
            self.close()
            try:
                self._rewrite()
            except (OSError, Refused) as exc:
                raise ResultsFileError(f"cannot rewrite {self.path}: {exc}") from exc

    def close(self) -> None:
        """Close the file (every window was flushed as it was added)."""
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None

    def __enter__(self) -> WindowsFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
