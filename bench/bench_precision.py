"""Benchmark: bf16 against fp32 (runtime.precision): agreement, speed, memory, cold start.

Usage (from the repository root; `python bench/run_all.py` runs this section with the others):

    python bench/bench_precision.py               # 24 clips for agreement, a 10 s clip for speed
    python bench/bench_precision.py --videos 8    # fewer clips
    python bench/bench_precision.py --only speed --repeats 3

Needs a CPU with avx512_bf16 or amx_bf16 and OpenVINO (`pip install -e ".[bf16]"`); elsewhere it
says so and measures nothing. Every measurement runs in its own subprocess.

- agreement: per module, `--videos` generated camera-like clips (2 s, 320x240 H.264, each its own
  landscape, grain and moving object), each classified in fp32 and in bf16 in one process from the
  same decoded frames: max |p_bf16 - p_fp32| over the classes, whether the top-1 class is the same,
  whether the top-5 sets are equal, whether fp32's top-1 is in bf16's top 5.
- speed: per module and precision, the default settings (threads: the usable CPUs) on a 10 s
  640x360 clip: videos per hour (best of `--repeats` warm calls), the ratio bf16 / fp32, and the
  process's CPU seconds per call (steadier than wall time on shared cores);
  memory per model copy (RSS after loading the predictors minus before, and after the first call:
  oneDNN adds its reordered copy of the fp32 weights then); cold start: the load
  with an empty cache for that precision (fp32: the .pdparams conversion; bf16: the ONNX export on
  top of it) and with the cache filled.

The weights are the bench's seeded random weights: the agreement says how far bf16 moves these
networks' outputs on this footage, not how the publisher's trained weights fare (not measured:
they cannot be downloaded here). Results are printed and written to bench/results/precision.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common_setup import (
    MODULES,
    RESULTS_DIR,
    VIDEO_CACHE,
    cached_video,
    current_rss_mib,
    emit,
    machine_info,
    peak_rss_mib,
    prepare_environment,
    run_json,
    timed,
)

RESULTS = RESULTS_DIR / "precision.json"
CLIP = (2, 320, 240, 30)  # seconds, width, height, fps of each agreement clip


# --- generated footage ---------------------------------------------------------------------------


def varied_scene(seed: int, width: int, height: int):
    """`common_setup.scene_frames` with its own seed: landscape, pan speed, grain and object differ per clip."""
    import cv2

    rng = np.random.default_rng(1000 + seed)
    coarse = rng.integers(0, 256, (height // 8, width * 3 // 8, 3), dtype=np.uint8)
    landscape = cv2.resize(coarse, (width * 3, height + 40), interpolation=cv2.INTER_CUBIC)
    grain = rng.normal(0, rng.uniform(1, 6), (8, height, width, 3)).astype(np.int16)
    side, colour = int(rng.integers(8, min(width, height) // 3)), tuple(int(c) for c in rng.integers(0, 256, 3))
    pan, bob = int(rng.integers(1, 8)), rng.uniform(5, 20)

    def frame(i: int) -> np.ndarray:
        x, y = (i * pan) % (2 * width), int(20 + bob * np.sin(i / 40))
        out = landscape[y : y + height, x : x + width].astype(np.int16) + grain[i % 8]
        px, py = (i * 9) % (width - side), (i * 5) % (height - side)
        out[py : py + side, px : px + side] = colour
        return np.clip(out, 0, 255).astype(np.uint8)

    return frame


def agreement_clips(count: int) -> list[Path]:
    """`count` generated clips, written once into bench/results/videos/."""
    from common_setup import _write_pyav

    seconds, width, height, fps = CLIP
    paths = []
    for seed in range(count):
        path = VIDEO_CACHE / f"precision_scene{seed}_{width}x{height}_{seconds}s.mp4"
        if not path.is_file():
            VIDEO_CACHE.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.stem}.tmp.mp4")
            frames = map(varied_scene(seed, width, height), range(seconds * fps))
            _write_pyav(tmp, frames, fps, width, height, "h264")
            tmp.replace(path)
        paths.append(path)
    return paths


# --- workers (run in their own process) ---------------------------------------------------------


def top5(probs: np.ndarray) -> list[int]:
    return np.argsort(-probs, kind="stable")[:5].tolist()


def agreement_worker(module: str, videos: list[str]) -> None:
    from common_setup import load_module

    fp32 = load_module(module)
    bf16 = fp32.with_precision("bf16")
    rows = []
    for video in videos:
        frames = fp32.preprocess(video)
        reference = fp32.forward(frames, fp32.predictors(False))
        probs = bf16.forward(frames, bf16.predictors(False))
        rows.append({
            "video": Path(video).name,
            "max_abs_dp": float(np.abs(probs - reference).max()),
            "top1_fp32": int(np.argmax(reference)), "top1_bf16": int(np.argmax(probs)),
            "top1_p_fp32": float(reference.max()),
            "top1_same": bool(np.argmax(reference) == np.argmax(probs)),
            "top5_same_set": set(top5(reference)) == set(top5(probs)),
            "fp32_top1_in_bf16_top5": int(np.argmax(reference)) in top5(probs),
        })
    emit({"videos": rows})


def speed_worker(module: str, precision: str, video: str, repeats: int) -> None:
    from common_setup import load_module

    instance = load_module(module, {"runtime": {"precision": precision}})
    before = current_rss_mib()
    _, load_s = timed(lambda: instance.predictors(False))
    loaded = current_rss_mib()
    _, first_s = timed(lambda: instance.classify([video]))
    used = current_rss_mib()  # oneDNN reorders fp32 weights at the first run: count that too
    calls = []
    for _ in range(max(1, repeats)):
        cpu = time.process_time()
        calls.append((timed(lambda: instance.classify([video]))[1], time.process_time() - cpu))
    best, best_cpu = min(calls)
    emit({"precision": instance.precision(), "load_s": load_s, "first_call_s": first_s, "call_s": best,
          "call_cpu_s": best_cpu,
          "videos_per_hour": 3600 / best, "model_copy_mib": loaded - before,
          "after_first_call_mib": used - before, "peak_rss_mib": peak_rss_mib(),
          "threads": instance.predictors(False)[next(iter(instance.bundle().models))].cpu_threads})


def _worker_command(*args: object) -> list[str]:
    return [sys.executable, __file__, "--worker", *map(str, args)]


# --- sections ---------------------------------------------------------------------------------


def summarize(rows: list[dict]) -> dict:
    """Agreement figures over a module's videos."""
    n = len(rows)
    return {
        "videos": n,
        "max_abs_dp": max(r["max_abs_dp"] for r in rows),
        "median_max_abs_dp": float(np.median([r["max_abs_dp"] for r in rows])),
        "top1_agreement": sum(r["top1_same"] for r in rows) / n,
        "top5_set_agreement": sum(r["top5_same_set"] for r in rows) / n,
        "fp32_top1_in_bf16_top5": sum(r["fp32_top1_in_bf16_top5"] for r in rows) / n,
        "median_top1_p_fp32": float(np.median([r["top1_p_fp32"] for r in rows])),
    }


def bench_agreement(count: int, modules=MODULES) -> dict:
    videos = [str(p) for p in agreement_clips(count)]
    out = {}
    for module in modules:
        rows = run_json(_worker_command("agreement", module, *videos))["videos"]
        out[module] = {"summary": summarize(rows), "videos": rows}
        s = out[module]["summary"]
        print(f"  agreement {module} over {s['videos']} clips: max |dp| {s['max_abs_dp']:.2e}, top-1 "
              f"{s['top1_agreement']:.0%}, top-5 set {s['top5_set_agreement']:.0%}, fp32 top-1 in bf16 top-5 "
              f"{s['fp32_top1_in_bf16_top5']:.0%}", flush=True)
    return out


def bench_speed(video: Path, repeats: int, modules=MODULES) -> dict:
    """Per module: fp32 with an empty cache, fp32 cached, bf16 (ONNX export), bf16 cached. Call it on a fresh
    cache (prepare_environment) for the cold-start figures."""
    out = {}
    for module in modules:
        runs = {}
        for precision in ("fp32", "bf16"):
            fresh = run_json(_worker_command("speed", module, precision, video, repeats))
            cached = run_json(_worker_command("speed", module, precision, video, repeats))
            runs[precision] = {"fresh_cache": fresh, "cached": cached,
                               "videos_per_hour": max(fresh["videos_per_hour"], cached["videos_per_hour"])}
        fp32, bf16 = runs["fp32"], runs["bf16"]
        cpu_ratio = min(fp32["fresh_cache"]["call_cpu_s"], fp32["cached"]["call_cpu_s"]) / min(
            bf16["fresh_cache"]["call_cpu_s"], bf16["cached"]["call_cpu_s"])
        out[module] = {**runs, "speed_ratio": bf16["videos_per_hour"] / fp32["videos_per_hour"],
                       "cpu_time_ratio": cpu_ratio}
        copy32, copy16 = fp32["cached"], bf16["cached"]
        print(f"  speed {module}: fp32 {fp32['videos_per_hour']:.0f} videos/h, bf16 {bf16['videos_per_hour']:.0f} "
              f"videos/h ({out[module]['speed_ratio']:.2f}x; CPU time {cpu_ratio:.2f}x); "
              f"model copy fp32 {copy32['model_copy_mib']:.0f} MiB "
              f"({copy32['after_first_call_mib']:.0f} after a call), bf16 {copy16['model_copy_mib']:.0f} MiB "
              f"({copy16['after_first_call_mib']:.0f}); load "
              f"fresh/cached fp32 {fp32['fresh_cache']['load_s']:.1f}/{fp32['cached']['load_s']:.1f} s, bf16 "
              f"{bf16['fresh_cache']['load_s']:.1f}/{bf16['cached']['load_s']:.1f} s", flush=True)
    return out


def cpu_model() -> str:
    """The CPU's model name and whether it has native bf16 (what the figures were measured on)."""
    from paddlehub_video.cpus import BF16_FLAGS, cpu_flags

    text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    name = next((line.partition(":")[2].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    return f"{name} ({', '.join(sorted(cpu_flags() & set(BF16_FLAGS))) or 'no native bf16'})"


def bf16_unavailable() -> str | None:
    """Why bf16 cannot be measured on this machine, or None."""
    from paddlehub_video.cpus import has_native_bf16
    from paddlehub_video.model.openvino_engine import engine_problem

    if not has_native_bf16():
        return "this CPU has no avx512_bf16 or amx_bf16"
    return engine_problem()


def bench_precision(videos: int, repeats: int, modules=MODULES, only: str | None = None) -> dict:
    """Both sections (on the caller's fresh conversion cache), or the reason they cannot run here."""
    reason = bf16_unavailable()
    if reason:
        print(f"  precision: skipped, {reason}", flush=True)
        return {"skipped": reason}
    out = {}
    if only in (None, "speed"):
        out["speed"] = bench_speed(cached_video("scene", 10, 640, 360, 30, "h264")[0], repeats, modules)
    if only in (None, "agreement"):
        out["agreement"] = bench_agreement(videos, modules)
    return out


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--videos", type=int, default=24, help="clips for the agreement (default 24)")
    parser.add_argument("--repeats", type=int, default=1, help="warm calls per speed run (default 1)")
    parser.add_argument("--modules", default=",".join(MODULES))
    parser.add_argument("--only", choices=("speed", "agreement"), help="run one section")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, module, *rest = args.worker
        if kind == "agreement":
            agreement_worker(module, rest)
        else:
            speed_worker(module, rest[0], rest[1], int(rest[2]))
        return

    prepare_environment(Path(tempfile.mkdtemp(prefix="paddlehub-video-bench-")))
    started = time.perf_counter()
    results = {"meta": {**machine_info(), "cpu": cpu_model()}}
    results.update(bench_precision(args.videos, args.repeats, tuple(args.modules.split(",")), args.only))
    results["total_s"] = time.perf_counter() - started
    print(json.dumps({k: v for k, v in results.items() if k != "agreement"}, indent=2))
    target = RESULTS.with_name(f"precision_{args.only}.json") if args.only else RESULTS
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
