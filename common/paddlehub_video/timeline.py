"""Tags over time: the pieces of `VideoModule.classify_timeline` that are not the module's.

A timeline splits a video into windows of `window_seconds`, every `stride_seconds`, by the frames'
timestamps (`video.frame_times`), samples each window as the publisher samples a whole clip
(`sampling.plan_windows`), and decodes them all in one pass (`video.read_sampled_groups`).
"""
from __future__ import annotations

import contextvars
import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from .decode.sampling import Window

T = TypeVar("T")
_END = object()
# Times in the entries: to the microsecond, so JSON shows 30.0, not 30.000000000000004.
DIGITS = 6


def validate_window(window_seconds: object, stride_seconds: object) -> tuple[float, float]:
    """Validated (window, stride) in seconds: positive finite numbers; no stride means windows side by side."""
    window = _seconds("window_seconds", window_seconds)
    stride = window if stride_seconds is None else _seconds("stride_seconds", stride_seconds)
    return window, stride


def _seconds(name: str, value: object) -> float:
    """`value` as a positive finite number of seconds, else ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def window_entry(window: Window, prediction: dict[str, float]) -> dict:
    """One window of a timeline entry: its span in seconds and its prediction."""
    return {"start": round(window.start, DIGITS), "end": round(window.end, DIGITS), "prediction": prediction}


def timeline_entry(path: str, duration: float, windows: list[dict]) -> dict:
    """A video's `classify_timeline` entry."""
    return {"path": path, "duration": round(duration, DIGITS), "windows": windows}


def failed_entry(path: str, error: str) -> dict:
    """The entry of a video that cannot be read: no duration, no window, the reason."""
    return {"path": path, "duration": None, "windows": [], "error": error}


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
