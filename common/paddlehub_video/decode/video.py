"""Video decoding: path + the caller's frame sampling (see `sampling`) -> the sampled frames, each transformed.

The publisher read every frame of a video into a list (all of them, full size) and then picked
300 (VideoTag) or 125 (StNet) of them. We keep its choice of frames but stream: every frame is
decoded, only the sampled ones are converted to RGB and passed straight to a caller-supplied
transform, so peak memory depends on the number of sampled frames and their transformed size,
never on the length of the video. For the usual containers and codecs `packet_plan` goes further
and decodes only the packets the sampled frames depend on.

Which decoder gives a file's frames. The reference is the publisher's stack, OpenCV 4.2 on FFmpeg
4.x: every frame the decoder outputs, in that order, converted to RGB by swscale (bicubic) as
stored, interlaced ones included (both fields woven, no deinterlacing). A cheap PyAV probe (the
stream header and the first frame) sorts the files:

kind of file                                    decoder            why
----------------------------------------------  -----------------  -------------------------------------------------
progressive, in packet_plan's checked set        planned (PyAV)     the sequential decoder's frames, far less decoding
(MP4/MOV/MKV; H.264, HEVC, MPEG-4; 8-bit)
interlaced: stream field order or first frame    PyAV sequential    OpenCV 5 cannot convert interlaced frames yet
(MPEG-2 broadcast/DVD, H.264 PAFF/MBAFF, AVCHD)                     reports success (black or stale pictures); the
                                                                    planned path interpolates each field's chroma apart
any other progressive file OpenCV decodes        OpenCV sequential  the publisher's library: its pixels by definition
(VP8, VP9, MPEG-2, MJPEG, ProRes, FLV, 10-bit)
OpenCV cannot open it or decodes no frame        PyAV sequential    OpenCV's conversion (av_sequential.rgb_as_stored)
(AV1: OpenCV's FFmpeg has no AV1 decoder)                           of what its decoder would have given
OpenCV hands out a frame that is all black or    PyAV sequential,   OpenCV's buffer may not be the picture; where it
identical to the one before (failed conversion)  the whole file     is, PyAV's pixels are the same
PyAV cannot read it either                       -                  VideoDecodeError: the file and each reason

Both sequential decoders run one decoder thread (SEQUENTIAL_THREADS) on every machine, so a
damaged packet is concealed the same way on every run and machine (frame threads make it depend
on timing), and both skip a packet the decoder rejects
and go on (they give the same frames then too).

Frames are used as stored, whatever rotation the container asks for (a phone's portrait tag):
the publisher's OpenCV 4.2 ignored that metadata (opencv#15499), OpenCV 4.5-4.10 and 5.x apply it
by default, 4.11 does not (opencv#26795), and 4.6 turned the wrong way (opencv#22088). Turning it
off explicitly gives the publisher's frames, hence its numbers, on every OpenCV version.
"""

from __future__ import annotations

import math
import operator
import os
import stat
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from fractions import Fraction
from functools import partial
from typing import Any, NamedTuple, TypeVar, Union

import av
import cv2
import numpy as np

from .. import progress
from ..errors import VideoDecodeError
from ..names import as_str_path, native_path
from .av_sequential import SEQUENTIAL_THREADS, Frames, Probe, no_video_stream, open_frames, probe
from .containers import check_container
from .limits import applied_max_pixels
from .packet_plan import PacketIndex, decode_frames, open_container, read_packet_index

T = TypeVar("T")
PathType = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]
Decoder = Callable[[str], AbstractContextManager[Frames]]
# (source, sample_indices, transform) -> the sampled frames, or None when this way falls short.
Reader = Callable[[str, Callable[[int], Sequence[int]], Callable[[np.ndarray], Any]], list | None]

# Failed grabs in a row that end OpenCV's pass: one per rejected packet, so a run of damaged
# packets this long cuts the video short; at the real end every grab fails at once.
MAX_FAILED_GRABS = 32


def read_sampled_frames(
    path: PathType,
    sample_indices: Callable[[int], Sequence[int]],
    transform: Callable[[np.ndarray], T],
) -> list[T]:
    """Stream-decode `path`, returning `transform(rgb_frame)` for each index `sample_indices(N)` names.

    Files that `packet_plan` was checked on (MP4/MOV/MKV with H.264, HEVC or MPEG-4 video) decode
    only the packets the sampled frames depend on, unless they are interlaced; any other file, or
    one whose planned decoding falls short, is decoded sequentially, every frame, by the decoder
    the module docstring names for it. All give the same frames. Planned, N is the number of
    frames in the packet list (edit-list discarded packets excluded).

    Sequentially, N is the number of frames actually decoded. The container's frame count is only a first guess:
    when it turns out wrong, the video is decoded a second time with indices computed from the
    real N. A repeated index is decoded and transformed once; the list then holds the same object
    several times. Raises VideoDecodeError when the file is unusable or holds no video frame.
    """
    source = _validated_path(path)
    reasons = []
    for read in _readers(source):
        try:
            frames = read(source, sample_indices, transform)
        except _NoPicture as exc:  # this decoder cannot give the file's pictures: try the next one
            reasons.append(exc.reason)
            continue
        if frames is not None:
            return frames
    raise VideoDecodeError(source, _joined(reasons))


def sampled_from_array(
    frames: np.ndarray, name: str, sample_indices: Callable[[int], Sequence[int]], transform: Callable[[np.ndarray], T],
) -> list[T]:
    """`read_sampled_frames` of frames already decoded (`[T, H, W, 3]` uint8 RGB, `name` naming them): the
    same sampling of their T frames and the same transform, each sampled frame transformed once."""
    indices = _checked_indices(sample_indices(len(frames)), len(frames))
    return next(sampled_groups_from_array(frames, name, [indices], transform))


def sampled_groups_from_array(
    frames: np.ndarray, name: str, groups: Sequence[Sequence[int]], transform: Callable[[np.ndarray], T]
) -> Iterator[list[T]]:
    """`read_sampled_groups` of frames already decoded: each group's transformed frames, in order."""
    reported = _reported(transform, name, len({i for group in groups for i in group}))
    kept: dict[int, T] = {}
    for position, group in enumerate(groups):
        for i in group:
            if i not in kept:
                kept[i] = reported(np.ascontiguousarray(frames[i]))
        yield [kept[i] for i in group]
        kept = _still_needed(kept, groups, position + 1)


class FrameTimes(NamedTuple):
    """When a video's frames are shown: seconds from its first frame, display order, and its duration."""

    times: list[float]
    duration: float


def frame_times(path: PathType) -> FrameTimes:
    """The timestamp of every frame of `path`, from its packets alone (demuxed, nothing decoded).

    The frames counted are those the planned decoder counts (packets not discarded by an edit list),
    so the indices of a timeline's windows are the indices `read_sampled_groups` decodes. A packet
    without a timestamp (raw streams, some AVI) is placed by the stream's average frame rate.
    """
    source = _validated_path(path)
    try:
        with open_container(source) as container:
            if not container.streams.video:
                raise VideoDecodeError(source, no_video_stream(container))
            stream = container.streams.video[0]
            packets = [(p.pts, p.duration) for p in container.demux(stream) if p.size and not p.is_discard]
            base, rate = stream.time_base, stream.average_rate or stream.guessed_rate
    except (av.FFmpegError, OSError) as exc:
        raise VideoDecodeError(source, f"cannot read its packets ({exc})") from None
    if not packets:
        raise VideoDecodeError(source, "no decodable video frame")
    if len(packets) == 1:
        _refuse_still_image(source)
    return _timed(packets, base, rate)


def evenly_timed(count: int, fps: float) -> FrameTimes:
    """The `FrameTimes` of `count` frames shown at `fps` frames per second (frames given without a container)."""
    return _timed([(None, None)] * count, None, fps)


def _timed(
    packets: list[tuple[int | None, int | None]], base: Fraction | None, rate: Fraction | float | None,
) -> FrameTimes:
    """Seconds from the first frame of packets `(pts, duration)`, and the video's duration."""
    if base is None or any(pts is None for pts, _ in packets):
        step = 1 / float(rate) if rate else 1 / 25  # FFmpeg's own fallback rate
        times = [i * step for i in range(len(packets))]
        return FrameTimes(times, len(packets) * step)
    ordered = sorted(packets)
    first = ordered[0][0]
    times = [float((pts - first) * base) for pts, _ in ordered]
    last_pts, last_duration = ordered[-1]
    # The last frame lasts its packet's duration, else as long as the one before it.
    last = float(last_duration * base) if last_duration else (times[-1] - times[-2] if len(times) > 1 else 0.0)
    return FrameTimes(times, times[-1] + last)


def read_sampled_groups(
    path: PathType, groups: Sequence[Sequence[int]], transform: Callable[[np.ndarray], T]
) -> Iterator[list[T]]:
    """`transform(rgb_frame)` of each group's frames, one list per group, in order, as each group is complete.

    One decoding pass for all groups (a timeline's windows: indices ascending from group to group,
    as `sampling.plan_windows` gives them), holding only the frames of the groups not yet given out
    that have been decoded, so memory does not grow with the video's length. Planned decoding
    where `read_sampled_frames` plans it, each group decoding what it still lacks; sequential
    otherwise, or from the first group planning cannot give. Indices are those of `frame_times`.
    """
    source = _validated_path(path)
    found, index = _decoding_choice(source)
    given = 0
    if index is not None:
        for frames in _planned_groups(source, index, groups, transform):
            yield frames
            given += 1
    if given < len(groups):
        yield from _sequential_groups(source, groups[given:], transform, _sequential_decoders(found))


def _planned_groups(
    source: str, index: PacketIndex, groups: Sequence[Sequence[int]], transform: Callable[[np.ndarray], T]
) -> Iterator[list[T]]:
    """Planned decoding of each group in turn, reusing what overlapping groups share; stops where it falls short."""
    kept: dict[int, T] = {}
    for position, group in enumerate(groups):
        missing = set(_checked_indices(group, index.frame_count)) - kept.keys()
        decoded = decode_frames(source, index, missing, _reported(transform, source, len(missing))) if missing else {}
        if decoded is None:
            return
        kept.update(decoded)
        yield [kept[i] for i in group]
        kept = _still_needed(kept, groups, position + 1)


def _still_needed(kept: dict[int, T], groups: Sequence[Sequence[int]], following: int) -> dict[int, T]:
    """The frames of `kept` that groups from `following` on may use (groups start later and later)."""
    if following >= len(groups):
        return {}
    first = min(groups[following])
    return {i: frame for i, frame in kept.items() if i >= first}


def _sequential_groups(
    source: str, groups: Sequence[Sequence[int]], transform: Callable[[np.ndarray], T], decoders: Sequence[Decoder]
) -> Iterator[list[T]]:
    """Every frame decoded once, each group given out when its last frame is; the next decoder where one cannot."""
    reasons: list[str] = []
    given = 0  # groups already given out: a decoder tried after a failure starts after them
    for decoder in decoders:
        try:
            for frames in _one_pass(source, groups[given:], transform, decoder):
                yield frames
                given += 1
            return
        except _NoPicture as exc:
            reasons.append(exc.reason)
    raise VideoDecodeError(source, _joined(reasons))


def _one_pass(
    source: str, groups: Sequence[Sequence[int]], transform: Callable[[np.ndarray], T], decoder: Decoder,
) -> Iterator[list[T]]:
    """One sequential pass of `decoder` over `source`, giving out `groups` as they complete."""
    pending = list(groups)
    wanted = {i for group in pending for i in group}
    reported = _reported(transform, source, len(wanted))
    kept: dict[int, T] = {}
    count = 0
    with decoder(source) as frames:
        for retrieve in frames.frames:
            if count in wanted:
                kept[count] = reported(retrieve())
            count += 1
            while pending and max(pending[0]) < count:
                yield [kept[i] for i in pending.pop(0)]
                kept = _still_needed(kept, pending, 0)
            if not pending:
                return
    if count == 0:
        raise _NoPicture(source, "no decodable video frame")
    raise VideoDecodeError(source, f"decoded {count} frames, fewer than its packets announce")


def _decoding_choice(source: str) -> tuple[Probe | None, PacketIndex | None]:
    """The probe of `source`, and its packet index when it may be planned (never for interlaced files)."""
    found = probe(source)
    return found, None if found is not None and found.interlaced else read_packet_index(source)


def _readers(source: str) -> Iterator[Reader]:
    """The ways to read `source`'s sampled frames, in the order to try them (the module docstring's table)."""
    found, index = _decoding_choice(source)
    if index is not None:
        yield partial(_read_planned, index=index)
    for decoder in _sequential_decoders(found):
        yield partial(_read_sequentially, decoder=decoder)


def _read_planned(
    source: str, sample_indices: Callable[[int], Sequence[int]], transform: Callable[[np.ndarray], T],
    index: PacketIndex,
) -> list[T] | None:
    """Decode only the packets the sampled frames depend on; None when planned decoding falls short."""
    indices = _checked_indices(sample_indices(index.frame_count), index.frame_count)
    wanted = set(indices)
    kept = decode_frames(source, index, wanted, _reported(transform, source, len(wanted)))
    return None if kept is None else [kept[i] for i in indices]


def _read_sequentially(
    source: str,
    sample_indices: Callable[[int], Sequence[int]],
    transform: Callable[[np.ndarray], T],
    decoder: Decoder,
) -> list[T]:
    """Decode every frame of `source` with `decoder`, keeping the sampled ones (a second pass if N was wrong)."""
    with decoder(source) as frames:
        guess = frames.reported
        first = _checked_indices(sample_indices(guess), guess) if guess >= 1 else []
        kept, total = _decode_pass(frames, set(first), _reported(transform, source, len(set(first))))
    if total == 0:
        raise _NoPicture(source, "no decodable video frame")
    if total == 1:
        _refuse_still_image(source)
    if total == guess:
        return [kept[i] for i in first]

    indices = _checked_indices(sample_indices(total), total)
    kept = {i: kept[i] for i in set(indices) if i in kept}  # drop frames sampled for the wrong N
    missing = set(indices) - kept.keys()
    if missing:
        with decoder(source) as frames:
            extra, recount = _decode_pass(frames, missing, _reported(transform, source, len(missing)))
        if recount != total:
            raise VideoDecodeError(source, f"decoded {total} frames, then {recount} on a second pass")
        kept.update(extra)
    return [kept[i] for i in indices]


def _reported(transform: Callable[[np.ndarray], T], source: str, total: int) -> Callable[[np.ndarray], T]:
    """`transform`, each call reported to `progress.current()` as one of `total` frames of `source` decoded."""
    report = progress.current()  # here: the planned decoders call it from threads of their own
    report.stage(source, "decode", total)
    return progress.counting(transform, source, "decode", report)


def _joined(reasons: list[str]) -> str:
    """Each decoder's reason once, in the order they were tried."""
    return "; ".join(dict.fromkeys(reasons))


def _sequential_decoders(found: Probe | None) -> tuple[Decoder, ...]:
    """The decoders to try on a file, in order (see the table in the module docstring)."""
    if found is None:  # PyAV cannot read it: OpenCV alone, with its own errors
        return (_opencv_frames,)
    if found.interlaced or applied_max_pixels() is not None:
        # Under a pixel limit PyAV only: OpenCV's decoder cannot be given FFmpeg's max_pixels, so it
        # would allocate an oversized frame before its size could be seen.
        return (_pyav_frames,)
    return (_opencv_frames, _pyav_frames)


def _validated_path(path: object) -> str:
    """The path as a str, after checking it names a non-empty regular file (VideoDecodeError if not)."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise VideoDecodeError(repr(path), f"expected a str, bytes or os.PathLike path, got {type(path).__name__}")
    path = as_str_path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise VideoDecodeError(path, "file not found") from None
    except ValueError as exc:  # e.g. an embedded NUL byte
        raise VideoDecodeError(path, f"invalid path ({exc})") from None
    except OSError as exc:
        raise VideoDecodeError(path, f"cannot access file ({exc.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise VideoDecodeError(path, "is a directory, not a video file")
    if not stat.S_ISREG(info.st_mode):
        # A FIFO or device would make the decoder block or read forever.
        raise VideoDecodeError(path, "not a regular file")
    if info.st_size == 0:
        raise VideoDecodeError(path, "file is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise VideoDecodeError(path, "file is not readable (permission denied)")
    check_container(path, info.st_size)  # before FFmpeg opens it: what it may allocate, bounded
    return path


# The file name endings of videos (what `hub run` looks for in a folder, what serving keeps of a name).
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".flv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".ts",
                    ".3gp", ".mts", ".m2ts", ".ogv", ".vob")


def _file_head(source: str, size: int) -> bytes:
    """The first `size` bytes of `source` (VideoDecodeError when it cannot be read)."""
    try:
        with open(source, "rb") as f:
            return f.read(size)
    except OSError as exc:
        raise VideoDecodeError(source, f"cannot read the file ({exc.strerror})") from None


def _open(source: str) -> cv2.VideoCapture:
    """Open `source` with OpenCV's FFmpeg backend, or raise _NoPicture."""
    # FFmpeg explicitly: the publisher's decoder, and the image-sequence backend of CAP_ANY would
    # read a '%d' in a file name as a pattern. An absolute path, because FFmpeg reads a relative
    # name such as `clip:1.mp4` as a URL of protocol `clip` and fails to open it; never a name that
    # is not UTF-8, which crashes OpenCV (names.native_path). One decoder thread: see SEQUENTIAL_THREADS.
    try:
        with native_path(source) as name:
            capture = cv2.VideoCapture(name, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, SEQUENTIAL_THREADS])
    except OSError as exc:
        raise _NoPicture(source, f"OpenCV cannot be given its name ({exc.strerror or exc})") from None
    if not capture.isOpened():
        capture.release()
        raise _NoPicture(source, "cannot open the container (not a video, corrupt, or unsupported)")
    orientation_auto = getattr(cv2, "CAP_PROP_ORIENTATION_AUTO", None)  # absent: never rotates
    if orientation_auto is not None:
        capture.set(orientation_auto, 0)  # frames as stored: see the module docstring
    return capture


@contextmanager
def _opencv_frames(source: str) -> Iterator[Frames]:
    """OpenCV's sequential decoder on `source`, released on leaving."""
    capture = _open(source)
    try:
        yield Frames(_reported_frame_count(capture), _grabbed(capture, source))
    finally:
        capture.release()


def _grabbed(capture: cv2.VideoCapture, source: str) -> Iterator[Callable[[], np.ndarray]]:
    """Every frame OpenCV decodes, as a callable retrieving its checked RGB picture.

    A grab that fails is retried: OpenCV stops at a packet the decoder rejects, the frames after
    it still decode (the publisher's loop read on past failures). Only MAX_FAILED_GRABS failures
    in a row end the video.
    """
    previous: list[np.ndarray] = []
    count = failures = 0
    while failures < MAX_FAILED_GRABS:
        if not capture.grab():
            failures += 1
            continue
        failures = 0
        yield partial(_retrieve, capture, source, count, previous)
        count += 1


def _retrieve(capture: cv2.VideoCapture, source: str, count: int, previous: list[np.ndarray]) -> np.ndarray:
    """RGB picture of the frame just grabbed; _NoPicture when OpenCV hands out one it did not decode."""
    ok, bgr = capture.retrieve()
    if not ok or bgr is None:
        raise _NoPicture(source, f"OpenCV read frame {count} but could not decode it")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    suspicion = _not_decoded(rgb, previous[0] if previous else None)
    if suspicion:
        raise _NoPicture(source, f"OpenCV returned frame {count} {suspicion}, not a decoded picture")
    previous[:] = [rgb]
    return rgb


def _not_decoded(frame: np.ndarray, previous: np.ndarray | None) -> str:
    """Why `frame` may not be a decoded picture ("" if no reason): OpenCV's sign of a failed conversion.

    When its colour conversion fails (an interlaced frame), OpenCV still reports success and hands
    out its output buffer untouched: zeros, or the last picture it converted. A real video can show
    either (a fade to black, a still scene); the caller then decodes it with PyAV, which gives the
    same pixels where OpenCV's are right.
    """
    coarse = (slice(None, None, 8), slice(None, None, 8))  # a cheap first look before the full test
    if not frame[coarse].any() and not frame.any():
        return "all black"
    if previous is not None and previous.shape == frame.shape:
        if np.array_equal(previous[coarse], frame[coarse]) and np.array_equal(previous, frame):
            return "identical to the frame before it"
    return ""


@contextmanager
def _pyav_frames(source: str) -> Iterator[Frames]:
    """PyAV's sequential decoder on `source`; its failures become _NoPicture."""
    try:
        with open_frames(source) as frames:
            yield frames
    except av.FFmpegError as exc:
        raise _NoPicture(source, f"PyAV cannot decode it ({exc})") from None


# File signatures of still images. FFmpeg opens such a file as a one-frame video, so a photo renamed
# .mp4 would be classified; an animated GIF or a Motion-JPEG stream has more frames and is kept.
_IMAGE_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def _refuse_still_image(source: str) -> None:
    """Raise VideoDecodeError if the one-frame file `source` is a still image, not a video."""
    head = _file_head(source, 12)
    kind = "WebP" if head[:4] == b"RIFF" and head[8:12] == b"WEBP" else None
    kind = kind or next((name for magic, name in _IMAGE_SIGNATURES if head.startswith(magic)), None)
    if kind:
        raise VideoDecodeError(source, f"is a {kind} image, not a video")


def _reported_frame_count(capture: cv2.VideoCapture) -> int:
    """The container's frame count, or 0 when it is missing, negative or not finite."""
    value = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    return int(value) if math.isfinite(value) and value >= 1 else 0


def _checked_indices(indices: Sequence[int], num_frames: int) -> list[int]:
    """`indices` as ints, each required to lie in [0, num_frames)."""
    result = [operator.index(i) for i in indices]
    bad = [i for i in result if not 0 <= i < num_frames]
    if bad:
        raise ValueError(f"sampled frame indices {bad[:5]} are outside [0, {num_frames})")
    return result


def _decode_pass(
    frames: Frames, wanted: Collection[int], transform: Callable[[np.ndarray], T]
) -> tuple[dict[int, T], int]:
    """Decode every frame to the end; transform the RGB image of each wanted index. Returns (kept, count)."""
    kept: dict[int, T] = {}
    count = 0
    for retrieve in frames.frames:
        if count in wanted:
            kept[count] = transform(retrieve())
        count += 1
    return kept, count


class _NoPicture(VideoDecodeError):
    """A decoder cannot give this file's pictures; another decoder may."""
