"""Labels and the published result format."""
import numpy as np
import pytest

from paddlehub_video.errors import AssetError
from paddlehub_video.model.assets import read_labels
from paddlehub_video.model.postprocess import top_k_predictions, validate_threshold, validate_top_k

LABELS = ["a", "b", "c", "d", "b"]  # "b" twice, as in the publisher's label_3396.txt


def test_top_k_then_threshold_descending():
    probs = np.array([0.1, 0.9, 0.5, 0.49999, 0.2], np.float32)
    result = top_k_predictions(probs, ["w", "x", "y", "z", "v"], top_k=3, threshold=0.5)
    assert list(result.items()) == [("x", pytest.approx(0.9)), ("y", 0.5)]  # >= keeps 0.5
    assert all(type(v) is float for v in result.values())


def test_top_k_applies_before_threshold():
    probs = np.array([0.9, 0.8, 0.7], np.float32)
    assert list(top_k_predictions(probs, ["a", "b", "c"], top_k=1, threshold=0.0)) == ["a"]


def test_duplicate_label_keeps_higher_probability():
    probs = np.array([0.1, 0.3, 0.2, 0.0, 0.8], np.float32)
    result = top_k_predictions(probs, LABELS, top_k=5, threshold=0.0)
    assert result["b"] == pytest.approx(0.8)
    assert list(result) == ["b", "c", "a", "d"]


def test_value_is_the_float32_value():
    probs = np.array([0.9771281480789185], np.float32)
    assert top_k_predictions(probs, ["训练"], 1, 0.5) == {"训练": float(np.float32(0.9771281480789185))}


def test_length_mismatch():
    with pytest.raises(ValueError, match="3 probabilities for 2 labels"):
        top_k_predictions(np.zeros(3), ["a", "b"], 1, 0.0)


@pytest.mark.parametrize("bad", [0, -1, 2.5, "3", None, True])
def test_invalid_top_k(bad):
    with pytest.raises(ValueError, match="top_k"):
        validate_top_k(bad)


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.5", None, float("nan")])
def test_invalid_threshold(bad):
    with pytest.raises(ValueError, match="threshold"):
        validate_threshold(bad)


def test_valid_arguments():
    assert validate_top_k(np.int64(4)) == 4
    assert validate_threshold(1) == 1.0


def test_read_text_labels(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("胶合板\n坠楼\n空手道\n", encoding="utf-8")
    assert read_labels(path, expected_count=3) == ["胶合板", "坠楼", "空手道"]
    with pytest.raises(AssetError, match="expected 4 labels, found 3"):
        read_labels(path, expected_count=4)


def test_read_json_labels(tmp_path):
    path = tmp_path / "labels.json"
    path.write_text('["abseiling", "hurling_(sport)", "massaging_person\'s_head"]', encoding="utf-8")
    assert read_labels(path) == ["abseiling", "hurling_(sport)", "massaging_person's_head"]
    path.write_text('{"a": 1}', encoding="utf-8")
    with pytest.raises(AssetError, match="array of strings"):
        read_labels(path)


def test_missing_label_file(tmp_path):
    with pytest.raises(AssetError, match="missing.txt"):
        read_labels(tmp_path / "missing.txt")
