"""The cache under `$HUB_HOME/paddlehub_video`: where each file goes, its lock, and its one digest record.

`digests.json` records the sha256 of cached and converted-from files, keyed by path, size and
modification time, so a file is hashed once: a file that changes gets a new key and is hashed
again. A file checked against a manifest digest is "verified" when its record says it has that
digest; an archive member, when it was extracted from an archive that had it.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, TypeVar

import filelock

from ...errors import AssetError
from .spec import AssetSpec, url_file_name

T = TypeVar("T")
_RECORD = "digests.json"


def cache_root() -> Path:
    """`$HUB_HOME/paddlehub_video` (PaddleHub's home defaults to ~/.paddlehub), read at call time."""
    hub_home = os.environ.get("HUB_HOME") or os.path.join("~", ".paddlehub")
    return Path(hub_home).expanduser() / "paddlehub_video"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- the digest record ------------------------------------------------------------------------


def _file_key(path: Path) -> str | None:
    """The record key of `path` as it is now: resolved path, size, modification time; None if it is not there."""
    try:
        info = Path(path).stat()
    except OSError:
        return None
    return f"{Path(path).resolve()}|{info.st_size}|{info.st_mtime_ns}"


def _read_record() -> dict[str, Any]:
    try:
        record = json.loads((cache_root() / _RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _update_record(change: Callable[[dict[str, Any]], None]) -> None:
    """Apply `change` to the record under its lock. The record saves hashing only: when the cache
    cannot be written (read-only, full), files are hashed again next time, nothing else changes."""
    record_file = cache_root() / _RECORD
    with contextlib.suppress(OSError):
        record_file.parent.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(f"{record_file}.lock"):
            record = _read_record()
            change(record)
            tmp = record_file.with_name(f"{_RECORD}.tmp{os.getpid()}-{threading.get_ident()}")
            tmp.write_text(json.dumps(record), encoding="utf-8")
            os.replace(tmp, record_file)


def file_digest(path: Path) -> str:
    """sha256 of a file, from the record while the file is unchanged (same path, size, mtime)."""
    entry = _read_record().get(_file_key(path) or "")
    if isinstance(entry, dict) and entry.get("sha256"):
        return entry["sha256"]
    digest = sha256_file(path)
    record_digest(path, digest)
    return digest


def record_digest(path: Path, sha256: str, verified_as: str | None = None) -> None:
    """Record `path`'s digest (and, for an archive member, the digest of the archive it came from)."""
    key = _file_key(path)
    if key is None:
        return
    entry = {"sha256": sha256, **({"verified_as": verified_as} if verified_as else {})}
    _update_record(lambda record: record.update({key: entry}))


def verified(path: Path, sha256: str | None) -> bool:
    """Whether `path` exists and the record says it has (or came from an archive that had) `sha256`."""
    if not path.is_file():
        return False
    if sha256 is None:
        return True
    entry = _read_record().get(_file_key(path) or "")
    return isinstance(entry, dict) and sha256 in (entry.get("sha256"), entry.get("verified_as"))


def record_verified(path: Path, sha256: str | None) -> None:
    """Record that `path` was checked against the manifest digest `sha256` (nothing to record without one)."""
    if sha256 is not None:
        record_digest(path, sha256)


def forget_digest(path: Path) -> None:
    """Drop every record of `path`, before it is replaced or deleted."""
    prefix = f"{Path(path).resolve()}|"
    _update_record(lambda record: [record.pop(key) for key in [k for k in record if k.startswith(prefix)]])


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
            if progress:
                print(f"waiting for another process downloading {dest.name} ...", file=sys.stderr)
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
