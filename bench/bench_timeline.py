"""Benchmark: `classify_timeline` against `classify`, per analysed frame, in one run.

Usage (from the repository root): python bench/bench_timeline.py [--seconds 60] [--window 20] [--memory]

On a generated camera-like H.264 clip (640x360, 30 fps), each module makes its timeline in windows
of `--window` seconds (each window one clip's frames, all decoded in one pass), then classifies the
whole clip as many times as there are windows (`classify` of that many paths: the same number of
frames through the network, the next clip decoding meanwhile, as the next window does). The ratio of the
two times per analysed frame should be about 1: a timeline costs its windows, nothing more.
videotag runs with 30 TSN frames per clip (not 300) to keep the run short; StNet with its own 25x5.
`--memory` measures instead the peak RSS of StNet timelines (10 s windows) of a 20 s and a 120 s clip, each in its
own process: a longer video should not hold more.
Random weights in the publisher's format; nothing is downloaded. Writes bench/results/timeline.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from common_setup import (
    RESULTS_DIR,
    cached_video,
    emit,
    load_average,
    load_module,
    peak_rss_mib,
    prepare_environment,
    run_json,
    timed,
)

RESULTS = RESULTS_DIR / "timeline.json"
MEMORY_SECONDS = (20, 120)
SETTINGS = {"videotag_tsn_lstm": ({"sampling": {"seg_num": 30}}, 30), "stnet_kinetics400": ({}, 125)}


def bench_module(name: str, video: Path, window: float) -> dict:
    """Warm `classify` and `classify_timeline` of `video`: seconds, and seconds per analysed frame."""
    config, frames_per_clip = SETTINGS[name]
    module = load_module(name, config)
    module.classify([str(video)])  # converts and loads the model, warms the predictor
    (entry,), timeline_s = timed(lambda: module.classify_timeline([str(video)], window_seconds=window))
    windows = len(entry["windows"])
    # As many clips as windows, so that classify too decodes the next one while the network runs.
    _, classify_s = timed(lambda: module.classify([str(video)] * windows))
    per_frame = classify_s / (frames_per_clip * windows)
    timeline_per_frame = timeline_s / (frames_per_clip * windows)
    return {"module": name, "classify_s": classify_s, "timeline_s": timeline_s, "windows": windows,
            "classify_s_per_frame": per_frame, "timeline_s_per_frame": timeline_per_frame,
            "timeline_over_classify_per_frame": timeline_per_frame / per_frame}


def memory_worker(video: str) -> None:
    """In a fresh process: StNet's timeline of `video` in 10 s windows, then this process's peak RSS."""
    (entry,) = load_module("stnet_kinetics400").classify_timeline([video], window_seconds=10)
    emit({"video": video, "duration": entry["duration"], "windows": len(entry["windows"]),
          "peak_rss_mib": peak_rss_mib()})


def bench_memory() -> list[dict]:
    """Peak RSS of a timeline of each of MEMORY_SECONDS long clips, one process each."""
    videos = [cached_video("scene", seconds, 640, 360, codec="h264")[0] for seconds in MEMORY_SECONDS]
    return [run_json([sys.executable, __file__, "--worker", str(video)]) for video in videos]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return memory_worker(args.worker)
    video, _, _ = cached_video("scene", args.seconds, 640, 360, codec="h264")
    with tempfile.TemporaryDirectory(prefix="bench-timeline-") as work:
        prepare_environment(Path(work))
        load_before = load_average()
        rows = [] if args.memory else [bench_module(name, video, args.window) for name in SETTINGS]
        memory = bench_memory() if args.memory else []
    for row in rows:
        print(f"{row['module']}: classify {row['classify_s']:.2f} s, timeline {row['timeline_s']:.2f} s "
              f"({row['windows']} windows); per analysed frame timeline / classify = "
              f"{row['timeline_over_classify_per_frame']:.2f}")
    for row in memory:
        print(f"StNet timeline, {row['duration']:.0f} s clip, {row['windows']} windows: "
              f"peak RSS {row['peak_rss_mib']:.0f} MiB")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    results = RESULTS.with_name("timeline_memory.json") if args.memory else RESULTS
    results.write_text(json.dumps({"video": str(video), "window_s": args.window, "rows": rows, "memory": memory,
                                   "load_average": [load_before, load_average()]}, indent=2))


if __name__ == "__main__":
    main()
