"""Decode only the packets that the sampled frames depend on, planned from the packet list.

Sequential decoding (`video.py`) decodes every frame of a video to keep 300 or 125 of them. Most of
that work is not needed. A group of pictures (keyframe to keyframe) with no sampled frame can be
left out whole. A frame nothing else refers to (an H.264 non-reference picture, an MPEG-4 B-frame)
can be left out unless it is sampled itself. Reading the packets first (demuxing, no decoding:
30-90 ms for a minute of 720p) tells which is which, and gives each packet its place in display
order, which is how frames are numbered. Groups of pictures do not depend on one another, so the
decoding is shared among decoders working side by side, each from a keyframe on.

The frames are the ones sequential decoding gives, pixel for pixel (tests/test_packet_plan.py
compares the two). That was checked for the containers, codecs and pixel formats below; for any
other file `read_packet_index` returns None and the caller decodes sequentially.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import av
import numpy as np

T = TypeVar("T")

# AVI and raw streams are left out: a packet there can hold two frames (packed B-frames) or part of
# one, so packets would not count frames as the decoder does.
CONTAINERS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"})
CODECS = frozenset({"h264", "hevc", "mpeg4"})
# 10-bit formats come out of PyAV's conversion to RGB slightly different from OpenCV's.
PIXEL_FORMATS = frozenset({"yuv420p", "yuvj420p", "yuv444p"})
# Where the decoder's "skip non-reference frames" skips only frames no other frame uses. HEVC is
# not among them: its sub-layer non-reference pictures may serve a higher temporal layer.
SKIP_NONREF_CODECS = frozenset({"h264", "mpeg4"})
# Decoders working side by side on one video, at most: each holds its own reference frames, and
# more than 2 were never measured (the bench machine has 2 cores).
MAX_DECODERS = 4


@dataclass(frozen=True)
class PacketIndex:
    """The video packets of a file in decode order, and the frames' timestamps in display order."""

    codec: str
    pts: list[int]  # of every packet, decode order (edit-list discarded packets included)
    keyframe: list[bool]
    frame_pts: list[int]  # of every frame the decoder will output, display order

    @property
    def frame_count(self) -> int:
        return len(self.frame_pts)


def read_packet_index(source: str) -> PacketIndex | None:
    """Demux `source` without decoding; None when it is not a file this planning was checked on."""
    try:
        with _open(source) as container:
            if container.format.name not in CONTAINERS or len(container.streams.video) != 1:
                return None
            stream = container.streams.video[0]
            pixel_format = stream.codec_context.format
            if stream.codec_context.name not in CODECS or getattr(pixel_format, "name", None) not in PIXEL_FORMATS:
                return None
            pts: list[int] = []
            keyframe: list[bool] = []
            frame_pts: list[int] = []
            for packet in container.demux(stream):
                if packet.size == 0:  # the end-of-stream marker
                    continue
                if packet.pts is None or packet.is_corrupt:
                    return None
                pts.append(packet.pts)
                keyframe.append(packet.is_keyframe)
                if not packet.is_discard:
                    frame_pts.append(packet.pts)
    except (av.FFmpegError, OSError):
        return None
    if not frame_pts or len(set(pts)) != len(pts):
        return None  # no frame, or timestamps that cannot tell frames apart
    return PacketIndex(stream.codec_context.name, pts, keyframe, sorted(frame_pts))


def decode_frames(
    source: str,
    index: PacketIndex,
    wanted: Collection[int],
    transform: Callable[[np.ndarray], T],
    decoders: int | None = None,
) -> dict[int, T] | None:
    """`transform(rgb_frame)` of each wanted frame (display order), decoding only what they need.

    The packets to decode are shared among up to `decoders` decoders working side by side (default:
    one per CPU, at most MAX_DECODERS), each from a keyframe on. Groups of pictures do not depend on
    one another, so this gives the same frames, and it scales better than one decoder's own frame
    threads (2 cores, 60 s 720p H.264, TSN's frames: one decoder with frame threads 2.3-2.7 s, two
    single-threaded decoders side by side 2.0 s, three 1.8 s).

    None when the decoder did not deliver every wanted frame, or failed: the caller then decodes
    sequentially, which has its own error reporting.
    """
    frame_of_pts = {index.frame_pts[i]: i for i in wanted}
    needed = packets_to_decode(index, frame_of_pts.keys())
    cpus = _cpu_count()
    spans = decoder_spans(index, needed, frame_of_pts.keys(), decoders or min(cpus, MAX_DECODERS))
    decode = partial(_decode_span, source, index, needed, frame_of_pts, transform)
    try:
        if len(spans) == 1:
            parts = [decode(spans[0], 0)]  # 0: FFmpeg's own choice of threads
        else:
            threads = max(1, cpus // len(spans))
            parts = list(_decoder_pool().map(decode, spans, [threads] * len(spans)))
    except (av.FFmpegError, OSError, _Unplanned):
        return None
    kept = {i: result for part in parts for i, result in part.items()}
    return kept if len(kept) == len(frame_of_pts) else None


def decoder_spans(
    index: PacketIndex, needed: list[bool], wanted_pts: Collection[int], count: int
) -> list[tuple[int, int]]:
    """Packet ranges [start, stop) of similar decoding work, at most `count`, each decodable alone.

    A range starts at a keyframe whose group has no wanted leading picture (one shown before the
    keyframe, which may refer to the group before).
    """
    total = sum(needed)
    cuts = [0]
    done = 0
    for pos, need in enumerate(needed):
        if len(cuts) < count and done >= total * len(cuts) / count and pos > 0 and index.keyframe[pos]:
            if not _has_wanted_leading_picture(index, pos, wanted_pts):
                cuts.append(pos)
        done += need
    cuts.append(len(needed))
    return [(start, stop) for start, stop in zip(cuts, cuts[1:]) if any(needed[start:stop])]


def _decode_span(
    source: str,
    index: PacketIndex,
    needed: list[bool],
    frame_of_pts: dict[int, int],
    transform: Callable[[np.ndarray], T],
    span: tuple[int, int],
    threads: int,
) -> dict[int, T]:
    """Decode the needed packets of positions [start, stop) with a decoder of its own."""
    start, stop = span
    skip_nonref = index.codec in SKIP_NONREF_CODECS
    kept: dict[int, T] = {}

    def keep(frames: list[av.VideoFrame]) -> None:
        for frame in frames:
            i = frame_of_pts.get(frame.pts)
            if i is None or i in kept:
                continue  # a reference frame decoded for the sake of a later one
            if frame.format.name not in PIXEL_FORMATS:
                raise _Unplanned
            kept[i] = transform(frame.to_ndarray(format="rgb24", interpolation="BICUBIC"))

    with _open(source) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame and slice threads, as OpenCV's decoder
        stream.codec_context.thread_count = threads
        context = stream.codec_context
        pos = 0
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            if pos >= stop:
                break
            if pos >= start and needed[pos]:
                if skip_nonref:
                    context.skip_frame = "DEFAULT" if packet.pts in frame_of_pts else "NONREF"
                keep(context.decode(packet))
            pos += 1
        keep(context.decode(None))
    return kept


def packets_to_decode(index: PacketIndex, wanted_pts: Collection[int]) -> list[bool]:
    """For each packet (decode order): must it be decoded for the frames with timestamps `wanted_pts`?

    Within a group of pictures, everything up to the last wanted packet (non-reference frames may
    still be skipped by the decoder); nothing of a group with no wanted frame. A wanted frame shown
    before its group's keyframe (a leading picture of an open GOP) may refer to the previous group,
    which is then decoded whole.
    """
    group = _group_numbers(index.keyframe)
    first_of: dict[int, int] = {}
    last_of: dict[int, int] = {}
    for pos, g in enumerate(group):
        first_of.setdefault(g, pos)
        last_of[g] = pos
    until = {group[pos]: pos for pos, pts in enumerate(index.pts) if pts in wanted_pts}  # the last one
    for g, first in first_of.items():
        if g > 0 and _has_wanted_leading_picture(index, first, wanted_pts):
            until[g - 1] = last_of[g - 1]
    return [pos <= until.get(g, -1) for pos, g in enumerate(group)]


def _has_wanted_leading_picture(index: PacketIndex, keyframe_pos: int, wanted_pts: Collection[int]) -> bool:
    """Is a wanted frame of the group starting at `keyframe_pos` shown before its keyframe?"""
    key_pts = index.pts[keyframe_pos]
    for pos in range(keyframe_pos + 1, len(index.pts)):
        if index.keyframe[pos]:
            return False
        if index.pts[pos] < key_pts and index.pts[pos] in wanted_pts:
            return True
    return False


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _decoder_pool() -> ThreadPoolExecutor:
    """The threads that decode spans, created once per process and kept for the next video.

    New threads for every video would each get a malloc arena of their own, and RSS would creep
    up over the first hundred calls instead of settling.
    """
    global _pool
    with _pool_lock:
        if _pool is None:
            size = min(_cpu_count(), MAX_DECODERS)
            _pool = ThreadPoolExecutor(size, thread_name_prefix="paddlehub-video-decode")
        return _pool


def _forget_pool() -> None:
    """In a forked child: the parent's pool threads do not exist here, and its lock may be held."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _group_numbers(keyframe: list[bool]) -> list[int]:
    """Group of pictures of each packet (decode order); packets before the first keyframe are group 0."""
    numbers, current = [], 0
    for pos, key in enumerate(keyframe):
        if key and pos > 0:
            current += 1
        numbers.append(current)
    return numbers


class _Unplanned(Exception):
    """The decoder delivered something the plan did not foresee (e.g. a pixel format change)."""


def _open(source: str) -> av.container.InputContainer:
    # An absolute path, as OpenCV's: FFmpeg reads `clip:1.mp4` as a URL of protocol `clip`.
    return av.open(os.path.abspath(source), metadata_errors="ignore")
