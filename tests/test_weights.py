"""The publisher's weight files: reading, checking, and the shipped parameter manifests."""
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from paddlehub_video.errors import WeightsError
from paddlehub_video.weights import check_parameters, expected_parameters, load_checked_weights, load_pdparams
from tests.fixtures.weights import make_state, pdparams_bytes, write_pdparams

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "upstream_param_shapes.json"
NETWORKS = {"videotag_tsn_resnet101": 520, "videotag_attention_lstm": 15, "stnet_resnet50_kinetics400": 301}


@pytest.mark.parametrize("network,count", NETWORKS.items())
def test_manifest_sizes(network, count):
    params = expected_parameters(network)
    assert len(params) == count
    assert all(all(d > 0 for d in shape) for shape in params.values())


@pytest.mark.skipif(not REFERENCE.exists(), reason="the reference list lives outside the repository")
def test_manifests_equal_reference():
    reference = json.loads(REFERENCE.read_text(encoding="utf-8"))
    for network in NETWORKS:
        assert list(expected_parameters(network).items()) == [(n, tuple(s)) for n, s in reference[network]]


def test_known_shapes():
    tsn = expected_parameters("videotag_tsn_resnet101")
    assert tsn["res4b22_branch2c_weights"] == (1024, 256, 1, 1)
    assert tsn["bn5a_branch1_variance"] == (2048,)
    lstm = expected_parameters("videotag_attention_lstm")
    assert lstm["rgb_lstm_backward.b_0"] == (1, 3584)
    stnet = expected_parameters("stnet_resnet50_kinetics400")
    assert stnet["conv1_weights"] == (64, 15, 7, 7)
    assert stnet["batch_norm_44.w_2"] == (1024,)


@pytest.fixture(scope="module")
def lstm_state():
    return make_state("videotag_attention_lstm", seed=1)


def test_pdparams_round_trip_in_publisher_format(tmp_path, lstm_state):
    state = lstm_state
    data = pdparams_bytes(state)
    assert b"cnumpy.core.multiarray\n_reconstruct" in data  # as fluid 1.8 on numpy 1.x wrote it
    assert data[:2] == b"\x80\x02"  # pickle protocol 2
    path = tmp_path / "attention_lstm.pdparams"
    path.write_bytes(data)
    loaded = load_checked_weights(path, "videotag_attention_lstm")
    assert loaded.keys() == state.keys()
    assert all(np.array_equal(loaded[k], state[k]) for k in state)


def test_extra_keys_are_ignored(tmp_path, monkeypatch):
    expected = {"w": (2, 3)}
    monkeypatch.setattr("paddlehub_video.weights.expected_parameters", lambda network: expected)
    state = {"w": np.ones((2, 3), np.float32), "fc_0.w_0": np.zeros((3, 3), np.float32)}
    loaded = load_checked_weights(write_pdparams(state, tmp_path / "w.pdparams"), "small")
    assert list(loaded) == ["w"]


def test_missing_and_wrong_parameters_are_listed(lstm_state):
    state = dict(lstm_state)
    del state["fc1.w_0"]
    state["output.b_0"] = np.zeros((7,), np.float32)
    state["fc2.b_0"] = state["fc2.b_0"].astype(np.float64)
    with pytest.raises(WeightsError) as info:
        check_parameters(state, expected_parameters("videotag_attention_lstm"), "lstm.pdparams")
    message = str(info.value)
    assert message.startswith("lstm.pdparams: 3 of 15 parameters are wrong")
    assert "missing fc1.w_0" in message
    assert "output.b_0 has shape [7], expected [3396]" in message
    assert "fc2.b_0 has dtype float64" in message


def test_check_parameters_accepts_exact_state():
    expected = {"a": (2, 3)}
    check_parameters({"a": np.zeros((2, 3), np.float32)}, expected, "x")


@pytest.mark.parametrize("content", [b"", b"not a pickle at all", pickle.dumps([1, 2, 3], protocol=2)])
def test_unreadable_files(tmp_path, content):
    path = tmp_path / "w.pdparams"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=str(path)):
        load_pdparams(path)


def test_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("should never run",))

    path = tmp_path / "evil.pdparams"
    path.write_bytes(pickle.dumps({"a": Evil()}, protocol=2))
    with pytest.raises(WeightsError, match="print' is not allowed"):
        load_pdparams(path)
