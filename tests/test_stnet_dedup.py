"""Repeated StNet windows run through the per-window layers once: a 10-frame clip sampled to 25
windows (each one 2 or 3 times) gives classify bit for bit what running every window gives, and
the network is fed the 10 distinct windows, one per run, counted by a spy on StNet's `windows`
predictor; a still video feeds 1 window, and a clip of 25 distinct windows 25, with what the whole
program fed every segment at once (before the gather and the split into two programs) gave.

The module runs the publisher's 25 segments on 64-pixel crops, so ResNet-50 stays cheap.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from paddlehub_video.decode.preprocess import frames_to_tensor, to_super_images, unique_windows
from paddlehub_video.model.inference_model import Program, cached_inference_model
from paddlehub_video.model.networks.stnet import PROGRAM_VERSION, build_stnet_program
from tests.fixtures.publisher import REPO, PublisherHost
from tests.fixtures.videos import synthetic_frame

NAME = "stnet_kinetics400"
SEG_NUM = 25
SEGLEN = 5
CROP = 64


class WindowSpy:
    """Stand-ins for StNet's two predictors: they count the windows fed to `windows` (and its runs'
    shapes) and keep the `window_index` fed to `temporal`."""

    def __init__(self, predictors):
        self.predictors, self.windows, self.shapes, self.index = predictors, 0, set(), None

    def spies(self) -> dict:
        return {"windows": Spied(self, "windows"), "temporal": Spied(self, "temporal")}


class Spied:
    def __init__(self, spy: WindowSpy, name: str):
        self.spy, self.name = spy, name

    def run(self, inputs, lod=None):
        if self.name == "windows":
            self.spy.windows += inputs["windows"].shape[0]
            self.spy.shapes.add(inputs["windows"].shape)
        else:
            self.spy.index = inputs["window_index"]
        return self.spy.predictors[self.name].run(inputs, lod)


@pytest.fixture(scope="module")
def stnet(mirror: PublisherHost):
    import paddlehub as hub  # not at import: conftest sets HUB_HOME first

    settings = {"sampling": {"seg_num": SEG_NUM}, "preprocess": {"short_size": CROP, "crop_size": CROP}}
    return hub.Module(directory=str(REPO / NAME), config=mirror.config(NAME, **settings))


@pytest.fixture(scope="module")
def every_segment(stnet):
    """Frames -> the probabilities of the program without the gather (PROGRAM_VERSION 1's), fed all
    seg_num super-images `[1, seg_num, 15, crop, crop]` as forward fed them before."""
    config = stnet.config
    arguments = {"seg_num": SEG_NUM, "image_size": CROP, "num_classes": config["model"]["num_classes"]}
    [weights] = stnet.assets("weights")
    model = cached_inference_model(Program("stnet", PROGRAM_VERSION, build_stnet_program, arguments),
                                   {config["assets"]["weights"]["network"]: weights})
    predictor = stnet.predictor(model, False)
    pre = config["preprocess"]

    def run(frames: np.ndarray) -> np.ndarray:
        supers = to_super_images(frames_to_tensor(frames, pre["mean"], pre["std"]), SEGLEN)
        return predictor.run({"image": supers[np.newaxis]})[0][0]

    return run


@pytest.fixture(scope="module")
def still_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 copies of one frame, FFV1 (lossless, so every frame decodes to the same bytes)."""
    path = tmp_path_factory.mktemp("still") / "still.mkv"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 25, (64, 48))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write FFV1 to .mkv")
    frame = cv2.cvtColor(synthetic_frame(7, 64, 48), cv2.COLOR_RGB2BGR)
    try:
        for _ in range(40):
            writer.write(frame)
    finally:
        writer.release()
    return path


def spied_run(stnet, frames: np.ndarray, dedup: bool = True) -> tuple[np.ndarray, WindowSpy]:
    """`forward` with a spy on the StNet predictor: (probabilities, the spy)."""
    spy = WindowSpy(stnet.predictors(False))
    probabilities = stnet.forward(frames, spy.spies(), dedup=dedup)
    assert spy.shapes == {(1, 3 * SEGLEN, CROP, CROP)}  # one window per run, whatever the clip
    return probabilities, spy


def assert_every_window_gives(stnet, every_segment, frames: np.ndarray, deduped: np.ndarray) -> None:
    """`deduped` is bit for bit what feeding all seg_num windows gives, with the gather (an identity
    index) and with the program without it."""
    every_window, spy = spied_run(stnet, frames, dedup=False)
    assert spy.windows == SEG_NUM
    np.testing.assert_array_equal(spy.index, np.arange(SEG_NUM))
    np.testing.assert_array_equal(deduped, every_window)
    np.testing.assert_array_equal(deduped, every_segment(frames))
    assert deduped.max() > 5 / 400  # not a flat distribution, so the comparison means something


def test_unique_windows_gives_back_every_window() -> None:
    rng = np.random.default_rng(0)
    distinct = rng.integers(0, 256, size=(4, SEGLEN, 4, 4, 3), dtype=np.uint8)
    order = np.array([2, 0, 2, 1, 3, 0, 0])
    frames = distinct[order].reshape(-1, 4, 4, 3)
    unique, inverse = unique_windows(frames, SEGLEN)
    assert unique.shape == (4 * SEGLEN, 4, 4, 3)
    np.testing.assert_array_equal(unique.reshape(4, SEGLEN, 4, 4, 3)[inverse].reshape(frames.shape), frames)
    np.testing.assert_array_equal(inverse, [0, 1, 0, 2, 3, 1, 1])
    # The same frames in another order, or one byte apart, are another window.
    shuffled = distinct[[0, 0]].copy()
    shuffled[1] = shuffled[1][::-1]
    assert unique_windows(shuffled.reshape(-1, 4, 4, 3), SEGLEN)[1].tolist() == [0, 1]
    near = distinct[[0, 0]].copy()
    near[1, 4, 0, 0, 0] ^= 1
    assert unique_windows(near.reshape(-1, 4, 4, 3), SEGLEN)[1].tolist() == [0, 1]
    # All distinct: the frames themselves (no copy), in order.
    all_distinct = distinct.reshape(-1, 4, 4, 3)
    unique, inverse = unique_windows(all_distinct, SEGLEN)
    assert np.shares_memory(unique, all_distinct) and inverse.tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(unique, all_distinct)
    with pytest.raises(ValueError, match="windows of 5"):
        unique_windows(all_distinct[:7], SEGLEN)


def test_10_frame_clip_runs_10_windows_with_the_same_outputs(stnet, every_segment, make_video) -> None:
    clip = make_video("stnet_dedup_10", 10, 64, 48)
    frames = stnet.preprocess(str(clip))
    assert len(frames) == SEG_NUM * SEGLEN
    deduped, spy = spied_run(stnet, frames)
    # Window i takes frames i..i+4 mod 10: windows i and i + 10 are the same.
    assert spy.windows == 10
    np.testing.assert_array_equal(spy.index, np.arange(SEG_NUM) % 10)
    assert_every_window_gives(stnet, every_segment, frames, deduped)
    # The public call takes the deduplicated path and gives the same result.
    [entry] = stnet.classify([str(clip)], top_k=5)
    assert entry["prediction"] == stnet.postprocess(deduped, top_k=5)


def test_a_still_video_runs_one_window(stnet, every_segment, still_video: Path) -> None:
    frames = stnet.preprocess(str(still_video))
    deduped, spy = spied_run(stnet, frames)
    assert spy.windows == 1
    np.testing.assert_array_equal(spy.index, np.zeros(SEG_NUM))
    assert_every_window_gives(stnet, every_segment, frames, deduped)


def test_a_clip_of_distinct_windows_runs_all_25_unchanged(stnet, every_segment, make_video) -> None:
    clip = make_video("stnet_dedup_200", 200, 64, 48)
    frames = stnet.preprocess(str(clip))
    deduped, spy = spied_run(stnet, frames)
    assert spy.windows == SEG_NUM
    np.testing.assert_array_equal(spy.index, np.arange(SEG_NUM))
    assert_every_window_gives(stnet, every_segment, frames, deduped)
