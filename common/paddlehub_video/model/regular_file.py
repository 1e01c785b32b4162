"""Opening a file the model reads (weights, digest records) only when it is a regular file."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO


def open_regular(path: str | os.PathLike[str], follow_links: bool = True) -> tuple[BinaryIO, os.stat_result]:
    """`path` opened for reading, with its fstat; OSError when it is not a regular file.

    Opened non-blocking, so that a FIFO (which would wait for a writer) or a device is refused at
    once; with `follow_links=False` a symbolic link is refused too. The fstat is of what was
    opened, so a file swapped after the check is never the one read.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_links:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{Path(path)} is not a regular file")
        return os.fdopen(fd, "rb"), info
    except BaseException:
        os.close(fd)
        raise


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
