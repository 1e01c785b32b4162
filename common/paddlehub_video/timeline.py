"""Tags over time: the pieces of `VideoModule.classify_timeline` that are not the module's.

A timeline splits a video into windows of `window_seconds`, every `stride_seconds`, by the frames'
timestamps (`video.frame_times`), samples each window as the publisher samples a whole clip
(`sampling.plan_windows`), and decodes them all in one pass (`video.read_sampled_groups`). A
`WindowModel` runs the network over each window; a module whose first network sees each frame alone
(videotag's TSN) uses `FrameFeatures`, so that each distinct frame goes through it once per timeline,
however much the windows overlap. With `context="video"` a module with a `SequenceModel` (StNet) runs
its network once over the whole video's segments instead, in chunks (`sequence_windows`), and each
window's probabilities come from its positions' rows: not bit for bit `classify`'s (README, Timeline).
The finished windows of the running video go to the `WindowStore`
of the context (`keeping_windows`: `hub run --timeline --output` keeps them in a file), and a rerun
starts after those it finds there.

Bounded whatever the file: planning costs in proportion to the frames (a gap of years between two
frames is one step), windows and strides under MIN_SECONDS are refused (no video frame is that
short), and a video with more than `timeline.max_windows` windows (the module config; `hub
serving` applies its own, the stricter wins) fails with its error before anything is decoded.
"""
from __future__ import annotations

import contextvars
import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import NamedTuple, TypeVar

import numpy as np

from .decode.sampling import SegmentGrid, TooManyWindows, Window, plan_windows
from .errors import VideoDecodeError
from .segments import segments_of

T = TypeVar("T")
_END = object()
# Times in the entries: to the microsecond, so JSON shows 30.0, not 30.000000000000004.
DIGITS = 6
# The shortest window or stride: far below any video frame's duration (1000 fps), so a shorter one
# only repeats the same frames in window after window (a 1 us stride: 40,000 windows per frame at 25 fps).
MIN_SECONDS = 0.001
DEFAULT_MAX_WINDOWS = 1000
MAX_WINDOWS_SETTING = "timeline.max_windows"
# What a window sees: its own frames alone, as `classify` (the default, bit for bit), or the video
# around it (a SequenceModel's network run once over the whole video).
CONTEXTS = ("window", "video")


class WindowLimit(NamedTuple):
    """Most windows per video, and where that limit was set (named in the error)."""

    count: int
    setting: str = MAX_WINDOWS_SETTING


# A limit set for the calls of one context (a serving request), on top of the module config's.
_APPLIED: contextvars.ContextVar[WindowLimit | None] = contextvars.ContextVar(
    "paddlehub_video_max_windows", default=None)


def validate_window(window_seconds: object, stride_seconds: object) -> tuple[float, float]:
    """Validated (window, stride) in seconds: finite numbers of at least MIN_SECONDS; no stride means windows
    side by side."""
    window = _seconds("window_seconds", window_seconds)
    stride = window if stride_seconds is None else _seconds("stride_seconds", stride_seconds)
    return window, stride


def _seconds(name: str, value: object) -> float:
    """`value` as a finite number of seconds of at least MIN_SECONDS, else ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < MIN_SECONDS:
        raise ValueError(f"{name} must be a number of seconds of at least {MIN_SECONDS:g} (no video frame "
                         f"is shorter), got {value!r}")
    return float(value)


def validate_context(context: object) -> str:
    """`context` if it is one of CONTEXTS, else ValueError naming them."""
    if not isinstance(context, str) or context not in CONTEXTS:
        raise ValueError(f"context must be one of {', '.join(repr(c) for c in CONTEXTS)}, got {context!r}")
    return context


@contextmanager
def applied_max_windows(limit: WindowLimit) -> Iterator[None]:
    """Within the block (this thread, and what it starts in a copy of its context), also enforce `limit`."""
    token = _APPLIED.set(stricter(limit, _APPLIED.get()))
    try:
        yield
    finally:
        _APPLIED.reset(token)


def stricter(limit: WindowLimit, other: WindowLimit | None) -> WindowLimit:
    """The lower of two limits (the first when equal)."""
    return other if other is not None and other.count < limit.count else limit


def plan(path: str, times: Sequence[float], duration: float, window: float, stride: float,
         sample_indices: Callable[[int], Sequence[int]], configured: WindowLimit) -> list[Window]:
    """`sampling.plan_windows` within the stricter of `configured` and the applied limit; over it, the
    video's VideoDecodeError naming the limit and its setting."""
    limit = stricter(configured, _APPLIED.get())
    try:
        return plan_windows(times, duration, window, stride, sample_indices, limit.count)
    except TooManyWindows:
        raise VideoDecodeError(path, f"windows of {window:g} s every {stride:g} s make more than {limit.count} "
                               f"windows, the limit per video ({limit.setting})") from None


def window_entry(window: Window, prediction: dict[str, float]) -> dict:
    """One window of a timeline entry: its span in seconds and its prediction."""
    return {"start": round(window.start, DIGITS), "end": round(window.end, DIGITS), "prediction": prediction}


def timeline_entry(path: str, duration: float, windows: list[dict]) -> dict:
    """A video's `classify_timeline` entry: its windows, and the segments they make (`segments.py`)."""
    return {"path": path, "duration": round(duration, DIGITS), "windows": windows, "segments": segments_of(windows)}


def failed_entry(path: str, error: str) -> dict:
    """The entry of a video that cannot be read: no duration, no window, no segment, the reason."""
    return {"path": path, "duration": None, "windows": [], "segments": [], "error": error}


def prefetched(items: Iterator[T]) -> Iterator[T]:
    """`items`, the next one made in a background thread while the caller uses the current one.

    Decoding window k + 1 while window k is in the network, as `pipeline.VideoPipeline` does from
    video to video: so two windows' frames are held at most, whatever the video's length.
    """
    context = contextvars.copy_context()  # progress reports and applied limits follow the work
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="paddlehub_video-window") as pool:
        advance: Callable[[], object] = lambda: context.run(next, items, _END)  # noqa: E731
        pending = pool.submit(advance)
        while (item := pending.result()) is not _END:
            pending = pool.submit(advance)
            yield item  # type: ignore[misc]


class WindowModel:
    """A window's sampled frames -> its probabilities, window after window of one video: `forward` of each
    window's frames (what `classify` does with a clip). Subclasses may reuse work across windows."""

    def __init__(self, forward: Callable[[np.ndarray], np.ndarray]):
        self.forward = forward

    def __call__(self, indices: Sequence[int], frames: np.ndarray) -> np.ndarray:
        """The probabilities of a window whose frames `frames` are the video's frames `indices`."""
        return self.forward(frames)

    def keep_from(self, first: int | None) -> None:
        """The windows to come use no frame before index `first` (None: no window comes)."""


class FrameFeatures(WindowModel):
    """A model made of a per-frame network (`features`: frames -> one row per frame, each row depending on its
    frame alone) and a `head` (rows in the window's order -> probabilities).

    Each frame index goes through `features` once per timeline; its row is kept while the windows to come
    may sample it (`keep_from`), so what is held is at most a window's rows. The head sees the same rows as
    for a clip of the window's frames, so the probabilities are bit for bit those of `forward`.
    """

    def __init__(self, features: Callable[[np.ndarray], np.ndarray], head: Callable[[np.ndarray], np.ndarray]):
        super().__init__(lambda frames: head(features(frames)))
        self.features, self.head = features, head
        self.rows: dict[int, np.ndarray] = {}
        self.computed = 0  # frames through `features` so far (a bench and the tests read it)

    def __call__(self, indices: Sequence[int], frames: np.ndarray) -> np.ndarray:
        first_at: dict[int, int] = {}
        for position, index in enumerate(indices):
            first_at.setdefault(index, position)
        missing = [index for index in first_at if index not in self.rows]
        if missing:
            self.rows.update(zip(missing, self.features(frames[[first_at[i] for i in missing]]), strict=True))
            self.computed += len(missing)
        return self.head(np.stack([self.rows[i] for i in indices]))

    def keep_from(self, first: int | None) -> None:
        self.rows = {} if first is None else {i: row for i, row in self.rows.items() if i >= first}


class SequenceModel(NamedTuple):
    """A network run once over a whole video's segment sequence (`context="video"`), then per window.

    `position` maps the frames of one grid position to its input to `features` (each position alone);
    `features` maps the inputs of consecutive positions to one row per position, each row depending on
    the positions within `halo` of it (zero padding only at the sequence's ends); `head` maps the rows
    of a window's `span` positions to its probabilities. `features` runs on chunks of `chunk` positions
    plus the halo on each side, so memory does not grow with the video; each position goes through
    `position` once (`chunk_features`).
    """

    grid: Callable[[int, int], SegmentGrid]  # (the video's frames, a full window's frames) -> its grid
    position: Callable[[np.ndarray], np.ndarray]
    features: Callable[[np.ndarray], np.ndarray]
    head: Callable[[np.ndarray], np.ndarray]
    span: int
    halo: int
    chunk: int


class Chunk(NamedTuple):
    """One run of a SequenceModel's `features`: the positions fed, and those whose rows are kept."""

    inputs: range
    outputs: range


def chunks(first: int, stop: int, count: int, size: int, halo: int) -> list[Chunk]:
    """The chunks whose outputs cover positions `[first, stop)` of a sequence of `count` positions.

    The sequence is cut into the fewest chunks of at most `size` positions, of equal lengths (so that no
    last chunk of a few positions pays a whole halo), whatever `first` is, so that a resumed timeline runs
    the same chunks as an uninterrupted one; each is fed `halo` more positions on each side (within the
    sequence), whose rows are dropped: a kept row then sees every position it depends on, as in one run
    over the whole sequence.
    """
    if size < 1 or halo < 0:
        raise ValueError(f"chunks need a size of at least 1 and a halo of at least 0, got {size} and {halo}")
    size = -(-count // -(-count // size)) if count > 0 else size  # ceil(count / the number of chunks)
    found = []
    for start in range(first - first % size, stop, size):
        end = min(start + size, count)
        found.append(Chunk(range(max(0, start - halo), min(count, end + halo)), range(start, end)))
    return found


def fresh_inputs(planned: Sequence[Chunk]) -> list[range]:
    """The inputs of each planned chunk that the chunk before it was not fed (all of the first one's)."""
    return [range(chunk.inputs.start if k == 0 else max(chunk.inputs.start, planned[k - 1].inputs.stop),
                  chunk.inputs.stop) for k, chunk in enumerate(planned)]


def chunk_features(planned: Sequence[Chunk], frames: Iterator[list], model: SequenceModel,
                   seglen: int) -> Iterator[np.ndarray]:
    """`model.features` of each planned chunk's inputs, each position through `model.position` once.

    `frames` gives, for each chunk, the frames of its `fresh_inputs` (`seglen` per position, in order) as
    a list, emptied here position by position as each goes through `model.position`, so that no frame is
    held while `features` runs; the inputs a chunk shares with the one before (2 x halo positions) are
    kept from that one, not decoded and run again. Held while `features` runs: the chunk's inputs alone.
    """
    carried = np.empty(0)  # the inputs of the chunk just run that the next one is fed too
    for k, (chunk, fresh) in enumerate(zip(planned, frames, strict=True)):
        inputs = None
        for i in range(len(carried), len(chunk.inputs)):
            row = model.position(np.stack(fresh[:seglen]))
            del fresh[:seglen]
            if inputs is None:  # the first position's shape is every position's
                inputs = np.empty((len(chunk.inputs), *row.shape), row.dtype)
                inputs[:len(carried)] = carried.reshape(-1, *row.shape)
            inputs[i] = row
        rows = model.features(inputs)
        carried = inputs[planned[k + 1].inputs.start - chunk.inputs.start:].copy() if k + 1 < len(planned) \
            else np.empty(0)
        del inputs  # before the caller uses the rows: the next chunk's inputs are made meanwhile
        yield rows


def sequence_windows(starts: Sequence[int], span: int, planned: Sequence[Chunk],
                     computed: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """The rows of each window's positions `starts[k] .. starts[k] + span` (starts ascending), in order, from
    the rows `computed` for each planned chunk's inputs in turn; a row is kept while a window to come needs it,
    so what is held is at most a chunk's and a window's rows."""
    rows: dict[int, np.ndarray] = {}
    waiting = iter(starts)
    start = next(waiting, None)
    for chunk, features in zip(planned, computed, strict=True):
        skip = chunk.outputs.start - chunk.inputs.start
        rows.update(zip(chunk.outputs, features[skip:skip + len(chunk.outputs)], strict=True))
        while start is not None and start + span <= chunk.outputs.stop:
            yield np.stack([rows[p] for p in range(start, start + span)])
            start = next(waiting, None)
            rows = {p: row for p, row in rows.items() if start is not None and p >= start}


class WindowStore:
    """Where a timeline puts each finished window of the running video, and finds those of an earlier run.

    `options` name the timeline (module, window, stride, top_k, threshold): windows kept under other
    options are not this timeline's. This base keeps nothing (the Python API's default).
    """

    def finished(self, path: str, options: dict) -> list[dict]:
        """The window entries of `path` finished earlier under `options`, in order."""
        return []

    def add(self, path: str, options: dict, entry: dict) -> None:
        """Window `entry` of `path` is finished."""


_STORE: contextvars.ContextVar[WindowStore | None] = contextvars.ContextVar("paddlehub_video_windows", default=None)
_NO_STORE = WindowStore()


def window_store() -> WindowStore:
    """The store of this context (one that keeps nothing unless `keeping_windows` set another)."""
    return _STORE.get() or _NO_STORE


@contextmanager
def keeping_windows(store: WindowStore) -> Iterator[WindowStore]:
    """Within the block, timelines put their finished windows in `store` and resume from what it holds."""
    token = _STORE.set(store)
    try:
        yield store
    finally:
        _STORE.reset(token)


def resumed(entries: list[dict], windows: Sequence[Window]) -> list[dict]:
    """The leading `entries` that are the planned `windows`' (same start and end), in order: the windows a
    rerun need not classify again."""
    kept = []
    for entry, window in zip(entries, windows, strict=False):  # a resume file may hold fewer entries
        planned = window_entry(window, {})
        if (entry.get("start"), entry.get("end")) != (planned["start"], planned["end"]):
            break
        kept.append(entry)
    return kept
