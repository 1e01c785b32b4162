"""Decode limits without a server: the probe before decoding, the config `limits`, `applied_limits`.

No model is loaded: a module's `preprocess` (the decoding stage) is where the limits act.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from paddlehub_video.decode.limits import DecodeLimits, applied_limits, check_video
from paddlehub_video.errors import VideoDecodeError
from paddlehub_video.pipeline import VideoPipeline
from paddlehub_video.settings import build_settings
from tests.fixtures.huge_video import write_huge_video
from tests.fixtures.publisher import SMALL
from tests.fixtures.videos import MakeVideo, write_encoded_video

REPO = Path(__file__).resolve().parents[1]
# Probes the file named by argv[1] with the limits in argv[2] (JSON); prints its error and peak RSS.
_PROBE = """
import json, sys
from paddlehub_video.errors import VideoDecodeError
from paddlehub_video.decode.limits import DecodeLimits, check_video
try:
    check_video(sys.argv[1], DecodeLimits(**json.loads(sys.argv[2])))
    error = None
except VideoDecodeError as exc:
    error = str(exc)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent (here pytest, with models loaded).
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"error": error, "peak_mb": peak_kb / 1024}))
"""




@pytest.fixture(scope="module")
def huge_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_huge_video(tmp_path_factory.mktemp("huge") / "huge.mp4")


@pytest.fixture(scope="module")
def clip(make_video: MakeVideo) -> Path:
    """40 frames, 64x48."""
    return make_video("limits_clip", 40, 64, 48)


def module(name: str, limits: dict | None = None) -> Any:
    """The module from the repository, SMALL settings; nothing fetched or converted (only its decoding is used)."""
    import paddlehub as hub  # not at import: conftest sets HUB_HOME first

    return hub.Module(directory=str(REPO / name), config={**SMALL, "limits": limits} if limits else SMALL)


@pytest.mark.slow
def test_a_huge_frame_is_refused_from_its_header_without_being_decoded(huge_video):
    child = subprocess.run([sys.executable, "-c", _PROBE, str(huge_video), json.dumps({"max_pixels": 3840 * 2160})],
                           capture_output=True, text=True, timeout=120, check=True)
    answer = json.loads(child.stdout.splitlines()[-1])
    assert answer["error"] == (f"{huge_video}: 8192x8192 frames (67108864 pixels) are over the limit of 8294400 "
                               f"pixels per frame (limits.max_pixels)"), answer
    # Decoding one frame of it takes ~190 MB (the frame alone is 96 MB); the probe ~37 MB.
    assert answer["peak_mb"] < 120, answer


@pytest.mark.parametrize("name", ["videotag_tsn_lstm", "stnet_kinetics400"])
def test_module_with_config_limits_refuses_before_decoding(name, huge_video, monkeypatch):
    decoded: list[str] = []
    monkeypatch.setattr("paddlehub_video.module_base.read_sampled_frames", lambda path, *a: decoded.append(path))
    with pytest.raises(VideoDecodeError, match=r"8192x8192 .* over the limit of 1000000 pixels .*limits.max_pixels"):
        module(name, {"max_pixels": 1_000_000}).preprocess(str(huge_video))
    assert decoded == []


@pytest.mark.parametrize("codec", ["mp4v", "lossless"])  # MP4 (sample count from its boxes), MKV (packets counted)
def test_frame_limit(codec, make_video):
    video = make_video(f"limits_{codec}", 40, 64, 48, codec=codec)
    check_video(video, DecodeLimits(max_frames=40))  # exactly at the limit: accepted
    with pytest.raises(VideoDecodeError) as caught:
        check_video(video, DecodeLimits(max_frames=39))
    assert str(caught.value) == f"{video}: holds more than 39 frames, the limit per video (limits.max_frames)"


def test_an_mp4_of_too_many_frames_is_refused_before_ffmpeg_indexes_it(tmp_path, monkeypatch):
    many = write_encoded_video(tmp_path / "many.mp4", 3000, 16, 16, "libx264", {"preset": "ultrafast"})
    monkeypatch.setattr("paddlehub_video.decode.limits.av.open", lambda *a, **k: pytest.fail("opened by FFmpeg"))
    with pytest.raises(VideoDecodeError, match="many.mp4: holds more than 1000 frames"):
        check_video(many, DecodeLimits(max_frames=1000))


def test_an_mp4_with_another_box_first_is_counted_all_the_same(tmp_path, monkeypatch):
    many = write_encoded_video(tmp_path / "many.mp4", 3000, 16, 16, "libx264", {"preset": "ultrafast"})
    uuid_first = tmp_path / "uuid_first.mp4"
    uuid_first.write_bytes((24).to_bytes(4, "big") + b"uuid" + bytes(16) + many.read_bytes())
    monkeypatch.setattr("paddlehub_video.decode.limits.av.open", lambda *a, **k: pytest.fail("opened by FFmpeg"))
    with pytest.raises(VideoDecodeError, match="uuid_first.mp4: holds more than 1000 frames"):
        check_video(uuid_first, DecodeLimits(max_frames=1000))


def test_limits_are_off_by_default_and_cost_nothing(clip, monkeypatch):
    videotag = module("videotag_tsn_lstm")
    assert videotag.decode_limits() == DecodeLimits() and not videotag.decode_limits().active
    assert videotag.preprocess(str(clip)).shape[0] == SMALL["sampling"]["seg_num"]
    monkeypatch.setattr("paddlehub_video.decode.limits.av.open", lambda *a, **k: pytest.fail("probed without limits"))
    check_video(clip, videotag.decode_limits())


def test_applied_limits_reach_the_decode_thread_and_end_with_the_block(clip):
    stnet = module("stnet_kinetics400", {"max_frames": 1000})
    pipeline = VideoPipeline(stnet.preprocess, lambda inputs: inputs.shape)
    with applied_limits(DecodeLimits(max_frames=10, frames_setting="REQUEST_LIMIT")):
        (outcome,) = pipeline.run([str(clip)])
    assert outcome.error == f"{clip}: holds more than 10 frames, the limit per video (REQUEST_LIMIT)"
    (outcome,) = pipeline.run([str(clip)])
    sampling = stnet.config["sampling"]
    assert outcome.error is None and outcome.output[0] == sampling["seg_num"] * sampling["seglen"]  # uint8 frames


def test_the_stricter_limit_wins_with_its_name():
    config = DecodeLimits(max_frames=100, max_pixels=None)
    request = DecodeLimits(max_frames=500, max_pixels=50, frames_setting="F", pixels_setting="P")
    assert config.stricter(request) == DecodeLimits(100, 50, "limits.max_frames", "P")
    assert config.stricter(None) == config


@pytest.mark.parametrize("section, message", [
    ({"max_frames": 0}, "limits.max_frames must be a positive integer"),
    ({"max_pixels": "lots"}, "limits.max_pixels must be a positive integer"),
    ({"max_pixels": True}, "limits.max_pixels must be a positive integer"),
    ([1, 2], "limits must be a mapping"),
])
def test_bad_config_limits_are_named(section, message):
    with pytest.raises(ValueError, match=message):  # checked with every setting (settings.build_settings)
        build_settings("stnet_kinetics400", {"limits": section})


def test_not_a_video_is_refused_and_special_files_are_left_to_the_decoder(tmp_path):
    limits = DecodeLimits(max_frames=10, max_pixels=10)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    with pytest.raises(VideoDecodeError, match="junk.mp4: cannot open the container"):
        check_video(junk, limits)
    fifo = tmp_path / "fifo.mp4"
    os.mkfifo(fifo)
    check_video(fifo, limits)  # returns at once (opening a FIFO would block): the decoder refuses it
    check_video(tmp_path / "missing.mp4", limits)
    with pytest.raises(VideoDecodeError, match="not a regular file"):
        module("stnet_kinetics400", {"max_frames": 10}).preprocess(str(fifo))
