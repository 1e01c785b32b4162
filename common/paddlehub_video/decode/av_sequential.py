"""PyAV's sequential decoder: every frame of a file in the decoder's output order, as stored.

`video.py` uses it for the files OpenCV cannot decode right (interlaced video, codecs OpenCV's FFmpeg
lacks such as AV1, and files where OpenCV hands out pictures it did not decode); `probe` tells
which files those are. Frames come out as OpenCV's FFmpeg backend converts them (`bgr24`, bicubic,
channels reversed), which gives OpenCV's pixels exactly on every progressive file tried (8-bit,
10-bit and 4:2:2 alike; `tests/test_decode_matrix.py`).

Interlaced frames are converted as if they were progressive: both fields woven, no deinterlacing,
chroma taken as a progressive frame's. That is what the publisher's OpenCV 4.2 on FFmpeg 4.x did
(its swscale knew nothing of interlacing); today's swscale would interpolate the chroma of each
field apart (and OpenCV 5's refuses the frame), so the woven samples are first copied into a frame
that is not flagged interlaced. That copy converts exactly as the original on 8-bit video; on
10-bit 4:2:0 it differs by a few levels (seen on progressive frames; likely the chroma location,
which PyAV cannot copy), so 10-bit interlaced video is close to, not exactly, the publisher's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from ..errors import VideoDecodeError
from .limits import limited_decode
from .packet_plan import open_container

# One decoder thread, on every machine. With frame threads, how a damaged packet is concealed
# depends on which frames are being decoded at the same moment: a fixed count of 4 still gave other
# frames from run to run on a loaded machine (tests/test_decode_matrix.py, damaged .ts), so only a
# single thread gives every run and every machine the same frames. OpenCV's decoder is opened with
# the same count. Cost, measured on 2 busy cores (20 s 720p H.264 .ts, OpenCV grab of every
# frame): 1 thread 0.43-0.45 s, 4 threads 0.47-0.53 s. Most files (MP4/MOV/MKV H.264, HEVC,
# MPEG-4) take packet_plan's decoders, which run side by side, one thread each.
SEQUENTIAL_THREADS = 1
# Stream-level field orders that mean interlaced (AVFieldOrder: TT, BB, TB, BT).
_INTERLACED_FIELD_ORDERS = frozenset({2, 3, 4, 5})
# Packets read, at most, to find the first frame when probing.
_PROBE_PACKETS = 64


@dataclass(frozen=True)
class Probe:
    """What PyAV sees of a file's first video stream before any real decoding."""

    codec: str
    interlaced: bool  # the stream's field order or its first frame says so
    has_frame: bool  # PyAV decoded a first frame


@dataclass
class Frames:
    """An open decoder: the container's frame count (0: unknown) and a lazy frame source.

    `frames` yields one callable per decoded frame, output order; calling it converts that frame
    to RGB (only the sampled frames pay for the conversion).
    """

    reported: int
    frames: Iterator[Callable[[], np.ndarray]]


def probe(source: str) -> Probe | None:
    """Codec and interlacing of `source`'s video, from its header and first frame; None if PyAV cannot read it."""
    try:
        with open_container(source) as container:
            if not container.streams.video and len(container.streams):  # audio only, say: nothing to try
                raise VideoDecodeError(source, no_video_stream(container))
            if not container.streams.video or container.streams.video[0].codec_context is None:
                return None  # no stream at all (a damaged header), or no decoder for it
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1  # one frame wanted: no frame-thread delay
            first = _first_frame(source, container, stream)
            field_order = int(getattr(stream.codec_context, "field_order", 0) or 0)
            interlaced = field_order in _INTERLACED_FIELD_ORDERS or bool(first and first.interlaced_frame)
            return Probe(stream.codec_context.codec.name, interlaced, first is not None)
    except (av.FFmpegError, OSError):
        return None


def no_video_stream(container: av.container.InputContainer) -> str:
    """Why a container PyAV opened has nothing to classify: it holds no video stream (and what it holds)."""
    kinds = sorted({stream.type for stream in container.streams})
    return f"the container holds no video stream (only {' and '.join(kinds)})" if kinds else "no video stream"


@contextmanager
def open_frames(source: str) -> Iterator[Frames]:
    """Open `source` for one sequential pass; raises av.FFmpegError or OSError when it cannot be opened."""
    with open_container(source) as container:
        if not container.streams.video or container.streams.video[0].codec_context is None:
            yield Frames(0, iter(()))  # no video, or no decoder for it: "no decodable video frame"
            return
        stream = container.streams.video[0]
        stream.codec_context.thread_count = SEQUENTIAL_THREADS
        yield Frames(max(stream.frames, 0), _decoded(source, container, stream))


def rgb_as_stored(frame: av.VideoFrame, reformatter: VideoReformatter | None = None) -> np.ndarray:
    """The RGB picture of `frame` as OpenCV's FFmpeg backend converts it; interlaced frames woven.

    Give the same `reformatter` for the frames of one video: it keeps its scaler between frames, as
    OpenCV does (a new one for every 720p frame costs ~5 ms, ten times the conversion).
    """
    if frame.interlaced_frame:
        frame = _progressive_copy(frame)
    reformatter = reformatter or VideoReformatter()
    bgr = reformatter.reformat(frame, format="bgr24", interpolation="BICUBIC").to_ndarray()
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _decoded(
    source: str, container: av.container.InputContainer, stream: av.VideoStream
) -> Iterator[Callable[[], np.ndarray]]:
    """Every frame the decoder outputs; a packet it rejects is skipped, as OpenCV does."""
    context = stream.codec_context
    reformatter = VideoReformatter()
    for packet in container.demux(stream):
        try:
            frames = limited_decode(source, context, packet)  # the last, empty packet flushes the decoder
        except av.InvalidDataError:
            continue
        for frame in frames:
            yield partial(rgb_as_stored, frame, reformatter)


def _first_frame(
    source: str, container: av.container.InputContainer, stream: av.VideoStream
) -> av.VideoFrame | None:
    """The first frame the decoder outputs, reading at most _PROBE_PACKETS packets."""
    for count, packet in enumerate(container.demux(stream)):
        if count >= _PROBE_PACKETS:
            return None
        try:
            frames = limited_decode(source, stream.codec_context, packet)
        except av.InvalidDataError:
            continue
        if frames:
            return frames[0]
    return None


def _progressive_copy(frame: av.VideoFrame) -> av.VideoFrame:
    """The same samples in a new frame that is not flagged interlaced (same format and colour tags)."""
    copy = av.VideoFrame(frame.width, frame.height, frame.format.name)
    for source, target in zip(frame.planes, copy.planes, strict=True):
        width = min(source.line_size, target.line_size)
        rows = target.height
        src = np.frombuffer(source, np.uint8)[: rows * source.line_size].reshape(rows, source.line_size)
        dst = np.frombuffer(memoryview(target), np.uint8)[: rows * target.line_size].reshape(rows, target.line_size)
        dst[:, :width] = src[:, :width]
    copy.colorspace = frame.colorspace
    copy.color_range = frame.color_range
    return copy
