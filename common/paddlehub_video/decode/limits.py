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
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import av

from ..errors import VideoDecodeError
from .containers import check_container

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


def applied_max_pixels() -> int | None:
    """The pixel limit `applied_limits` set for this context, which every decoder enforces on every frame."""
    limits = _APPLIED.get()
    return limits.max_pixels if limits else None


def limited_decode(source: str, context: Any, packet: Any) -> list[Any]:
    """`context.decode(packet)`, each frame checked against the applied pixel limit (VideoDecodeError if over).

    The header's frame size is checked before decoding (`check_video`), but a stream can switch to
    larger frames mid-way (a new parameter set). Decoders opened under a pixel limit have FFmpeg's
    own `max_pixels` (`packet_plan.open_container`), so they refuse such a frame before allocating
    it and fail: the context then holds the refused size, named in the error. Frames a decoder
    gives all the same are checked here too.
    """
    try:
        frames = context.decode(packet)
    except av.FFmpegError:
        _check_frame_size(source, context.width, context.height)
        raise
    for frame in frames:
        _check_frame_size(source, frame.width, frame.height)
    return frames


def _check_frame_size(source: str, width: int, height: int) -> None:
    limits = _APPLIED.get()
    if limits and limits.max_pixels is not None and width * height > limits.max_pixels:
        raise VideoDecodeError(source, f"a frame of {width}x{height} ({width * height} pixels) is over the limit of "
                                       f"{limits.max_pixels} pixels per frame ({limits.pixels_setting})")


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
    mp4 = check_container(source, info.st_size)  # before FFmpeg opens it: see containers.py
    if limits.max_frames is not None and mp4 is not None and any(n > limits.max_frames for n in mp4.video_samples):
        # An MP4's frames are counted from its boxes: FFmpeg would build an index of them all first.
        raise _too_many_frames(source, limits)
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
            raise _too_many_frames(source, limits)


def _too_many_frames(source: str, limits: DecodeLimits) -> VideoDecodeError:
    return VideoDecodeError(source, f"holds more than {limits.max_frames} frames, the limit per video "
                                    f"({limits.frames_setting})")
