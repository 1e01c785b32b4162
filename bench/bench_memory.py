"""Benchmark: peak RSS vs video length, RSS over many calls, cold start and the one-time conversion.

Usage (from the repository root; `python bench/run_all.py` runs this section with the others):

    python bench/bench_memory.py              # 10 s, 60 s and 10 min 1920x1080 30 fps clips
    python bench/bench_memory.py --quick      # without the 10-minute clip
    python bench/bench_memory.py --only rss   # the peak RSS runs alone
    python bench/bench_memory.py --only videos --repeats 5   # many videos in one process

Every measurement runs in its own subprocess (`python bench/bench_memory.py --worker KIND ...`), so
each peak RSS (VmHWM) belongs to one classify run and each start is a real process start.

- rss:   classify one generated 1080p clip; peak RSS of the process, RSS after `import paddlehub`;
         the longest clip (10 minutes; 60 s with --quick) also with 10 TSN frames per run (videotag),
         and in bf16 (runtime.precision) where the CPU has it, and each of those runs classifies it a
         second time in the same process ("second call": the peak after two long videos).
- videos: many videos in one process, as `hub run` over a folder gives them: the 60 s 1080p clip
         two and three times in ONE classify call, and `hub run` over folders of 3 and 20 300-frame
         640x360 clips (links to one clip); each case `--repeats` times, every run a fresh process
         (the peak moves with how decoding and inference fall on the CPUs: the rows are ranges).
- calls: classify a short clip N times in a row (small seg_num, so 200 calls take a minute or two);
         RSS after every call: first, last, max, and the median of the first and last 20 calls.
- cold:  process start (taken by the parent just before it starts the child) -> `import paddlehub`
         -> `hub.Module(...)` -> weights found and converted model loaded -> first result.
         Run first with an empty conversion cache (the one-time conversion of the `.pdparams`),
         then again with the cache filled; the second run also times a warm second call, so the
         start-up overhead is first result minus warm call.

The clips are flat colour gradients with a moving square (cheap to write: the 10-minute 1080p clip,
18000 frames, still takes ~2-3 minutes once; it is kept in bench/results/videos/).
Results are printed and written to bench/results/memory.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from common_setup import (
    MODULES,
    RESULTS_DIR,
    cached_video,
    current_rss_mib,
    emit,
    load_average,
    machine_info,
    peak_rss_mib,
    prepare_environment,
    run_json,
    runtime_config,
    timed,
)

RESULTS = RESULTS_DIR / "memory.json"
LENGTHS = (("10 s", 10), ("60 s", 60), ("10 min", 600))
# Small seg_num for the many-calls run; StNet's is baked into its program (a separate conversion).
SMALL_SEG_NUM = {"videotag_tsn_lstm": 2, "stnet_kinetics400": 1}


def _config(module: str, threads: int | None, seg_num: int | None, frames_per_batch: int | None = None) -> dict:
    config = runtime_config(threads, frames_per_batch)
    if seg_num:
        config["sampling"] = {"seg_num": seg_num}
    return config


def _check(results: list[dict]) -> None:
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise RuntimeError(f"classify failed: {errors}")


# --- workers (run in their own process) ---------------------------------------------------------


def rss_worker(
    module: str, video: str, threads: int | None, frames_per_batch: int | None, precision: str, calls: int,
    videos: int = 1,
) -> None:
    """Classify `video` `calls` times in one process (`videos` copies of it in each call); the peak RSS
    after each call."""
    import paddlehub  # noqa: F401  (what every user process imports first)
    from common_setup import load_module

    imports_mib = current_rss_mib()
    config = _config(module, threads, None, frames_per_batch)
    config.setdefault("runtime", {})["precision"] = precision
    instance = load_module(module, config)
    peaks, times = [], []
    for _ in range(calls):
        results, seconds = timed(lambda: instance.classify([video] * videos))
        _check(results)
        peaks.append(peak_rss_mib())
        times.append(seconds)
    emit({"seconds": times[0], "peak_rss_mib": peaks[0], "calls_seconds": times, "calls_peak_rss_mib": peaks,
          "rss_after_import_paddlehub_mib": imports_mib, "rss_after_mib": current_rss_mib(),
          "frames_per_batch": instance.config["runtime"].get("frames_per_batch"),
          "precision": instance.precision(), "load_average": load_average()})


def calls_worker(module: str, video: str, threads: int | None, calls: int) -> None:
    from common_setup import load_module

    instance = load_module(module, _config(module, threads, SMALL_SEG_NUM[module]))
    rss, start = [], time.perf_counter()
    for _ in range(calls):
        _check(instance.classify([video]))
        rss.append(current_rss_mib())
    seconds = time.perf_counter() - start
    window = min(20, len(rss))
    emit({"calls": calls, "seg_num": SMALL_SEG_NUM[module], "seconds_per_call": seconds / calls,
          "first_mib": rss[0], "last_mib": rss[-1], "max_mib": max(rss), "min_mib": min(rss),
          "median_first20_mib": sorted(rss[:window])[window // 2],
          "median_last20_mib": sorted(rss[-window:])[window // 2],
          "peak_rss_mib": peak_rss_mib(), "rss_mib": [round(v, 1) for v in rss]})


def cold_worker(module: str, video: str, threads: int | None, started: float, warm_call: bool) -> None:
    marks = {"interpreter_s": time.time() - started}
    import paddlehub as hub

    marks["import_paddlehub_s"] = time.time() - started
    from common_setup import REPO

    instance = hub.Module(directory=str(REPO / module), config=_config(module, threads, None))
    marks["module_s"] = time.time() - started
    load = getattr(instance, "bundle", None)  # weights + conversion cache; classify does it too
    if load is not None:
        _, marks["load_models_only_s"] = timed(load)
        marks["models_loaded_s"] = time.time() - started
    results = instance.classify([video])
    marks["first_result_s"] = time.time() - started
    _check(results)
    if warm_call:
        _, marks["warm_call_s"] = timed(lambda: _check(instance.classify([video])))
        marks["startup_overhead_s"] = marks["first_result_s"] - marks["warm_call_s"]
    marks["peak_rss_mib"] = peak_rss_mib()
    emit(marks)


def _worker_command(*args: object) -> list[str]:
    return [sys.executable, __file__, "--worker", *map(str, args)]


# --- sections ---------------------------------------------------------------------------------


def bench_cold_start(video: Path, threads: int | None, modules=MODULES) -> dict:
    """Per module: a run with an empty conversion cache, then one with it filled. Call this first."""
    out = {}
    for module in modules:
        fresh = run_json(_worker_command("cold", module, video, threads or 0, time.time(), 0))
        cached = run_json(_worker_command("cold", module, video, threads or 0, time.time(), 1))
        out[module] = {"fresh_cache": fresh, "cached": cached}
        if "load_models_only_s" in fresh:
            out[module]["conversion_s"] = fresh["load_models_only_s"] - cached["load_models_only_s"]
        print(f"  cold start {module}: first result {cached['first_result_s']:.1f} s "
              f"(start-up overhead {cached['startup_overhead_s']:.1f} s); with conversion "
              f"{fresh['first_result_s']:.1f} s", flush=True)
    return out


def bench_rss(lengths, threads: int | None, modules=MODULES, small_batch: int | None = 10) -> dict:
    """Peak RSS of classifying each 1080p clip, one process per (module, clip).

    The longest clip is also classified by videotag with `small_batch` TSN frames per run, as the
    activation memory of a TSN run grows with its frames, and by each module in bf16 where this CPU
    has it (bench_precision.bf16_unavailable). Each run on the longest clip classifies it twice in
    its process: the row `<clip>, second call` is the peak after the second video (what a process
    serving one long video after another reaches), from the same process as the first call's row.
    """
    from bench_precision import bf16_unavailable

    bf16 = bf16_unavailable() is None
    out = {"videos": {}, "runs": {m: {} for m in modules}}
    for index, (label, seconds) in enumerate(lengths):
        path, frames, wrote_s = cached_video("flat", seconds, 1920, 1080, 30)
        out["videos"][label] = {"path": path.name, "frames": frames, "write_s": wrote_s}
        if wrote_s:
            print(f"  wrote {path.name}: {frames} frames in {wrote_s:.0f} s", flush=True)
        runs = [(module, label, 0, "fp32") for module in modules]
        if index == len(lengths) - 1:
            runs += [(module, f"{label}, bf16", 0, "bf16") for module in modules if bf16]
            if small_batch and "videotag_tsn_lstm" in modules:
                runs.append(("videotag_tsn_lstm", f"{label}, batch {small_batch}", small_batch, "fp32"))
        calls = 2 if index == len(lengths) - 1 else 1
        for module, run_label, batch, precision in runs:
            row = run_json(_worker_command("rss", module, path, threads or 0, batch, precision, calls, 1))
            out["runs"][module][run_label] = row
            print(f"  rss {module} {run_label}: peak {row['peak_rss_mib']:.0f} MiB, {row['seconds']:.1f} s",
                  flush=True)
            if calls > 1:
                second = {**row, "peak_rss_mib": row["calls_peak_rss_mib"][1], "seconds": row["calls_seconds"][1]}
                out["runs"][module][f"{run_label}, second call"] = second
                print(f"  rss {module} {run_label}, second call in the same process: peak "
                      f"{second['peak_rss_mib']:.0f} MiB, {second['seconds']:.1f} s", flush=True)
    return out


def bench_videos(repeats: int, threads: int | None, modules=MODULES) -> dict:
    """Peak RSS of one process over many videos: the 60 s 1080p clip 2 and 3 times in one classify call
    (fp32, and bf16 where this CPU has it), and the default `hub run` over folders of 3 and 20 short
    clips; `repeats` fresh processes each."""
    from bench_machine import hub_run_seconds, video_folder  # bench_machine imports this module
    from bench_precision import bf16_unavailable

    precisions = ("fp32", "bf16") if bf16_unavailable() is None else ("fp32",)

    long_clip = cached_video("flat", 60, 1920, 1080, 30)[0]
    work = Path(tempfile.mkdtemp(prefix="paddlehub-video-bench-videos-"))
    out: dict = {m: {} for m in modules}
    for module in modules:
        for precision in precisions:
            suffix = "" if precision == "fp32" else f", {precision}"
            for videos in (2, 3):
                label = f"{videos} x 60 s in one call{suffix}"
                rows = [run_json(_worker_command("rss", module, long_clip, threads or 0, 0, precision, 1, videos))
                        for _ in range(repeats)]
                out[module][label] = _range(rows)
                _print_range(module, label, out[module][label])
        for videos in (3, 20):
            label = f"hub run, folder of {videos}"
            folder = video_folder(work, videos)
            rows = []
            for _ in range(repeats):
                seconds, peak = hub_run_seconds(module, folder, work)
                rows.append({"peak_rss_mib": peak, "seconds": seconds})
            out[module][label] = _range(rows)
            _print_range(module, label, out[module][label])
    return out


def _range(rows: list[dict]) -> dict:
    """The runs of one case: each peak and time, and their range."""
    peaks = [row["peak_rss_mib"] for row in rows]
    return {"peak_rss_mib": peaks, "min_mib": min(peaks), "max_mib": max(peaks),
            "seconds": [row["seconds"] for row in rows], "load_average": load_average()}


def _print_range(module: str, label: str, row: dict) -> None:
    print(f"  videos {module} {label}: peak {row['min_mib']:.0f}-{row['max_mib']:.0f} MiB over "
          f"{len(row['peak_rss_mib'])} runs ({', '.join(f'{s:.0f}' for s in row['seconds'])} s)", flush=True)


def bench_calls(video: Path, calls: int, threads: int | None, modules=MODULES) -> dict:
    """RSS after each of `calls` consecutive classify calls, one process per module."""
    out = {}
    for module in modules:
        row = run_json(_worker_command("calls", module, video, threads or 0, calls))
        out[module] = row
        print(f"  {calls} calls {module}: RSS first {row['first_mib']:.0f}, last {row['last_mib']:.0f}, "
              f"max {row['max_mib']:.0f} MiB ({row['seconds_per_call']:.2f} s/call)", flush=True)
    return out


def short_clip() -> Path:
    """5 s 640x360 30 fps: the clip of the cold-start and many-calls runs."""
    return cached_video("flat", 5, 640, 360, 30)[0]


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--threads", type=int, help="runtime.cpu_threads (default: the module's config)")
    parser.add_argument("--quick", action="store_true", help="skip the 10-minute clip")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5, help="runs of each many-videos case")
    parser.add_argument("--only", choices=("cold", "rss", "videos", "calls"), help="run one section")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, module, video, threads, *rest = args.worker
        threads = int(threads) or None
        if kind == "rss":
            rss_worker(module, video, threads, int(rest[0]) or None, rest[1], int(rest[2]), int(rest[3]))
        elif kind == "calls":
            calls_worker(module, video, threads, int(rest[0]))
        else:
            cold_worker(module, video, threads, float(rest[0]), bool(int(rest[1])))
        return

    prepare_environment(Path(tempfile.mkdtemp(prefix="paddlehub-video-bench-")))
    clip = short_clip()
    results = {"meta": machine_info()}
    sections = {
        "cold_start": lambda: bench_cold_start(clip, args.threads),
        "rss_vs_length": lambda: bench_rss(LENGTHS[:2] if args.quick else LENGTHS, args.threads),
        "videos_in_one_process": lambda: bench_videos(args.repeats, args.threads),
        "rss_over_calls": lambda: bench_calls(clip, args.calls, args.threads),
    }
    for name, section in sections.items():
        if args.only is None or name.startswith(args.only):
            results[name] = section()
    print(json.dumps(results, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
