"""Video decoding and frame sampling: path -> the sampled frames, each already transformed.

The publisher read every frame of a video into a list (all of them, full size) and then picked
300 (VideoTag) or 125 (StNet) of them. We keep its choice of frames but stream: every frame is
grabbed (demuxed and decoded, cheap), only the sampled ones are retrieved (converted to BGR) and
passed straight to a caller-supplied transform, so peak memory depends on the number of sampled
frames and their transformed size, never on the length of the video. For the usual containers and
codecs `packet_plan` goes further and decodes only the packets the sampled frames depend on.

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
from collections.abc import Callable, Collection, Sequence
from typing import TypeVar, Union

import cv2
import numpy as np

from .errors import VideoDecodeError
from .packet_plan import decode_frames, read_packet_index

T = TypeVar("T")
PathType = Union[str, "os.PathLike[str]"]


def sample_tsn_indices(num_frames: int, seg_num: int) -> list[int]:
    """Frame index of each of `seg_num` TSN segments: the middle of each, or cyclic when N < seg_num."""
    _check_counts(num_frames, seg_num)
    step = num_frames // seg_num
    if step >= 1:
        # Middle frame of each step-long segment; the tail after seg_num * step is never used.
        return [(step - 1) // 2 + i * step for i in range(seg_num)]
    return [i % num_frames for i in range(seg_num)]


def sample_stnet_indices(num_frames: int, seg_num: int, seglen: int) -> list[int]:
    """Frame indices of StNet's `seg_num` windows of `seglen` frames (publisher's mp4 rule), flattened."""
    _check_counts(num_frames, seg_num)
    if seglen < 1:
        raise ValueError(f"seglen must be >= 1, got {seglen}")
    step = num_frames // seg_num
    if step >= seglen:
        # Starts at the segment middle, so the window runs into the next segment (and, for the
        # last one, may wrap around to frame 0): kept on purpose, it is what the weights saw.
        starts = [(step - 1) // 2 + i * step for i in range(seg_num)]
    else:
        # step == 0 gives start i; the formula i * step would put every window at frame 0.
        starts = [i * step if step >= 1 else i for i in range(seg_num)]
    return [(start + j) % num_frames for start in starts for j in range(seglen)]


def read_sampled_frames(
    path: PathType,
    sample_indices: Callable[[int], Sequence[int]],
    transform: Callable[[np.ndarray], T],
) -> list[T]:
    """Stream-decode `path`, returning `transform(rgb_frame)` for each index `sample_indices(N)` names.

    Files that `packet_plan` was checked on (MP4/MOV/MKV with H.264, HEVC or MPEG-4 video) decode
    only the packets the sampled frames depend on; any other file, or one whose planned decoding
    falls short, is decoded sequentially, every frame. Both give the same frames. Planned, N is the
    number of frames in the packet list (edit-list discarded packets excluded).

    Sequentially, N is the number of frames actually decoded. The container's frame count is only a first guess:
    when it turns out wrong, the video is decoded a second time with indices computed from the
    real N. A repeated index is decoded and transformed once; the list then holds the same object
    several times. Raises VideoDecodeError when the file is unusable or holds no video frame.
    """
    source = _validated_path(path)
    index = read_packet_index(source)
    if index is not None:
        indices = _checked_indices(sample_indices(index.frame_count), index.frame_count)
        kept = decode_frames(source, index, set(indices), transform)
        if kept is not None:
            return [kept[i] for i in indices]
    capture = _open(source)
    try:
        guess = _reported_frame_count(capture)
        first = _checked_indices(sample_indices(guess), guess) if guess >= 1 else []
        kept, total = _decode_pass(capture, source, set(first), transform)
    finally:
        capture.release()
    if total == 0:
        raise VideoDecodeError(source, "no decodable video frame")
    if total == 1:
        _refuse_still_image(source)
    if total == guess:
        return [kept[i] for i in first]

    indices = _checked_indices(sample_indices(total), total)
    kept = {i: kept[i] for i in set(indices) if i in kept}  # drop frames sampled for the wrong N
    missing = set(indices) - kept.keys()
    if missing:
        capture = _open(source)
        try:
            extra, recount = _decode_pass(capture, source, missing, transform)
        finally:
            capture.release()
        if recount != total:
            raise VideoDecodeError(source, f"decoded {total} frames, then {recount} on a second pass")
        kept.update(extra)
    return [kept[i] for i in indices]


def count_decodable_frames(path: PathType) -> int:
    """Number of video frames that can actually be decoded (0 if none); ignores the container's count."""
    source = _validated_path(path)
    capture = _open(source)
    try:
        return _decode_pass(capture, source, set(), _unused_transform)[1]
    finally:
        capture.release()


def _check_counts(num_frames: int, seg_num: int) -> None:
    """Reject frame and segment counts the sampling formulas are not defined for."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if seg_num < 1:
        raise ValueError(f"seg_num must be >= 1, got {seg_num}")


def _validated_path(path: object) -> str:
    """The path as a str, after checking it names a non-empty regular file (VideoDecodeError if not)."""
    if isinstance(path, os.PathLike):
        path = os.fsdecode(os.fspath(path))
    if not isinstance(path, str):
        raise VideoDecodeError(repr(path), f"expected a str or os.PathLike path, got {type(path).__name__}")
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
    return path


def _open(source: str) -> cv2.VideoCapture:
    """Open `source` with OpenCV's FFmpeg backend, or raise VideoDecodeError."""
    # FFmpeg explicitly: the publisher's decoder, and the image-sequence backend of CAP_ANY would
    # read a '%d' in a file name as a pattern. An absolute path, because FFmpeg reads a relative
    # name such as `clip:1.mp4` as a URL of protocol `clip` and fails to open it.
    capture = cv2.VideoCapture(os.path.abspath(source), cv2.CAP_FFMPEG)
    if not capture.isOpened():
        capture.release()
        raise VideoDecodeError(source, "cannot open the container (not a video, corrupt, or unsupported)")
    orientation_auto = getattr(cv2, "CAP_PROP_ORIENTATION_AUTO", None)  # absent: never rotates
    if orientation_auto is not None:
        capture.set(orientation_auto, 0)  # frames as stored: see the module docstring
    return capture


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
    try:
        with open(source, "rb") as f:
            head = f.read(12)
    except OSError as exc:
        raise VideoDecodeError(source, f"cannot read the file ({exc.strerror})") from None
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
    capture: cv2.VideoCapture,
    source: str,
    wanted: Collection[int],
    transform: Callable[[np.ndarray], T],
) -> tuple[dict[int, T], int]:
    """Grab every frame to the end; transform the RGB image of each wanted index. Returns (kept, count)."""
    kept: dict[int, T] = {}
    count = 0
    while capture.grab():
        if count in wanted:
            ok, bgr = capture.retrieve()
            if not ok or bgr is None:
                raise VideoDecodeError(source, f"frame {count} was read but could not be decoded")
            kept[count] = transform(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        count += 1
    return kept, count


def _unused_transform(frame: np.ndarray) -> np.ndarray:
    """Placeholder transform for passes that retrieve no frame."""
    return frame
