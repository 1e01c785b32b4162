"""`hub run --output`: a JSON Lines file of result entries, one per video, written as each finishes.

A rerun with the same file goes on where the last one stopped: videos with an answer in the file
are skipped (matched by their path as written), failed ones are tried again (their old line is
dropped), and a last line cut short by a killed run is dropped and written again.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import IO

from .errors import PaddleHubVideoError


class ResultsFileError(PaddleHubVideoError):
    """The --output file is not a results file (so it is left untouched), or cannot be written."""


def parse_entry(line: bytes) -> dict | None:
    """The result entry a line holds, or None if it holds none (e.g. a line cut short)."""
    try:
        entry = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if isinstance(entry, dict) and isinstance(entry.get("path"), str) and isinstance(entry.get("prediction"), dict):
        return entry
    return None


def read_results(data: bytes) -> list[tuple[bytes, dict]]:
    """(line, entry) for every complete entry of a file's `data`; a last line without newline may be cut short."""
    lines = data.split(b"\n")
    tail = lines.pop()  # what follows the last newline: b"" unless a run was killed mid-line
    results = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        entry = parse_entry(line)
        if entry is None:
            # Not our file (or edited by hand): refuse rather than rewrite and lose what it holds.
            raise ResultsFileError(f"line {number} is not a result entry of hub run; is this the right file?")
        results.append((line, entry))
    entry = parse_entry(tail) if tail.strip() else None
    if entry is not None:  # complete, only its newline was never written
        results.append((tail, entry))
    return results


def replace_contents(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file, so a kill leaves the old or the new file."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as fh:
            fh.write(data)
        shutil.copymode(path, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class ResultsFile:
    """An open --output file: `done` holds the paths answered by earlier runs; `append` adds one entry."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.done: set[str] = set()
        if self.path.is_file():  # not /dev/stdout, say: nothing to resume there, and reading could block
            self._keep_answered()
        self._file: IO[str] = open(self.path, "a", encoding="utf-8", newline="\n")

    def _keep_answered(self) -> None:
        """Drop failed entries (tried again) and a cut-short last line; remember the answered paths."""
        data = self.path.read_bytes()
        answered = [(line, entry) for line, entry in read_results(data) if "error" not in entry]
        self.done = {entry["path"] for _, entry in answered}
        kept = b"".join(line + b"\n" for line, _ in answered)
        if kept != data:
            replace_contents(self.path, kept)

    def append(self, entry: dict) -> None:
        """Write one entry as a line and flush it, so a killed run keeps every finished video."""
        try:
            self._file.write(json.dumps(entry, ensure_ascii=False) + "\n")
            self._file.flush()
        except OSError as exc:  # a full disk ends the run: the next video could not be kept either
            raise ResultsFileError(f"cannot write {self.path}: {exc}") from exc

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
