"""Archive members: one file taken out of a (gzip) tar into the cache, bounded and checked."""
from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

from ...errors import AssetError
from .cache import delete_cached, disk_errors, ensure_dir, extracted_path, forget_digest, record_digest
from .download import CHUNK
from .spec import AssetSpec


class _BadArchive(AssetError):
    """The archive's content is not what the asset needs (no such member, sparse, too large)."""


def extract_member(spec: AssetSpec, archive: Path, downloaded: bool = False) -> Path:
    """Extract the spec's member from a (gzip) tar into the cache via a temp file and rename.

    A `downloaded` archive that cannot be read or lacks a good member is deleted, so the next run
    fetches it again instead of finding it in the cache; a user's own file (from
    $PADDLEHUB_VIDEO_ASSETS) is kept.
    """
    assert spec.member is not None
    out = extracted_path(spec)
    ensure_dir(out.parent)
    forget_digest(out)
    try:
        _check_gzip_stream(archive, 2 * spec.download_bytes)
        with tarfile.open(archive, "r:*") as tar:
            info = _find_member(tar, spec.member, archive)
            _check_member_size(info, spec.max_bytes, archive)
            src = tar.extractfile(info)
            assert src is not None  # _find_member only returns regular files
            digest = _write_atomically(src, out, info.size, archive)
    except (_BadArchive, tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        advice = "replace it with a good copy"
        if downloaded:
            delete_cached(archive)
            advice = "the download was deleted, the next run fetches it again"
        reason = str(exc) if isinstance(exc, _BadArchive) else f"{archive}: cannot read the archive ({exc})"
        raise AssetError(f"{reason}; {advice}") from exc
    record_digest(out, digest, verified_as=spec.sha256)  # the member's digest, and the archive's it came from
    return out


def _check_gzip_stream(archive: Path, max_bytes: int) -> None:
    """Read a gzip file to its end, so that a truncated or corrupted one fails the size and CRC check
    of its trailer (tarfile stops reading at the member it wants, before that trailer). The archives
    are not all pinned by a sha256, so this is what catches a damaged one. Plain tars pass as they are.
    A stream that inflates past `max_bytes` is refused (a gzip bomb)."""
    with open(archive, "rb") as raw:
        if raw.read(2) != b"\x1f\x8b":
            return
    size = 0
    with gzip.open(archive, "rb") as stream:
        while block := stream.read(CHUNK * 16):
            size += len(block)
            if size > max_bytes:
                raise _BadArchive(f"{archive}: decompresses to more than {max_bytes} bytes, "
                                  f"more than this asset's archive can hold")


def _find_member(tar: tarfile.TarFile, member: str, archive: Path) -> tarfile.TarInfo:
    """The regular-file entry named `member` (ignoring a leading './'), else the only regular file
    of that file name anywhere in the archive, else an error listing the entries."""
    seen: list[tarfile.TarInfo] = list(tar)
    for info in seen:
        if _normalised(info.name) == member:
            if not info.isfile():
                raise _BadArchive(f"{archive}: member {member!r} is not a regular file (a link or directory)")
            return info
    file_name = PurePosixPath(member).name
    same_name = [info for info in seen if info.isfile() and PurePosixPath(_normalised(info.name)).name == file_name]
    if len(same_name) == 1:
        return same_name[0]
    names = [info.name for info in seen]
    listing = ", ".join(names[:10]) + (f", ... ({len(names)} entries)" if len(names) > 10 else "")
    several = f" and {len(same_name)} files named {file_name!r} elsewhere" if same_name else ""
    raise _BadArchive(f"{archive}: no member {member!r} in the archive{several}; it holds: {listing or 'nothing'}")


def _normalised(name: str) -> str:
    """A member name without leading './'."""
    while name.startswith("./"):
        name = name[2:]
    return name


def _check_member_size(info: tarfile.TarInfo, max_bytes: int, archive: Path) -> None:
    """Refuse a sparse member (a few bytes in the archive, any size on disk) or one larger than the asset."""
    if info.issparse():
        raise _BadArchive(f"{archive}: member {info.name!r} is a sparse file, which no weights file is")
    if info.size > max_bytes:
        raise _BadArchive(f"{archive}: member {info.name!r} is {info.size} bytes, more than the {max_bytes} "
                          f"bytes this asset can be")


def _write_atomically(src: Any, out: Path, size: int, archive: Path) -> str:
    """Copy a stream of `size` bytes to `out` through a temp file in the same directory, renamed only
    when complete; never more than `size` bytes are written. Returns the sha256 of what was written."""
    digest = hashlib.sha256()
    with disk_errors(out.parent):
        fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=out.name + ".", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        written = 0
        with disk_errors(out.parent), os.fdopen(fd, "wb") as fh:
            while written < size and (block := src.read(min(CHUNK, size - written))):
                fh.write(block)
                digest.update(block)
                written += len(block)
        if written != size:
            raise _BadArchive(f"{archive}: member {out.name} is truncated in the archive")
        with disk_errors(out.parent):
            os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return digest.hexdigest()
