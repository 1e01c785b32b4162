"""Tags over time (`classify_timeline`, `hub run --timeline`, the serving body's `timeline`): windows by
the frames' timestamps, each sampled as a whole clip, all decoded in one pass with bounded memory.

The modules use the SMALL settings (shared converted models); videos are generated here.
"""
from __future__ import annotations

import bisect
import dataclasses
import gc
import json
import subprocess
import sys
import weakref
from fractions import Fraction
from functools import partial
from pathlib import Path

import av
import numpy as np
import pytest

from paddlehub_video.decode import video as video_module
from paddlehub_video.decode.sampling import TooManyWindows, plan_windows, sample_stnet_indices, sample_tsn_indices
from paddlehub_video.decode.video import frame_times, read_sampled_frames, read_sampled_groups
from paddlehub_video.errors import ConfigError
from paddlehub_video.interfaces.results_file import ResultsFile, ResultsFileError, parse_entry
from paddlehub_video.interfaces.serving import MAX_WINDOWS_ENV
from paddlehub_video.segments import segments_of
from paddlehub_video.settings import TimelineSettings, build_settings
from paddlehub_video.timeline import DEFAULT_MAX_WINDOWS, MAX_WINDOWS_SETTING, MIN_SECONDS, failed_entry, timeline_entry
from tests.fixtures.videos import MakeVideo, frame_index_of, synthetic_frame, write_encoded_video

TSN8 = partial(sample_tsn_indices, seg_num=8)
TEN_YEARS_MS = 10 * 365 * 24 * 3600 * 1000
# Planning the years-gap file takes milliseconds; stepped window by window it took hours.
PLAN_TIMEOUT_S = 60


# ---------------------------------------------------------------- videos


@pytest.fixture(scope="module")
def h264_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """250 frames at 25 fps (10 s), H.264 with B-frames: the planned decoder's kind of file."""
    return write_encoded_video(tmp_path_factory.mktemp("timeline") / "b.mp4", 250, 64, 48, "libx264", {"bf": "2"})


@pytest.fixture(scope="module")
def lossless_10s(make_video: MakeVideo) -> Path:
    """250 frames at 25 fps, FFV1: decoded frame by frame, each frame tells its index."""
    return make_video("timeline_lossless", 250, 64, 48, codec="lossless")


def write_timed_video(path: Path, times_ms: list[int]) -> Path:
    """An FFV1 video of 64x48 frames shown at `times_ms` (their pts set by hand, in milliseconds)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.time_base = Fraction(1, 1000)
        for index, ms in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(synthetic_frame(index, 64, 48), format="rgb24")
            frame.pts, frame.time_base = ms, Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def vfr_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Variable frame rate: 50 frames 40 ms apart (2 s), then 20 frames 200 ms apart (4 s)."""
    times = [40 * i for i in range(50)] + [2000 + 200 * i for i in range(20)]
    return write_timed_video(tmp_path_factory.mktemp("timeline") / "vfr.mkv", times)


@pytest.fixture(scope="module")
def years_gap_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1.3 KB file: three frames 40 ms apart, then two more ten years later."""
    times = [0, 40, 80, TEN_YEARS_MS, TEN_YEARS_MS + 40]
    return write_timed_video(tmp_path_factory.mktemp("timeline") / "gap.mkv", times)


# ---------------------------------------------------------------- windows (no decoding)


def test_side_by_side_windows_cover_the_video_each_sampled_as_a_clip():
    times = [i / 25 for i in range(250)]  # 10 s at 25 fps
    windows = plan_windows(times, 10.0, 4.0, 4.0, TSN8)
    assert [(w.start, w.end) for w in windows] == [(0.0, 4.0), (4.0, 8.0), (8.0, 10.0)]
    assert windows[0].indices == sample_tsn_indices(100, 8)
    assert windows[1].indices == [100 + i for i in sample_tsn_indices(100, 8)]
    assert windows[2].indices == [200 + i for i in sample_tsn_indices(50, 8)]


def test_overlapping_windows_stop_at_the_one_reaching_the_end():
    times = [i / 25 for i in range(250)]
    windows = plan_windows(times, 10.0, 4.0, 2.0, TSN8)
    assert [(w.start, w.end) for w in windows] == [(0.0, 4.0), (2.0, 6.0), (4.0, 8.0), (6.0, 10.0)]
    assert windows[1].indices == [50 + i for i in sample_tsn_indices(100, 8)]


def test_a_window_longer_than_the_video_is_the_whole_clip():
    times = [i / 25 for i in range(100)]
    (window,) = plan_windows(times, 4.0, 60.0, 30.0, partial(sample_stnet_indices, seg_num=4, seglen=5))
    assert (window.start, window.end) == (0.0, 4.0)
    assert window.indices == sample_stnet_indices(100, 4, 5)


def test_windows_follow_the_timestamps_and_skip_a_gap_without_frames():
    times = [0.0, 0.5, 1.0, 9.0, 9.5]  # nothing between 1 s and 9 s
    windows = plan_windows(times, 10.0, 2.0, 2.0, lambda n: list(range(n)))
    assert [(w.start, w.indices) for w in windows] == [(0.0, [0, 1, 2]), (8.0, [3, 4])]


def test_a_gap_of_years_between_two_frames_is_one_step_of_planning(years_gap_video):
    # In a process of its own, bounded: stepped window by window, 1 s windows over ten years never end.
    code = ("import sys; from functools import partial; from paddlehub_video.decode.video import frame_times; "
            "from paddlehub_video.decode.sampling import plan_windows, sample_tsn_indices; "
            "t = frame_times(sys.argv[1]); "
            "print([(w.start, w.indices) for w in plan_windows(t.times, t.duration, 1.0, 1.0, "
            "partial(sample_tsn_indices, seg_num=2))])")
    done = subprocess.run([sys.executable, "-c", code, str(years_gap_video)], capture_output=True, text=True,
                          timeout=PLAN_TIMEOUT_S, check=True)
    assert done.stdout.strip() == f"[(0.0, [0, 1]), ({TEN_YEARS_MS / 1000}, [3, 4])]"


def test_planning_steps_grow_with_the_frames_not_the_time_span(monkeypatch):
    steps = []
    real = bisect.bisect_left

    def counted(*args):
        steps.append(1)
        assert len(steps) < 10_000, "planning steps through empty windows"
        return real(*args)

    monkeypatch.setattr(bisect, "bisect_left", counted)
    times = [i * 3600.0 for i in range(100)]  # a frame an hour, 1 s windows: 360,000 windows of span
    windows = plan_windows(times, 100 * 3600.0, 1.0, 1.0, lambda n: list(range(n)))
    assert [w.indices for w in windows] == [[i] for i in range(100)]
    assert len(steps) <= 2 * 3 * len(times)  # two searches per step, at most three steps per frame


def test_more_windows_than_the_limit_are_refused_while_planning():
    times = [i / 25 for i in range(250)]
    calls = []
    sample = lambda n: calls.append(n) or list(range(n))  # noqa: E731
    assert len(plan_windows(times, 10.0, 1.0, 1.0, sample, max_windows=10)) == 10
    calls.clear()
    with pytest.raises(TooManyWindows, match="more than 9 windows"):
        plan_windows(times, 10.0, 1.0, 1.0, sample, max_windows=9)
    assert len(calls) == 9  # stopped at the first window over the limit


@pytest.mark.parametrize("window, stride", [(60, 1e-6), (1e-6, None), (60, MIN_SECONDS / 2)])
def test_windows_and_strides_far_below_a_frame_are_refused(small_stnet, window, stride):
    with pytest.raises(ValueError, match=f"at least {MIN_SECONDS:g}"):
        small_stnet.classify_timeline([], window_seconds=window, stride_seconds=stride)


# ---------------------------------------------------------------- decoding


def test_frame_times_of_a_variable_frame_rate_video(vfr_video):
    found = frame_times(vfr_video)
    assert len(found.times) == 70
    assert found.times[49] == pytest.approx(1.96) and found.times[50] == pytest.approx(2.0)
    assert found.times[-1] == pytest.approx(5.8)
    assert found.duration > found.times[-1]


def test_vfr_windows_take_the_frames_their_times_say(vfr_video):
    found = frame_times(vfr_video)
    windows = plan_windows(found.times, found.duration, 2.0, 2.0, lambda n: list(range(n)))
    assert [len(w.indices) for w in windows] == [50, 10, 10]
    groups = list(read_sampled_groups(vfr_video, [w.indices for w in windows], frame_index_of))
    assert groups == [w.indices for w in windows]  # each frame is the one its index names


@pytest.mark.parametrize("kind", ["h264_video", "lossless_10s"])
def test_each_group_is_what_read_sampled_frames_gives_for_it(kind, request):
    path = request.getfixturevalue(kind)
    found = frame_times(path)
    windows = plan_windows(found.times, found.duration, 4.0, 2.0, TSN8)
    groups = list(read_sampled_groups(path, [w.indices for w in windows], lambda frame: frame))
    assert len(groups) == len(windows) == 4
    for window, frames in zip(windows, groups, strict=True):
        alone = read_sampled_frames(path, lambda n, w=window: w.indices, lambda frame: frame)
        assert all(np.array_equal(a, b) for a, b in zip(frames, alone, strict=True))


class Held:
    """A transformed frame whose life the test can watch."""

    def __init__(self, frame: np.ndarray):
        self.frame = frame


@pytest.mark.parametrize("kind", ["h264_video", "lossless_10s"])
def test_one_pass_holds_only_the_frames_of_the_group_given_out(kind, request, monkeypatch):
    path = request.getfixturevalue(kind)
    found = frame_times(path)
    windows = plan_windows(found.times, found.duration, 1.0, 1.0, TSN8)
    opened = []
    for name in ("_opencv_frames", "_pyav_frames"):
        real = getattr(video_module, name)
        monkeypatch.setattr(video_module, name, lambda source, real=real: opened.append(source) or real(source))
    alive: weakref.WeakSet[Held] = weakref.WeakSet()

    def keep(frame: np.ndarray) -> Held:
        held = Held(frame)
        alive.add(held)
        return held

    peak = given = 0
    for group in read_sampled_groups(path, [w.indices for w in windows], keep):
        del group
        gc.collect()
        peak, given = max(peak, len(alive)), given + 1
    assert given == len(windows) == 10
    assert peak <= 8  # never more than one window's distinct frames (given out and dropped)
    assert len(opened) <= 1  # frame by frame: one decoder opened once for every window


def test_an_unreadable_file_is_a_video_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 100)
    with pytest.raises(video_module.VideoDecodeError):
        frame_times(bad)


# ---------------------------------------------------------------- the modules


@pytest.mark.parametrize("module", ["small_videotag", "small_stnet"])
def test_a_window_covering_a_short_video_gives_its_classify_result(module, request, h264_video, short_video):
    model = request.getfixturevalue(module)
    paths = [str(h264_video), str(short_video)]
    timelines = model.classify_timeline(paths, window_seconds=60, top_k=5, threshold=0.0)
    classified = model.classify(paths, top_k=5, threshold=0.0)
    assert [t["path"] for t in timelines] == paths
    for timeline, whole in zip(timelines, classified, strict=True):
        (window,) = timeline["windows"]
        assert window["start"] == 0.0 and window["end"] == timeline["duration"]
        assert window["prediction"] == whole["prediction"]
    assert timelines[0]["duration"] == 10.0 and timelines[1]["duration"] == 4.0  # 250 and 100 frames at 25 fps


def test_overlapping_windows_and_errors_in_input_order(small_videotag, h264_video, tmp_path):
    missing = str(tmp_path / "missing.mp4")
    first, second = small_videotag.classify_timeline(
        [str(h264_video), missing], window_seconds=4, stride_seconds=2, top_k=3, threshold=0.0
    )
    assert [(w["start"], w["end"]) for w in first["windows"]] == [(0.0, 4.0), (2.0, 6.0), (4.0, 8.0), (6.0, 10.0)]
    assert all(len(w["prediction"]) == 3 for w in first["windows"])
    assert first["segments"] == segments_of(first["windows"]) and first["segments"]
    assert second["path"] == missing and second["windows"] == [] and second["duration"] is None
    assert second["segments"] == []
    assert "file not found" in second["error"]


@pytest.mark.parametrize("window, stride", [(0, None), (-1, None), (float("nan"), None), (True, None), (5, 0)])
def test_bad_window_options_are_value_errors(small_stnet, window, stride):
    with pytest.raises(ValueError, match="seconds"):
        small_stnet.classify_timeline([], window_seconds=window, stride_seconds=stride)


# ---------------------------------------------------------------- hub run and the results file


def test_hub_run_timeline_into_a_results_file_resumes(small_stnet, h264_video, short_video, tmp_path):
    output = tmp_path / "t.jsonl"
    args = ["--input_path", str(h264_video), "--timeline", "4", "--stride", "2", "--output", str(output)]
    summary = small_stnet.run_cmd(args)
    assert summary["classified"] == 1 and summary["failed"] == 0
    (entry,) = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert entry["path"] == str(h264_video) and len(entry["windows"]) == 4
    assert entry["segments"] == segments_of(entry["windows"])
    again = small_stnet.run_cmd(["--input_file", str(_list(tmp_path, h264_video, short_video)), "--timeline", "4",
                                 "--stride", "2", "--output", str(output)])
    assert (again["skipped"], again["classified"]) == (1, 1)
    kept, added = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert kept == entry and added["segments"] == segments_of(added["windows"])


def _list(folder: Path, *paths: Path) -> Path:
    listing = folder / "list.txt"
    listing.write_text("".join(f"{p}\n" for p in paths), encoding="utf-8")
    return listing


def test_timeline_and_classify_results_files_do_not_mix(tmp_path):
    timeline = {"path": "a.mp4", "duration": 4.0, "windows": [{"start": 0.0, "end": 4.0, "prediction": {"x": 0.5}}]}
    line = json.dumps(timeline).encode()
    assert parse_entry(line, timeline=True) == timeline
    assert parse_entry(line) is None
    classify_line = json.dumps({"path": "a.mp4", "prediction": {"x": 0.5}}).encode()
    assert parse_entry(classify_line, timeline=True) is None
    failed = {"path": "b.mp4", "duration": None, "windows": [], "error": "b.mp4: file not found"}
    assert parse_entry(json.dumps(failed).encode(), timeline=True) == failed
    written = tmp_path / "r.jsonl"
    written.write_bytes(line + b"\n")  # a file written before segments existed is still resumed
    assert ResultsFile(written, timeline=True).done == {"a.mp4"}
    written.write_bytes(classify_line + b"\n")
    with pytest.raises(ResultsFileError, match="timeline entry"):
        ResultsFile(written, timeline=True)


def test_timeline_entries_with_segments_are_results_and_bad_segments_are_not():
    entry = timeline_entry("a.mp4", 4.0, [{"start": 0.0, "end": 4.0, "prediction": {"x": 0.5}}])
    assert entry["segments"] == [{"label": "x", "start": 0.0, "end": 4.0, "confidence": 0.5}]
    assert parse_entry(json.dumps(entry).encode(), timeline=True) == entry
    failed = failed_entry("b.mp4", "b.mp4: file not found")
    assert parse_entry(json.dumps(failed).encode(), timeline=True) == failed
    (good,) = entry["segments"]
    for bad in ({**good, "confidence": 1.5}, {**good, "start": 5.0}, {**good, "label": 3}, {"label": "x"}):
        assert parse_entry(json.dumps({**entry, "segments": [bad]}).encode(), timeline=True) is None, bad
    assert parse_entry(json.dumps({**failed, "segments": [good]}).encode(), timeline=True) is None


def test_hub_run_prints_timelines_and_refuses_a_stride_alone(small_stnet, short_video, capsys):
    (entry,) = small_stnet.run_cmd(["--input_path", str(short_video), "--timeline", "2"])
    assert [w["start"] for w in entry["windows"]] == [0.0, 2.0]
    with pytest.raises(SystemExit) as stopped:
        small_stnet.run_cmd(["--input_path", str(short_video), "--stride", "2"])
    assert stopped.value.code == 2 and "--stride needs --timeline" in capsys.readouterr().err


def test_the_serving_body_takes_timeline_and_stride(small_stnet, short_video, monkeypatch):
    monkeypatch.setenv("PADDLEHUB_VIDEO_SERVING_DIRS", str(short_video.parent))
    (entry,) = small_stnet.serving_method(paths=[str(short_video)], timeline=2, stride=1, top_k=2)
    assert [w["start"] for w in entry["windows"]] == [0.0, 1.0, 2.0]
    assert all(len(w["prediction"]) == 2 for w in entry["windows"])
    assert entry["segments"] == segments_of(entry["windows"]) and entry["segments"]
    (refused,) = small_stnet.serving_method(videos=["not base64!"], timeline=2)
    assert refused["windows"] == [] and refused["duration"] is None and refused["error"]
    assert refused["segments"] == []


def test_a_video_with_a_gap_of_years_gets_its_two_windows(small_stnet, years_gap_video):
    (entry,) = small_stnet.classify_timeline([str(years_gap_video)], window_seconds=1, top_k=1)
    assert "error" not in entry, entry
    assert [w["start"] for w in entry["windows"]] == [0.0, TEN_YEARS_MS / 1000]


def with_max_windows(module, max_windows: int):
    """`module`'s settings with another timeline.max_windows (settings are frozen: a changed copy)."""
    return dataclasses.replace(module.settings, timeline=TimelineSettings(max_windows=max_windows))


def test_a_video_over_the_window_limit_fails_before_decoding(small_stnet, lossless_10s, monkeypatch):
    decoded = []
    monkeypatch.setattr("paddlehub_video.module_base.read_sampled_groups", lambda *a: decoded.append(a) or iter(()))
    monkeypatch.setattr(small_stnet, "settings", with_max_windows(small_stnet, 3))
    (entry,) = small_stnet.classify_timeline([str(lossless_10s)], window_seconds=1)
    assert entry["windows"] == [] and entry["duration"] is None
    assert entry["error"] == (f"{lossless_10s}: windows of 1 s every 1 s make more than 3 windows, "
                              f"the limit per video ({MAX_WINDOWS_SETTING})")
    assert decoded == []
    with pytest.raises(ConfigError, match=f"{MAX_WINDOWS_SETTING} must be a positive integer"):
        build_settings("stnet_kinetics400", {"timeline": {"max_windows": 0}})


def test_the_default_window_limit_applies_without_a_setting(small_stnet, lossless_10s, monkeypatch):
    assert build_settings("stnet_kinetics400", {"timeline": None}).timeline.max_windows == DEFAULT_MAX_WINDOWS
    monkeypatch.setattr(small_stnet, "settings", with_max_windows(small_stnet, DEFAULT_MAX_WINDOWS))
    (entry,) = small_stnet.classify_timeline([str(lossless_10s)], window_seconds=60, stride_seconds=MIN_SECONDS)
    assert len(entry["windows"]) == 1  # the first window reaches the end: one, whatever the stride
    times = [float(i) for i in range(DEFAULT_MAX_WINDOWS + 1)]
    with pytest.raises(TooManyWindows):
        plan_windows(times, times[-1] + 1, 1.0, 1.0, lambda n: [0], DEFAULT_MAX_WINDOWS)


def test_serving_bounds_the_windows_and_refuses_tiny_strides(small_stnet, lossless_10s, monkeypatch):
    monkeypatch.setenv("PADDLEHUB_VIDEO_SERVING_DIRS", str(lossless_10s.parent))
    monkeypatch.setenv(MAX_WINDOWS_ENV, "4")
    (entry,) = small_stnet.serving_method(paths=[str(lossless_10s)], timeline=2)
    assert entry["error"].endswith(f"make more than 4 windows, the limit per video ({MAX_WINDOWS_ENV})"), entry
    (entry,) = small_stnet.serving_method(paths=[str(lossless_10s)], timeline=2, stride=4)
    assert [w["start"] for w in entry["windows"]] == [0.0, 4.0, 8.0]
    with pytest.raises(ValueError, match="stride_seconds must be a number of seconds of at least 0.001"):
        small_stnet.serving_method(paths=[str(lossless_10s)], timeline=2, stride=1e-6)


def test_hub_run_refuses_a_microsecond_stride_as_a_usage_error(small_stnet, short_video, capsys):
    for argv in (["--timeline", "60", "--stride", "0.000001"], ["--timeline", "1e-6"]):
        with pytest.raises(SystemExit) as stopped:
            small_stnet.run_cmd(["--input_path", str(short_video), *argv])
        assert stopped.value.code == 2
        assert f"expected a number of seconds of at least {MIN_SECONDS:g}" in capsys.readouterr().err


def test_frame_times_of_a_relative_name_with_a_colon(vfr_video, tmp_path, monkeypatch):
    # FFmpeg reads `clip:v.mp4` as a URL of protocol `clip`: the file is opened by its absolute path.
    (tmp_path / "clip:v.mp4").write_bytes(Path(vfr_video).read_bytes())
    monkeypatch.chdir(tmp_path)
    assert frame_times("clip:v.mp4") == frame_times(vfr_video)
