"""Opening a file costs what the file holds: hostile indexes refused before FFmpeg reads them, and the
pixel limit held for every frame, on every decoder path. Each bound is measured in a child process."""
from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path

import pytest

from paddlehub_video.decode.containers import check_container
from paddlehub_video.decode.limits import DecodeLimits, check_video
from paddlehub_video.errors import VideoDecodeError
from tests.fixtures.hostile import avi_with_repeated_index, hostile_mp4s, write_growing_video

# Opens the file named by argv[1] as the package does, with the limits in argv[2] (JSON, or null for
# none) and the decoder forced by argv[3]; prints its error, peak RSS and time.
_OPEN = """
import json, sys, time
import numpy as np
from paddlehub_video.decode import video
from paddlehub_video.decode.limits import DecodeLimits, applied_limits, check_video
from paddlehub_video.errors import VideoDecodeError

path, limits, decoder = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
if decoder != "planned":
    video.read_packet_index = lambda source: None
if decoder == "pyav":
    video.probe = lambda source: video.Probe("h264", True, True)  # taken for interlaced: PyAV alone
opencv = video._opencv_frames
used = []
video._opencv_frames = lambda source: used.append("opencv") or opencv(source)
start = time.perf_counter()
try:
    if limits is None:
        video.read_sampled_frames(path, lambda n: list(range(n)), np.shape)
    else:
        check_video(path, DecodeLimits(**limits))
        with applied_limits(DecodeLimits(**limits)):
            video.read_sampled_frames(path, lambda n: list(range(n)), np.shape)
    error = None
except VideoDecodeError as exc:
    error = str(exc)
seconds = time.perf_counter() - start
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent (pytest, with models loaded).
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"error": error, "peak_mb": peak_kb / 1024, "seconds": seconds, "opencv": bool(used)}))
"""
PEAK_MB = 300  # python + PyAV + OpenCV take ~100 MB; a hostile file opened by FFmpeg 400 MB to 1.4 GB


def opened(path: Path, limits: dict | None = None, decoder: str = "planned") -> dict:
    child = subprocess.run([sys.executable, "-c", _OPEN, str(path), json.dumps(limits), decoder],
                           capture_output=True, text=True, timeout=120, check=True)
    return json.loads(child.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return hostile_mp4s(tmp_path_factory.mktemp("hostile"))


@pytest.mark.parametrize("kind", ["stsz of a video track", "stsz of a track of another handler",
                                  "moov after 20000 boxes", "trun of a fragment", "1000 samples x 10000 edits"])
@pytest.mark.parametrize("limits", [None, {"max_frames": 1000}])
def test_an_mp4_announcing_more_samples_than_it_holds_is_refused_before_ffmpeg_opens_it(hostile, kind, limits):
    path = hostile[kind]
    size = path.stat().st_size
    answer = opened(path, limits)
    # Opened by FFmpeg: 390-730 MB (10 million index entries), or 10 million packets demuxed (45 s).
    assert answer["peak_mb"] < PEAK_MB, answer
    assert answer["seconds"] < 20, answer
    announced = 10_000_004 if kind.startswith("trun") else 10_000_000
    assert answer["error"] == (f"{path}: its MP4 index announces {announced} samples, more than its {size} bytes "
                               f"can hold (refused before FFmpeg builds an index of them)"), answer


def test_the_ordinary_mp4s_it_was_made_from_open(hostile):
    folder = hostile["stsz of a video track"].parent
    for name in ("tiny.mp4", "fragmented.mp4"):
        assert check_container(str(folder / name), (folder / name).stat().st_size) is not None
        answer = opened(folder / name)
        assert answer["error"] is None, answer


def test_an_avi_listing_one_index_many_times_stays_bounded(tmp_path):
    # 4000 references to one index of 20000 chunks: 80 million entries if FFmpeg followed them all.
    # It does not (measured: 37 MB, 0.2 s), so AVI is opened unparsed; this holds it to that.
    path = avi_with_repeated_index(tmp_path / "repeated.avi", 4000, 20_000)
    answer = opened(path)
    assert answer["peak_mb"] < PEAK_MB and answer["seconds"] < 20, answer


def test_formats_not_read_are_refused_before_ffmpeg_opens_them(tmp_path):
    audio = tmp_path / "speech.mp4"
    with wave.open(str(audio), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(8000)
        writer.writeframes(bytes(1600))
    y4m = tmp_path / "raw.mp4"
    y4m.write_bytes(b"YUV4MPEG2 W16384 H16384 F25:1 C420\nFRAME\n" + bytes(64))
    for path in (audio, y4m):
        with pytest.raises(VideoDecodeError, match=rf"{path.name}: cannot open the container \(not a video, corrupt, "
                                                   r"or unsupported: none of the formats read, MP4/MOV"):
            check_container(str(path), path.stat().st_size)
        assert opened(path)["error"].startswith(f"{path}: cannot open the container"), path


@pytest.fixture(scope="module")
def growing(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("growing")
    return {
        "h264.mkv": write_growing_video(folder / "h264.mkv"),
        "h264.ts": write_growing_video(folder / "h264.ts"),
        "hevc.mkv": write_growing_video(folder / "hevc.mkv", "libx265", 8192, 4096),
    }


@pytest.mark.slow
@pytest.mark.parametrize("name, decoder", [
    ("h264.mkv", "planned"),  # packet_plan's decoders
    ("h264.mkv", "sequential"),  # OpenCV's file, decoded by PyAV under a pixel limit
    ("h264.ts", "sequential"),
    ("h264.mkv", "pyav"),  # PyAV's sequential decoder (interlaced, AV1, ...)
    ("hevc.mkv", "planned"),
    ("hevc.mkv", "pyav"),
])
def test_the_pixel_limit_holds_for_frames_that_grow_mid_stream(growing, name, decoder):
    path = growing[name]
    limits = {"max_pixels": 320 * 240}
    check_video(path, DecodeLimits(**limits))  # the header says 320x240: it passes the probe
    answer = opened(path, limits, decoder)
    width, height = (16384, 8192) if name.startswith("h264") else (8192, 4096)
    assert answer["error"] == (f"{path}: a frame of {width}x{height} ({width * height} pixels) is over the limit "
                               f"of 76800 pixels per frame (limits.max_pixels)"), answer
    assert not answer["opencv"], answer
    # Decoded, the two large frames take 450 MB (HEVC 8192x4096) to 1.4 GB (H.264 16384x8192, OpenCV).
    assert answer["peak_mb"] < 200, answer


@pytest.mark.slow
def test_without_a_pixel_limit_the_growing_stream_is_decoded_by_opencv(growing):
    answer = opened(growing["h264.ts"], None, "sequential")
    assert answer["error"] is None and answer["opencv"], answer
