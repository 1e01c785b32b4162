"""Model assets (weights, label files): find them locally or download, verify and cache them.

Resolution order of `fetch_asset`: the module directory, `$PADDLEHUB_VIDEO_ASSETS` (local files,
no network), the cache under `$HUB_HOME/paddlehub_video`, then a download from
`$PADDLEHUB_VIDEO_MIRROR` or the publisher's URL. A cached file exists under its final name only
once it is complete and verified; everything in flight lives in a `.part` or `.tmp` file.

Whatever comes from the network is bounded: each asset has a size limit (weights: what the
network's parameters can take, from configs/params/; other files: `max_bytes`, default 1 MiB), and
each download a total deadline. A download that fails any check (digest, archive, member, or the
caller's own reading with `read_fetched`) is deleted, so the next run fetches it again.
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import hashlib
import http.client
import os
import re
import socket
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, TypeVar
from urllib.parse import unquote, urlsplit

import filelock
from tqdm import tqdm

from . import progress as progress_report
from .errors import AssetError
from .weights import max_file_bytes

ENV_ASSETS = "PADDLEHUB_VIDEO_ASSETS"
ENV_MIRROR = "PADDLEHUB_VIDEO_MIRROR"
ENV_TIMEOUT = "PADDLEHUB_VIDEO_TIMEOUT"
ENV_DEADLINE = "PADDLEHUB_VIDEO_DEADLINE"
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_BYTES = 1 << 20  # label files are tens of kB
# The default deadline of a download: a minute, plus the asset's size limit at this rate.
_DEADLINE_BASE_S = 60.0
_SLOWEST_RATE = 100_000  # bytes per second
# An archive may hold, besides the member, files about as large (the publisher's: .pdopt, .pdmodel).
_ARCHIVE_MARGIN_BYTES = 16 << 20
# Module attributes rather than constants so tests (and impatient users) can shorten them.
RETRIES = 3
RETRY_DELAY_S = 1.0
_CHUNK = 1 << 16
_USER_AGENT = "paddlehub-video-assets/1"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_STAMP_SUFFIX = ".sha256"
T = TypeVar("T")


class DownloadError(AssetError):
    """An asset could not be downloaded (unreachable, HTTP error, timeout, deadline, size limit)."""


@dataclass(frozen=True)
class AssetSpec:
    """Where one asset comes from and how to recognise it."""

    name: str
    url: str
    sha256: str | None = None
    member: str | None = None
    module_file: str | None = None
    max_bytes: int = DEFAULT_MAX_BYTES  # of the file itself, the member for an archive

    def __post_init__(self) -> None:
        """Normalise the digest and refuse unsafe archive member paths."""
        if self.sha256 is not None:
            digest = self.sha256.strip().lower()
            if not _SHA256_RE.match(digest):
                raise AssetError(f"asset {self.name!r}: sha256 {self.sha256!r} is not 64 hex digits")
            object.__setattr__(self, "sha256", digest)
        if self.member is not None:
            _check_member_path(self.name, self.member)
        url_file_name(self.url)

    @classmethod
    def from_dict(cls, name: str, d: Mapping[str, Any]) -> AssetSpec:
        """Build a spec from a YAML manifest entry; a `network` sets the size limit from its parameters."""
        if not isinstance(d, Mapping) or not d.get("url"):
            raise AssetError(f"asset {name!r}: the manifest entry needs a 'url' (got {d!r})")

        def opt(key: str) -> str | None:
            value = d.get(key)
            return None if value is None else str(value)

        if d.get("network"):
            max_bytes = max_file_bytes(str(d["network"]))
        else:
            max_bytes = int(d.get("max_bytes") or DEFAULT_MAX_BYTES)
        return cls(name=name, url=str(d["url"]), sha256=opt("sha256"), member=opt("member"),
                   module_file=opt("module_file"), max_bytes=max_bytes)

    @property
    def download_bytes(self) -> int:
        """Size limit of the downloaded file: the asset's, or room for it and its companions in an archive."""
        return 2 * self.max_bytes + _ARCHIVE_MARGIN_BYTES if self.member else self.max_bytes


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


def url_file_name(url: str) -> str:
    """The file name an URL points at (last path segment, percent-decoded)."""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    if not name or name in (".", ".."):
        raise AssetError(f"{url}: the URL does not end in a file name")
    return name


def fetch_asset(spec: AssetSpec, module_dir: Path | None = None, progress: bool = True,
                timeout: float | None = None) -> Path:
    """Local path of the asset's file (the member itself for archives), downloading it if needed."""
    return fetch_assets([spec], module_dir, progress, timeout, owner=f"asset {spec.name!r}")[0]


def fetch_assets(specs: list[AssetSpec], module_dir: Path | None = None, progress: bool = True,
                 timeout: float | None = None, owner: str = "paddlehub_video") -> list[Path]:
    """`fetch_asset` of each spec, but every file is looked for locally first, so that when some
    cannot be had (no network, or $PADDLEHUB_VIDEO_ASSETS lacks them) one error names them all."""
    found = [_find_local(spec, module_dir) for spec in specs]
    missing = [spec for spec, path in zip(specs, found) if path is None]
    local_dir = os.environ.get(ENV_ASSETS)
    if missing and local_dir:
        directory = Path(local_dir).expanduser()
        raise AssetError(_missing_message(owner, missing, f"not in {ENV_ASSETS}={directory}", directory))
    for i, spec in enumerate(specs):
        if found[i] is not None:
            continue
        try:
            found[i] = _from_cache_or_network(spec, progress, _timeout(timeout))
        except DownloadError as exc:
            raise DownloadError(_missing_message(owner, missing[missing.index(spec):], str(exc))) from exc
    return [path for path in found if path is not None]


def _missing_message(owner: str, specs: list[AssetSpec], reason: str, local_dir: Path | None = None) -> str:
    """One message naming every missing file, its URL, and where to put it."""
    count = f"{len(specs)} model file" + ("s" if len(specs) > 1 else "")
    if local_dir is not None:
        where = f"Downloads are disabled while {ENV_ASSETS} is set: put these files in {local_dir} (or unset it):"
    else:
        where = (f"Fetch these files where there is network access, put them in one directory and set "
                 f"{ENV_ASSETS}=<that directory> (or set {ENV_MIRROR}=<base url> of a server that serves them):")
    lines = [f"{owner}: {count} missing: {reason}", where]
    for spec in specs:
        also = f" (or its member {PurePosixPath(spec.member).name}, extracted)" if spec.member else ""
        lines.append(f"  {url_file_name(spec.url)}{also}  from {spec.url}")
    return "\n".join(lines)


# --- local sources ---------------------------------------------------------------------------


def _find_local(spec: AssetSpec, module_dir: Path | None) -> Path | None:
    """The asset from the module directory, $PADDLEHUB_VIDEO_ASSETS or the cache; None if none has it."""
    if module_dir is not None and spec.module_file:
        candidate = Path(module_dir) / spec.module_file
        if candidate.is_file():
            return candidate
    local_dir = os.environ.get(ENV_ASSETS)
    if local_dir:
        path = _from_local_dir(spec, Path(local_dir).expanduser())
        if path is not None:
            return path
    return _cached(spec)


def _from_local_dir(spec: AssetSpec, directory: Path) -> Path | None:
    """The asset from $PADDLEHUB_VIDEO_ASSETS (extracting an archive into the cache), or None."""
    if spec.member:
        for candidate in (directory / spec.member, directory / PurePosixPath(spec.member).name):
            if candidate.is_file():
                return candidate
    source = directory / url_file_name(spec.url)
    if not source.is_file():
        return None
    if spec.member and _stamp_matches(_extracted_path(spec), spec.sha256):
        return _extracted_path(spec)
    _verify_local(source, spec.sha256)
    return _extract(spec, source) if spec.member else source


def _verify_local(path: Path, sha256: str | None) -> None:
    """Refuse a user-supplied file whose digest differs from the manifest's."""
    if sha256 is None:
        return
    got = sha256_file(path)
    if got != sha256:
        raise AssetError(f"{path}: sha256 mismatch: expected {sha256}, got {got}; "
                         f"the file is not the one the manifest names")


def _cached(spec: AssetSpec) -> Path | None:
    """The cached file if it is there and was verified against the current digest."""
    path = _extracted_path(spec) if spec.member else _download_path(spec)
    return path if _stamp_matches(path, spec.sha256) else None


def _stamp_matches(path: Path, sha256: str | None) -> bool:
    """Whether `path` exists and its sidecar records the expected digest (no digest: existence)."""
    if not path.is_file():
        return False
    if sha256 is None:
        return True
    stamp = path.with_name(path.name + _STAMP_SUFFIX)
    try:
        return stamp.read_text(encoding="ascii").strip() == sha256
    except (OSError, UnicodeDecodeError):
        return False


def _clear_stamp(path: Path) -> None:
    """Drop the sidecar before `path` is replaced, so a crash cannot pair a new file with an old digest."""
    with _disk_errors(path.parent):
        path.with_name(path.name + _STAMP_SUFFIX).unlink(missing_ok=True)


def _write_stamp(path: Path, sha256: str | None) -> None:
    """Record which digest `path` was verified against, so later runs need not hash it again."""
    if sha256 is not None:
        with _disk_errors(path.parent):
            path.with_name(path.name + _STAMP_SUFFIX).write_text(sha256 + "\n", encoding="ascii")


# --- cache and download ----------------------------------------------------------------------


def _download_path(spec: AssetSpec) -> Path:
    """Where the downloaded file (archive or plain) lives in the cache."""
    return cache_root() / "downloads" / url_file_name(spec.url)


def _extracted_path(spec: AssetSpec) -> Path:
    """Where an archive member is extracted in the cache."""
    assert spec.member is not None
    return cache_root() / "extracted" / _archive_stem(url_file_name(spec.url)) / spec.member


def _archive_stem(file_name: str) -> str:
    """`video_tag_tsn.tar` -> `video_tag_tsn`, `x.tar.gz` -> `x`."""
    for suffix in (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tar"):
        if file_name.endswith(suffix) and len(file_name) > len(suffix):
            return file_name[: -len(suffix)]
    return file_name


def _source_url(spec: AssetSpec) -> str:
    """The mirror's URL for the asset when $PADDLEHUB_VIDEO_MIRROR is set, else the spec's."""
    mirror = os.environ.get(ENV_MIRROR)
    if not mirror:
        return spec.url
    return mirror.rstrip("/") + "/" + urlsplit(spec.url).path.rsplit("/", 1)[-1]


def _timeout(timeout: float | None) -> float:
    """Socket timeout: the argument, else $PADDLEHUB_VIDEO_TIMEOUT, else the default."""
    return float(timeout) if timeout is not None else _seconds_from_env(ENV_TIMEOUT, DEFAULT_TIMEOUT_S)


def _deadline(spec: AssetSpec) -> float:
    """Seconds one download may take in all: $PADDLEHUB_VIDEO_DEADLINE, else a minute plus the
    asset's size limit at 100 kB/s."""
    return _seconds_from_env(ENV_DEADLINE, _DEADLINE_BASE_S + spec.download_bytes / _SLOWEST_RATE)


def _seconds_from_env(variable: str, default: float) -> float:
    """A positive number of seconds from the environment variable, else `default`."""
    raw = os.environ.get(variable)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise AssetError(f"{variable}={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise AssetError(f"{variable}={raw!r} must be a positive number of seconds")
    return value


def _from_cache_or_network(spec: AssetSpec, progress: bool, timeout: float) -> Path:
    """Return the cached file, downloading (and extracting) it under a cross-process lock if needed."""
    cached = _cached(spec)
    if cached is not None:
        return cached
    dest = _download_path(spec)
    _ensure_dir(dest.parent)
    with _locked(dest, progress):
        # Another process may have finished the same download while this one waited.
        cached = _cached(spec)
        if cached is not None:
            return cached
        if not _stamp_matches(dest, spec.sha256) and not _adopt_unstamped(dest, spec.sha256):
            _clear_stamp(dest)
            _download(_source_url(spec), dest, spec, progress, timeout)
            _write_stamp(dest, spec.sha256)
        if not spec.member:
            return dest
        with progress_report.current().busy(f"extracting {PurePosixPath(spec.member).name} from {dest.name}"):
            return _extract(spec, dest, downloaded=True)


def _adopt_unstamped(dest: Path, sha256: str | None) -> bool:
    """Accept a final file without a stamp (placed by hand, or an old run) if its digest matches."""
    if sha256 is None or not dest.is_file():
        return False
    if sha256_file(dest) != sha256:
        return False
    _write_stamp(dest, sha256)
    return True


def _ensure_dir(directory: Path) -> None:
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
def _disk_errors(directory: Path) -> Iterator[None]:
    """Turn file-system failures (full disk, permissions) into an AssetError naming the directory."""
    try:
        yield
    except OSError as exc:
        raise AssetError(f"cannot write in {directory}: {exc.strerror or exc}") from exc


@contextlib.contextmanager
def _locked(dest: Path, progress: bool) -> Iterator[None]:
    """Hold `<dest>.lock` so concurrent processes download a file once; the others wait."""
    lock = filelock.FileLock(str(dest) + ".lock")
    with _disk_errors(dest.parent):
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


class _Transient(Exception):
    """A failure worth retrying (connection trouble, short read, 5xx); the message is the reason."""


@dataclass(frozen=True)
class _Limits:
    """What one download may take: seconds without data, bytes, and when it must be done."""

    timeout: float
    max_bytes: int
    deadline_s: float
    ends_at: float

    def check_time(self, url: str) -> None:
        """Raise once the download has run past its deadline (the partial file stays, resumable)."""
        if time.monotonic() > self.ends_at:
            raise DownloadError(_network_message(
                url, f"not complete after {self.deadline_s:g} s, the deadline of one download "
                     f"(raise {ENV_DEADLINE} on a slow connection)"))


def _download(url: str, dest: Path, spec: AssetSpec, progress: bool, timeout: float) -> None:
    """Download `url` to `dest` via `<dest>.part` with resume and retries, then verify and rename."""
    part = dest.with_name(dest.name + ".part")
    deadline = _deadline(spec)
    limits = _Limits(timeout, spec.download_bytes, deadline, time.monotonic() + deadline)
    attempt = 0
    while True:
        try:
            total = _transfer(url, part, progress, limits)
            break
        except _Transient as exc:
            attempt += 1
            if attempt > RETRIES:
                tries = f"{attempt} attempt" + ("s" if attempt > 1 else "")
                raise DownloadError(_network_message(url, f"{exc} (after {tries})")) from exc
            time.sleep(min(RETRY_DELAY_S * attempt, max(0.0, limits.ends_at - time.monotonic())))
            limits.check_time(url)
    _verify_download(part, url, spec.sha256, total)
    with _disk_errors(dest.parent):
        os.replace(part, dest)


def _network_message(url: str, reason: str) -> str:
    """Error text naming the URL and the reason (`fetch_assets` adds how to do without the network)."""
    return f"could not download {url}: {reason}"


def _transfer(url: str, part: Path, progress: bool, limits: _Limits) -> int | None:
    """One HTTP attempt, resuming from the `.part` size; returns the full size if the server said."""
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    timeout = limits.timeout
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        return _http_error(url, exc, part, offset)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        if isinstance(getattr(exc, "reason", exc), socket.gaierror):
            # An unknown host name does not come back within seconds; retrying only delays the advice.
            raise DownloadError(_network_message(url, _reason(exc, timeout))) from exc
        raise _Transient(_reason(exc, timeout)) from exc
    with resp:
        offset, total = _resume_point(resp, part, offset)
        if total is not None and total > limits.max_bytes:
            part.unlink(missing_ok=True)
            raise DownloadError(_too_big(url, f"announces {total} bytes", limits.max_bytes))
        _copy_body(resp, url, part, offset, total, progress, limits)
    size = part.stat().st_size
    if total is not None and size < total:
        raise _Transient(f"connection closed after {size} of {total} bytes")
    return total


def _http_error(url: str, exc: urllib.error.HTTPError, part: Path, offset: int) -> int | None:
    """Handle an HTTP error status: 416 restarts or finishes, 5xx retries, the rest is fatal."""
    if exc.code == 416 and offset:
        # The server has nothing past `offset`: the part is complete if its size is the full size.
        match = re.match(r"bytes \*/(\d+)", exc.headers.get("Content-Range", "") if exc.headers else "")
        if match and int(match.group(1)) == offset:
            return offset
        part.unlink(missing_ok=True)
        raise _Transient(f"HTTP 416 for bytes={offset}-, restarting from 0")
    if exc.code >= 500 or exc.code == 429:
        raise _Transient(f"HTTP {exc.code} {exc.reason}")
    raise DownloadError(_network_message(url, f"HTTP {exc.code} {exc.reason}"))


def _reason(exc: BaseException, timeout: float) -> str:
    """Readable cause of a network failure, spelling out timeouts."""
    cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(cause, (socket.timeout, TimeoutError)):
        return (f"timed out: no data for {timeout:g} s (raise {ENV_TIMEOUT} to wait longer "
                f"on a slow connection)")
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    return str(cause)


def _resume_point(resp: Any, part: Path, offset: int) -> tuple[int, int | None]:
    """Offset to write at and full size, from the status: 206 appends, anything else restarts."""
    status = getattr(resp, "status", None) or 200  # file:// mirrors have no status
    length = resp.headers.get("Content-Length")
    if offset and status == 206:
        match = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", resp.headers.get("Content-Range", ""))
        if match and int(match.group(1)) == offset:
            total = match.group(3)
            return offset, (int(total) if total != "*" else (offset + int(length) if length else None))
        part.unlink(missing_ok=True)
        raise _Transient("server answered a different range than asked, restarting from 0")
    if status not in (200, 206):
        raise _Transient(f"unexpected HTTP status {status}")
    return 0, (int(length) if length and length.isdigit() else None)


def _too_big(url: str, what: str, max_bytes: int) -> str:
    return (f"{url}: {what}, more than the {max_bytes} bytes this file can be; the download was "
            f"deleted (the server or mirror serves something else)")


def _copy_body(resp: Any, url: str, part: Path, offset: int, total: int | None, progress: bool,
               limits: _Limits) -> None:
    """Stream the response into the `.part` file (append when resuming) with a progress bar,
    within the size limit and the deadline."""
    bar_args = {"total": total, "initial": offset, "unit": "B", "unit_scale": True, "unit_divisor": 1024,
                "desc": part.name[: -len(".part")], "file": sys.stderr, "disable": None if progress else True,
                "leave": False}
    size = offset
    with _disk_errors(part.parent), open(part, "ab" if offset else "wb") as fh, tqdm(**bar_args) as bar:
        while True:
            limits.check_time(url)
            try:
                chunk = resp.read1(_CHUNK)  # returns what arrived: a dripping server meets the deadline
            except (OSError, http.client.HTTPException) as exc:
                raise _Transient(_reason(exc, limits.timeout)) from exc
            if not chunk:
                return
            size += len(chunk)
            if size > limits.max_bytes:
                fh.close()
                part.unlink(missing_ok=True)
                raise DownloadError(_too_big(url, f"sent more than {size - len(chunk)} bytes", limits.max_bytes))
            fh.write(chunk)
            bar.update(len(chunk))


def _verify_download(part: Path, url: str, sha256: str | None, total: int | None) -> None:
    """Check size and digest of a finished `.part`; delete it and raise if it is wrong."""
    size = part.stat().st_size
    if total is not None and size != total:
        part.unlink(missing_ok=True)
        raise AssetError(f"{url}: downloaded {size} bytes but the server announced {total}; "
                         f"the partial file was deleted, try again")
    if sha256 is None:
        return
    got = sha256_file(part)
    if got != sha256:
        part.unlink(missing_ok=True)
        raise AssetError(f"{url}: sha256 mismatch: expected {sha256}, got {got} ({size} bytes); "
                         f"the download was deleted (corrupted transfer, or the server or mirror "
                         f"serves a different file)")


# --- archives --------------------------------------------------------------------------------


def _check_member_path(name: str, member: str) -> None:
    """Refuse member paths that could escape the extraction directory."""
    parts = PurePosixPath(member).parts
    if not member or member.startswith(("/", "\\")) or ".." in parts or "\\" in member or ":" in member:
        raise AssetError(f"asset {name!r}: unsafe archive member path {member!r} "
                         f"(absolute, '..' or a drive/backslash)")


class _BadArchive(AssetError):
    """The archive's content is not what the asset needs (no such member, sparse, too large)."""


def _extract(spec: AssetSpec, archive: Path, downloaded: bool = False) -> Path:
    """Extract the spec's member from a (gzip) tar into the cache via a temp file and rename.

    A `downloaded` archive that cannot be read or lacks a good member is deleted, so the next run
    fetches it again instead of finding it in the cache; a user's own file (from
    $PADDLEHUB_VIDEO_ASSETS) is kept.
    """
    assert spec.member is not None
    out = _extracted_path(spec)
    _ensure_dir(out.parent)
    _clear_stamp(out)
    try:
        _check_gzip_stream(archive, 2 * spec.download_bytes)
        with tarfile.open(archive, "r:*") as tar:
            info = _find_member(tar, spec.member, archive)
            _check_member_size(info, spec.max_bytes, archive)
            src = tar.extractfile(info)
            assert src is not None  # _find_member only returns regular files
            _write_atomically(src, out, info.size, archive)
    except (_BadArchive, tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        advice = "replace it with a good copy"
        if downloaded:
            _delete_cached(archive)
            advice = "the download was deleted, the next run fetches it again"
        reason = str(exc) if isinstance(exc, _BadArchive) else f"{archive}: cannot read the archive ({exc})"
        raise AssetError(f"{reason}; {advice}") from exc
    _write_stamp(out, spec.sha256)
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
        while block := stream.read(_CHUNK * 16):
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


def _write_atomically(src: Any, out: Path, size: int, archive: Path) -> None:
    """Copy a stream of `size` bytes to `out` through a temp file in the same directory, renamed only
    when complete; never more than `size` bytes are written."""
    with _disk_errors(out.parent):
        fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=out.name + ".", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        written = 0
        with _disk_errors(out.parent), os.fdopen(fd, "wb") as fh:
            while written < size and (block := src.read(min(_CHUNK, size - written))):
                fh.write(block)
                written += len(block)
        if written != size:
            raise _BadArchive(f"{archive}: member {out.name} is truncated in the archive")
        with _disk_errors(out.parent):
            os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


# --- what failed a check after the download ---------------------------------------------------


def _delete_cached(path: Path) -> None:
    """Delete a cached file and its digest stamp."""
    _clear_stamp(path)
    with _disk_errors(path.parent):
        path.unlink(missing_ok=True)


def discard_download(path: Path) -> str | None:
    """If `path` came from the network (a download in the cache, or a member extracted from one),
    delete it, with the archive it came from, so that the next run fetches it again. Returns what
    was done, for the error message; None for a file of the user's (never deleted)."""
    path = Path(path)
    downloads, extracted = cache_root() / "downloads", cache_root() / "extracted"
    if path.parent == downloads:
        _delete_cached(path)
        return "the download was deleted, the next run fetches it again"
    if extracted not in path.parents:
        return None
    _delete_cached(path)
    stem = path.relative_to(extracted).parts[0]
    archives = [p for p in downloads.glob(f"{glob.escape(stem)}.*") if _archive_stem(p.name) == stem
                and not p.name.endswith((".lock", ".part", _STAMP_SUFFIX))]
    for archive in archives:
        _delete_cached(archive)
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
