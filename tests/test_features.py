"""VideoTag.extract_features: per video its TSN features and attention-pooled vector, in input order,
checked against the TSN stage, the NumPy AttentionLSTM of tests/test_networks.py and classify() itself.

The module runs with the SMALL settings (4 frames of 128 pixels) on the simulated publisher's weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from paddlehub_video.decode.preprocess import frames_to_tensor
from paddlehub_video.model.weights import load_pdparams
from tests.fixtures.publisher import SMALL, VIDEOTAG_LABELS, PublisherHost
from tests.fixtures.references import DUPLICATE_IDS, np_attention_pooled, np_tag_head, prediction_vector

NAME = "videotag_tsn_lstm"
SEG_NUM = SMALL["sampling"]["seg_num"]
NUM_CLASSES = len(VIDEOTAG_LABELS)
POOLED_SIZE = 1024  # 2 x 512: forward and backward LSTM states, concatenated


@pytest.fixture(scope="module")
def videotag(mirror: PublisherHost):
    return mirror.small_module(NAME)


@pytest.fixture(scope="module")
def lstm_state(videotag) -> dict[str, np.ndarray]:
    # The module's copy of the served weights (tests/test_videotag.py checks the module's answers against
    # weights read from the archive itself): no second 250 MB gzip read here.
    return load_pdparams(videotag.asset("lstm_weights"))


@pytest.fixture(scope="module")
def good_paths(short_video: Path, portrait_video: Path) -> list[str]:
    return [str(short_video), str(portrait_video)]


@pytest.fixture(scope="module")
def features(videotag, good_paths: list[str]) -> list[dict]:
    return videotag.extract_features(good_paths)


def test_one_entry_per_video_with_both_arrays(features: list[dict], good_paths: list[str]) -> None:
    assert [entry["path"] for entry in features] == good_paths
    for entry in features:
        assert set(entry) == {"path", "tsn_features", "pooled_feature"}
        assert entry["tsn_features"].shape == (SEG_NUM, 2048) and entry["tsn_features"].dtype == np.float32
        assert entry["pooled_feature"].shape == (POOLED_SIZE,) and entry["pooled_feature"].dtype == np.float32
        assert np.isfinite(entry["tsn_features"]).all() and np.isfinite(entry["pooled_feature"]).all()
    # Two different videos: the vectors carry the video, not a constant.
    assert np.abs(features[0]["pooled_feature"] - features[1]["pooled_feature"]).max() > 1e-3


def test_tsn_features_are_the_tsn_stage(videotag, features: list[dict]) -> None:
    # The stage classify feeds the LSTM with; tests/test_videotag.py checks it against an eager ResNet-101.
    tsn = videotag.predictor(videotag.bundle().models["tsn"], False)
    pre = videotag.config["preprocess"]
    for entry in features:
        frames = videotag.preprocess(entry["path"])
        network_input = frames_to_tensor(frames, pre["mean"], pre["std"])[np.newaxis]  # all frames in one run
        np.testing.assert_array_equal(entry["tsn_features"], tsn.run({"image": network_input})[0][0])



def test_every_tsn_run_has_one_shape_and_padding_changes_no_feature(videotag, good_paths: list[str]) -> None:
    """An odd number of frames in runs of 2: the last run is padded to 2 frames (oneDNN keeps a
    reordered copy of the weights per input shape it meets), and the features are bit for bit those
    of one run over every frame."""
    tsn = videotag.predictor(videotag.bundle().models["tsn"], False)
    shapes = []

    class Recording:
        def run(self, inputs: dict) -> list[np.ndarray]:
            shapes.append(inputs["image"].shape)
            return tsn.run(inputs)

    frames = videotag.preprocess(good_paths[0])[:3]
    assert videotag.config["runtime"]["frames_per_batch"] == 2
    got = videotag.tsn_features(frames, Recording())
    assert shapes == [(1, 2, 3, 128, 128)] * 2
    pre = videotag.config["preprocess"]
    one_run = tsn.run({"image": frames_to_tensor(frames, pre["mean"], pre["std"])[np.newaxis]})[0][0]
    np.testing.assert_array_equal(got, one_run)


def test_pooled_feature_matches_numpy_reference(features: list[dict], lstm_state: dict) -> None:
    for entry in features:
        tsn_features = entry["tsn_features"].astype(np.float64)
        reference = np_attention_pooled(lstm_state, tsn_features)[0]
        diff = float(np.abs(entry["pooled_feature"] - reference).max())
        print(f"\npooled_feature vs NumPy reference, max abs diff {diff:.3g}, max |ref| {np.abs(reference).max():.3g}")
        assert diff < 1e-5
        # The tolerance means something: the same frames in reverse order pool to a far different vector.
        reversed_order = np_attention_pooled(lstm_state, tsn_features[::-1])[0]
        assert float(np.abs(reversed_order - reference).max()) > 100 * max(diff, 1e-7)


def test_fc_head_on_the_pooled_feature_gives_the_classify_probabilities(videotag, features: list[dict],
                                                                       lstm_state: dict) -> None:
    results = videotag.classify([entry["path"] for entry in features], top_k=NUM_CLASSES, threshold=0.0)
    for entry, result in zip(features, results, strict=True):
        probabilities = np_tag_head(lstm_state, entry["pooled_feature"][np.newaxis].astype(np.float64))[0]
        # Both duplicate ids read the shared label's (higher) value in classify's dict.
        probabilities[list(DUPLICATE_IDS)] = probabilities[list(DUPLICATE_IDS)].max()
        diff = float(np.abs(prediction_vector(result["prediction"], VIDEOTAG_LABELS) - probabilities).max())
        print(f"\nNumPy fc head on pooled_feature vs classify(), max abs diff over {NUM_CLASSES} classes: {diff:.3g}")
        assert diff < 1e-5


def test_a_bad_video_gets_the_classify_error_and_the_others_their_features(videotag, features: list[dict],
                                                                           good_paths: list[str],
                                                                           tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    paths = [good_paths[0], str(tmp_path / "missing.mp4"), str(garbage), good_paths[1]]

    got = videotag.extract_features(paths)

    classified = videotag.classify(paths)
    assert [entry["path"] for entry in got] == paths
    for index in (1, 2):
        assert got[index] == {"path": paths[index], "error": classified[index]["error"]}
        assert paths[index] in got[index]["error"]
    for entry, expected in zip((got[0], got[3]), features, strict=True):
        np.testing.assert_array_equal(entry["tsn_features"], expected["tsn_features"])
        np.testing.assert_array_equal(entry["pooled_feature"], expected["pooled_feature"])


def test_empty_paths_give_an_empty_list(videotag) -> None:
    assert videotag.extract_features([]) == []


def test_paths_must_be_a_list(videotag) -> None:
    with pytest.raises(ValueError, match="paths"):
        videotag.extract_features("video.mp4")
