"""Benchmark: the networks' stages against the machine's sgemm, and the thread/batch settings.

Usage (from the repository root; `python bench/run_all.py` runs this section with the others):

    python bench/bench_models.py                  # the modules' configured threads and batch
    python bench/bench_models.py --threads 2      # override runtime.cpu_threads
    python bench/bench_models.py --sweep          # also TSN with 1/2 threads x 10/30/100 frames per run

Random weights in the publisher's format are generated (nothing is downloaded), the modules convert
them as on first use, then each stage is timed warm on a 60 s 1280x720 clip: decode+preprocess,
TSN (300 frames), AttentionLSTM, StNet, and end-to-end `classify` of a batch of videos, whose time
is compared with the TSN stage alone, timed just before and just after the batch (decoding the next
video should hide behind inference). The sgemm throughput of numpy's BLAS with the same number of
threads is measured in the same run, so the TSN stage reads as a fraction of the hardware limit
(ResNet-101 = 15.6 GFLOP per 224x224 frame).

The sweep runs each (threads, frames per run) setting in its own subprocess, which measures sgemm
with those threads just before and after its TSN run and reports its own peak RSS.
Results are printed and written to bench/results/models.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from common_setup import (
    RESNET101_GFLOP,
    RESULTS_DIR,
    best_of,
    cached_video,
    emit,
    load_average,
    load_module,
    machine_info,
    module_defaults,
    peak_rss_mib,
    prepare_environment,
    run_json,
    runtime_config,
    sgemm_gflops,
    timed,
)

from paddlehub_video.cpus import default_cpu_threads
from paddlehub_video.decode.preprocess import (
    tensor_batches,
)

RESULTS = RESULTS_DIR / "models.json"
SWEEP_THREADS = (1, 2)
SWEEP_BATCHES = (1, 2, 5, 10, 30)


# --- TSN thread / batch sweep (one subprocess per setting) ------------------------------------


def tsn_worker(model_prefix: str, threads: int, batch: int, frames: int) -> None:
    """In a fresh process: sgemm, TSN over `frames` random frames in runs of `batch` (best of 2), sgemm."""
    from paddlehub_video.model.predictor import Predictor

    sgemm_before = sgemm_gflops(threads)
    predictor = Predictor(model_prefix, use_gpu=False, cpu_threads=threads, use_onednn=True)
    video = np.random.default_rng(0).standard_normal((1, frames, 3, 224, 224), dtype=np.float32)
    chunks = [video[:, i : i + batch] for i in range(0, frames, batch)]
    _, warmup_s = timed(lambda: predictor.run({"image": chunks[0]}))  # oneDNN primitives for this shape
    passes = [timed(lambda: [predictor.run({"image": chunk}) for chunk in chunks])[1] for _ in range(2)]
    seconds = min(passes)  # best of two passes: this machine's cores are shared
    sgemm = max(sgemm_before, sgemm_gflops(threads))
    fps = frames / seconds
    emit({"threads": threads, "frames_per_batch": batch, "frames": frames, "seconds": seconds,
          "passes_s": passes, "warmup_s": warmup_s, "frames_per_s": fps, "gflops": fps * RESNET101_GFLOP,
          "sgemm_gflops": sgemm,
          "fraction_of_sgemm": fps * RESNET101_GFLOP / sgemm, "peak_rss_mib": peak_rss_mib(),
          "load_average": load_average()})


def bench_tsn_sweep(model_prefix: Path, frames: int, threads=SWEEP_THREADS, batches=SWEEP_BATCHES) -> list[dict]:
    """TSN frames/s, fraction of sgemm and peak RSS for every (threads, frames per run) setting."""
    rows = []
    for thread_count in threads:
        for batch in batches:
            command = [sys.executable, __file__, "--tsn-worker", str(model_prefix), str(thread_count),
                       str(min(batch, frames)), str(frames)]
            row = run_json(command)
            row["frames_per_batch_asked"] = batch
            print(f"  tsn sweep threads={thread_count} batch={batch:>3}: {row['frames_per_s']:.2f} frames/s, "
                  f"{row['fraction_of_sgemm']:.2f} of sgemm, peak {row['peak_rss_mib']:.0f} MiB", flush=True)
            rows.append(row)
    return rows


# --- the modules' stages, in this process ---------------------------------------------------


def tsn_model_prefix(threads: int | None = None) -> Path:
    """The converted TSN model (converting it if this HUB_HOME has none yet)."""
    return load_module("videotag_tsn_lstm", runtime_config(threads)).bundle().models["tsn"]


def bench_videotag(clip: str, threads: int | None, repeats: int, batch_videos: int) -> dict:
    """decode, TSN (300 frames), LSTM, and end-to-end classify of `batch_videos` videos vs N x TSN."""
    module = load_module("videotag_tsn_lstm", runtime_config(threads))
    runtime = module.config["runtime"]
    threads = default_cpu_threads(runtime["cpu_threads"])  # what the predictors get (null: automatic)
    _, first_call_s = timed(lambda: module.classify([clip]))  # convert (if needed) + predictors + run
    tsn_model, lstm_model = module.bundle().models.values()
    tsn = module.predictor(tsn_model, False)
    lstm = module.predictor(lstm_model, False, use_onednn=False)
    chunk, pre = runtime["frames_per_batch"], module.config["preprocess"]
    crops, decode_s = timed(lambda: module.preprocess(clip))
    frames = len(crops)
    batches = list(tensor_batches(crops, chunk, pre["mean"], pre["std"]))  # the network alone is timed

    def run_tsn() -> np.ndarray:
        return np.concatenate([tsn.run({"image": batch})[0] for batch in batches], 1)

    features = run_tsn()[0]
    sgemm = sgemm_gflops(threads)
    stages = {
        "threads": threads,
        "frames_per_batch": chunk,
        "frames": frames,
        "first_call_s": first_call_s,
        "decode_preprocess_s": min(decode_s, best_of(lambda: module.preprocess(clip), repeats - 1)),
        "sgemm_gflops": sgemm,
        "tsn_s": best_of(run_tsn, 1),
        "lstm_s": best_of(lambda: lstm.run({"rgb": features}, lod={"rgb": [[0, frames]]}), max(repeats, 5)),
    }
    paths = [clip] * batch_videos
    results, end_to_end_s = timed(lambda: module.classify(paths))
    assert all("error" not in r for r in results), results
    # TSN alone again after the batch: the ratio uses the mean of the runs around it, so a load
    # change on this shared machine during the batch shows up as a gap between the two.
    stages["tsn_after_batch_s"] = timed(run_tsn)[1]
    tsn_bracket_s = (stages["tsn_s"] + stages["tsn_after_batch_s"]) / 2
    sgemm = max(sgemm, sgemm_gflops(threads))
    stages.update({
        "sgemm_gflops": sgemm,
        "tsn_frames_per_s": frames / stages["tsn_s"],
        "tsn_gflops": frames * RESNET101_GFLOP / stages["tsn_s"],
        "tsn_fraction_of_sgemm": frames * RESNET101_GFLOP / stages["tsn_s"] / sgemm,
        "batch_videos": batch_videos,
        "end_to_end_batch_s": end_to_end_s,
        "end_to_end_per_video_s": end_to_end_s / batch_videos,
        "end_to_end_over_tsn": end_to_end_s / (batch_videos * tsn_bracket_s),
        "load_average": load_average(),
    })
    return stages


def bench_stnet(clip: str, threads: int | None, repeats: int) -> dict:
    """StNet: decode, network, and end-to-end classify per video (best of `repeats`)."""
    module = load_module("stnet_kinetics400", runtime_config(threads))
    _, first_call_s = timed(lambda: module.classify([clip]))
    # The network alone (with the uint8 frames' float32 conversion, one window per run), as classify runs it.
    frames = module.preprocess(clip)
    predictors = module.predictors(False)
    return {
        "threads": default_cpu_threads(module.config["runtime"]["cpu_threads"]),
        "first_call_s": first_call_s,
        "decode_preprocess_s": best_of(lambda: module.preprocess(clip), repeats),
        "network_s": best_of(lambda: module.forward(frames, predictors), repeats),
        "end_to_end_per_video_s": best_of(lambda: module.classify([clip]), repeats),
        "load_average": load_average(),
    }


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--threads", type=int, help="runtime.cpu_threads (default: the module's config)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-videos", type=int, default=3, help="videos in the end-to-end batch")
    parser.add_argument("--sweep", action="store_true", help="also the TSN threads x frames-per-run sweep")
    parser.add_argument("--sweep-frames", type=int, default=100)
    parser.add_argument("--tsn-worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tsn_worker:
        prefix, threads, batch, frames = args.tsn_worker
        tsn_worker(prefix, int(threads), int(batch), int(frames))
        return

    prepare_environment(Path(tempfile.mkdtemp(prefix="paddlehub-video-bench-")))
    clip = str(cached_video("noise", 60, 1280, 720)[0])
    results = {"meta": machine_info(), "defaults": {m: module_defaults(m)["runtime"] for m in
                                                    ("videotag_tsn_lstm", "stnet_kinetics400")}}
    if args.sweep:
        results["tsn_sweep"] = bench_tsn_sweep(tsn_model_prefix(), args.sweep_frames)
    results["videotag"] = bench_videotag(clip, args.threads, args.repeats, args.batch_videos)
    results["stnet"] = bench_stnet(clip, args.threads, args.repeats)
    print(json.dumps(results, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
