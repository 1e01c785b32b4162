"""Benchmark: `classify_timeline` against `classify`, per distinct analysed frame, in one run.

Usage (from the repository root): python bench/bench_timeline.py [--seconds 20] [--window 5] [--memory]

On a generated camera-like H.264 clip (640x360, 30 fps), each module (its published settings: videotag
300 TSN frames on 224 crops, StNet 25 x 5 on 256) classifies the whole clip once, then makes its
timeline in windows of `--window` seconds every 1/2 and every 1/4 of a window. For each, the time per
*distinct* analysed frame (frames sampled by at least one window; for `classify`, by the clip) and the
ratio timeline / classify: the goal is within 1.15 (each distinct frame costs a timeline what it costs
`classify`; `classify` is timed before and after the timelines, and their mean taken, as the load of a
shared machine moves meanwhile). Also counted, not timed: the frames the windows sample in all (what TSN ran before the
feature cache: each window's distinct frames) and, for StNet, the 5-frame segments in all and distinct
(a segment can be reused only where two windows' segments start on the same frame).
StNet is also timed with `context="video"` (its network once over the whole video's segment grid): its
distinct analysed frames are the frames of the grid positions the windows use. Its probabilities are
compared with the exact mode's over the same windows (max |dp| over all 400 classes, top-1 and top-5
agreement), here and on DEVIATION_CLIPS.
`--memory` measures instead the peak RSS of StNet timelines (10 s windows) of a 20 s and a 120 s clip, each in its
own process: a longer video should not hold more.
Random weights in the publisher's format; nothing is downloaded. Writes bench/results/timeline.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from functools import partial
from itertools import pairwise
from pathlib import Path

from common_setup import (
    RESULTS_DIR,
    cached_video,
    current_rss_mib,
    emit,
    load_average,
    load_module,
    machine_info,
    peak_rss_mib,
    prepare_environment,
    run_json,
    timed,
)

RESULTS = RESULTS_DIR / "timeline.json"
MEMORY_SECONDS = (20, 120)
MODULE_NAMES = ("videotag_tsn_lstm", "stnet_kinetics400")
STRIDE_FRACTIONS = (0.5, 0.25)
GOAL = 1.15
SEGMENT_FRAMES = {"stnet_kinetics400": 5}
# Modules with a whole-video context, and the share of their per-segment work after the first layer that
# mixes time (StNet: res4, res5, the two conv3d and the head are 61% of the MACs at 256 pixels), which no
# exact-mode reuse can share between windows.
WHOLE_VIDEO = {"stnet_kinetics400": 0.61}
# More clips for the deviation of the video context (content, seconds): 5 s windows every 1.25 s.
DEVIATION_CLIPS = (("noise", 10), ("scene", 12))


def planned(module, video: Path, window: float, stride: float) -> list:
    """The timeline's windows, as `classify_timeline` plans them."""
    from paddlehub_video.decode.sampling import plan_windows
    from paddlehub_video.decode.video import frame_times

    times = frame_times(str(video))
    return plan_windows(times.times, times.duration, window, stride, module.sampling())


def counts(name: str, windows: list) -> dict:
    """Frames (and StNet segments) the windows sample: in all (per window, each once) and distinct."""
    found = {"windows": len(windows), "sampled_frames": sum(len(set(w.indices)) for w in windows),
             "distinct_frames": len(set().union(*(w.indices for w in windows)))}
    seglen = SEGMENT_FRAMES.get(name)
    if seglen:
        segments = [tuple(w.indices[i:i + seglen]) for w in windows for i in range(0, len(w.indices), seglen)]
        found.update(segments=len(segments), distinct_segments=len(set(segments)))
    return found


def grid_counts(module, video: Path, window: float, stride: float) -> dict:
    """The windows of a `context="video"` timeline, and the grid positions and frames they analyse."""
    from paddlehub_video.decode.sampling import plan_windows
    from paddlehub_video.decode.video import frame_times

    times = frame_times(str(video))
    windows = plan_windows(times.times, times.duration, window, stride, lambda count: (0, count - 1))
    model = module.sequence_model(False)
    grid = model.grid(len(times.times), max(last - first + 1 for first, last in (w.indices for w in windows)))
    positions = set()
    for w in windows:
        start = grid.nearest(w.indices[0], model.span)
        positions.update(range(start, start + model.span))
    return {"windows": len(windows), "positions": len(positions),
            "distinct_frames": len(set(grid.indices(sorted(positions))))}


def deviation(exact: list[dict], whole: list[dict]) -> dict:
    """How far the video context's windows are from the exact ones: max |dp| over every class, the share of
    windows with the same top-1 label, and the mean share of shared top-5 labels."""
    def top(prediction: dict, k: int) -> set:
        return set(sorted(prediction, key=prediction.get, reverse=True)[:k])

    pairs = [(e["prediction"], w["prediction"]) for e, w in zip(exact, whole, strict=True)]
    per_window = [max(abs(e[label] - w.get(label, 0.0)) for label in e) for e, w in pairs]
    return {"windows_compared": len(pairs), "max_abs_dp": max(per_window),
            "mean_window_max_abs_dp": sum(per_window) / len(per_window),
            "top1_agreement": sum(top(e, 1) == top(w, 1) for e, w in pairs) / len(pairs),
            "top5_overlap": sum(len(top(e, 5) & top(w, 5)) / 5 for e, w in pairs) / len(pairs)}


def timelines(module, video: Path, window: float, stride: float, context: str) -> tuple[list[dict], float]:
    """The windows of `video`'s timeline in `context`, with every class's probability, and its seconds."""
    every = len(module.class_names())
    (entry,), seconds = timed(partial(module.classify_timeline, [str(video)], window, stride, top_k=every,
                                      threshold=0.0, context=context))
    assert "error" not in entry, entry.get("error")
    return entry["windows"], seconds


def window_by_window(module, video: Path, window: float, stride: float) -> float:
    """Seconds of the timeline as it was made before the feature cache: `forward` of each window's frames."""
    from paddlehub_video.timeline import WindowModel

    module.timeline_model = lambda predictors: WindowModel(partial(module.forward, predictors=predictors))
    try:
        return timed(partial(module.classify_timeline, [str(video)], window, stride))[1]
    finally:
        del module.timeline_model


class HeadTimer:
    """Seconds spent in videotag's AttentionLSTM (`attention_lstm`, run once per window), summed."""

    def __init__(self, module):
        self.seconds, self.calls, self.run = 0.0, 0, module.attention_lstm
        module.attention_lstm = self

    def __call__(self, *args):
        result, seconds = timed(partial(self.run, *args))
        self.seconds, self.calls = self.seconds + seconds, self.calls + 1
        return result

    def reset(self) -> None:
        self.seconds, self.calls = 0.0, 0


def bench_module(name: str, video: Path, frames: int, window: float, before: bool = False) -> list[dict]:
    """Warm `classify` of `video`, then its timelines at each stride: seconds per distinct analysed frame
    (`before`: also the seconds of the window-by-window timeline)."""
    module = load_module(name)
    module.classify([str(video)])  # converts and loads the model, warms the predictor
    if name in WHOLE_VIDEO:  # the same for the video context's programs, on one window's worth
        module.classify_timeline([str(video)], window, context="video")
    head = HeadTimer(module) if hasattr(module, "attention_lstm") else None
    _, classify_first_s = timed(lambda: module.classify([str(video)]))
    classify_frames = len(set(module.sampling()(frames)))
    rows = []
    for fraction in STRIDE_FRACTIONS:
        stride = window * fraction
        found = counts(name, planned(module, video, window, stride))
        if head:
            head.reset()
        exact, timeline_s = timelines(module, video, window, stride, "window")
        assert len(exact) == found["windows"]
        rows.append({"module": name, "context": "window", "window_s": window, "stride_s": stride, **found,
                     "timeline_s": timeline_s, "timeline_s_per_frame": timeline_s / found["distinct_frames"],
                     "classify_distinct_frames": classify_frames})
        if head:
            rows[-1].update(head_s=head.seconds, head_calls=head.calls)
        if before:
            rows[-1]["window_by_window_s"] = window_by_window(module, video, window, stride)
        if name in WHOLE_VIDEO:
            grid = grid_counts(module, video, window, stride)
            whole, whole_s = timelines(module, video, window, stride, "video")
            rows.append({"module": name, "context": "video", "window_s": window, "stride_s": stride, **grid,
                         "timeline_s": whole_s, "timeline_s_per_frame": whole_s / grid["distinct_frames"],
                         "classify_distinct_frames": classify_frames, **deviation(exact, whole)})
    # Once before and once after the timelines, the mean: the load of a shared machine moves meanwhile.
    _, classify_last_s = timed(lambda: module.classify([str(video)]))
    classify_s = (classify_first_s + classify_last_s) / 2
    for row in rows:
        ratio = row["timeline_s_per_frame"] / (classify_s / classify_frames)
        row.update(classify_s=classify_s, classify_runs_s=[classify_first_s, classify_last_s],
                   classify_s_per_frame=classify_s / classify_frames, ratio=ratio, goal_met=ratio <= GOAL)
    return rows


def exact_bound(row: dict, positions: int) -> float:
    """The least ratio a bit-for-bit StNet timeline could reach even if its windows' segments fell on one grid
    of `positions` segments (they do not: each window samples from its own first frame): each segment's work
    up to res3 done once, the rest (WHOLE_VIDEO's share) once per window, as the zeros at each window's own
    ends make it that window's."""
    share = WHOLE_VIDEO[row["module"]]
    return (1 - share) + share * row["segments"] / positions


def bench_deviation(name: str, window: float) -> list[dict]:
    """The video context against the exact one on each of DEVIATION_CLIPS, windows every 1/4 window."""
    module = load_module(name)
    found = []
    for content, seconds in DEVIATION_CLIPS:
        video = cached_video(content, seconds, 640, 360, codec="h264")[0]
        exact, _ = timelines(module, video, window, window / 4, "window")
        whole, _ = timelines(module, video, window, window / 4, "video")
        found.append({"module": name, "clip": f"{content} {seconds} s", **deviation(exact, whole)})
    return found


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), as `lscpu` gives it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            return next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "unknown")
    except OSError:
        return "unknown"


def table(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    lines = ["| module | context | stride | windows | distinct frames (sampled in all) | classify s/frame "
             "| timeline s/frame | timeline / classify |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "positions" in r:
            frames = f"{r['distinct_frames']} (grid positions {r['positions']})"
        else:
            segments = f"; segments {r['distinct_segments']} of {r['segments']}" if "segments" in r else ""
            frames = f"{r['distinct_frames']} ({r['sampled_frames']}{segments})"
        lines.append(f"| {r['module']} | {r['context']} | {r['stride_s']:g} s of {r['window_s']:g} s | {r['windows']} "
                     f"| {frames} | {r['classify_s_per_frame']:.3f} | {r['timeline_s_per_frame']:.3f} | "
                     f"{r['ratio']:.2f} {'ok' if r['goal_met'] else 'MISSED'} |")
    return "\n".join(lines)


def deviation_line(r: dict) -> str:
    """One line of the video context's deviation from the exact mode."""
    where = r.get("clip") or f"bench clip, stride {r['stride_s']:g} s"
    return (f"{r['module']} video vs window context, {where}: {r['windows_compared']} windows, max |dp| "
            f"{r['max_abs_dp']:.4f} (a window's, on average {r['mean_window_max_abs_dp']:.4f}), top-1 agreement "
            f"{r['top1_agreement']:.0%}, top-5 overlap {r['top5_overlap']:.0%}")


def memory_worker(video: str, context: str) -> None:
    """In a fresh process: StNet's timeline of `video` in 10 s windows (every 5 s with the video context),
    then this process's peak RSS; with the video context also where it goes (`PhaseProbe`)."""
    stride = 5 if context == "video" else None
    module = load_module("stnet_kinetics400")
    probe = PhaseProbe(module) if context == "video" else None
    (entry,) = module.classify_timeline([video], window_seconds=10, stride_seconds=stride, context=context)
    emit({"video": video, "context": context, "duration": entry["duration"], "windows": len(entry["windows"]),
          "peak_rss_mib": peak_rss_mib(), **(probe.found() if probe else {})})


class PhaseProbe:
    """RSS at the phases of a video-context timeline: once its predictors are made, most held going into the
    sequence program (the chunk's res3 maps, the next chunk's frames decoding), the most it rose in one
    run of it (its activations), and the positions fed per run."""

    def __init__(self, module):
        self.built, self.held, self.rise, self.fed = 0.0, 0.0, 0.0, 0
        make = type(module).sequence_model

        def sequence_model(use_gpu: bool):
            model = make(module, use_gpu)
            self.built = self.built or current_rss_mib()
            return model._replace(features=partial(self.features, model.features))

        module.sequence_model = sequence_model

    def features(self, run, inputs):
        held, peak = current_rss_mib(), peak_rss_mib()
        rows = run(inputs)
        self.held, self.fed = max(self.held, held), max(self.fed, len(inputs))
        if peak_rss_mib() > peak:  # else this run's rise is hidden under an earlier peak (a conversion's)
            self.rise = max(self.rise, peak_rss_mib() - held)
        return rows

    def found(self) -> dict:
        return {"predictors_built_mib": self.built, "held_before_sequence_mib": self.held,
                "sequence_rise_mib": self.rise, "positions_per_run": self.fed}


def bench_memory() -> list[dict]:
    """Peak RSS of a timeline of each of MEMORY_SECONDS long clips in each context, one process each."""
    videos = [cached_video("scene", seconds, 640, 360, codec="h264")[0] for seconds in MEMORY_SECONDS]
    return [run_json([sys.executable, __file__, "--worker", str(video), "--context", context])
            for context in ("window", "video") for video in videos]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--window", type=float, default=5.0)
    parser.add_argument("--only", choices=MODULE_NAMES, help="one module only")
    parser.add_argument("--before", action="store_true",
                        help="also time each timeline window by window, as before the feature cache")
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--context", default="window", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return memory_worker(args.worker, args.context)
    video, frames, _ = cached_video("scene", args.seconds, 640, 360, codec="h264")
    names = [args.only] if args.only else list(MODULE_NAMES)
    with tempfile.TemporaryDirectory(prefix="bench-timeline-") as work:
        prepare_environment(Path(work))
        load_before = load_average()
        rows = [] if args.memory else [row for name in names
                                       for row in bench_module(name, video, frames, args.window, args.before)]
        deviations = [] if args.memory else [row for name in names if name in WHOLE_VIDEO
                                             for row in bench_deviation(name, args.window)]
        memory = bench_memory() if args.memory else []
    if rows:
        print(f"CPU: {cpu_name()}, load average {load_before} -> {load_average()}")
        print(table(rows))
        for r in {r["module"]: r for r in rows}.values():
            print(f"{r['module']}: classify {r['classify_runs_s'][0]:.1f} s before the timelines, "
                  f"{r['classify_runs_s'][1]:.1f} s after ({r['classify_distinct_frames']} distinct frames)")
        for r, grid in pairwise(rows):
            if r["module"] in WHOLE_VIDEO and r["context"] == "window" and grid.get("context") == "video":
                share = WHOLE_VIDEO[r["module"]]
                print(f"{r['module']}, stride {r['stride_s']:g} s, window context: {r['distinct_segments']} distinct "
                      f"of {r['segments']} segments, so nothing to reuse bit for bit; with the windows on one grid "
                      f"({grid['positions']} segments) only the work up to res3 could be shared ({share:.0%} of it "
                      f"is after, where each window sees zeros at its own ends): at best "
                      f"{exact_bound(r, grid['positions']):.2f}")
        for r in [*(r for r in rows if "max_abs_dp" in r), *deviations]:
            print(deviation_line(r))
        for r in rows:
            if "head_s" in r:
                print(f"{r['module']}, stride {r['stride_s']:g} s: AttentionLSTM {r['head_s']:.1f} s in "
                      f"{r['head_calls']} runs (one per window)")
            if "window_by_window_s" in r:
                print(f"{r['module']}, stride {r['stride_s']:g} s: window by window {r['window_by_window_s']:.1f} s, "
                      f"now {r['timeline_s']:.1f} s")
    for row in memory:
        print(f"StNet timeline ({row['context']} context), {row['duration']:.0f} s clip, {row['windows']} windows: "
              f"peak RSS {row['peak_rss_mib']:.0f} MiB")
        if "sequence_rise_mib" in row:
            print(f"  predictors made: {row['predictors_built_mib']:.0f} MiB; going into the sequence program at "
                  f"most {row['held_before_sequence_mib']:.0f} MiB; a run of it ({row['positions_per_run']} "
                  f"positions at most) rose by up to {row['sequence_rise_mib']:.0f} MiB")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    results = RESULTS.with_name("timeline_memory.json") if args.memory else RESULTS
    machine = {**machine_info(), "cpu": cpu_name()}
    results.write_text(json.dumps({"video": str(video), "machine": machine, "rows": rows, "memory": memory,
                                   "deviations": deviations,
                                   "load_average": [load_before, load_average()]}, indent=2))


if __name__ == "__main__":
    main()
