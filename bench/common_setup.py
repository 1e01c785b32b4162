"""What every bench section shares: the random-weights environment, generated videos, timers, RSS.

Nothing here downloads: `prepare_environment` writes seeded random weights in the publisher's file
format into a work directory, points `PADDLEHUB_VIDEO_ASSETS` at it, gives the label files' sha256
through a `PADDLEHUB_VIDEO_CONFIG` file and starts from an empty `HUB_HOME`. Child processes inherit
those variables, so a subprocess sees the same assets and the same conversion cache.

Generated videos are deterministic and kept under bench/results/videos/ (gitignored), so a second
run does not pay for writing them again (the 10-minute 1080p clip takes minutes).
"""
from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"
VIDEO_CACHE = RESULTS_DIR / "videos"
RESNET101_GFLOP = 15.6  # per 224x224 frame, multiply-adds counted as 2 FLOPs
MODULES = ("videotag_tsn_lstm", "stnet_kinetics400")


# --- timing and memory -----------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """(fn(), seconds it took)."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    """Fastest of `repeats` calls, in seconds."""
    return min(timed(fn)[1] for _ in range(max(1, repeats)))


def sgemm_gflops(threads: int, size: int = 2048, repeats: int = 8) -> float:
    """Best-of sgemm throughput of numpy's BLAS limited to `threads` threads (GFLOP/s)."""
    from threadpoolctl import threadpool_limits

    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((size, size), dtype=np.float32)
    with threadpool_limits(threads):
        a @ b
        best = best_of(lambda: a @ b, repeats)
    return 2 * size**3 / best / 1e9


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far: VmHWM, else ru_maxrss.

    Not ru_maxrss first: on Linux it carries over the parent's peak through fork + exec, so a
    worker started by a parent holding 1.5 GB would report at least 1.5 GB. VmHWM belongs to the
    address space the exec created.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def current_rss_mib() -> float:
    """Resident set size of this process now."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


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


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (the machine is shared: read them next to the numbers)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def machine_info() -> dict[str, Any]:
    import cv2

    return {"cpus": os.cpu_count(), "python": sys.version.split()[0], "opencv": cv2.__version__,
            "numpy": np.__version__, "load_average": load_average()}


# --- subprocesses ----------------------------------------------------------------------------


def run_json(command: Sequence[str], timeout: float | None = None) -> dict[str, Any]:
    """Run `command` (a worker printing one JSON line last) and return that JSON; fail loudly."""
    proc = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(map(str, command))} exited {proc.returncode}:\n"
                           f"{proc.stderr[-3000:]}\n{proc.stdout[-1000:]}")
    return json.loads(lines[-1])


def emit(result: dict[str, Any]) -> None:
    """A worker's answer: one JSON line on stdout, last."""
    print(json.dumps(result), flush=True)


# --- random weights in the publisher's format --------------------------------------------------


def write_assets(directory: Path) -> dict[str, dict]:
    """Random publisher-format weights and labels in `directory`; returns config overrides per module."""
    from paddlehub_video.testing import make_state, write_pdparams

    directory.mkdir(parents=True, exist_ok=True)
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


def prepare_environment(work: Path) -> None:
    """Random weights in `work/assets`, an empty `work/hub` as HUB_HOME, overrides in the environment."""
    import yaml

    overrides = write_assets(work / "assets")
    config_file = work / "bench_config.yaml"
    config_file.write_text(yaml.safe_dump(overrides), encoding="utf-8")
    os.environ["HUB_HOME"] = str(work / "hub")
    os.environ["PADDLEHUB_VIDEO_ASSETS"] = str(work / "assets")
    os.environ["PADDLEHUB_VIDEO_CONFIG"] = str(config_file)


def load_module(name: str, config: dict | None = None):
    """`hub.Module(directory=<repo>/<name>)` with per-instance config overrides."""
    import paddlehub as hub

    return hub.Module(directory=str(REPO / name), config=config or {})


def runtime_config(threads: int | None = None, frames_per_batch: int | None = None) -> dict:
    """Config overrides for the runtime keys that are given (None keeps the module's default)."""
    runtime = {}
    if threads is not None:
        runtime["cpu_threads"] = threads
    if frames_per_batch is not None:
        runtime["frames_per_batch"] = frames_per_batch
    return {"runtime": runtime} if runtime else {}


def module_defaults(name: str) -> dict:
    """The module's configuration as shipped (configs/<name>.yaml, without overrides)."""
    import yaml

    return yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text(encoding="utf-8"))


# --- generated videos ------------------------------------------------------------------------


def noise_frames(width: int, height: int) -> Callable[[int], np.ndarray]:
    """Hard-to-encode content: a fixed noise texture scrolling under a moving bar (BGR)."""
    texture = np.random.default_rng(0).integers(0, 256, size=(height, width + 64, 3), dtype=np.uint8)

    def frame(i: int) -> np.ndarray:
        out = np.ascontiguousarray(texture[:, i % 64 : i % 64 + width])
        x = (i * 7) % (width - 80)
        out[:, x : x + 80] = (i * 3 % 256, 255 - i % 256, 128)
        return out

    return frame


def flat_frames(width: int, height: int) -> Callable[[int], np.ndarray]:
    """Cheap-to-encode content: a still colour gradient with a moving white square (BGR).

    mp4v writes this ~2x faster than the noise texture and decodes it ~6x faster; the decoder's
    memory (full-size frames) does not depend on the content.
    """
    base = np.zeros((height, width, 3), np.uint8)
    base[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    base[..., 1] = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    side = max(8, min(width, height) // 5)
    out = base.copy()
    last = [0, 0]

    def frame(i: int) -> np.ndarray:
        y0, x0 = last
        out[y0 : y0 + side, x0 : x0 + side] = base[y0 : y0 + side, x0 : x0 + side]
        x, y = (i * 13) % (width - side), (i * 7) % (height - side)
        out[y : y + side, x : x + side] = 255
        last[:] = [y, x]
        return out

    return frame


def scene_frames(width: int, height: int) -> Callable[[int], np.ndarray]:
    """Camera-like content: a smooth landscape panning and bobbing, a moving object, sensor grain (BGR).

    What an encoder meets in most real clips: most of each frame is predictable from the last, so
    libx264 chooses B-frames (about three in four frames here) as it does for filmed footage.
    """
    import cv2

    rng = np.random.default_rng(0)
    landscape = cv2.resize(
        rng.integers(0, 256, (height // 8, width * 3 // 8, 3), dtype=np.uint8),
        (width * 3, height + 40),
        interpolation=cv2.INTER_CUBIC,
    )
    grain = rng.normal(0, 3, (8, height, width, 3)).astype(np.int16)
    side = max(8, min(width, height) // 6)

    def frame(i: int) -> np.ndarray:
        x, y = (i * 3) % (2 * width), int(20 + 18 * np.sin(i / 40))
        out = landscape[y : y + height, x : x + width].astype(np.int16) + grain[i % 8]
        px, py = (i * 9) % (width - side), (i * 5) % (height - side)
        out[py : py + side, px : px + side] = (40, 200, 255)
        return np.clip(out, 0, 255).astype(np.uint8)

    return frame


CONTENT = {"noise": noise_frames, "flat": flat_frames, "scene": scene_frames}
# codec: (file name suffix, what writes it). mp4v is what cv2.VideoWriter writes (no B-frames, a
# keyframe every 12 frames); h264 is libx264's defaults (preset medium, CRF 23, B-frames, a keyframe
# every 250 frames or at a scene cut), the usual codec of phone and web video; mpeg2_interlaced is
# broadcast/DVD-style interlaced MPEG-2 in MPEG-TS (OpenCV cannot convert it); av1 is SVT-AV1 (OpenCV
# has no AV1 decoder): both decoded by PyAV.
CODECS = ("mp4v", "h264", "mpeg2_interlaced", "av1")
# codec: (PyAV encoder, file suffix, encoder options) of the clips PyAV writes.
_PYAV_CODECS = {
    "h264": ("libx264", ".mp4", {"preset": "medium", "crf": "23"}),
    "mpeg2_interlaced": ("mpeg2video", ".ts", {"flags": "+ildct+ilme", "top": "1", "b": "8M"}),
    "av1": ("libsvtav1", ".mp4", {"preset": "10"}),
}


def cached_video(
    content: str, seconds: float, width: int, height: int, fps: int = 30, codec: str = "mp4v"
) -> tuple[Path, int, float]:
    """Path of a generated clip (CODECS), written once into bench/results/videos/.

    Returns (path, frames, seconds spent writing it now: 0.0 when it was already there).
    """
    num_frames = int(round(seconds * fps))
    name = "" if codec == "mp4v" else f"_{codec}"
    extension = _PYAV_CODECS[codec][1] if codec in _PYAV_CODECS else ".mp4"
    path = VIDEO_CACHE / f"{content}_{width}x{height}_{fps}fps_{num_frames}f{name}{extension}"
    if path.is_file():
        return path, num_frames, 0.0
    VIDEO_CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}{extension}")
    frames = map(CONTENT[content](width, height), range(num_frames))
    start = time.perf_counter()
    if codec == "mp4v":
        _write_mp4v(tmp, frames, fps, width, height)
    else:
        _write_pyav(tmp, frames, fps, width, height, codec)
    os.replace(tmp, path)
    return path, num_frames, time.perf_counter() - start


def _write_mp4v(path: Path, frames: Iterable[np.ndarray], fps: int, width: int, height: int) -> None:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"this OpenCV cannot write mp4v to {path}")
    try:
        for bgr in frames:
            writer.write(bgr)
    finally:
        writer.release()


def _write_pyav(path: Path, frames: Iterable[np.ndarray], fps: int, width: int, height: int, codec: str) -> None:
    import av

    encoder, _, options = _PYAV_CODECS[codec]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(encoder, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.thread_type = "FRAME"  # slice threads would split every frame into slices
        stream.options = dict(options)
        for bgr in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(bgr, format="bgr24")))
        container.mux(stream.encode(None))
