"""Benchmark: `classify_timeline` against `classify`, per analysed frame, in one run.

Usage (from the repository root): python bench/bench_timeline.py [--seconds 60] [--window 20]

On a generated camera-like H.264 clip (640x360, 30 fps), each module classifies the whole clip
(`classify`: one clip's frames through the network) and then its timeline in windows of
`--window` seconds (each window as many frames again, all decoded in one pass). The ratio of the
two times per analysed frame should be about 1: a timeline costs its windows, nothing more.
videotag runs with 30 TSN frames per clip (not 300) to keep the run short; StNet with its own 25x5.
Random weights in the publisher's format; nothing is downloaded. Writes bench/results/timeline.json.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common_setup import RESULTS_DIR, cached_video, load_average, load_module, prepare_environment, timed

RESULTS = RESULTS_DIR / "timeline.json"
SETTINGS = {"videotag_tsn_lstm": ({"sampling": {"seg_num": 30}}, 30), "stnet_kinetics400": ({}, 125)}


def bench_module(name: str, video: Path, window: float) -> dict:
    """Warm `classify` and `classify_timeline` of `video`: seconds, and seconds per analysed frame."""
    config, frames_per_clip = SETTINGS[name]
    module = load_module(name, config)
    module.classify([str(video)])  # converts and loads the model, warms the predictor
    _, classify_s = timed(lambda: module.classify([str(video)]))
    (entry,), timeline_s = timed(lambda: module.classify_timeline([str(video)], window_seconds=window))
    windows = len(entry["windows"])
    per_frame = classify_s / frames_per_clip
    timeline_per_frame = timeline_s / (frames_per_clip * windows)
    return {"module": name, "classify_s": classify_s, "timeline_s": timeline_s, "windows": windows,
            "classify_s_per_frame": per_frame, "timeline_s_per_frame": timeline_per_frame,
            "timeline_over_classify_per_frame": timeline_per_frame / per_frame}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--window", type=float, default=20.0)
    args = parser.parse_args()
    video, _, _ = cached_video("scene", args.seconds, 640, 360, codec="h264")
    with tempfile.TemporaryDirectory(prefix="bench-timeline-") as work:
        prepare_environment(Path(work))
        load_before = load_average()
        rows = [bench_module(name, video, args.window) for name in SETTINGS]
    for row in rows:
        print(f"{row['module']}: classify {row['classify_s']:.2f} s, timeline {row['timeline_s']:.2f} s "
              f"({row['windows']} windows); per analysed frame timeline / classify = "
              f"{row['timeline_over_classify_per_frame']:.2f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"video": str(video), "window_s": args.window, "rows": rows,
                                   "load_average": [load_before, load_average()]}, indent=2))


if __name__ == "__main__":
    main()
