"""Decode only the packets that the sampled frames depend on, planned from the packet list.

Sequential decoding (`video.py`) decodes every frame of a video to keep 300 or 125 of them. Most of
that work is not needed. A group of pictures (random-access point to random-access point) with no
sampled frame can be left out whole. A frame nothing else refers to (an H.264 non-reference
picture, an MPEG-4 B-frame) can be left out unless it is sampled itself. Reading the packets first
(demuxing and reading their headers, no decoding: 30-90 ms for a minute of 720p) tells which is
which, and gives each packet its place in display order, which is how frames are numbered. Groups
of pictures do not depend on one another, so the decoding is shared among decoders working side by
side, each from a random-access point on.

Every shortcut must give what decoding every frame from the start gives (the reference, OpenCV's
sequential decoder), pixel for pixel; where that cannot be shown, `read_packet_index` returns None
and the caller decodes sequentially. What is planned:

- MP4/MOV and Matroska files, one video stream: H.264, HEVC or MPEG-4 Part 2, in the 8-bit pixel
  formats below (10-bit formats come out of PyAV's conversion to RGB slightly different from
  OpenCV's). Open GOPs, edit lists, fragmented MP4, variable frame rate, B-pyramids.
- Groups start only at true random-access points, read from the packets' own bytes
  (`bitstream.py`): H.264 IDR pictures and exact recovery points that are I pictures, HEVC IDR and
  CRA pictures, MPEG-4 I-VOPs. A container's "keyframe" that is none of these (x264
  `intra-refresh=1` flags P frames with a recovery point, from which a decoder shows
  half-refreshed pictures) does not start a group: its group reaches back to the last true one.
- A picture shown before its group's random-access point (a leading picture of an open GOP, an
  HEVC RASL picture) may refer to the group before: when it is sampled, that group is decoded
  whole first, by the same decoder.

What is refused (decoded sequentially), and why:

- A file whose first packet is not a true random-access point (a cut on a non-keyframe), or whose
  first group has pictures shown before its first: the sequential decoder shows some of those
  pictures broken, or drops them, and which ones is not known from the packets.
- Timestamps that may disagree with the decoder's output order, by which the reference numbers
  frames: B-frames whose timestamps increase in decode order (a muxer that wrote pts = dts, or
  `setts=pts=DTS`), a codec that says it reorders while the timestamps do not, duplicate or
  missing timestamps.
- Anything `bitstream.py` refuses: interlaced H.264, packed MPEG-4 B-frames, not-coded VOPs, HEVC
  BLA pictures, layers, hidden pictures. Other containers (AVI, MPEG-TS, ...), codecs and pixel
  formats: never checked.

At decode time each decoder must give, in strictly increasing timestamps, exactly the frames of
the packets it was given, save non-reference frames it was told to skip and leading pictures it
was not asked for; any surprise gives None, and the caller decodes sequentially. Each decoder runs
a single thread: FFmpeg's error concealment of a corrupt packet depends on its thread count, and
the frames must not depend on the machine (parallelism comes from the decoders side by side, whose
number cannot change the frames: each starts at a true random-access point).
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from itertools import pairwise
from typing import NamedTuple, TypeVar

import av
import numpy as np

from ..cpus import usable_cpus
from .bitstream import Picture, PictureReader, Unsupported
from .limits import applied_max_pixels, limited_decode

T = TypeVar("T")
logger = logging.getLogger("paddlehub_video")

# AVI and raw streams are left out: a packet there can hold two frames (packed B-frames) or part of
# one, so packets would not count frames as the decoder does.
CONTAINERS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"})
CODECS = frozenset({"h264", "hevc", "mpeg4"})
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
    keyframe: list[bool]  # a true random-access point (not the container's keyframe flag)
    frame_pts: list[int]  # of every frame the decoder will output, display order
    skippable: list[bool]  # a non-reference picture, which "skip non-reference frames" leaves out

    @property
    def frame_count(self) -> int:
        return len(self.frame_pts)


def read_packet_index(source: str) -> PacketIndex | None:
    """Demux `source` without decoding; None (the reason logged) when planning it is not shown exact."""
    try:
        return _read_index(source)
    except (Unsupported, IndexError, ValueError) as exc:  # the last two: headers too short or malformed
        logger.debug("%s: not planned, decoded sequentially: %s", source, exc)
        return None


def _read_index(source: str) -> PacketIndex:
    """The PacketIndex of `source`; Unsupported, with the reason, when it may not be planned."""
    try:
        with open_container(source) as container:
            stream = _plannable_stream(container)
            context = stream.codec_context
            reader = PictureReader(context.name, bytes(context.extradata or b""))
            pts: list[int] = []
            pictures: list[Picture] = []
            frame_pts: list[int] = []
            for packet in container.demux(stream):
                if packet.size == 0:  # the end-of-stream marker
                    continue
                if packet.pts is None or packet.is_corrupt:
                    raise Unsupported("a packet without a timestamp, or flagged corrupt")
                pts.append(packet.pts)
                pictures.append(reader.picture(memoryview(packet)))
                if not packet.is_discard:
                    frame_pts.append(packet.pts)
            reorders = bool(context.has_b_frames) or any(p.bidirectional for p in pictures)
    except (av.FFmpegError, OSError) as exc:
        raise Unsupported(f"demuxing failed ({exc})") from None
    keyframe = [p.random_access for p in pictures]
    index = PacketIndex(context.name, pts, keyframe, sorted(frame_pts), [not p.reference for p in pictures])
    _check_index(index, reorders)
    return index


def _plannable_stream(container: av.container.InputContainer) -> av.VideoStream:
    """The one video stream, if container, codec and pixel format are among those planned."""
    if container.format.name not in CONTAINERS or len(container.streams.video) != 1:
        raise Unsupported(f"container {container.format.name} or not one video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        raise Unsupported("no decoder for the video stream")
    pixel_format = getattr(stream.codec_context.format, "name", None)
    if stream.codec_context.name not in CODECS or pixel_format not in PIXEL_FORMATS:
        raise Unsupported(f"codec {stream.codec_context.name}, pixel format {pixel_format}")
    return stream


def _check_index(index: PacketIndex, reorders: bool) -> None:
    """Refuse packet lists whose frame numbering, or first group, could differ from the reference's."""
    if not index.frame_pts or len(set(index.pts)) != len(index.pts):
        raise Unsupported("no frame, or timestamps that cannot tell frames apart")
    if not index.keyframe[0]:
        raise Unsupported("the first packet is not a random-access point (a cut on a non-keyframe?)")
    second_group = next((pos for pos, key in enumerate(index.keyframe) if key and pos > 0), len(index.pts))
    if any(_leading_pictures(index)[:second_group]):
        raise Unsupported("pictures shown before the first one decoded")
    if reorders and all(a < b for a, b in pairwise(index.pts)):
        raise Unsupported("a codec that reorders frames, with timestamps in decode order (pts = dts)")


def _leading_pictures(index: PacketIndex) -> list[bool]:
    """For each packet: is it shown before the random-access point that starts its group?"""
    leading, group_pts = [], index.pts[0]
    for pts, key in zip(index.pts, index.keyframe, strict=True):
        group_pts = pts if key else group_pts
        leading.append(pts < group_pts)
    return leading


def decode_frames(
    source: str,
    index: PacketIndex,
    wanted: Collection[int],
    transform: Callable[[np.ndarray], T],
    decoders: int | None = None,
) -> dict[int, T] | None:
    """`transform(rgb_frame)` of each wanted frame (display order), decoding only what they need.

    The packets to decode are shared among up to `decoders` single-threaded decoders working side
    by side (default: one per CPU, at most MAX_DECODERS), each from a random-access point on. Groups
    of pictures do not depend on one another, so this gives the same frames, and it scales better
    than one decoder's own frame threads (2 cores, 60 s 720p H.264, TSN's frames: one decoder with
    frame threads 2.3-2.7 s, two single-threaded decoders side by side 2.0 s, three 1.8 s). Where
    a file offers no place to share the work (a single random-access point, as with intra
    refresh), the one decoder has one thread: 1.2-1.7x the time of frame threads on 2 cores, the
    price of frames that do not depend on the machine.

    None when a decoder did not deliver exactly the frames planned, or failed: the caller then
    decodes sequentially, which has its own error reporting.
    """
    frame_of_pts = {index.frame_pts[i]: i for i in wanted}
    needed = packets_to_decode(index, frame_of_pts.keys())
    count = decoders or min(usable_cpus(), MAX_DECODERS)
    spans = decoder_spans(index, needed, frame_of_pts.keys(), count)
    plan = _Plan(index, needed, frame_of_pts, _leading_pictures(index), frozenset(index.frame_pts))
    decode = partial(_decode_span, source, plan, transform)
    try:
        # Each decoder in a copy of this context: the applied limits follow it into the pool's threads.
        contexts = [contextvars.copy_context() for _ in spans]
        parts = ([decode(spans[0])] if len(spans) == 1
                 else list(_decoder_pool().map(lambda context, span: context.run(decode, span), contexts, spans)))
    except (av.FFmpegError, OSError, _Unplanned):
        return None
    kept = {i: result for part in parts for i, result in part.items()}
    return kept if len(kept) == len(frame_of_pts) else None


class Span(NamedTuple):
    """What one decoder does: decode the needed packets of [decode_from, stop), keep the frames of
    [start, stop). decode_from < start when the group at `start` has a wanted leading picture (one
    shown before its random-access point, which may refer to the group before): that group is then
    decoded first, its frames being kept by the decoder before."""

    decode_from: int
    start: int
    stop: int


def decoder_spans(index: PacketIndex, needed: list[bool], wanted_pts: Collection[int], count: int) -> list[Span]:
    """Packet ranges of similar decoding work, at most `count`, cut at random-access points."""
    total = sum(needed)
    cuts = [0]
    done = last_key = 0
    for pos, need in enumerate(needed):
        if pos > 0 and index.keyframe[pos]:
            # Not where the range before would be just the group this one decodes first anyway.
            useful = last_key > cuts[-1] or not _has_wanted_leading_picture(index, pos, wanted_pts)
            if len(cuts) < count and done >= total * len(cuts) / count and useful:
                cuts.append(pos)
            last_key = pos
        done += need
    cuts.append(len(needed))
    spans = []
    for start, stop in pairwise(cuts):
        if any(needed[start:stop]):
            decode_from = start
            if start and _has_wanted_leading_picture(index, start, wanted_pts):
                decode_from = max(pos for pos in range(start) if index.keyframe[pos])
            spans.append(Span(decode_from, start, stop))
    return spans


@dataclass(frozen=True)
class _Plan:
    """What the decoders of one video share: the packets to decode and the frames expected."""

    index: PacketIndex
    needed: list[bool]
    frame_of_pts: dict[int, int]  # the wanted frames
    leading: list[bool]  # _leading_pictures(index)
    shown_pts: frozenset[int]  # of every frame the file shows (edit-list discarded packets excluded)


def _decode_span(source: str, plan: _Plan, transform: Callable[[np.ndarray], T], span: Span) -> dict[int, T]:
    """Decode the needed packets of `span` with a decoder of its own; the wanted frames it keeps."""
    index = plan.index
    owned = set(index.pts[span.start : span.stop])
    skip_nonref = index.codec in SKIP_NONREF_CODECS
    kept: dict[int, T] = {}
    shown: list[int] = []
    concealed: list[int] = []  # frames the decoder flagged corrupt (errors concealed)
    sent: list[tuple[int, bool]] = []  # position, and whether non-reference frames were skipped

    def keep(frames: list[av.VideoFrame]) -> None:
        for frame in frames:
            if frame.pts is None:
                raise _Unplanned
            shown.append(frame.pts)
            if frame.is_corrupt:
                concealed.append(frame.pts)
            i = plan.frame_of_pts.get(frame.pts)
            if i is None or i in kept or frame.pts not in owned:
                continue  # a reference frame decoded for the sake of a later one
            if frame.format.name not in PIXEL_FORMATS or frame.interlaced_frame:  # interlaced: av_sequential
                raise _Unplanned
            kept[i] = transform(frame.to_ndarray(format="rgb24", interpolation="BICUBIC"))

    with open_container(source) as container:
        stream = container.streams.video[0]
        context = stream.codec_context
        # One thread: with frame threads FFmpeg's concealment of a corrupt packet depends on the
        # thread count, hence on the machine; with slice threads H.264 turns concealment off.
        context.thread_count = 1
        pos = 0
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            if pos >= span.stop:
                break
            if packet.pts != index.pts[pos]:
                raise _Unplanned  # not the file that was indexed
            if pos >= span.decode_from and plan.needed[pos]:
                skip = skip_nonref and packet.pts not in plan.frame_of_pts
                if skip_nonref:
                    context.skip_frame = "NONREF" if skip else "DEFAULT"
                keep(limited_decode(source, context, packet))
                sent.append((pos, skip))
            pos += 1
        keep(limited_decode(source, context, None))
    _check_shown(plan, owned, sent, shown, concealed)
    return kept


def _check_shown(
    plan: _Plan, owned: set[int], sent: list[tuple[int, bool]], shown: list[int], concealed: list[int]
) -> None:
    """Did the decoder show, in display order, exactly the frames of the packets it was sent, intact?

    It may leave out the non-reference frames it was told to skip, and leading pictures it need not
    keep (whose references it may lack, so they may also come out concealed). Anything else is
    _Unplanned: a frame numbering taken from the timestamps that is not the decoder's, or a
    corrupt packet, whose concealment depends on what the decoder decoded before (the sequential
    decoder then gives the frames).
    """
    index = plan.index
    allowed = {index.pts[pos] for pos, _ in sent} & plan.shown_pts
    unwanted_leading = {index.pts[pos] for pos, _ in sent if plan.leading[pos]} - (plan.frame_of_pts.keys() & owned)
    skipped = {index.pts[pos] for pos, skip in sent if skip and index.skippable[pos]}
    in_order = all(a < b for a, b in pairwise(shown))
    if not in_order or not set(shown) <= allowed or not allowed - skipped - unwanted_leading <= set(shown):
        raise _Unplanned
    if not set(concealed) <= unwanted_leading:
        raise _Unplanned


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
            size = min(usable_cpus(), MAX_DECODERS)
            _pool = ThreadPoolExecutor(size, thread_name_prefix="paddlehub-video-decode")
        return _pool


def _forget_pool() -> None:
    """In a forked child: the parent's pool threads do not exist here, and its lock may be held."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


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


def open_container(source: str) -> av.container.InputContainer:
    """`source` opened by PyAV, the one way this package does it; its decoders bounded by the applied pixel limit."""
    max_pixels = applied_max_pixels()
    # FFmpeg's own limit: a decoder refuses a larger frame before allocating it (while probing the
    # streams too: given to av.open). Decode with `limits.limited_decode` to name the frame refused.
    options = {} if max_pixels is None else {"max_pixels": str(max_pixels)}
    # An absolute path, as OpenCV's: FFmpeg reads `clip:1.mp4` as a URL of protocol `clip`.
    container = av.open(os.path.abspath(source), metadata_errors="ignore", options=options)
    for stream in container.streams.video:
        if options and stream.codec_context is not None:
            stream.codec_context.options = dict(options)
    return container
