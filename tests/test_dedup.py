"""Repeated sampled frames run through TSN once: a 150-frame clip sampled to 300 frames (each frame
twice) gives classify and extract_features bit for bit what running every copy gives, and the
network is fed 150 frames, counted by a spy on the TSN predictor.

The module runs the publisher's 300 segments on 32-pixel crops, so ResNet-101 stays cheap.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from paddlehub_video.decode.preprocess import unique_frames
from tests.fixtures.publisher import REPO, PublisherHost

NAME = "videotag_tsn_lstm"
SEG_NUM = 300
CLIP_FRAMES = 150


class FrameSpy:
    """A predictor stand-in that counts the frames of every `image` fed through it."""

    def __init__(self, predictor):
        self.predictor, self.frames = predictor, 0

    def run(self, inputs, lod=None):
        self.frames += inputs["image"].shape[1]
        return self.predictor.run(inputs, lod)


@pytest.fixture(scope="module")
def videotag(mirror: PublisherHost):
    import paddlehub as hub  # not at import: conftest sets HUB_HOME first

    settings = {"sampling": {"seg_num": SEG_NUM}, "preprocess": {"short_size": 32, "crop_size": 32}}
    return hub.Module(directory=str(REPO / NAME), config=mirror.config(NAME, **settings))


@pytest.fixture(scope="module")
def clip(make_video) -> Path:
    return make_video("dedup_150", CLIP_FRAMES, 64, 48)


def test_unique_frames_gives_back_every_frame() -> None:
    rng = np.random.default_rng(0)
    distinct = rng.integers(0, 256, size=(5, 4, 4, 3), dtype=np.uint8)
    order = np.array([3, 0, 3, 1, 4, 0, 2, 2])
    unique, inverse = unique_frames(distinct[order])
    assert len(unique) == 5
    np.testing.assert_array_equal(unique[inverse], distinct[order])
    # One byte apart is another frame.
    near = distinct[[0, 0]].copy()
    near[1, 0, 0, 0] ^= 1
    assert len(unique_frames(near)[0]) == 2


def test_150_frame_clip_runs_150_frames_with_the_same_outputs(videotag, clip: Path) -> None:
    frames = videotag.preprocess(str(clip))
    assert len(frames) == SEG_NUM and len(unique_frames(frames)[0]) == CLIP_FRAMES  # every frame twice
    predictors = videotag.predictors(False)
    spy = FrameSpy(predictors["tsn"])
    spied = {**predictors, "tsn": spy}
    deduped = videotag.run_networks(frames, spied)
    assert spy.frames == CLIP_FRAMES
    spy.frames = 0
    every_copy = videotag.run_networks(frames, spied, dedup=False)
    assert spy.frames == SEG_NUM
    for name in ("tsn_features", "probabilities", "pooled_feature"):
        np.testing.assert_array_equal(getattr(deduped, name), getattr(every_copy, name))
    # The public calls take the deduplicated path and give the same arrays.
    [features] = videotag.extract_features([str(clip)])
    np.testing.assert_array_equal(features["tsn_features"], every_copy.tsn_features)
    np.testing.assert_array_equal(features["pooled_feature"], every_copy.pooled_feature)
    [entry] = videotag.classify([str(clip)], threshold=0.0, top_k=5)
    assert entry["prediction"] == videotag.postprocess(every_copy.probabilities, top_k=5, threshold=0.0)
