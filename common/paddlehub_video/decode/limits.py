"""Bounds on the work of decoding one video, checked by a cheap probe before it is decoded.

A 385 KB H.264 file of two 16384x8192 frames takes 1.6 GB to decode, and a 13 MB file of a million
tiny frames ~90 s. The probe reads only the container's header and packet list: PyAV opens the
file with every frame skipped (FFmpeg would otherwise decode a frame to fill in the stream's
parameters: 340 MB for that 16K frame), takes each video stream's size from the header, and counts
packets (a packet is a frame for the usual codecs) until there are more than the limit.

Limits come from the module config (`limits: {max_frames, max_pixels}`, off by default) and, for
the calls made inside `applied_limits(...)`, from the caller (`hub serving` sets its own); the
stricter of the two applies. With no limit set, nothing is probed.
"""
from __future__ import annotations

import os
import stat
import struct
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, BinaryIO

import av

from ..errors import VideoDecodeError
from .video import refuse_reference_file

# Decoding skipped while opening: the header gives the frame size without it.
_PROBE_OPTIONS = {"skip_frame": "all"}


@dataclass(frozen=True)
class DecodeLimits:
    """Most frames per video and most pixels (width * height) per frame; None: no limit.

    The `*_setting` names say, in the error, where the limit was set.
    """

    max_frames: int | None = None
    max_pixels: int | None = None
    frames_setting: str = "limits.max_frames"
    pixels_setting: str = "limits.max_pixels"

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> DecodeLimits:
        """The `limits` section of a module config (missing or null values: no limit)."""
        section = section or {}
        if not isinstance(section, Mapping):
            raise ValueError(f"config 'limits' must be a mapping, got {type(section).__name__}")
        return cls(_positive_or_none(section.get("max_frames"), "limits.max_frames"),
                   _positive_or_none(section.get("max_pixels"), "limits.max_pixels"))

    @property
    def active(self) -> bool:
        return self.max_frames is not None or self.max_pixels is not None

    def stricter(self, other: DecodeLimits | None) -> DecodeLimits:
        """Per limit, the lower of `self` and `other` (with the setting it came from)."""
        if other is None:
            return self
        frames = _lower((self.max_frames, self.frames_setting), (other.max_frames, other.frames_setting))
        pixels = _lower((self.max_pixels, self.pixels_setting), (other.max_pixels, other.pixels_setting))
        return DecodeLimits(frames[0], pixels[0], frames[1], pixels[1])


def _positive_or_none(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"config {name} must be a positive integer or null, got {value!r}")
    return value


def _lower(a: tuple[int | None, str], b: tuple[int | None, str]) -> tuple[int | None, str]:
    if a[0] is None:
        return b
    return b if b[0] is not None and b[0] < a[0] else a


# Limits set for the calls of one context (a serving request); the decode thread of the pipeline
# runs in a copy of its caller's context, so they reach it too.
_APPLIED: ContextVar[DecodeLimits | None] = ContextVar("paddlehub_video_limits", default=None)


@contextmanager
def applied_limits(limits: DecodeLimits) -> Iterator[None]:
    """Within the block (this thread or task, and the pipelines it starts), also enforce `limits`."""
    token = _APPLIED.set(limits.stricter(_APPLIED.get()))
    try:
        yield
    finally:
        _APPLIED.reset(token)


def effective_limits(configured: DecodeLimits) -> DecodeLimits:
    """`configured`, made stricter by what `applied_limits` set for this context."""
    return configured.stricter(_APPLIED.get())


def check_video(path: str | os.PathLike[str], limits: DecodeLimits) -> None:
    """Raise VideoDecodeError (naming the file and the limit) if the video is over `limits`.

    Does nothing when no limit is set, or when `path` is not a non-empty regular file: the decoder
    gives its own error for those (and a FIFO would block the probe).
    """
    if not limits.active:
        return
    source = os.fspath(path)
    try:
        info = os.stat(source)
    except (OSError, ValueError):
        return
    if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
        return
    refuse_reference_file(source)  # before FFmpeg opens it: a live playlist would block the probe
    if limits.max_frames is not None:
        _check_mp4_sample_count(source, info.st_size, limits)
    try:
        # An absolute path, as the decoders use: FFmpeg reads `clip:1.mp4` as a URL of protocol `clip`.
        with av.open(os.path.abspath(source), options=_PROBE_OPTIONS, metadata_errors="ignore") as container:
            streams = list(container.streams.video)
            _check_pixels(source, streams, limits)
            _check_frames(source, container, streams, limits)
    except av.FFmpegError:
        # Refused rather than handed to a decoder unchecked (OpenCV's FFmpeg fails on it too), with
        # the reason the decoder gives.
        raise VideoDecodeError(source, "cannot open the container (not a video, corrupt, or unsupported)") from None


def _check_pixels(source: str, streams: list[Any], limits: DecodeLimits) -> None:
    if limits.max_pixels is None:
        return
    for stream in streams:
        if stream.codec_context is None:
            raise VideoDecodeError(source, "no decoder for the video stream")
        width, height = stream.codec_context.width, stream.codec_context.height
        if width < 1 or height < 1:
            raise VideoDecodeError(source, f"the frame size is not in the header, so the limit of "
                                           f"{limits.max_pixels} pixels per frame ({limits.pixels_setting}) "
                                           f"cannot be checked")
        if width * height > limits.max_pixels:
            raise VideoDecodeError(source, f"{width}x{height} frames ({width * height} pixels) are over the limit "
                                           f"of {limits.max_pixels} pixels per frame ({limits.pixels_setting})")


def _check_frames(source: str, container: Any, streams: list[Any], limits: DecodeLimits) -> None:
    if limits.max_frames is None or not streams:
        return
    counts: Counter[int] = Counter()
    for packet in container.demux(streams):
        if not packet.size:  # the end-of-stream marker
            continue
        counts[packet.stream.index] += 1
        if counts[packet.stream.index] > limits.max_frames:
            raise VideoDecodeError(source, f"holds more than {limits.max_frames} frames, the limit per video "
                                           f"({limits.frames_setting})")


# MP4/MOV: FFmpeg builds its index of every sample when it opens the file (~320 bytes a frame: a
# 13 MB file of a million tiny frames took 2 s and 320 MB), so the video tracks' sample counts
# are read from the boxes first. Any other file, or an MP4 this walk does not understand
# (fragmented, malformed), goes to the packet count after opening.
_MAX_BOXES = 10_000  # per level: a file made of millions of empty boxes is left to FFmpeg


def _check_mp4_sample_count(source: str, size: int, limits: DecodeLimits) -> None:
    try:
        with open(source, "rb") as f:
            counts = _mp4_video_sample_counts(f, size)
    except OSError:
        return
    if any(count > limits.max_frames for count in counts):
        raise VideoDecodeError(source, f"holds more than {limits.max_frames} frames, the limit per video "
                                       f"({limits.frames_setting})")


def _mp4_video_sample_counts(f: BinaryIO, size: int) -> list[int]:
    """The sample count of each video track of an MP4/MOV file (`stsz`/`stz2`); [] if it is not one.

    Every top-level box is looked at, whatever the first one is: FFmpeg finds `moov` behind any
    box (a `uuid` first, say), and would build its whole sample index when opening the file.
    """
    moov = _find_box(f, 0, size, b"moov")
    if moov is None:
        return []
    counts = []
    for kind, start, end in _boxes(f, *moov):
        count = _video_track_samples(f, start, end) if kind == b"trak" else None
        if count is not None:
            counts.append(count)
    return counts


def _video_track_samples(f: BinaryIO, start: int, end: int) -> int | None:
    mdia = _find_box(f, start, end, b"mdia")
    hdlr = mdia and _find_box(f, *mdia, b"hdlr")
    if hdlr is None or _read_at(f, hdlr[0] + 8, 4) != b"vide":  # version/flags, pre_defined, handler type
        return None
    stbl = _find_box(f, *mdia, b"minf", b"stbl")
    sizes = stbl and (_find_box(f, *stbl, b"stsz") or _find_box(f, *stbl, b"stz2"))
    if sizes is None:
        return None
    # stsz: version/flags, sample_size, sample_count; stz2: version/flags, reserved + field size, count.
    count = _read_at(f, sizes[0] + 8, 4)
    return struct.unpack(">I", count)[0] if len(count) == 4 else None


def _find_box(f: BinaryIO, start: int, end: int, *path: bytes) -> tuple[int, int] | None:
    """(payload start, end) of the box reached by following the box types `path` from [start, end)."""
    for kind in path:
        found = next(((s, e) for k, s, e in _boxes(f, start, end) if k == kind), None)
        if found is None:
            return None
        start, end = found
    return start, end


def _boxes(f: BinaryIO, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, end) of each box in [start, end), at most _MAX_BOXES of them."""
    position = start
    for _ in range(_MAX_BOXES):
        header = _read_at(f, position, 16)
        if len(header) < 8:
            return
        size, kind = struct.unpack(">I4s", header[:8])
        payload = position + 8
        if size == 1 and len(header) == 16:  # a 64-bit size follows
            size, payload = struct.unpack(">Q", header[8:])[0], position + 16
        elif size == 0:  # the box runs to the end
            size = end - position
        if size < payload - position or position + size > end:
            return
        yield kind, payload, position + size
        position += size


def _read_at(f: BinaryIO, offset: int, length: int) -> bytes:
    f.seek(offset)
    return f.read(length)
