"""Every benchmark of issue 5 in one command: prints a table, writes bench/results/all.json.

Usage (from the repository root):

    python bench/run_all.py             # everything, ~20-25 min on 2 cores (first run: + ~3 min of video writing)
    python bench/run_all.py --quick     # no 10-minute video, smaller sweep, 50 calls: ~10 min
    python bench/run_all.py --threads 2 # runtime.cpu_threads for every section but the sweep

Sections, in this order (each also runs alone: bench_decode.py, bench_models.py, bench_memory.py):

1. decode: 60 s 1280x720 clips (noise mp4v, camera-like H.264, interlaced MPEG-2, AV1), ours vs read-every-frame.
2. cold start: process start to first result, with an empty conversion cache, then a filled one.
3. TSN sweep: 1 and 2 threads x 1/2/5/10/30 frames per run on a subset of frames, each in its own
   process with its own sgemm measurement and peak RSS.
4. videotag stages: decode, TSN (300 frames) vs sgemm in the same process, LSTM, end-to-end batch.
5. StNet per video.
6. peak RSS of classifying generated 10 s, 60 s and 10 min 1920x1080 30 fps clips.
7. RSS over 200 consecutive classify calls on a short clip with a small seg_num.
8. timelines (bench_timeline.py): 5 s windows every 1/2 and 1/4 of a window over a 20 s 640x360 H.264 clip,
   time per distinct analysed frame against `classify`'s, both modules (~10 min on 2 cores).
9. URL input: StNet's preprocess of a clip given as a file, as bytes, as a URL (range and no-range
   server on 127.0.0.1): time and bytes read (bench_url_input.py).
10. precision (bench_precision.py): bf16 vs fp32 agreement over generated clips (24, --quick 8), videos per
   hour of both, memory per model copy, cold start; skipped on a CPU without bf16. Here the fp32
   conversion is already cached by the sections before, so its "fresh" load is not a conversion.

Random weights in the publisher's format are used (nothing is downloaded); numbers are for speed
and memory only. Ratios (TSN / sgemm, end-to-end / TSN) are computed within one run; the machine's
load averages at the start and the end are recorded next to them.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench_decode import CLIPS, bench_decode
from bench_memory import LENGTHS, bench_calls, bench_cold_start, bench_rss, short_clip
from bench_models import bench_stnet, bench_tsn_sweep, bench_videotag, tsn_model_prefix
from bench_precision import bench_precision
from bench_timeline import GOAL, MODULE_NAMES, bench_module
from bench_url_input import bench_url_input
from common_setup import (
    MODULES,
    RESULTS_DIR,
    cached_video,
    load_average,
    machine_info,
    module_defaults,
    prepare_environment,
)

RESULTS = RESULTS_DIR / "all.json"
GB = 1e9 / 2**20  # MiB in 1.5e9 bytes / 1.5
TARGETS = {
    "tsn_fraction_of_sgemm": 0.85,
    "end_to_end_over_tsn": 1.15,
    "decode_speedup": 3.0,
    "peak_rss_mib": 1.5 * GB,
    "rss_growth_mib": 16.0,  # "flat": median of the last 20 calls within 16 MiB of the first 20
    "timeline_over_classify_per_frame": GOAL,
}
TIMELINE_CLIP = (20, 5.0)  # seconds of the clip, seconds of a window


def _ok(passed: bool) -> str:
    return "ok" if passed else "MISSED"


def decode_rows(d: dict) -> list[tuple[str, str, str, str]]:
    """Summary rows of one clip of the decode section."""
    rows = []
    methods = d["methods"]
    if "seconds" in methods["read_all"]:
        rows.append((f"decode {d['clip']}: read-every-frame", f"{methods['read_all']['seconds']:.2f} s, "
                     f"peak {methods['read_all']['peak_rss_mib']:.0f} MiB", "", ""))
    rows.append((f"decode {d['clip']}: ours (stream)", f"{methods['stream']['seconds']:.2f} s, "
                 f"peak {methods['stream']['peak_rss_mib']:.0f} MiB", "", ""))
    if "speedup_vs_read_all" in d:
        read_all, full = methods["read_all"], methods["stream_full"]
        rows.append(("  decode+sampling only (300 full frames)", f"read-every-frame {read_all['sample_seconds']:.2f} s,"
                     f" ours {full['sample_seconds']:.2f} s", "", ""))
        for key, what in (("sampling_speedup_vs_read_all", "decode+sampling speed-up (TSN)"),
                          ("speedup_vs_read_all", "decode+sampling+preprocess speed-up (TSN)"),
                          ("stnet_sampling_speedup_vs_read_all", "decode+sampling speed-up (StNet)")):
            rows.append((f"  {what}", f"{d[key]:.2f}x", ">= 3x", _ok(d[key] >= TARGETS["decode_speedup"])))
    return rows


def table_rows(r: dict) -> list[tuple[str, str, str, str]]:
    """(measure, value, target, verdict) rows of the summary table."""
    rows = []
    for d in r["decode"]:
        rows += decode_rows(d)

    v = r["videotag"]
    rows.append((f"sgemm, {v['threads']} thread(s)", f"{v['sgemm_gflops']:.0f} GFLOP/s", "", ""))
    fraction = v["tsn_fraction_of_sgemm"]
    rows.append((f"TSN 300 frames, {v['threads']} thr, batch {v['frames_per_batch']}",
                 f"{v['tsn_s']:.1f} s = {v['tsn_frames_per_s']:.2f} frames/s = {v['tsn_gflops']:.0f} GFLOP/s", "", ""))
    rows.append(("TSN / sgemm", f"{fraction:.3f}", ">= 0.85", _ok(fraction >= TARGETS["tsn_fraction_of_sgemm"])))
    for s in r.get("tsn_sweep", []):
        rows.append((f"  sweep: {s['threads']} thr, batch {s['frames_per_batch_asked']} ({s['frames']} frames)",
                     f"{s['frames_per_s']:.2f} frames/s, {s['fraction_of_sgemm']:.3f} of {s['sgemm_gflops']:.0f}, "
                     f"peak {s['peak_rss_mib']:.0f} MiB", ">= 0.85", _ok(s["fraction_of_sgemm"] >= 0.85)))
    rows.append(("decode+preprocess, 60 s 720p (videotag)", f"{v['decode_preprocess_s']:.2f} s", "", ""))
    rows.append(("AttentionLSTM, 300 steps", f"{v['lstm_s'] * 1000:.0f} ms", "", ""))
    rows.append((f"videotag end-to-end, batch of {v['batch_videos']}",
                 f"{v['end_to_end_batch_s']:.1f} s = {v['end_to_end_per_video_s']:.1f} s/video", "", ""))
    ratio = v["end_to_end_over_tsn"]
    rows.append(("TSN 300 frames again, after the batch", f"{v['tsn_after_batch_s']:.1f} s", "", ""))
    rows.append(("videotag end-to-end / TSN stage (mean of both)", f"{ratio:.3f}", "<= 1.15",
                 _ok(ratio <= TARGETS["end_to_end_over_tsn"])))
    st = r["stnet"]
    rows.append((f"StNet network, {st['threads']} thr", f"{st['network_s']:.2f} s/video", "", ""))
    rows.append(("StNet end-to-end (60 s 720p)", f"{st['end_to_end_per_video_s']:.2f} s/video", "", ""))

    for module, runs in r["rss_vs_length"]["runs"].items():
        for label, run in runs.items():
            # README's bound holds for every clip, a second video in the same process included.
            target, verdict = "<= 1431 MiB (1.5 GB)", _ok(run["peak_rss_mib"] <= TARGETS["peak_rss_mib"])
            rows.append((f"peak RSS {module}, 1080p {label}", f"{run['peak_rss_mib']:.0f} MiB "
                         f"({run['seconds']:.1f} s)", target, verdict))
    for module, c in r["rss_over_calls"].items():
        growth = c["median_last20_mib"] - c["median_first20_mib"]
        rows.append((f"RSS over {c['calls']} calls {module} (seg_num {c['seg_num']})",
                     f"first {c['first_mib']:.0f}, last {c['last_mib']:.0f}, max {c['max_mib']:.0f} MiB; "
                     f"growth {growth:+.1f}", "growth <= 16 MiB", _ok(growth <= TARGETS["rss_growth_mib"])))
    rows += precision_rows(r.get("precision", {}))
    for t in r.get("timeline", []):
        rows.append((f"timeline {t['module']}, {t['window_s']:g} s windows every {t['stride_s']:g} s",
                     f"{t['ratio']:.2f} per distinct frame ({t['timeline_s']:.1f} s for {t['distinct_frames']} "
                     f"frames; classify {t['classify_s']:.1f} s for {t['classify_distinct_frames']})",
                     f"<= {GOAL}", _ok(t["goal_met"])))
    for module, c in r["cold_start"].items():
        cached, fresh = c["cached"], c["fresh_cache"]
        rows.append((f"cold start {module}", f"first result {cached['first_result_s']:.1f} s "
                     f"(import paddlehub {cached['import_paddlehub_s']:.1f} s, models loaded "
                     f"{cached.get('models_loaded_s', float('nan')):.1f} s), warm call "
                     f"{cached['warm_call_s']:.1f} s", "", ""))
        rows.append((f"  start-up overhead {module}", f"{cached['startup_overhead_s']:.1f} s", "", ""))
        rows.append((f"  one-time conversion {module}", f"{c.get('conversion_s', float('nan')):.1f} s "
                     f"(first result with it {fresh['first_result_s']:.1f} s)", "", ""))
    u = r.get("url_input")
    for name, run in (u["runs"].items() if u else ()):
        rows.append((f"StNet preprocess from {name} ({u['file_bytes'] / 2**20:.1f} MiB clip)",
                     f"{run['seconds']:.2f} s ({run['time_vs_local_file']:.2f}x the file), "
                     f"{run['process_read_bytes'] / 2**20:.1f} MiB read, {run['server_sent_bytes'] / 2**20:.1f} "
                     f"MiB sent", "", ""))
    return rows


def precision_rows(p: dict) -> list[tuple[str, str, str, str]]:
    """Summary rows of the precision section (bf16 vs fp32)."""
    if "skipped" in p:
        return [("bf16 (runtime.precision)", f"skipped: {p['skipped']}", "", "")]
    rows = []
    for module, s in p.get("speed", {}).items():
        fp32, bf16 = s["fp32"]["cached"], s["bf16"]["cached"]
        rows.append((f"bf16 / fp32 videos per hour {module}", f"{s['speed_ratio']:.2f}x "
                     f"({s['bf16']['videos_per_hour']:.0f} vs {s['fp32']['videos_per_hour']:.0f})", "", ""))
        rows.append((f"  model copy {module}", f"fp32 {fp32['after_first_call_mib']:.0f} MiB, "
                     f"bf16 {bf16['after_first_call_mib']:.0f} MiB (after one call)", "", ""))
        rows.append((f"  cold load {module} (empty / filled cache)", f"fp32 {s['fp32']['fresh_cache']['load_s']:.1f} / "
                     f"{fp32['load_s']:.1f} s, bf16 {s['bf16']['fresh_cache']['load_s']:.1f} / {bf16['load_s']:.1f} s",
                     "", ""))
    for module, a in p.get("agreement", {}).items():
        s = a["summary"]
        rows.append((f"bf16 agreement {module} ({s['videos']} clips)", f"max |dp| {s['max_abs_dp']:.1e}, top-1 "
                     f"{s['top1_agreement']:.0%}, top-5 set {s['top5_set_agreement']:.0%}", "", ""))
    return rows


def print_table(rows: list[tuple[str, str, str, str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    header = ("measure", "value", "target", "")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print(line.format(*header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line.format(*row).rstrip())


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--quick", action="store_true",
                        help="skip the 10-minute video; 40-frame sweep, batch of 2 videos, 50 calls")
    parser.add_argument("--threads", type=int, help="runtime.cpu_threads (default: the modules' config)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calls", type=int, help="consecutive calls of the RSS-flatness run (default 200)")
    args = parser.parse_args()
    calls = args.calls or (50 if args.quick else 200)
    sweep_frames = 40 if args.quick else 100
    batch_videos = 2 if args.quick else 3

    started = time.perf_counter()
    results: dict = {"meta": machine_info(), "quick": args.quick, "threads_arg": args.threads,
                     "defaults": {m: module_defaults(m)["runtime"] for m in MODULES}}
    work = Path(tempfile.mkdtemp(prefix="paddlehub-video-bench-"))
    prepare_environment(work)
    clip_720p = str(cached_video("noise", 60, 1280, 720)[0])
    clip_short = short_clip()

    def section(name: str, fn):
        print(f"[{time.perf_counter() - started:6.0f} s] {name} ...", flush=True)
        results[name] = fn()

    section("decode", lambda: [bench_decode(60, 1280, 720, content, codec) for content, codec in CLIPS])
    section("cold_start", lambda: bench_cold_start(clip_short, args.threads))  # needs the empty cache
    section("tsn_sweep", lambda: bench_tsn_sweep(tsn_model_prefix(), sweep_frames))
    section("videotag", lambda: bench_videotag(clip_720p, args.threads, args.repeats, batch_videos))
    section("stnet", lambda: bench_stnet(clip_720p, args.threads, args.repeats))
    section("rss_vs_length", lambda: bench_rss(LENGTHS[:2] if args.quick else LENGTHS, args.threads))
    section("rss_over_calls", lambda: bench_calls(clip_short, calls, args.threads))
    seconds, window = TIMELINE_CLIP
    timeline_clip, frames, _ = cached_video("scene", seconds, 640, 360, codec="h264")
    section("timeline", lambda: [row for name in MODULE_NAMES
                                 for row in bench_module(name, timeline_clip, frames, window)])
    section("url_input", lambda: bench_url_input(20 if args.quick else 60, args.repeats))
    section("precision", lambda: bench_precision(8 if args.quick else 24, 1))
    results["meta"]["load_average_end"] = load_average()
    results["total_s"] = time.perf_counter() - started

    rows = table_rows(results)
    results["table"] = [dict(zip(("measure", "value", "target", "verdict"), row, strict=True)) for row in rows]
    print(f"\nload average at start {results['meta']['load_average']}, at end "
          f"{results['meta']['load_average_end']}; {results['meta']['cpus']} CPUs; "
          f"total {results['total_s'] / 60:.1f} min\n")
    print_table(rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
