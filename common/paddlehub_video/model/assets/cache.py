"""The cache under `$HUB_HOME/paddlehub_video`: where each file goes, its lock, and its one digest record.

`digests.json` records the sha256 of cached and converted-from files, so a file is hashed once.
An entry is keyed by the file's path and holds the identity of the file it was made for: device,
inode, size, modification and change times (st_ctime, which no one can set: any write, rename,
chmod or `touch` moves it). It vouches only for that very file, unchanged since this code hashed
it or wrote it; a file replaced or rewritten (even with its old size and time restored) no longer
matches and is hashed again. A file checked against a manifest digest is "verified" when its entry
says it has that digest; an archive member, when it was extracted from an archive that had it.

The record is read only when it is a regular file (not a link, FIFO or device) of at most
`_RECORD_MAX_BYTES`; otherwise it is ignored, with a warning, and written anew.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import filelock

from ... import progress as progress_report
from ...errors import AssetError
from ..regular_file import open_regular, read_bounded
from .spec import AssetSpec, url_file_name

T = TypeVar("T")
_RECORD = "digests.json"
# An entry is about 250 bytes and the cache holds a handful of files: 4000 entries, read in milliseconds.
_RECORD_MAX_BYTES = 1 << 20
logger = logging.getLogger("paddlehub_video")
_warned: set[str] = set()


def cache_root() -> Path:
    """`$HUB_HOME/paddlehub_video` (PaddleHub's home defaults to ~/.paddlehub), read at call time."""
    hub_home = os.environ.get("HUB_HOME") or os.path.join("~", ".paddlehub")
    return Path(hub_home).expanduser() / "paddlehub_video"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a regular file, read in chunks."""
    digest = hashlib.sha256()
    f, _ = open_regular(path)
    with f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- the digest record ------------------------------------------------------------------------


def _identity(path: Path) -> list[int] | None:
    """What the record binds an entry to: device, inode, size, mtime and ctime (ns) of the regular
    file at `path` now; None if there is none."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    return [info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]


def _key(path: Path) -> str:
    return str(Path(path).resolve())


def _read_record() -> dict[str, Any]:
    record_file = cache_root() / _RECORD
    try:
        record = json.loads(read_bounded(record_file, _RECORD_MAX_BYTES, follow_links=False))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError) as exc:  # too large, a FIFO or link, not JSON
        _warn_once(f"{record_file}: ignored, files are hashed again and the record written anew ({exc})")
        return {}
    return record if isinstance(record, dict) else {}


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning("%s", message)


def _entry(record: dict[str, Any], path: Path) -> dict[str, Any] | None:
    """The record's entry for `path` if it was made for the file there now, else None."""
    entry = record.get(_key(path))
    identity = _identity(path)
    if not isinstance(entry, dict) or identity is None or entry.get("identity") != identity:
        return None
    return entry


def _update_record(change: Callable[[dict[str, Any]], None]) -> None:
    """Apply `change` to the record under its lock, keeping only entries of files still there. The
    record saves hashing only: when the cache cannot be written (read-only, full), files are hashed
    again next time, nothing else changes."""
    record_file = cache_root() / _RECORD
    with contextlib.suppress(OSError):
        record_file.parent.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(f"{record_file}.lock"):
            record = _read_record()
            change(record)
            kept = {key: entry for key, entry in record.items() if isinstance(entry, dict)
                    and entry.get("identity") is not None and _identity(Path(key)) == entry["identity"]}
            fd, tmp = tempfile.mkstemp(dir=record_file.parent, prefix=f"{_RECORD}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(kept, fh)
                os.chmod(tmp, 0o644)  # as before mkstemp's 0600: others sharing the cache may read it
                os.replace(tmp, record_file)  # also replaces a FIFO, link or oversized record
            finally:
                Path(tmp).unlink(missing_ok=True)


def file_digest(path: Path) -> str:
    """sha256 of a file, from the record while it is the very file the record's entry was made for."""
    entry = _entry(_read_record(), path)
    if entry is not None and entry.get("sha256"):
        return str(entry["sha256"])
    before = _identity(path)
    digest = sha256_file(path)
    if before is not None and _identity(path) == before:  # not changed while it was hashed
        _record_entry(path, before, digest)
    return digest


def record_digest(path: Path, sha256: str, verified_as: str | None = None) -> None:
    """Record `path`'s digest, just computed by this code from what it wrote or read (and, for an
    archive member, the digest of the archive it came from)."""
    identity = _identity(path)
    if identity is not None:
        _record_entry(path, identity, sha256, verified_as)


def _record_entry(path: Path, identity: list[int], sha256: str, verified_as: str | None = None) -> None:
    entry = {"sha256": sha256, "identity": identity, **({"verified_as": verified_as} if verified_as else {})}
    _update_record(lambda record: record.update({_key(path): entry}))


def verified(path: Path, sha256: str | None) -> bool:
    """Whether `path` is a regular file and the record's entry for that very file says it has (or
    came from an archive that had) `sha256`."""
    if _identity(path) is None:
        return False
    if sha256 is None:
        return True
    entry = _entry(_read_record(), path)
    return entry is not None and sha256 in (entry.get("sha256"), entry.get("verified_as"))


def record_verified(path: Path, sha256: str | None) -> None:
    """Record that `path` was checked against the manifest digest `sha256` (nothing to record without one)."""
    if sha256 is not None:
        record_digest(path, sha256)


def forget_digest(path: Path) -> None:
    """Drop the record of `path`, before it is replaced or deleted."""
    key = _key(path)
    _update_record(lambda record: record.pop(key, None))


# --- where files go -------------------------------------------------------------------------


def download_path(spec: AssetSpec) -> Path:
    """Where the downloaded file (archive or plain) lives in the cache."""
    return cache_root() / "downloads" / url_file_name(spec.url)


def extracted_path(spec: AssetSpec) -> Path:
    """Where an archive member is extracted in the cache."""
    assert spec.member is not None
    return cache_root() / "extracted" / archive_stem(url_file_name(spec.url)) / spec.member


def archive_stem(file_name: str) -> str:
    """`video_tag_tsn.tar` -> `video_tag_tsn`, `x.tar.gz` -> `x`."""
    for suffix in (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tar"):
        if file_name.endswith(suffix) and len(file_name) > len(suffix):
            return file_name[: -len(suffix)]
    return file_name


def ensure_dir(directory: Path) -> None:
    """Create a cache directory, or say clearly which one cannot be used."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AssetError(f"cache directory {directory} cannot be created ({exc.strerror or exc}); "
                         f"point HUB_HOME at a writable directory") from exc
    if not os.access(directory, os.W_OK | os.X_OK):
        raise AssetError(f"cache directory {directory} is not writable; "
                         f"point HUB_HOME at a writable directory")


@contextlib.contextmanager
def disk_errors(directory: Path) -> Iterator[None]:
    """Turn file-system failures (full disk, permissions) into an AssetError naming the directory."""
    try:
        yield
    except OSError as exc:
        raise AssetError(f"cannot write in {directory}: {exc.strerror or exc}") from exc


@contextlib.contextmanager
def locked(dest: Path, progress: bool) -> Iterator[None]:
    """Hold `<dest>.lock` so concurrent processes download a file once; the others wait."""
    lock = filelock.FileLock(str(dest) + ".lock")
    with disk_errors(dest.parent):
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            reporter = progress_report.current() if progress else progress_report.Progress()
            with reporter.busy(f"waiting for another process downloading {dest.name}"):
                lock.acquire()
    try:
        yield
    finally:
        lock.release()


# --- what failed a check after the download ---------------------------------------------------


def delete_cached(path: Path) -> None:
    """Delete a cached file and its digest stamp."""
    forget_digest(path)
    with disk_errors(path.parent):
        path.unlink(missing_ok=True)


def discard_download(path: Path) -> str | None:
    """If `path` came from the network (a download in the cache, or a member extracted from one),
    delete it, with the archive it came from, so that the next run fetches it again. Returns what
    was done, for the error message; None for a file of the user's (never deleted)."""
    path = Path(path)
    downloads, extracted = cache_root() / "downloads", cache_root() / "extracted"
    if path.parent == downloads:
        delete_cached(path)
        return "the download was deleted, the next run fetches it again"
    if extracted not in path.parents:
        return None
    delete_cached(path)
    stem = path.relative_to(extracted).parts[0]
    archives = [p for p in downloads.glob(f"{glob.escape(stem)}.*") if archive_stem(p.name) == stem
                and not p.name.endswith((".lock", ".part"))]
    for archive in archives:
        delete_cached(archive)
    if archives:
        return "the download was deleted, the next run fetches it again"
    return "the copy extracted into the cache was deleted"


def read_fetched(path: Path, read: Callable[[Path], T]) -> T:
    """`read(path)`; when that fails with an AssetError, a downloaded file is deleted (see
    `discard_download`) and the message says so."""
    try:
        return read(path)
    except AssetError as exc:
        note = discard_download(path)
        if note:
            exc.args = (f"{exc}; {note}", *exc.args[1:])
        raise
