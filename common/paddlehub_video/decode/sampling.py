"""Which frames a model sees: the publisher's index formulas, frame count -> frame indices.

Sampling is the caller's, decoding the reader's: a module passes one of these (with its settings
bound) to `video.read_sampled_frames`, which calls it with the video's frame count.
"""
from __future__ import annotations

import bisect
import math
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
    sample_indices: Callable[[int], Sequence[int]], max_windows: int | None = None,
) -> list[Window]:
    """The windows `[k * stride, k * stride + window)` up to the one reaching `duration`, each sampled on its own.

    `times` are the frames' timestamps (seconds, display order, ascending), so a variable frame rate
    puts each frame in the window its time says. A window is sampled as a whole clip of its frames
    (`sample_indices(its frame count)`, shifted to the video's indices), which is what makes a window
    covering a whole video give that video's result. A window holding no frame (a gap in a VFR
    file) is left out, and skipped over in one step: planning costs in proportion to the frames and
    the windows kept, never to the time span (a gap of years between two frames is one step).
    More than `max_windows` windows with frames raise TooManyWindows, before any is sampled further.
    """
    windows: list[Window] = []
    k = first = stop = 0
    while True:
        start = k * stride
        first, stop = bisect.bisect_left(times, start, first), bisect.bisect_left(times, start + window, stop)
        if stop > first:
            if max_windows is not None and len(windows) == max_windows:
                raise TooManyWindows(max_windows)
            picked = [first + i for i in sample_indices(stop - first)]
            windows.append(Window(start, min(start + window, duration), picked))
        if start + window >= duration or stop >= len(times):
            return windows
        k = _next_window(k, times[first], window, stride) if stop == first else k + 1


def _next_window(k: int, time: float, window: float, stride: float) -> int:
    """After the empty window `k`, the first one that can hold a frame at `time` (the first that ends after it).

    Computed in floating point, it may come out one short: that window is then empty too, and the
    next call moves on by one, so at most one extra step is taken per gap.
    """
    return max(k + 1, math.floor((time - window) / stride))


class TooManyWindows(ValueError):
    """A timeline would have more windows holding frames than the limit per video."""

    def __init__(self, limit: int):
        super().__init__(f"more than {limit} windows")
        self.limit = limit


class SegmentGrid(NamedTuple):
    """StNet's segments on one grid over a whole video (`classify_timeline(..., context="video")`).

    Position g is the `seglen` frames from `g * step + offset` (wrapping to the video's start, as the
    publisher's formula does for a clip's last segment); `step` and `offset` are those the publisher's
    sampling gives a window of `window_frames` frames, so a window's segments are the grid's where it
    starts on a multiple of `step`. There are `count` positions: every one whose frames fit in the
    video, and at least `seg_num` (a video shorter than a window: its 25 windows, as `classify` takes them).
    """

    frame_count: int
    step: int
    offset: int
    seglen: int
    count: int

    def indices(self, positions: range) -> list[int]:
        """The frame indices of `positions`, flattened (seglen per position, in order)."""
        return [(g * self.step + self.offset + j) % self.frame_count for g in positions for j in range(self.seglen)]

    def nearest(self, first_frame: int, seg_num: int) -> int:
        """The first of the `seg_num` consecutive positions nearest a window starting at frame `first_frame`:
        the position that starts nearest the window's first segment, moved back as far as needed for all
        seg_num to exist (the video's last windows)."""
        return max(0, min((first_frame + self.step // 2) // self.step, self.count - seg_num))


def segment_grid(frame_count: int, window_frames: int, seg_num: int, seglen: int) -> SegmentGrid:
    """The grid of a video of `frame_count` frames whose full windows hold `window_frames` frames."""
    _check_counts(frame_count, seg_num)
    _check_counts(window_frames, seg_num)
    step = max(1, window_frames // seg_num)
    offset = (step - 1) // 2 if step >= seglen else 0  # sample_stnet_indices' first start
    fitting = (frame_count - offset - seglen) // step + 1 if frame_count >= offset + seglen else 0
    return SegmentGrid(frame_count, step, offset, seglen, max(seg_num, fitting))
