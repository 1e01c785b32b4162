"""Opening a file the model reads (weights, digest records) only when it is a regular file."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO


class NotRegularFile(OSError):
    """What was opened is a FIFO, a device, a socket or a directory, not a regular file."""


def open_regular_fd(path: str | os.PathLike[str], flags: int = os.O_RDONLY, mode: int = 0o666,
                    ) -> tuple[int, os.stat_result]:
    """A descriptor of `path` opened with `flags`, and its fstat; NotRegularFile unless it is a regular file.

    Opened non-blocking, so that a FIFO (which would wait for a writer) or a device is refused at
    once; the fstat is of what was opened, so a file swapped after a check is never the one used.
    """
    fd = os.open(path, flags | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(f"{Path(path)} is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd, info


def open_regular(path: str | os.PathLike[str], follow_links: bool = True) -> tuple[BinaryIO, os.stat_result]:
    """`path` opened for reading (`open_regular_fd`), with its fstat; with `follow_links=False` a
    symbolic link is refused too."""
    flags = os.O_RDONLY | (0 if follow_links else getattr(os, "O_NOFOLLOW", 0))
    fd, info = open_regular_fd(path, flags)
    return os.fdopen(fd, "rb"), info


def read_bounded(path: str | os.PathLike[str], max_bytes: int, follow_links: bool = True) -> bytes:
    """The whole of a small regular file; OSError when it is not one or is longer than `max_bytes`
    (found from its fstat before reading, and never more than `max_bytes` + 1 bytes read)."""
    f, info = open_regular(path, follow_links)
    with f:
        data = f.read(max_bytes + 1) if info.st_size <= max_bytes else b""
    if info.st_size > max_bytes or len(data) > max_bytes:
        raise OSError(f"{Path(path)} is {max(info.st_size, len(data))} bytes or more, more than the "
                      f"{max_bytes} bytes it can be")
    return data
