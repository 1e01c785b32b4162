"""Benchmark: our streaming decoder against the publisher's read-every-frame loader.

Usage (from the repository root; `python bench/run_all.py` runs this section with the others):

    python bench/bench_decode.py                     # four 60 s 1280x720 30 fps clips, ~5 min (+ writing them once)
    python bench/bench_decode.py --seconds 20        # shorter clips
    python bench/bench_decode.py --long-1080p 300    # also a 5 min 1920x1080 clip (slow to write)

Four clips, written once into bench/results/videos/ and reused by later runs:
- noise mp4v: a scrolling noise texture in MPEG-4 part 2 as cv2.VideoWriter writes it (no B-frames,
  a keyframe every 12 frames). The worst case for decoding: every frame is hard and a reference.
- scene h264: camera-like content (common_setup.scene_frames) with libx264's defaults, B-frames
  included: what most phone and web video looks like to a decoder.
- scene mpeg2_interlaced: the same content as interlaced MPEG-2 in MPEG-TS (broadcast, DVD, camcorders).
- scene av1: the same content in AV1 (SVT-AV1 preset 10), as YouTube downloads and recent phones.
  OpenCV gives no true picture of these two (black or stale frames, no AV1 decoder): its
  read-every-frame rows are skipped, and ours decodes them with PyAV (see common/paddlehub_video/decode/video.py).

Each method runs in its own subprocess, which reports its wall time for decoding plus sampling
(300 frames by the TSN rule, or StNet's 25 windows of 5 frames), for TSN also preprocessing them to
224x224 uint8 crops, its peak RSS (VmHWM of that process) and a SHA-256 of the frames; the bench
fails if the methods disagree on a single pixel. Methods:

- read_all:     the publisher's way: read() CAP_PROP_FRAME_COUNT times into a list, then sample
- stream_full:  read_sampled_frames keeping full-size RGB frames, scaled and cropped afterwards
                (read_all vs stream_full up to the sampled frames: the "decode + sampling" ratio)
- stream:       read_sampled_frames with scale_and_crop applied as each sampled frame is decoded
- read_all_stnet, stream_full_stnet: the same two with StNet's sampling
- baseline:     interpreter + imports only (the RSS floor of every row)

read_all is skipped when its frames would need more than half the available memory.
Results are printed and written to bench/results/decode.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from common_setup import (
    CODECS,
    RESULTS_DIR,
    available_bytes,
    cached_video,
    emit,
    machine_info,
    peak_rss_mib,
    run_json,
)

from paddlehub_video.decode.preprocess import scale_and_crop
from paddlehub_video.decode.sampling import sample_stnet_indices, sample_tsn_indices
from paddlehub_video.decode.video import read_sampled_frames

RESULTS = RESULTS_DIR / "decode.json"
METHODS = ("baseline", "read_all", "stream_full", "stream", "read_all_stnet", "stream_full_stnet")
CLIPS = (("noise", "mp4v"), ("scene", "h264"), ("scene", "mpeg2_interlaced"), ("scene", "av1"))
OPENCV_CANNOT = {"mpeg2_interlaced": "OpenCV's read() gives black or stale frames", "av1": "OpenCV has no AV1 decoder"}
SAMPLERS = {
    "tsn": partial(sample_tsn_indices, seg_num=300),
    "stnet": partial(sample_stnet_indices, seg_num=25, seglen=5),
}
crop_224 = partial(scale_and_crop, short_size=256, crop_size=224)


def read_all(path: str, sampler: Callable[[int], list[int]]) -> list[np.ndarray]:
    """The publisher's loader: every frame in a list first, then the sampled ones (full-size RGB)."""
    capture = cv2.VideoCapture(path)
    frames = []
    try:
        for _ in range(int(capture.get(cv2.CAP_PROP_FRAME_COUNT))):
            ok, bgr = capture.read()
            if ok:
                frames.append(bgr[:, :, ::-1])  # RGB view, as the publisher did
    finally:
        capture.release()
    return [frames[i] for i in sampler(len(frames))]  # views: no copy beyond the publisher's


def _digest(arrays: list[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(array.tobytes())
    return digest.hexdigest()


def worker(method: str, path: str) -> None:
    """Run one method in this process and print a JSON line: seconds, peak RSS, digest of the crops.

    `sample_seconds` (read_all, stream_full) is decode + sampling alone, up to the sampled full-size
    RGB frames, whose digest is `sampled_sha256`; `seconds` adds the preprocessing to 224x224 crops.
    """
    stnet = method.endswith("_stnet")
    base, sampler = method.removesuffix("_stnet"), SAMPLERS["stnet" if stnet else "tsn"]
    start = time.perf_counter()
    sampled = None
    if base == "read_all":
        sampled = read_all(path, sampler)
    elif base == "stream_full":
        sampled = read_sampled_frames(path, sampler, np.asarray)
    sample_seconds = time.perf_counter() - start
    if stnet:
        crops = sampled  # StNet's sampling is timed up to the full-size frames only
    elif sampled is not None:
        crops = [crop_224(np.ascontiguousarray(f)) for f in sampled]
    elif method == "stream":
        crops = read_sampled_frames(path, sampler, crop_224)
    else:
        crops = []
    seconds = time.perf_counter() - start
    row = {"seconds": seconds, "peak_rss_mib": peak_rss_mib(), "sha256": _digest(crops), "frames": len(crops)}
    if sampled is not None:
        row.update(sample_seconds=sample_seconds, sampled_sha256=_digest(sampled))
    emit(row)


def run_method(method: str, path: Path) -> dict:
    """Run `method` on `path` in a fresh subprocess so each peak RSS is its own."""
    return run_json([sys.executable, __file__, "--worker", method, str(path)])


def bench_clip(label: str, path: Path, num_frames: int, width: int, height: int, codec: str = "mp4v") -> dict:
    """All methods on one clip; asserts identical crops; returns the rows and ours-vs-read_all ratios."""
    rows = {}
    need = num_frames * width * height * 3
    for method in METHODS:
        if method.startswith("read_all") and codec in OPENCV_CANNOT:
            rows[method] = {"skipped": OPENCV_CANNOT[codec]}
            continue
        if method.startswith("read_all") and need > available_bytes() // 2:
            rows[method] = {"skipped": f"would hold {need / 2**30:.1f} GiB of frames"}
            continue
        rows[method] = run_method(method, path)
    for stnet in (False, True):
        for key in ("sha256", "sampled_sha256"):
            same = [r for m, r in rows.items() if m != "baseline" and m.endswith("_stnet") == stnet]
            digests = {r[key] for r in same if key in r}
            assert len(digests) <= 1, f"{label}: methods returned different pixels ({key}): {rows}"
    result = {"clip": label, "frames": num_frames, "width": width, "height": height, "methods": rows}
    if "seconds" in rows["read_all"]:
        # The measure: decode + sampling to the same full-size frames, then with preprocessing.
        read_all_s, stream_s = rows["read_all"]["sample_seconds"], rows["stream_full"]["sample_seconds"]
        result["sampling_speedup_vs_read_all"] = read_all_s / stream_s
        result["speedup_vs_read_all"] = rows["read_all"]["seconds"] / rows["stream"]["seconds"]
        result["rss_read_all_over_stream"] = rows["read_all"]["peak_rss_mib"] / rows["stream"]["peak_rss_mib"]
        stnet_s = rows["read_all_stnet"]["sample_seconds"], rows["stream_full_stnet"]["sample_seconds"]
        result["stnet_sampling_speedup_vs_read_all"] = stnet_s[0] / stnet_s[1]
    return result


def bench_decode(
    seconds: float = 60, width: int = 1280, height: int = 720, content: str = "noise", codec: str = "mp4v"
) -> dict:
    """Write (or reuse) a clip and compare the methods on it."""
    assert codec in CODECS
    label = f"{height}p {seconds:g}s {content} {codec}"
    path, num_frames, wrote_s = cached_video(content, seconds, width, height, codec=codec)
    if wrote_s:
        print(f"wrote {path.name}: {num_frames} frames in {wrote_s:.1f} s", flush=True)
    result = bench_clip(label, path, num_frames, width, height, codec)
    result["video_write_s"] = wrote_s
    return result


def print_table(result: dict) -> None:
    """One line per method: time, ratio to the fastest streaming run, peak RSS."""
    rows = result["methods"]
    reference = rows["stream"]["seconds"]
    print(f"\n{result['clip']}: {result['frames']} frames {result['width']}x{result['height']}")
    print(f"{'method':<18} {'decode+sample s':>16} {'+preprocess s':>14} {'x stream':>9} {'peak RSS MiB':>13}")
    for method, row in rows.items():
        if "skipped" in row:
            print(f"{method:<18} skipped: {row['skipped']}")
        elif method == "baseline":
            print(f"{method:<18} {'':>16} {'':>14} {'':>9} {row['peak_rss_mib']:>13.0f}")
        else:
            ratio = row["seconds"] / reference
            sample = f"{row['sample_seconds']:.2f}" if "sample_seconds" in row else ""
            print(f"{method:<18} {sample:>16} {row['seconds']:>14.2f} {ratio:>9.2f} {row['peak_rss_mib']:>13.0f}")


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--seconds", type=float, default=60, help="length of the 720p clip (default 60)")
    parser.add_argument("--long-1080p", type=float, default=0, metavar="SECONDS", help="also a 1080p clip")
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return

    clips = [(args.seconds, 1280, 720, content, codec) for content, codec in CLIPS]
    if args.long_1080p:
        clips.append((args.long_1080p, 1920, 1080, "noise", "mp4v"))
    results = []
    for clip in clips:
        result = bench_decode(*clip)
        print_table(result)
        results.append(result)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"meta": machine_info(), "results": results}, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
