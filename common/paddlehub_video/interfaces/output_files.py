"""The care every file the command line writes gets (`hub run --output` and `--report`, `samples --list`).

Only a file this project wrote is ever changed: the caller says how it recognises one of its own.
A symlink is followed (its target is what is written; the link stays a link). Refused before a
byte is written, and left as it was: a file of other content, an input of the run or its results
file, a directory, a FIFO, a socket, a device, a read-only file, a file with other hard links
(a new file renamed over the name would split them). A whole file is written through a synced
temporary file renamed over the name, so a crash leaves the old file or the new one, never half.
"""
from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ..errors import PaddleHubVideoError
from ..model.regular_file import NotRegularFile, open_regular_fd

FILE_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFSOCK: "a socket",
              stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}
# How much of an existing file is read to recognise one of ours.
HEAD_BYTES = 4096


class OutputFileError(PaddleHubVideoError):
    """A file the command line writes cannot be used (so it is left untouched) or written."""


class Refused(OutputFileError):
    """Why a file is never written."""


def check_usable(path: Path) -> bool:
    """Whether `path` (symlinks followed) exists; Refused if it cannot be a file of ours to rewrite."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(info.st_mode):
        raise Refused(f"it is {FILE_KINDS.get(stat.S_IFMT(info.st_mode), 'not a regular file')}")
    # The mode bits are checked even for root: a rewrite by rename would ignore them.
    if not info.st_mode & 0o222 or not os.access(path, os.W_OK):
        raise Refused("it is read-only")
    if info.st_nlink > 1:  # a rewrite (a new file renamed over this name) would split them
        raise Refused(f"it has {info.st_nlink - 1} other hard link(s)")
    return True


def open_regular(path: Path, flags: int) -> int:
    """A descriptor of `path` opened with `flags`, without blocking should a FIFO have been put there
    since it was checked; Refused unless it is a regular file."""
    try:
        fd, _ = open_regular_fd(path, flags)
    except NotRegularFile:
        raise Refused("it is not a regular file") from None
    os.set_blocking(fd, True)
    return fd


def target_of(path: str | Path) -> Path:
    """The file `path` names, symlinks resolved. Refused if the name ends with a slash: it names a directory,
    and resolving it would drop the slash (`out/` would become a file called `out`)."""
    text = os.fspath(path)
    if text.endswith(os.sep) or (os.altsep and text.endswith(os.altsep)):
        raise Refused("it names a directory (it ends with a slash); name a file in it")
    return Path(os.path.realpath(text))


def checked_target(path: str | Path, is_ours: Callable[[bytes], bool], what: str,
                   others: Iterable[tuple[str, Iterable[str]]] = ()) -> Path:
    """The file `path` names (symlinks resolved), once it is known that it may be (re)written whole.

    `is_ours(head)` says whether an existing file, by its first HEAD_BYTES bytes, is one this project
    wrote (`what` names that kind in the error); `others` are (role, paths) of files of the run that
    must never be written, e.g. ("an input video", videos). Raises Refused with the reason.
    """
    target = target_of(path)
    refuse_roles(target, others)
    if check_usable(target):
        with os.fdopen(open_regular(target, os.O_RDONLY), "rb") as fh:
            if not is_ours(fh.read(HEAD_BYTES)):
                raise Refused(f"it is not {what}")
    return target


def refuse_roles(target: Path, others: Iterable[tuple[str, Iterable[str]]]) -> None:
    """Refused if the resolved `target` is one of the files of `others`, (role, paths): "it is <role>"."""
    for role, paths in others:
        if _is_one_of(target, paths):
            raise Refused(f"it is {role}")


def _is_one_of(target: Path, paths: Iterable[str]) -> bool:
    """Whether `target` (resolved) is one of `paths`: by name, or, for existing files, the same file."""
    try:
        info = os.stat(target)
    except OSError:
        info = None
    return any(_same_file(target, info, path) for path in paths)


def _same_file(target: Path, info: os.stat_result | None, path: str) -> bool:
    try:
        if os.path.realpath(path) == str(target):
            return True
        other = os.stat(path) if info is not None else None
    except (OSError, ValueError):  # a missing file, a name with a NUL byte
        return False
    return other is not None and (other.st_dev, other.st_ino) == (info.st_dev, info.st_ino)


def write_checked(path: str | Path, data: bytes, is_ours: Callable[[bytes], bool], what: str,
                  others: Iterable[tuple[str, Iterable[str]]] = ()) -> Path:
    """`checked_target`, then `data` written to it atomically; the file written. Refused, or OSError."""
    target = checked_target(path, is_ours, what, others)
    replace_atomically(target, iter([data]))
    return target


def replace_atomically(path: Path, chunks: Iterator[bytes]) -> None:
    """Write `chunks` to `path` through a synced temporary file renamed over it, keeping its mode (a new
    file gets the umask's).

    A crash leaves the old file or the new one, never half of either.
    """
    fd, temporary = _new_temporary(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.writelines(chunks)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            os.chmod(temporary, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    sync_directory(path.parent)


def _new_temporary(path: Path) -> tuple[int, Path]:
    """A new hidden file beside `path`, opened for writing, created with mode 0o666 less the umask."""
    while True:
        temporary = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:
            continue


def sync_directory(folder: Path) -> None:
    """Make a rename in `folder` durable (where the platform allows opening a directory)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a directory; the rename itself is still atomic
    finally:
        os.close(fd)

