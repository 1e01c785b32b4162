"""Benchmark: per-stage times of both modules on a 12-second clip, against the machine's sgemm.

Usage (from the repository root):

    python bench/bench_models.py               # threads = 1
    python bench/bench_models.py --threads 2   # predictor and sgemm threads

Random weights in the publisher's format are generated into a temporary HUB_HOME (nothing is
downloaded), the modules convert them as on first use, then each stage is timed warm:
decode+preprocess, TSN (300 frames), AttentionLSTM, StNet, and one end-to-end call per module.
The sgemm throughput of numpy's BLAS with the same number of threads is measured in the same run,
so the TSN stage reads as a fraction of the hardware limit (ResNet-101 = 15.6 GFLOP per 224x224
frame). Results are printed and written to bench/results/models.json.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESNET101_GFLOP = 15.6  # per 224x224 frame, multiply-adds counted as 2 FLOPs


def sgemm_gflops(threads: int, size: int = 2048, repeats: int = 10) -> float:
    """Best-of sgemm throughput of numpy's BLAS limited to `threads` threads."""
    from threadpoolctl import threadpool_limits

    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((size, size), dtype=np.float32)
    with threadpool_limits(threads):
        a @ b
        best = min(_timed(lambda: a @ b)[1] for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def write_clip(path: Path, seconds: float = 12, fps: int = 25, size=(640, 360)) -> Path:
    import cv2

    from scripts.make_sample_video import make_frame

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for index in range(int(seconds * fps)):
        writer.write(make_frame(index, *size))
    writer.release()
    return path


def write_assets(directory: Path) -> dict[str, dict]:
    """Random publisher-format weights and labels in `directory`; returns config overrides per module."""
    from tests.fixtures.weights import make_state, write_pdparams

    write_pdparams(make_state("videotag_tsn_resnet101", 1), directory / "tsn.pdparams")
    write_pdparams(make_state("videotag_attention_lstm", 2), directory / "attention_lstm.pdparams")
    write_pdparams(make_state("stnet_resnet50_kinetics400", 3), directory / "STNET.pdparams")
    videotag_labels = "".join(f"tag{i}\n" for i in range(3396)).encode()
    stnet_labels = json.dumps([f"class{i}" for i in range(400)]).encode()
    (directory / "label_3396.txt").write_bytes(videotag_labels)
    (directory / "kinetics_labels.json").write_bytes(stnet_labels)
    return {
        "videotag_tsn_lstm": {"assets": {"labels": {"sha256": hashlib.sha256(videotag_labels).hexdigest()}}},
        "stnet_kinetics400": {"assets": {"labels": {"sha256": hashlib.sha256(stnet_labels).hexdigest()}}},
    }


def best_of(fn, repeats: int) -> float:
    return min(_timed(fn)[1] for _ in range(repeats))


def bench_videotag(hub, overrides: dict, clip: str, threads: int, repeats: int) -> dict:
    config = dict(overrides, runtime={"cpu_threads": threads})
    module, cold = _timed(lambda: hub.Module(directory=str(REPO / "videotag_tsn_lstm"), config=config))
    _, first_call = _timed(lambda: module.classify([clip]))  # fetch + convert + build predictors + run
    predict = module._predict(False)
    video = module._read_video(clip)
    tsn_model, lstm_model, _ = module._load_models()
    tsn = module.predictor(tsn_model, False)
    lstm = module.predictor(lstm_model, False, use_onednn=False)
    chunk = module.config["runtime"]["frames_per_batch"]
    features = np.concatenate([tsn.run({"image": video[:, i : i + chunk]})[0] for i in range(0, 300, chunk)], 1)[0]
    frames = video.shape[1]
    stages = {
        "decode_preprocess_s": best_of(lambda: module._read_video(clip), repeats),
        "tsn_s": best_of(lambda: [tsn.run({"image": video[:, i : i + chunk]}) for i in range(0, frames, chunk)], 1),
        "lstm_s": best_of(lambda: lstm.run({"rgb": features}, lod={"rgb": [[0, frames]]}), repeats),
        "end_to_end_s": best_of(lambda: module.classify([clip]), 1),
    }
    assert predict(video).shape == (3396,)
    stages["tsn_frames_per_s"] = frames / stages["tsn_s"]
    stages["tsn_gflops"] = frames * RESNET101_GFLOP / stages["tsn_s"]
    stages["first_call_s"] = first_call + cold
    return stages


def bench_stnet(hub, overrides: dict, clip: str, threads: int, repeats: int) -> dict:
    config = dict(overrides, runtime={"cpu_threads": threads})
    module = hub.Module(directory=str(REPO / "stnet_kinetics400"), config=config)
    _, first_call = _timed(lambda: module.classify([clip]))
    video = module._read_video(clip)
    predictor = module.predictor(module._load_models()[0], False)
    return {
        "decode_preprocess_s": best_of(lambda: module._read_video(clip), repeats),
        "network_s": best_of(lambda: predictor.run({"image": video}), repeats),
        "end_to_end_s": best_of(lambda: module.classify([clip]), repeats),
        "first_call_s": first_call,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="paddlehub-video-bench-"))
    (work / "assets").mkdir()
    os.environ["HUB_HOME"] = str(work / "hub")
    os.environ["PADDLEHUB_VIDEO_ASSETS"] = str(work / "assets")
    overrides = write_assets(work / "assets")
    clip = str(write_clip(work / "clip.mp4"))
    import paddlehub as hub

    results = {"threads": args.threads, "sgemm_gflops": sgemm_gflops(args.threads)}
    results["videotag"] = bench_videotag(hub, overrides["videotag_tsn_lstm"], clip, args.threads, args.repeats)
    results["stnet"] = bench_stnet(hub, overrides["stnet_kinetics400"], clip, args.threads, args.repeats)
    results["tsn_fraction_of_sgemm"] = results["videotag"]["tsn_gflops"] / results["sgemm_gflops"]
    results["videotag_end_to_end_over_tsn"] = results["videotag"]["end_to_end_s"] / results["videotag"]["tsn_s"]
    print(json.dumps(results, indent=2))
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "models.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
