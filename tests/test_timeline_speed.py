"""Timelines at the speed of the video, and resumable within a video.

- videotag's TSN sees each distinct frame of a timeline once, whatever the windows' overlap, and both
  modules' windows are bit for bit what classifying each window's frames on its own gives (the
  timeline before the feature cache), for strides of 1/2 and 1/4 of the window;
- `hub run --timeline --output` stopped (a Ctrl-C raised by the model when a chosen window starts)
  keeps its finished windows in `<output>.windows`, and the same command again classifies only the
  windows left, writing the very line an uninterrupted run writes;
- the progress hooks say windows done / total.

Modules: StNet with the SMALL settings; videotag on 32-pixel crops with 16 TSN segments (a 2 s window
of 50 frames samples every third frame, so overlapping windows share sampled frames only where their
starts are a multiple of 3 frames apart) and with 64 (every frame sampled, some twice: windows share
all the frames of their overlap).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from paddlehub_video.decode.sampling import plan_windows
from paddlehub_video.decode.video import frame_times, read_sampled_groups
from paddlehub_video.interfaces.results_file import ResultsFileError, WindowsFile, windows_path
from paddlehub_video.interfaces.terminal import TerminalProgress
from paddlehub_video.progress import Progress, reporting
from paddlehub_video.timeline import FrameFeatures, WindowModel
from tests.fixtures.publisher import REPO, PublisherHost
from tests.fixtures.videos import write_encoded_video

WINDOW = 2.0
STRIDES = [WINDOW / 2, WINDOW / 4]


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """250 frames at 25 fps (10 s), H.264 with B-frames."""
    return write_encoded_video(tmp_path_factory.mktemp("speed") / "b.mp4", 250, 64, 48, "libx264", {"bf": "2"})


def videotag(mirror: PublisherHost, seg_num: int) -> Any:
    """videotag with `seg_num` TSN segments on 32-pixel crops."""
    import paddlehub as hub  # not at import: conftest sets HUB_HOME first

    settings = {"sampling": {"seg_num": seg_num}, "preprocess": {"short_size": 32, "crop_size": 32}}
    return hub.Module(directory=str(REPO / "videotag_tsn_lstm"), config=mirror.config("videotag_tsn_lstm", **settings))


@pytest.fixture(scope="module")
def videotag16(mirror: PublisherHost) -> Any:
    """A 2 s window (50 frames) samples every third frame: windows share sampled frames only where their
    starts are a multiple of 3 frames apart."""
    return videotag(mirror, 16)


@pytest.fixture(scope="module")
def videotag64(mirror: PublisherHost) -> Any:
    """A 2 s window (50 frames) samples every frame, some twice (cyclic): overlapping windows share frames."""
    return videotag(mirror, 64)


class FrameSpy:
    """A TSN predictor stand-in that counts the frames fed through it: the distinct ones of each run, since
    a run's frames are distinct (`frame_features` dedups them) but for the copies of its last frame that
    pad a short last batch to the shape of the others."""

    def __init__(self, predictor: Any):
        self.predictor, self.frames = predictor, 0

    def run(self, inputs: dict, lod: Any = None) -> Any:
        batch = inputs["image"][0]
        self.frames += len(np.unique(batch.reshape(len(batch), -1), axis=0))
        return self.predictor.run(inputs, lod)


def window_by_window(module: Any, path: Path, stride: float) -> tuple[list, list[np.ndarray]]:
    """The timeline as it was made before: each window's frames through `forward`, as `classify` runs a clip."""
    times = frame_times(path)
    windows = plan_windows(times.times, times.duration, WINDOW, stride, module.sampling())
    predictors = module.predictors(False)
    groups = read_sampled_groups(path, [w.indices for w in windows], module.crop())
    return windows, [module.forward(np.stack(frames), predictors) for frames in groups]


@pytest.mark.parametrize("stride", STRIDES)
@pytest.mark.parametrize("name", ["videotag16", "videotag64", "small_stnet"])
def test_the_timeline_is_bit_for_bit_the_window_by_window_one(name, stride, request, video, monkeypatch):
    module = request.getfixturevalue(name)
    every = len(module.class_names())
    windows, probabilities = window_by_window(module, video, stride)
    predictors = module.predictors(False)
    spy = FrameSpy(predictors.get("tsn"))
    monkeypatch.setattr(module, "predictors", lambda use_gpu, *args: {**predictors, "tsn": spy} if "tsn" in
                        predictors else predictors)
    (entry,) = module.classify_timeline([str(video)], window_seconds=WINDOW, stride_seconds=stride, top_k=every,
                                        threshold=0.0)
    assert [(w["start"], w["end"]) for w in entry["windows"]] == [(w.start, min(w.end, 10.0)) for w in windows]
    # Every class's probability, as Python floats of the float32 values: equal means equal bit for bit.
    assert [w["prediction"] for w in entry["windows"]] == [module.postprocess(p, every, 0.0) for p in probabilities]
    if "tsn" in predictors:  # each distinct frame through TSN once, though windows overlap
        distinct = set().union(*(w.indices for w in windows))
        assert spy.frames == len(distinct)
        if name == "videotag64":  # every frame sampled: the windows share their overlap's frames
            assert sum(len(set(w.indices)) for w in windows) >= len(distinct) * (WINDOW / stride - 1)


class StopAt(WindowModel):
    """`model`, counting the windows it classifies in `done`; a Ctrl-C when window `stop` (from 0) starts."""

    def __init__(self, model: WindowModel, done: list, stop: int | None):
        super().__init__(model.forward)
        self.model, self.done, self.stop = model, done, stop

    def __call__(self, indices: Any, frames: np.ndarray) -> np.ndarray:
        if len(self.done) == self.stop:
            raise KeyboardInterrupt
        self.done.append(list(indices))
        return self.model(indices, frames)

    def keep_from(self, first: int | None) -> None:
        self.model.keep_from(first)


def watch_windows(module: Any, monkeypatch: pytest.MonkeyPatch, stop: int | None = None) -> list:
    """The windows `module`'s timelines classify from now on (appended as they start)."""
    done: list = []
    make = type(module).timeline_model
    monkeypatch.setattr(module, "timeline_model", lambda predictors: StopAt(make(module, predictors), done, stop))
    return done


def options_of(video: Path) -> list[str]:
    """`hub run` options of the timelines stopped and resumed here: 2 s windows every 0.5 s (17 windows)."""
    return ["--input_path", str(video), "--timeline", str(WINDOW), "--stride", str(WINDOW / 4)]


@pytest.mark.parametrize("name", ["videotag64", "small_stnet"])
def test_a_stopped_timeline_goes_on_from_its_last_finished_window(name, request, video, tmp_path, monkeypatch, capsys):
    module = request.getfixturevalue(name)
    args = options_of(video)
    whole = tmp_path / "whole.jsonl"
    first = watch_windows(module, monkeypatch)
    module.run_cmd([*args, "--output", str(whole)])
    total = len(first)
    assert total == 17 and not windows_path(whole).exists()

    stopped = tmp_path / "stopped.jsonl"
    watch_windows(module, monkeypatch, stop=10)
    with pytest.raises(SystemExit) as interrupted:
        module.run_cmd([*args, "--output", str(stopped)])
    assert interrupted.value.code == 130
    assert f"finished windows of the video in progress in {windows_path(stopped)}" in capsys.readouterr().err
    assert stopped.read_text(encoding="utf-8") == ""  # the video has no entry yet
    kept = [json.loads(line) for line in windows_path(stopped).read_text(encoding="utf-8").splitlines()]
    assert len(kept) == 10 and {k["path"] for k in kept} == {str(video)}

    rest = watch_windows(module, monkeypatch)
    summary = module.run_cmd([*args, "--output", str(stopped)])
    assert summary["classified"] == 1
    assert rest == first[10:]  # only the windows left were classified
    assert stopped.read_bytes() == whole.read_bytes()  # the line an uninterrupted run writes
    assert not windows_path(stopped).exists()

    # Stopped after its last window but before its line was written: nothing left to classify.
    complete = tmp_path / "complete.jsonl"
    options = {"module": module.NAME, "window": WINDOW, "stride": WINDOW / 4, "top_k": module.DEFAULTS.top_k,
               "threshold": module.DEFAULTS.threshold}
    with WindowsFile(windows_path(complete), set()) as store:
        for window in json.loads(whole.read_text(encoding="utf-8"))["windows"]:
            store.add(str(video), options, window)
    none = watch_windows(module, monkeypatch)
    module.run_cmd([*options_of(video), "--output", str(complete)])
    assert none == [] and complete.read_bytes() == whole.read_bytes()


def test_windows_kept_under_other_options_or_of_a_changed_file_are_not_resumed(video, tmp_path):
    output = tmp_path / "r.jsonl"
    window = {"start": 0.0, "end": 2.0, "prediction": {"a": 0.5}}
    options = {"module": "m", "window": 2.0, "stride": 1.0, "top_k": 5, "threshold": 0.0}
    with WindowsFile(windows_path(output), set()) as kept:
        kept.add(str(video), options, window)
    with WindowsFile(windows_path(output), set()) as kept:
        assert kept.finished(str(video), options) == [window]
        assert kept.finished(str(video), {**options, "stride": 0.5}) == []
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(video.read_bytes())
    with WindowsFile(windows_path(output), set()) as kept:
        kept.add(str(copy), options, window)
    copy.write_bytes(video.read_bytes()[:-1])  # another file under the same name
    with WindowsFile(windows_path(output), set()) as kept:
        assert kept.finished(str(copy), options) == []
    # Windows of a video whose entry is in the results file are dropped.
    with WindowsFile(windows_path(output), {str(video), str(copy)}) as kept:
        assert kept.kept == []
    assert not windows_path(output).exists()


def test_a_foreign_windows_file_is_refused_and_left_as_it_was(small_stnet, video, tmp_path, capsys):
    output = tmp_path / "r.jsonl"
    foreign = windows_path(output)
    foreign.write_text("my notes\n", encoding="utf-8")
    with pytest.raises(ResultsFileError, match="not a finished window"):
        WindowsFile(foreign, set())
    with pytest.raises(SystemExit) as usage:
        small_stnet.run_cmd(["--input_path", str(video), "--timeline", "5", "--output", str(output)])
    assert usage.value.code == 2 and "refused" in capsys.readouterr().err
    assert foreign.read_text(encoding="utf-8") == "my notes\n"


class Windows(Progress):
    """Records the windows hook."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []

    def windows(self, path: str, done: int, total: int) -> None:
        self.calls.append((path, done, total))


def test_progress_says_windows_done_of_total(small_stnet, video):
    with reporting(Windows()) as seen:
        small_stnet.classify_timeline([str(video)], window_seconds=4, stride_seconds=2)
    assert seen.calls == [(str(video), done, 4) for done in range(5)]
    display = TerminalProgress(open("/dev/null", "w"), "m", show=False)  # noqa: SIM115
    display.windows("a.mp4", 3, 29)
    display.stage("a.mp4", "decode", 50)
    display.advance("a.mp4", "decode", 7)
    assert display.describe() == "a.mp4 window 3/29, decode 7/50 frames"
    display.network(4, 16)  # the network's frames of a timeline's window
    assert display.describe() == "a.mp4 window 3/29, network 4/16 frames"
    display.finished("a.mp4")
    assert display.describe() == ""


def test_frame_features_keep_only_what_the_windows_to_come_need():
    seen: list[int] = []

    def features(frames: np.ndarray) -> np.ndarray:
        seen.extend(int(f) for f in frames[:, 0])
        return frames.astype(np.float32) * 2

    model = FrameFeatures(features, lambda rows: rows.sum(axis=0))
    frames = np.arange(10, dtype=np.int64)[:, None]
    np.testing.assert_array_equal(model([0, 1, 2, 2], frames[[0, 1, 2, 2]]), [10.0])
    model.keep_from(2)
    assert sorted(model.rows) == [2]
    np.testing.assert_array_equal(model([2, 3], frames[[2, 3]]), [10.0])
    assert seen == [0, 1, 2, 3] and model.computed == 4
    model.keep_from(None)
    assert model.rows == {}
