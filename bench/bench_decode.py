"""Benchmark: our streaming decoder against the publisher's read-every-frame loader.

Usage (from the repository root):

    python bench/bench_decode.py                     # 60 s 1280x720 30 fps mp4v, ~1-2 min
    python bench/bench_decode.py --seconds 20        # shorter clip
    python bench/bench_decode.py --long-1080p 300    # also a 5 min 1920x1080 clip (slow to write)

The videos are written to a temporary directory and deleted afterwards. Each method runs in its
own subprocess, which reports its wall time for decoding plus sampling 300 frames (TSN rule) and
preprocessing them to 224x224 uint8 crops, its peak RSS (ru_maxrss of that process) and a SHA-256
of the crops; the bench fails if the methods disagree on a single pixel. Methods:

- read_all:     the publisher's way: read() CAP_PROP_FRAME_COUNT times into a list, then sample
- stream_full:  read_sampled_frames keeping full-size RGB frames, scaled and cropped afterwards
- stream:       read_sampled_frames with scale_and_crop applied as each sampled frame is decoded
- baseline:     interpreter + imports only (the RSS floor of every row)

read_all is skipped when its frames would need more than half the available memory.
Results are printed and written to bench/results/decode.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from paddlehub_video.preprocess import scale_and_crop
from paddlehub_video.video import read_sampled_frames, sample_tsn_indices

RESULTS = Path(__file__).resolve().parent / "results" / "decode.json"
METHODS = ("baseline", "read_all", "stream_full", "stream")
tsn_300 = partial(sample_tsn_indices, seg_num=300)
crop_224 = partial(scale_and_crop, short_size=256, crop_size=224)


def write_clip(path: Path, seconds: float, width: int, height: int, fps: int = 30) -> int:
    """Write a synthetic mp4v clip: a fixed noise texture scrolling under moving bars. Returns frames."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, size=(height, width + 64, 3), dtype=np.uint8)
    num_frames = int(seconds * fps)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write mp4v to {path}")
    try:
        for i in range(num_frames):
            frame = np.ascontiguousarray(texture[:, i % 64 : i % 64 + width])
            x = (i * 7) % (width - 80)
            frame[:, x : x + 80] = (i * 3 % 256, 255 - i % 256, 128)
            writer.write(frame)
    finally:
        writer.release()
    return num_frames


def read_all(path: str) -> list[np.ndarray]:
    """The publisher's loader: every frame in a list first, then sample and preprocess."""
    capture = cv2.VideoCapture(path)
    frames = []
    try:
        for _ in range(int(capture.get(cv2.CAP_PROP_FRAME_COUNT))):
            ok, bgr = capture.read()
            if ok:
                frames.append(bgr[:, :, ::-1])  # RGB view, as the publisher did
    finally:
        capture.release()
    return [crop_224(np.ascontiguousarray(frames[i])) for i in tsn_300(len(frames))]


def worker(method: str, path: str) -> None:
    """Run one method in this process and print a JSON line: seconds, peak RSS, digest of the crops."""
    start = time.perf_counter()
    if method == "read_all":
        crops = read_all(path)
    elif method == "stream_full":
        crops = [crop_224(f) for f in read_sampled_frames(path, tsn_300, np.asarray)]
    elif method == "stream":
        crops = read_sampled_frames(path, tsn_300, crop_224)
    else:
        crops = []
    seconds = time.perf_counter() - start
    digest = hashlib.sha256(b"".join(c.tobytes() for c in crops)).hexdigest()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak_mib, "sha256": digest, "frames": len(crops)}))


def run_method(method: str, path: Path) -> dict:
    """Run `method` on `path` in a fresh subprocess so each peak RSS is its own."""
    command = [sys.executable, __file__, "--worker", method, str(path)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def available_bytes() -> int:
    """Memory available to new processes (MemAvailable), or 0 when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def bench_clip(label: str, path: Path, num_frames: int, width: int, height: int) -> dict:
    """All methods on one clip; asserts identical crops; returns the rows."""
    rows = {}
    need = num_frames * width * height * 3
    for method in METHODS:
        if method == "read_all" and need > available_bytes() // 2:
            rows[method] = {"skipped": f"would hold {need / 2**30:.1f} GiB of frames"}
            continue
        rows[method] = run_method(method, path)
    digests = {r["sha256"] for m, r in rows.items() if m != "baseline" and "sha256" in r}
    assert len(digests) == 1, f"{label}: methods returned different pixels: {rows}"
    return {"clip": label, "frames": num_frames, "width": width, "height": height, "methods": rows}


def print_table(result: dict) -> None:
    """One line per method: time, ratio to the fastest streaming run, peak RSS."""
    rows = result["methods"]
    reference = rows["stream"]["seconds"]
    print(f"\n{result['clip']}: {result['frames']} frames {result['width']}x{result['height']} mp4v")
    print(f"{'method':<12} {'time s':>8} {'x stream':>9} {'peak RSS MiB':>13}")
    for method, row in rows.items():
        if "skipped" in row:
            print(f"{method:<12} skipped: {row['skipped']}")
        elif method == "baseline":
            print(f"{method:<12} {'':>8} {'':>9} {row['peak_rss_mib']:>13.0f}")
        else:
            ratio = row["seconds"] / reference
            print(f"{method:<12} {row['seconds']:>8.2f} {ratio:>9.2f} {row['peak_rss_mib']:>13.0f}")


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

    clips = [("720p", args.seconds, 1280, 720)]
    if args.long_1080p:
        clips.append(("1080p", args.long_1080p, 1920, 1080))
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_decode_") as tmp:
        for label, seconds, width, height in clips:
            path = Path(tmp) / f"{label}.mp4"
            start = time.perf_counter()
            num_frames = write_clip(path, seconds, width, height)
            print(f"wrote {path.name}: {num_frames} frames in {time.perf_counter() - start:.1f} s")
            result = bench_clip(label, path, num_frames, width, height)
            print_table(result)
            results.append(result)
            path.unlink()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    meta = {"opencv": cv2.__version__, "cpus": os.cpu_count(), "python": sys.version.split()[0]}
    RESULTS.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
