"""Frame sampling (publisher's indices) and the streaming decoder of paddlehub_video.decode.video."""

from __future__ import annotations

import math
import os
import shutil
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from paddlehub_video.decode import video
from paddlehub_video.decode.sampling import sample_stnet_indices, sample_tsn_indices
from paddlehub_video.decode.video import read_sampled_frames
from paddlehub_video.errors import VideoDecodeError
from tests.fixtures.decoding import count_decodable_frames
from tests.fixtures.videos import frame_index_of, read_every_frame, synthetic_frame

RealCapture = cv2.VideoCapture  # the spy below wraps the real class

tsn_300 = partial(sample_tsn_indices, seg_num=300)
stnet_25x5 = partial(sample_stnet_indices, seg_num=25, seglen=5)


def identity(frame: np.ndarray) -> np.ndarray:
    return frame


@pytest.fixture
def sequential_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decode every frame with OpenCV: no file qualifies for packet_plan's planned decoding."""
    monkeypatch.setattr(video, "read_packet_index", lambda source: None)


@pytest.fixture
def capture_spy(monkeypatch: pytest.MonkeyPatch, sequential_only: None) -> SimpleNamespace:
    """Wrap cv2.VideoCapture: counts opens/releases; `reported` overrides CAP_PROP_FRAME_COUNT."""
    log = SimpleNamespace(opens=0, releases=0, reported=None)

    class SpyCapture:
        def __init__(self, *args: object) -> None:
            self._capture = RealCapture(*args)
            log.opens += 1

        def get(self, prop: int) -> float:
            if prop == cv2.CAP_PROP_FRAME_COUNT and log.reported is not None:
                return float(log.reported)
            return self._capture.get(prop)

        def release(self) -> None:
            log.releases += 1
            self._capture.release()

        def __getattr__(self, name: str) -> object:
            return getattr(self._capture, name)

    monkeypatch.setattr(cv2, "VideoCapture", SpyCapture)
    return log


# --- sampling: expected lists written out independently of the formula (UPSTREAM 1.3, 2.5) ---

TSN_TABLE = {
    1000: list(range(1, 899, 3)),
    650: list(range(0, 599, 2)),
    600: list(range(0, 599, 2)),
    300: list(range(300)),
    299: list(range(299)) + [0],
    100: list(range(100)) * 3,
    1: [0] * 300,
}


@pytest.mark.parametrize("num_frames", sorted(TSN_TABLE))
def test_tsn_indices_match_publisher_table(num_frames: int) -> None:
    assert sample_tsn_indices(num_frames, 300) == TSN_TABLE[num_frames]


def test_tsn_indices_small_examples() -> None:
    assert sample_tsn_indices(10, 3) == [1, 4, 7]  # d = 3, middle (d-1)//2 = 1
    assert sample_tsn_indices(8, 2) == [1, 5]  # d = 4, (4-1)//2 = 1
    assert sample_tsn_indices(2, 5) == [0, 1, 0, 1, 0]


def test_stnet_windows_n125_wrap_to_start() -> None:
    indices = sample_stnet_indices(125, 25, 5)
    windows = [indices[i : i + 5] for i in range(0, 125, 5)]
    assert len(windows) == 25
    assert windows[0] == [2, 3, 4, 5, 6]
    assert windows[1] == [7, 8, 9, 10, 11]
    assert windows[-1] == [122, 123, 124, 0, 1]


def test_stnet_windows_long_video_start_at_segment_middle() -> None:
    indices = sample_stnet_indices(250, 25, 5)  # d = 10: start (10-1)//2 + 10 i
    assert indices[:5] == [4, 5, 6, 7, 8]
    assert indices[-5:] == [244, 245, 246, 247, 248]


def test_stnet_windows_step_below_seglen_start_at_i_times_d() -> None:
    indices = sample_stnet_indices(60, 25, 5)  # d = 2 < 5
    assert indices[:10] == [0, 1, 2, 3, 4, 2, 3, 4, 5, 6]
    assert indices[-5:] == [48, 49, 50, 51, 52]


def test_stnet_windows_fewer_frames_than_segments_start_at_i() -> None:
    indices = sample_stnet_indices(10, 25, 5)  # d = 0: window i is i..i+4 mod 10
    assert indices[:5] == [0, 1, 2, 3, 4]
    assert indices[45:50] == [9, 0, 1, 2, 3]
    assert indices[-5:] == [4, 5, 6, 7, 8]  # i = 24 -> 24..28 mod 10
    assert sample_stnet_indices(1, 25, 5) == [0] * 125


@pytest.mark.parametrize(
    "call",
    [
        lambda: sample_tsn_indices(0, 300),
        lambda: sample_tsn_indices(-3, 300),
        lambda: sample_tsn_indices(10, 0),
        lambda: sample_stnet_indices(0, 25, 5),
        lambda: sample_stnet_indices(10, 25, 0),
    ],
)
def test_sampling_rejects_impossible_counts(call) -> None:
    with pytest.raises(ValueError):
        call()


# --- the streaming decoder against the naive loader ---


@pytest.mark.parametrize(
    "fixture, sampler",
    [
        ("long_video", tsn_300),
        ("short_video", tsn_300),
        ("portrait_video", tsn_300),
        ("one_frame_video", tsn_300),
        ("lossless_video", tsn_300),
        ("long_video", stnet_25x5),
        ("short_video", stnet_25x5),
    ],
)
def test_streaming_equals_read_every_frame(fixture: str, sampler, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(fixture)
    everything = read_every_frame(path)
    expected = [everything[i] for i in sampler(len(everything))]
    got = read_sampled_frames(path, sampler, identity)
    assert len(got) == len(expected)
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))


def test_streaming_picks_the_right_frames(long_video: Path) -> None:
    calls = []

    def transform(frame: np.ndarray) -> int:
        calls.append(1)
        return frame_index_of(frame)

    assert read_sampled_frames(long_video, tsn_300, transform) == TSN_TABLE[1000]
    assert len(calls) == 300  # only sampled frames are retrieved, never the other 700


def test_lossless_frames_are_the_written_rgb_frames(lossless_video: Path) -> None:
    got = read_sampled_frames(str(lossless_video), tsn_300, identity)
    for index, frame in zip(TSN_TABLE[650], got, strict=True):
        assert np.array_equal(frame, synthetic_frame(index, 64, 48))  # also proves RGB, not BGR


def test_repeated_indices_are_decoded_once(short_video: Path, capture_spy: SimpleNamespace) -> None:
    calls = []

    def transform(frame: np.ndarray) -> np.ndarray:
        calls.append(frame)
        return frame

    got = read_sampled_frames(short_video, tsn_300, transform)
    assert len(got) == 300 and len(calls) == 100
    assert got[0] is got[100] is got[200]
    assert capture_spy.opens == 1 and capture_spy.releases == 1


@pytest.mark.parametrize("reported", [400, 5000, 899, 0, -1, math.nan])
def test_wrong_container_frame_count_still_gives_right_frames(
    long_video: Path, capture_spy: SimpleNamespace, reported: float
) -> None:
    capture_spy.reported = reported
    got = read_sampled_frames(long_video, tsn_300, frame_index_of)
    assert got == TSN_TABLE[1000]
    assert capture_spy.opens == 2 and capture_spy.releases == 2


def test_wrong_count_with_same_indices_needs_no_second_pass(
    long_video: Path, capture_spy: SimpleNamespace
) -> None:
    capture_spy.reported = 1001  # d is still 3: same indices as for the real 1000 frames
    assert read_sampled_frames(long_video, tsn_300, frame_index_of) == TSN_TABLE[1000]
    assert capture_spy.opens == 1


def test_right_container_frame_count_needs_one_pass(long_video: Path, capture_spy: SimpleNamespace) -> None:
    read_sampled_frames(long_video, stnet_25x5, frame_index_of)
    assert capture_spy.opens == 1 and capture_spy.releases == 1


def test_truncated_file_overreporting_its_frame_count(make_video, tmp_path: Path) -> None:
    source = make_video("to_truncate", 60, 64, 48, codec="lossless")
    data = source.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) * 6 // 10])
    capture = RealCapture(str(cut))
    reported = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    capture.release()
    everything = read_every_frame(cut)
    assert 0 < len(everything) < reported == 60  # the container still claims 60 frames
    assert count_decodable_frames(cut) == len(everything)
    got = read_sampled_frames(cut, tsn_300, identity)
    expected = [everything[i] for i in sample_tsn_indices(len(everything), 300)]
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))


def test_capture_released_when_transform_fails(short_video: Path, capture_spy: SimpleNamespace) -> None:
    def broken(frame: np.ndarray) -> np.ndarray:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        read_sampled_frames(short_video, tsn_300, broken)
    assert capture_spy.opens == capture_spy.releases == 1


def test_out_of_range_sampler_is_rejected(short_video: Path) -> None:
    with pytest.raises(ValueError, match="outside"):
        read_sampled_frames(short_video, lambda n: [0, n], identity)


def test_count_decodable_frames(long_video: Path, one_frame_video: Path) -> None:
    assert count_decodable_frames(long_video) == 1000
    assert count_decodable_frames(str(one_frame_video)) == 1


# --- errors: typed, naming the path and the reason ---


def assert_decode_error(path: object, reason: str) -> None:
    with pytest.raises(VideoDecodeError) as info:
        read_sampled_frames(path, tsn_300, identity)
    shown = str(path) if isinstance(path, (str, os.PathLike)) else repr(path)
    assert info.value.path == shown
    assert reason in info.value.reason
    assert str(info.value).startswith(shown) and reason in str(info.value)


def test_error_none_path() -> None:
    assert_decode_error(None, "expected a str, bytes or os.PathLike path, got NoneType")


def test_error_not_a_path() -> None:
    assert_decode_error(123, "got int")


def test_error_missing_file(tmp_path: Path) -> None:
    assert_decode_error(tmp_path / "nope.mp4", "file not found")
    assert_decode_error("", "file not found")


def test_error_directory(tmp_path: Path) -> None:
    assert_decode_error(str(tmp_path), "is a directory")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_error_fifo_is_not_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    assert_decode_error(fifo, "not a regular file")


def test_error_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.touch()
    assert_decode_error(empty, "file is empty")


def test_error_garbage_renamed_mp4(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    assert_decode_error(garbage, "cannot open the container")


def test_error_truncated_mp4_without_index(long_video: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.mp4"
    shutil.copyfile(long_video, cut)
    os.truncate(cut, cut.stat().st_size // 2)  # mp4v writes its index (moov) at the end
    assert_decode_error(cut, "cannot open the container")


def test_error_container_without_frames(tmp_path: Path) -> None:
    path = tmp_path / "no_frames.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 25, (64, 48))
    writer.release()
    assert_decode_error(path, "no decodable video frame")
    assert count_decodable_frames(path) == 0


# --- choosing the decoder: pictures OpenCV did not decode, packets it rejects, codecs it lacks ---


class _FlakyCapture:
    """A real capture whose `retrieve` of the frames in `black` gives zeros, as a failed conversion does,
    and whose `grab` fails once before each frame in `reject` (a packet the decoder refuses)."""

    black: set[int] = set()
    reject: set[int] = set()

    def __init__(self, *args: object) -> None:
        self._capture = RealCapture(*args)
        self._grabbed = -1
        self._rejected: set[int] = set()

    def grab(self) -> bool:
        upcoming = self._grabbed + 1
        if upcoming in self.reject and upcoming not in self._rejected:
            self._rejected.add(upcoming)
            return False
        ok = self._capture.grab()
        self._grabbed += ok
        return ok

    def retrieve(self) -> tuple[bool, np.ndarray]:
        ok, bgr = self._capture.retrieve()
        return (ok, np.zeros_like(bgr)) if self._grabbed in self.black else (ok, bgr)

    def __getattr__(self, name: str) -> object:
        return getattr(self._capture, name)


@pytest.fixture
def flaky_capture(monkeypatch: pytest.MonkeyPatch, sequential_only: None) -> type[_FlakyCapture]:
    flaky = type("Flaky", (_FlakyCapture,), {"black": set(), "reject": set()})
    monkeypatch.setattr(cv2, "VideoCapture", flaky)
    return flaky


def test_black_frame_from_opencv_is_decoded_again_by_pyav(long_video: Path, flaky_capture) -> None:
    flaky_capture.black = {301}  # sampled by TSN (1, 4, ..., 898)
    assert read_sampled_frames(long_video, tsn_300, frame_index_of) == TSN_TABLE[1000]


def test_stale_frame_from_opencv_is_decoded_again_by_pyav(short_video: Path, monkeypatch, sequential_only) -> None:
    """OpenCV's buffer left as it was (the picture before): not taken for frame 41."""
    stale: list[np.ndarray] = []

    class Stale(_FlakyCapture):
        def retrieve(self) -> tuple[bool, np.ndarray]:
            ok, bgr = self._capture.retrieve()
            if self._grabbed == 41:
                return ok, stale[0]
            stale[:] = [bgr]
            return ok, bgr

    monkeypatch.setattr(cv2, "VideoCapture", Stale)
    assert read_sampled_frames(short_video, tsn_300, frame_index_of) == TSN_TABLE[100]


def test_black_frame_and_no_pyav_is_a_named_error(long_video: Path, flaky_capture, monkeypatch) -> None:
    flaky_capture.black = {301}
    monkeypatch.setattr(video, "probe", lambda source: None)  # PyAV cannot read the file
    assert_decode_error(long_video, "OpenCV returned frame 301 all black, not a decoded picture")


def test_rejected_packet_does_not_end_the_video(long_video: Path, flaky_capture) -> None:
    flaky_capture.reject = {500, 501}
    assert read_sampled_frames(long_video, tsn_300, frame_index_of) == TSN_TABLE[1000]
    assert count_decodable_frames(long_video) == 1000


def test_codec_opencv_lacks_is_decoded_by_pyav(tmp_path: Path) -> None:
    from tests.fixtures.decode_matrix import KINDS

    av1 = tmp_path / "av1.webm"
    next(kind for kind in KINDS if kind.name == "av1.webm").write(av1)
    assert len(read_every_frame(av1)) == 0  # the pinned OpenCV has no AV1 decoder
    assert count_decodable_frames(av1) == 20
    assert len(read_sampled_frames(av1, stnet_25x5, identity)) == 125
