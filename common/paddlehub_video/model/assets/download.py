"""HTTP downloads: resumable, retried, bounded in size and time, verified before they take their final name."""
from __future__ import annotations

import http.client
import os
import re
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ... import environment
from ... import progress as progress_report
from ...errors import AssetError
from ...http_rules import reason as _reason
from ...http_rules import transfer_deadline
from .cache import disk_errors, sha256_file
from .spec import AssetSpec

ENV_TIMEOUT, ENV_DEADLINE = environment.TIMEOUT, environment.DEADLINE
DEFAULT_TIMEOUT_S = environment.DownloadEnvironment.timeout_s
# Module attributes rather than constants so tests (and impatient users) can shorten them.
RETRIES = 3
RETRY_DELAY_S = 1.0
CHUNK = 1 << 16
_USER_AGENT = "paddlehub-video-assets/1"


class DownloadError(AssetError):
    """An asset could not be downloaded (unreachable, HTTP error, timeout, deadline, size limit)."""


def deadline(spec: AssetSpec, asked: float | None = None) -> float:
    """Seconds one download may take in all: `asked` ($PADDLEHUB_VIDEO_DEADLINE), else a minute plus the
    asset's size limit at 100 kB/s."""
    return transfer_deadline(spec.download_bytes, asked)


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


def download(url: str, dest: Path, spec: AssetSpec, progress: bool, timeout: float,
             deadline_s: float | None = None) -> None:
    """Download `url` to `dest` via `<dest>.part` with resume and retries, then verify and rename;
    `timeout`: seconds without data; `deadline_s`: seconds in all (None: from the asset's size limit)."""
    part = dest.with_name(dest.name + ".part")
    seconds = deadline(spec, deadline_s)
    limits = _Limits(timeout, spec.download_bytes, seconds, time.monotonic() + seconds)
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
    with disk_errors(dest.parent):
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
    """Stream the response into the `.part` file (append when resuming), reported to the current
    reporter (`hub run` draws a bar), within the size limit and the deadline."""
    reporter = progress_report.current() if progress else progress_report.Progress()
    size = offset
    with disk_errors(part.parent), open(part, "ab" if offset else "wb") as fh, \
            reporter.downloading(part.name[: -len(".part")], total, offset) as advance:
        while True:
            limits.check_time(url)
            try:
                chunk = resp.read1(CHUNK)  # returns what arrived: a dripping server meets the deadline
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
            advance(len(chunk))


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
