"""Which frames a model sees: the publisher's index formulas, frame count -> frame indices.

Sampling is the caller's, decoding the reader's: a module passes one of these (with its settings
bound) to `video.read_sampled_frames`, which calls it with the video's frame count.
"""
from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Sequence
from typing import NamedTuple


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


def _check_counts(num_frames: int, seg_num: int) -> None:
    """Reject frame and segment counts the sampling formulas are not defined for."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if seg_num < 1:
        raise ValueError(f"seg_num must be >= 1, got {seg_num}")


class Window(NamedTuple):
    """One window of a timeline: its span in seconds and the frames (indices into the video) the model sees."""

    start: float
    end: float
    indices: list[int]


def plan_windows(
    times: Sequence[float], duration: float, window: float, stride: float,
    sample_indices: Callable[[int], Sequence[int]],
) -> list[Window]:
    """The windows `[k * stride, k * stride + window)` up to the one reaching `duration`, each sampled on its own.

    `times` are the frames' timestamps (seconds, display order, ascending), so a variable frame rate
    puts each frame in the window its time says. A window is sampled as a whole clip of its frames
    (`sample_indices(its frame count)`, shifted to the video's indices), which is what makes a window
    covering a whole video give that video's result. A window holding no frame (a gap in a VFR
    file) is left out.
    """
    windows = []
    for k in itertools.count():
        start = k * stride
        first, stop = bisect.bisect_left(times, start), bisect.bisect_left(times, start + window)
        if stop > first:
            picked = [first + i for i in sample_indices(stop - first)]
            windows.append(Window(start, min(start + window, duration), picked))
        if start + window >= duration or stop >= len(times):
            return windows
    raise AssertionError("unreachable")  # itertools.count never ends
