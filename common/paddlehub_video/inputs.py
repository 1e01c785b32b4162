"""What `paths` may hold, and how each item becomes frames: the one place items are told apart.

item                                              read as                               results' `path`
------------------------------------------------  ------------------------------------  ----------------------------
`str` / `os.PathLike`, or `bytes` with no NUL     a local file (unchanged)              the path as given
byte and at most 4096 bytes (a file name)
`str` with `http://` or `https://`                downloaded into a bounded temporary   the URL less credentials and
                                                  file, deleted once read               query (`?...`)
`str` with another scheme (`rtsp://`, `ftp://`)   an error entry (live streams and      as above
                                                  other schemes are not read)
`bytes` holding a NUL byte or longer than 4096    the encoded video file, in a bounded  `<bytes #i>`
bytes, `bytearray`, `memoryview`                  temporary file deleted once read
a binary file object (has `read`)                 the same, read from its position      `<file #i>`
`Frames(array, fps)`, or a `[T, H, W, 3]` uint8   the frames themselves: no decoding,   `<frames #i>`
RGB `numpy` array                                 the same sampling and preprocessing
anything else                                     ValueError naming `paths[i]`          -

(`i`: the item's index in `paths`.) A file name can never hold a NUL byte and every video file
does, so `bytes` are told apart without guessing. Frames need their rate (`fps`) only for
`classify_timeline`. Temporary files are deleted however the call ends (errors, Ctrl-C), and
their errors name the item, never the temporary file.

A URL is fetched whole, in one request, with or without range support on the server: the planned
decoder reads every packet's headers (`packet_plan.read_packet_index`: true random-access points),
so ranges could not skip bytes, and the decoders read a file several times, which the local copy
serves. URLs are fetched with the download layer's rules (`http_rules`): $PADDLEHUB_VIDEO_TIMEOUT without
data, $PADDLEHUB_VIDEO_DEADLINE in all, redirects only to http/https, at most `limits.max_input_bytes`
(`hub serving`: also its upload limit). Under `hub serving` (`applied_url_policy`) URLs are read
only from the hosts its operator lists, never from a non-public address not listed.
"""
from __future__ import annotations

import http.client
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any, BinaryIO, NamedTuple
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from . import environment, http_rules, progress
from .decode.video import VIDEO_EXTENSIONS
from .errors import VideoDecodeError
from .names import as_str_path

MAX_PATH_BYTES = 4096  # Linux's PATH_MAX: longer bytes are not a file name
DEFAULT_MAX_INPUT_BYTES = 2 << 30  # limits.max_input_bytes: the most one URL or in-memory file may take
LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "rtp", "srt", "udp", "tcp", "mms", "mmsh", "hls")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_CHUNK = 1 << 16
TEMP_PREFIX = "paddlehub_video-input-"


class Frames(NamedTuple):
    """Decoded frames to classify: `array` `[T, H, W, 3]` uint8 RGB, and their rate (frames per second,
    needed by `classify_timeline` only)."""

    array: np.ndarray
    fps: float | None = None


@dataclass(frozen=True)
class Input:
    """An item of `paths` that is not a local file; `str()` gives the name results give it."""

    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class UrlInput(Input):
    url: str


@dataclass(frozen=True)
class EncodedInput(Input):
    """An encoded video file in memory (`bytes`-like) or a binary file object."""

    data: Any


@dataclass(frozen=True, eq=False)
class FramesInput(Input):
    frames: np.ndarray
    fps: float | None


Item = str | Input


@dataclass(frozen=True)
class UrlPolicy:
    """Where URLs may be read from, set by the caller for the calls inside `applied_url_policy`:
    `hosts` None refuses every URL (`refusal` says why and what to do); `max_bytes` (with the setting
    that set it) bounds each one further."""

    hosts: http_rules.HostPolicy | None
    refusal: str = ""
    max_bytes: int | None = None
    bytes_setting: str = ""


_POLICY: ContextVar[UrlPolicy | None] = ContextVar("paddlehub_video_url_policy", default=None)


@contextmanager
def applied_url_policy(policy: UrlPolicy) -> Iterator[None]:
    """`policy` for the URL inputs read inside the block (in this context and copies of it)."""
    token = _POLICY.set(policy)
    try:
        yield
    finally:
        _POLICY.reset(token)


def as_input(item: object, index: int | None = None) -> Item:
    """`item` of `paths` (at `index`) as a local path (str) or an `Input`; ValueError when it is none of them."""
    if isinstance(item, Input):
        return item
    label = "paths" if index is None else f"paths[{index}]"
    number = "" if index is None else f" #{index}"
    if isinstance(item, str):
        return UrlInput(url_name(item), item) if _SCHEME.match(item) else item
    if isinstance(item, os.PathLike):
        return as_str_path(item)
    if isinstance(item, bytes) and b"\0" not in item and len(item) <= MAX_PATH_BYTES:
        return as_str_path(item)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return EncodedInput(f"<bytes{number}>", _contiguous(item, label))
    if isinstance(item, Frames):
        return FramesInput(f"<frames{number}>", _frames_array(item.array, label), _fps(item.fps, label))
    if isinstance(item, np.ndarray):
        return FramesInput(f"<frames{number}>", _frames_array(item, label), None)
    if callable(getattr(item, "read", None)):
        return EncodedInput(f"<file{number}>", item)
    raise ValueError(f"{label}: expected a video path, an http(s) URL, the bytes or a binary file object of a "
                     f"video, or Frames(array [T, H, W, 3] uint8 RGB, fps); got {type(item).__name__}")


def url_name(url: str) -> str:
    """How results name `url`: without its credentials, query and fragment (they may hold secrets)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = host + (f":{parts.port}" if parts.port is not None else "")
    except ValueError:  # a port that is not a number: the text before the host's end
        return _SCHEME.match(url).group(0) + "<invalid URL>"
    return urlunsplit((parts.scheme, netloc, parts.path, "…" if parts.query else "", ""))


def _contiguous(data: bytes | bytearray | memoryview, label: str) -> bytes | bytearray | memoryview:
    if isinstance(data, memoryview):
        if not data.c_contiguous:
            raise ValueError(f"{label}: a memoryview of a video must be contiguous")
        return data.cast("B")
    return data


def _frames_array(array: object, label: str) -> np.ndarray:
    """`array` if it is `[T, H, W, 3]` uint8 with T, H, W >= 1; ValueError naming `label` otherwise."""
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{label}: Frames.array must be a numpy array, got {type(array).__name__}")
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3 or 0 in array.shape:
        raise ValueError(f"{label}: an array of shape {list(array.shape)} and dtype {array.dtype} is not a video's "
                         f"frames: expected [T, H, W, 3] uint8 RGB, T, H and W at least 1")
    return array


def _fps(fps: object, label: str) -> float | None:
    if fps is None:
        return None
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps < float("inf"):
        raise ValueError(f"{label}: Frames.fps must be a positive number of frames per second, "
                         f"got {type(fps).__name__}")
    return float(fps)


@dataclass(frozen=True)
class InputLimits:
    """What one URL, bytes or file-object input may take: bytes (and the setting that says so), seconds
    without data and in all (None: a minute plus `max_bytes` at 100 kB/s)."""

    max_bytes: int = DEFAULT_MAX_INPUT_BYTES
    bytes_setting: str = "limits.max_input_bytes"
    timeout_s: float = environment.DownloadEnvironment.timeout_s
    deadline_s: float | None = None


@contextmanager
def local_video(item: Item, limits: InputLimits) -> Iterator[str]:
    """A local file holding `item`'s video while the block runs (a path: itself; bytes, a file object, a URL:
    a temporary file within `limits`, deleted on leaving); errors name the item, not that file."""
    if isinstance(item, str):
        item = as_input(item)
    if isinstance(item, str):
        yield item
        return
    if isinstance(item, FramesInput):
        raise TypeError("frames have no file")  # callers sample FramesInput themselves
    policy = _POLICY.get()
    if policy is not None and policy.max_bytes is not None and policy.max_bytes < limits.max_bytes:
        limits = replace(limits, max_bytes=policy.max_bytes, bytes_setting=policy.bytes_setting)
    folder = tempfile.mkdtemp(prefix=TEMP_PREFIX)
    path = os.path.join(folder, "video" + _suffix(item))
    try:
        with open(path, "xb") as out:
            _fill(item, out, _Bound(item.name, limits), policy)
        try:
            with progress.renamed(path, item.name):
                yield path
        except VideoDecodeError as exc:
            raise VideoDecodeError(item.name, exc.reason.replace(path, item.name)) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _suffix(item: Input) -> str:
    """A video extension for the temporary file (a hint to the demuxer): the URL's, else `.mp4`."""
    if isinstance(item, UrlInput):
        match = re.search(r"\.[A-Za-z0-9]{1,8}$", urlsplit(item.url).path)
        if match and match.group(0).lower() in VIDEO_EXTENSIONS:
            return match.group(0).lower()
    return ".mp4"


@dataclass(frozen=True)
class _Bound:
    """One item's `InputLimits`, and its name for the errors."""

    name: str
    limits: InputLimits

    def check(self, size: int, what: str = "", after: str = "") -> None:
        """VideoDecodeError when `size` is over the limit: `what` (e.g. "N bytes"), the limit, `after`."""
        if size > self.limits.max_bytes:
            limit = f"over the limit of {self.limits.max_bytes} bytes ({self.limits.bytes_setting})"
            raise VideoDecodeError(self.name, f"{what}, {limit}{after}" if what else f"{limit}{after}")


def _fill(item: Input, out: BinaryIO, bound: _Bound, policy: UrlPolicy | None) -> None:
    """Write `item`'s encoded video to `out`, within `bound`."""
    if isinstance(item, UrlInput):
        _download(item, out, bound, policy)
    elif isinstance(item.data, (bytes, bytearray, memoryview)):
        bound.check(len(item.data), f"{len(item.data)} bytes")
        out.write(item.data)
    else:
        _copy_file_object(item, out, bound)


def _copy_file_object(item: EncodedInput, out: BinaryIO, bound: _Bound) -> None:
    size = 0
    while True:
        try:
            chunk = item.data.read(_CHUNK)
        except (OSError, ValueError) as exc:
            raise VideoDecodeError(item.name, f"cannot read the file object ({exc})") from None
        if not chunk:
            return
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise VideoDecodeError(item.name, f"the file object gave {type(chunk).__name__}, not bytes: "
                                              f"open it in binary mode ('rb')")
        size += len(chunk)
        bound.check(size)
        out.write(chunk)


def _download(item: UrlInput, out: BinaryIO, bound: _Bound, policy: UrlPolicy | None) -> None:
    """Stream `item`'s URL into `out`: VideoDecodeError naming the URL on any failure or refusal."""
    scheme = _SCHEME.match(item.url).group(1).lower()
    if scheme in LIVE_SCHEMES:
        raise VideoDecodeError(item.name, f"live streams are not supported ({scheme}://); record a clip to a file "
                                          f"or give an http(s) URL of a video file")
    if scheme not in http_rules.HTTP_SCHEMES:
        raise VideoDecodeError(item.name, f"unsupported URL scheme {scheme}:// (http and https are read)")
    if policy is not None and policy.hosts is None:
        raise VideoDecodeError(item.name, policy.refusal)
    timeout = bound.limits.timeout_s
    seconds = http_rules.transfer_deadline(bound.limits.max_bytes, bound.limits.deadline_s)
    ends_at = time.monotonic() + seconds
    try:
        with http_rules.get(item.url, timeout, policy.hosts if policy else None) as response:
            _copy_body(item, response, out, bound, (seconds, ends_at))
    except http_rules.Refused as exc:
        raise VideoDecodeError(item.name, f"refused: {exc}") from None
    except http_rules.HTTPStatusError as exc:
        raise VideoDecodeError(item.name, f"could not download: {exc}") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if isinstance(exc, socket.gaierror):
            raise VideoDecodeError(item.name, f"could not download: unknown host ({exc.strerror})") from None
        raise VideoDecodeError(item.name, f"could not download: {http_rules.reason(exc, timeout)}") from None


def _copy_body(item: UrlInput, response: http.client.HTTPResponse, out: BinaryIO, bound: _Bound,
               deadline: tuple[float, float]) -> None:
    """The body into `out`, within the size limit and the deadline; the whole announced length or an error."""
    length = response.getheader("Content-Length", "")
    total = int(length) if length.isdigit() else None
    if total is not None:
        bound.check(total, f"the server announces {total} bytes")
    size = 0
    while True:
        if time.monotonic() > deadline[1]:
            raise VideoDecodeError(item.name, f"could not download: not complete after {deadline[0]:g} s "
                                              f"(raise {http_rules.ENV_DEADLINE} on a slow connection)")
        try:
            chunk = response.read1(_CHUNK)
        except http.client.IncompleteRead as exc:
            raise VideoDecodeError(item.name, f"could not download: the connection closed after "
                                              f"{size + len(exc.partial)} of the {total} bytes announced") from None
        if not chunk:
            break
        size += len(chunk)
        bound.check(size, after=" before its end (an endless stream? live streams are not supported)")
        out.write(chunk)
    if total is not None and size < total:
        raise VideoDecodeError(item.name, f"could not download: the connection closed after {size} of the "
                                          f"{total} bytes announced")
    if size == 0:
        raise VideoDecodeError(item.name, "could not download: the server sent no bytes")
