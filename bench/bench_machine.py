"""Using the whole machine: how to spend the cores, and what the defaults give end to end.

    python bench/bench_machine.py                 # every section below
    python bench/bench_machine.py --only split workers   # some sections (SECTIONS)

- split: TSN frames/s with one predictor on all cores vs one predictor per core (clones sharing
  the weights, each on its own frames), against the all-core sgemm measured in the same run;
- hub_run: the default `hub run <module> --input_path <folder>` over a folder of 300-frame clips
  (a subprocess, as a user runs it): videos/hour against what the all-core sgemm allows, start-up
  included (1 clip, N clips) and left out (the N - 1 clips after the first);
- clip_length: a 150-frame clip's classify time over a 300-frame clip's, same size;
- workers: the hub_run row of videotag with one worker (all cores' threads) and one per core, and
  the peak RSS each extra worker adds;
- scaling: the hub_run row of each module on 1, 2, ... all cores (CPU affinity), each with its sgemm;
- cold: process start to first result with the model converted (bench_memory's cold start);
- rss: peak RSS of the default on a 10-minute 1080p video (bench_memory's, one process per module).

Seeded random weights as in every bench section (`common_setup.prepare_environment`); each
number is a ratio within this run.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
from functools import partial
from pathlib import Path

import numpy as np
from bench_memory import bench_cold_start, bench_rss, short_clip
from bench_models import tsn_model_prefix
from common_setup import (
    REPO,
    RESNET101_GFLOP,
    RESULTS_DIR,
    cached_video,
    emit,
    load_average,
    load_module,
    prepare_environment,
    sgemm_gflops,
    timed,
)

SPLIT_FRAMES = 16  # frames per predictor per pass: ~2 s on 2 cores
TSN_FRAMES_PER_VIDEO = 300


def tsn_pass(predictor, frames: int, batch: np.ndarray) -> None:
    """`frames` frames through `predictor`, `len(batch)` at a time."""
    for _ in range(frames // batch.shape[1]):
        predictor.run({"image": batch})


def split_row(prefix: Path, cores: int, split: int) -> float:
    """TSN frames/s with `split` predictors (a first and its clones) of `cores // split` threads each."""
    from paddlehub_video.model.predictor import Predictor

    first = Predictor(prefix, cpu_threads=max(1, cores // split), use_onednn=True)
    predictors = [first] + [first.clone() for _ in range(split - 1)]
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((1, 2, 3, 224, 224), dtype=np.float32) for _ in predictors]
    for predictor, batch in zip(predictors, batches, strict=True):  # warm-up: oneDNN picks its kernels on the first run
        predictor.run({"image": batch})
    best = 0.0
    for _ in range(2):
        threads = [threading.Thread(target=tsn_pass, args=(p, SPLIT_FRAMES, b))
                   for p, b in zip(predictors, batches, strict=True)]
        _, seconds = timed(partial(run_all, threads))
        best = max(best, split * SPLIT_FRAMES / seconds)
    return best


def run_all(threads: list[threading.Thread]) -> None:
    """Start every thread, then wait for all."""
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def bench_split(cores: int) -> dict:
    """One predictor with all threads vs one single-thread predictor per core, same run."""
    prefix = tsn_model_prefix()
    rows = {}
    for split in (1, cores) * 3:  # interleaved: a load change hits both
        rows[split] = max(rows.get(split, 0.0), split_row(prefix, cores, split))
        print(f"split {split}: {rows[split]:.2f} frames/s, load {load_average()}", file=sys.stderr, flush=True)
    sgemm = sgemm_gflops(cores)
    return {
        "cores": cores,
        "sgemm_gflops": sgemm,
        "one_predictor_frames_per_s": rows[1],
        "per_core_predictors_frames_per_s": rows[cores],
        "one_predictor_fraction_of_sgemm": rows[1] * RESNET101_GFLOP / sgemm,
        "per_core_predictors_fraction_of_sgemm": rows[cores] * RESNET101_GFLOP / sgemm,
        "load_average": load_average(),
    }


SECTIONS = ("split", "workers", "hub_run", "clip_length", "scaling", "cold", "rss")
# `hub`, printing its peak RSS (VmHWM, its own: not a parent's carried over) on stderr as it exits.
HUB = [sys.executable, "-c", "import atexit, sys; atexit.register(lambda: print([l for l in open('/proc/self/status') "
       "if l.startswith('VmHWM')][0], file=sys.stderr)); from paddlehub.commands.utils import execute; "
       "sys.exit(execute())"]
GFLOP_PER_VIDEO = {"videotag_tsn_lstm": RESNET101_GFLOP * TSN_FRAMES_PER_VIDEO}  # StNet's: stnet_gflop()


def video_folder(work: Path, videos: int, frames: int = TSN_FRAMES_PER_VIDEO, size=(640, 360)) -> Path:
    """A folder of `videos` links to one generated clip of `frames` frames (30 fps)."""
    clip = cached_video("scene", frames / 30, *size, 30)[0]
    folder = work / f"videos_{videos}x{frames}_{size[0]}x{size[1]}"
    folder.mkdir(exist_ok=True)
    for i in range(videos):
        link = folder / f"clip{i:02d}.mp4"
        if not link.exists():
            link.symlink_to(clip)
    return folder


def hub_run_seconds(module: str, folder: Path, work: Path, cores: int | None = None,
                    workers: int | None = None) -> tuple[float, float]:
    """Wall time of `hub run <module> --input_path <folder>` (defaults unless `workers`), on the first
    `cores` CPUs (all when None), from process start to its exit; and its peak RSS in MiB."""
    hub_home = Path(os.environ["HUB_HOME"])
    (hub_home / "conf").mkdir(parents=True, exist_ok=True)  # PaddleHub's server: a closed local port
    (hub_home / "conf" / "config.yaml").write_text(
        "server: http://127.0.0.1:9/paddlehub\nlog:\n  enable: true\n  level: WARNING\n")
    command = [*HUB, "run", module, "--input_path", str(folder), "--output", str(work / f"{module}.jsonl")]
    if workers is not None:
        command += ["--workers", str(workers)]
    (work / f"{module}.jsonl").unlink(missing_ok=True)
    allowed = sorted(os.sched_getaffinity(0))[:cores] if cores else None
    env = {k: v for k, v in os.environ.items() if k not in ("PADDLEHUB_VIDEO_CPU_THREADS", "PADDLEHUB_VIDEO_WORKERS")}
    proc, seconds = timed(lambda: subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, allowed)) if allowed else None))
    if proc.returncode != 0:
        raise RuntimeError(f"hub run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    peak_kib = [line.split()[1] for line in proc.stderr.splitlines() if line.startswith("VmHWM")][-1]
    return seconds, int(peak_kib) / 1024


def sgemm_on(cores: int) -> float:
    """sgemm GFLOP/s on the first `cores` CPUs of this process, `cores` threads."""
    everything = os.sched_getaffinity(0)
    os.sched_setaffinity(0, sorted(everything)[:cores])
    try:
        return sgemm_gflops(cores)
    finally:
        os.sched_setaffinity(0, everything)


def hub_run_row(module: str, work: Path, videos: int, cores: int | None = None, workers: int | None = None) -> dict:
    """Videos/hour of the default hub run over `videos` 300-frame clips vs the sgemm of the same cores."""
    cores = cores or len(os.sched_getaffinity(0))
    folder = video_folder(work, videos)
    load_module(module).bundle()  # converted once beforehand: the rows time a user's later runs
    sgemm_before = sgemm_on(cores)
    seconds, peak_mib = hub_run_seconds(module, folder, work, cores, workers)
    print(f"  hub run {module}, {cores} cores, workers {workers or 'default'}: {seconds:.1f} s for {videos} videos, "
          f"peak {peak_mib:.0f} MiB", file=sys.stderr, flush=True)
    sgemm = max(sgemm_before, sgemm_on(cores))
    allowed_per_hour = 3600 * sgemm / GFLOP_PER_VIDEO[module]
    return {
        "module": module, "cores": cores, "workers": workers or "default", "videos": videos,
        "seconds": seconds, "peak_rss_mib": peak_mib, "videos_per_hour": 3600 * videos / seconds, "sgemm_gflops": sgemm,
        "sgemm_videos_per_hour": allowed_per_hour,
        "fraction_of_sgemm": 3600 * videos / seconds / allowed_per_hour, "load_average": load_average(),
    }


def hub_run_rows(module: str, work: Path, videos: int) -> dict:
    """The default hub run over 1 clip and over `videos` clips: each row, and the videos/hour of the
    clips after the first ((t_N - t_1) / (N - 1) a clip: start-up left out) against the sgemm."""
    one, many = hub_run_row(module, work, 1), hub_run_row(module, work, videos)
    seconds_per_video = (many["seconds"] - one["seconds"]) / max(1, videos - 1)
    allowed_per_hour = min(one["sgemm_videos_per_hour"], many["sgemm_videos_per_hour"])
    return {"one": one, "many": many, "later_seconds_per_video": seconds_per_video,
            "later_fraction_of_sgemm": 3600 / seconds_per_video / allowed_per_hour if seconds_per_video > 0 else None}


def stnet_gflop() -> float:
    """StNet's GFLOP per video (multiply-adds x 2), counted over its program's convolutions and matmul.

    The program's batch axis is -1: a 2-D convolution runs on the seg_num super-images of one video
    (its batch is B * seg_num), the temporal 3-D and depthwise convolutions and the fc on the video.
    """
    import paddle

    from paddlehub_video.model.networks.stnet import SEG_NUM, build_stnet_program

    paddle.enable_static()
    try:
        main = build_stnet_program()[0]
    finally:
        paddle.disable_static()
    total = 0
    for op in main.global_block().ops:
        name = op.name()
        if name in ("pd_op.conv2d", "pd_op.conv3d", "pd_op.depthwise_conv2d"):
            rows = SEG_NUM if name == "pd_op.conv2d" else 1
            outputs = math.prod(d if d > 0 else rows for d in op.result(0).shape)
            total += 2 * outputs * math.prod(op.operand_source(1).shape[1:])
        elif name == "pd_op.matmul":
            rows = math.prod(d if d > 0 else 1 for d in op.operand_source(0).shape)
            total += 2 * rows * op.operand_source(1).shape[-1]
    return total / 1e9


def bench_clip_length(repeats: int = 2) -> dict:
    """classify of a 150-frame clip over a 300-frame clip of the same size (default config, best of `repeats`)."""
    module = load_module("videotag_tsn_lstm")
    clips = {frames: str(cached_video("scene", frames / 30, 640, 360, 30)[0]) for frames in (150, 300)}
    module.classify([clips[150]])  # load and warm up
    best = {frames: min(timed(partial(module.classify, [clip]))[1] for _ in range(repeats))
            for frames, clip in clips.items()}
    return {"s_150": best[150], "s_300": best[300], "ratio": best[150] / best[300], "load_average": load_average()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=SECTIONS, help="sections to run (default: all)")
    parser.add_argument("--videos", type=int, default=3, help="300-frame clips per videotag hub run (default 3)")
    parser.add_argument("--stnet_videos", type=int, default=20,
                        help="clips per StNet hub run (default 20: StNet takes ~2 s a clip, start-up ~5 s)")
    args = parser.parse_args()
    videos_of = {"videotag_tsn_lstm": args.videos, "stnet_kinetics400": args.stnet_videos}
    from paddlehub_video.cpus import usable_cpus

    cores = usable_cpus()
    with tempfile.TemporaryDirectory(prefix="bench-machine-") as work:
        prepare_environment(Path(work))
        results: dict = {}
        if "split" in args.only:
            results["split"] = bench_split(cores)
        if "workers" in args.only:
            rows = [hub_run_row("videotag_tsn_lstm", Path(work), args.videos, workers=w) for w in (1, cores, 1, cores)]
            peak = {w: min(r["peak_rss_mib"] for r in rows if r["workers"] == w) for w in (1, cores)}
            results["workers"] = {"rows": rows, "peak_rss_mib_per_extra_worker":
                                  (peak[cores] - peak[1]) / (cores - 1) if cores > 1 else None}
        if "hub_run" in args.only:
            GFLOP_PER_VIDEO["stnet_kinetics400"] = stnet_gflop()
            results["hub_run"] = [hub_run_rows(m, Path(work), videos_of[m]) for m in GFLOP_PER_VIDEO]
        if "clip_length" in args.only:
            results["clip_length"] = bench_clip_length()
        if "scaling" in args.only:
            GFLOP_PER_VIDEO["stnet_kinetics400"] = stnet_gflop()
            results["scaling"] = [hub_run_row(m, Path(work), videos_of[m], cores=n)
                                  for m in GFLOP_PER_VIDEO for n in range(1, cores + 1)]
        if "cold" in args.only:
            results["cold_start"] = bench_cold_start(short_clip(), None)
        if "rss" in args.only:
            results["rss_10min_1080p"] = bench_rss([("10 min", 600)], None, small_batch=None)
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        (RESULTS_DIR / "machine.json").write_text(json.dumps(results, indent=1))
        emit(results)


if __name__ == "__main__":
    main()
