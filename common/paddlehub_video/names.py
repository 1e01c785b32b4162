"""File names that are not valid UTF-8 (GBK or Latin-1 bytes from old zip archives, Windows shares).

Python gives such a name as a `str` in which each undecodable byte is a surrogate escape
(`os.fsdecode(b"caf\\xe9.mp4") == "caf\\udce9.mp4"`). Python's own file functions and PyAV take it
back to the same bytes; OpenCV does not (its `VideoCapture` crashes the process on one), nor can
UTF-8 text (a JSON answer, an HTML page, an Arrow string) hold it. So:

- `native_path` gives a native library a name it can take for the same file;
- `printable` gives the name as valid UTF-8 text, each such byte shown as `\\udcXX` (XX the byte),
  as Python's stderr and `repr` show it and as JSON escapes it (which reads back to the same name).
"""
from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

# The extension kept on a name made for a native library: FFmpeg's format probe weighs it.
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}$")


def is_utf8(text: str) -> bool:
    """Whether `text` can be written as UTF-8 (no surrogate escape of a non-UTF-8 byte)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(text: str) -> str:
    """`text` as valid UTF-8 text: unchanged if it is, else each surrogate shown as `\\udcXX`."""
    return text if is_utf8(text) else text.encode("utf-8", "backslashreplace").decode("utf-8")


def as_str_path(path: str | bytes | os.PathLike) -> str:
    """A path as `str` (bytes as `os.fsdecode` gives them: a non-UTF-8 byte becomes a surrogate escape)."""
    return os.fsdecode(os.fspath(path))


@contextmanager
def native_path(source: str) -> Iterator[str]:
    """A name of the file `source` that a native library taking UTF-8 can open, while the block runs.

    Its absolute path when that is valid UTF-8 (FFmpeg reads a relative `clip:1.mp4` as a URL);
    otherwise an ASCII symbolic link to it in a private temporary folder, with the same extension so
    that FFmpeg probes the same format, removed on leaving (a library keeps the file it opened).
    OSError when no such link can be made.
    """
    path = os.path.abspath(source)
    if is_utf8(path):
        yield path
        return
    folder = tempfile.mkdtemp(prefix="paddlehub_video-name-")
    suffix = _SUFFIX.search(path)
    link = os.path.join(folder, "video" + (suffix.group(0) if suffix else ""))
    try:
        os.symlink(os.fsencode(path), link)
        yield link
    finally:
        if os.path.lexists(link):
            os.unlink(link)
        os.rmdir(folder)
