"""videotag_tsn_lstm end to end: the published result format, per-video errors, the device switch,
build-once caching, the hub package layout, and numerical faithfulness against an independent
reference written here (naive OpenCV decode, PIL, eager ResNet-101, NumPy AttentionLSTM).

Every module here downloads from the simulated publisher (`publisher_host`) and samples 8 frames
per video, except the one slow test, which runs the real 300-frame path.
"""

from __future__ import annotations

import inspect
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import paddle
import paddle.nn.functional as F
import paddlehub as hub
import pytest
from PIL import Image

from paddlehub_video.decode.preprocess import tensor_batches
from paddlehub_video.errors import DeviceError
from paddlehub_video.model import inference_model
from paddlehub_video.model import predictor as predictor_module
from paddlehub_video.model.assets import cache_root
from paddlehub_video.model.weights import load_pdparams
from tests.fixtures.publisher import VIDEOTAG_LABELS, PublisherHost
from tests.fixtures.references import DUPLICATE_IDS, np_attention_lstm, prediction_vector
from tests.fixtures.videos import MakeVideo, read_every_frame

REPO = Path(__file__).resolve().parents[1]
MODULE_DIR = REPO / "videotag_tsn_lstm"
NAME = "videotag_tsn_lstm"
NUM_CLASSES = 3396
SEG_NUM = 8
TSN_MEMBER = "video_tag_tsn/tsn.pdparams"
LSTM_MEMBER = "attention_lstm/attention_lstm.pdparams"
MEAN = np.array([0.485, 0.456, 0.406]).reshape(3, 1, 1)
STD = np.array([0.229, 0.224, 0.225]).reshape(3, 1, 1)
CLOSED_PORT_URL = "http://127.0.0.1:9"


# ---------------------------------------------------------------- fixtures


def load_videotag(directory: Path, host: PublisherHost, **overrides: object):
    return hub.Module(directory=str(directory), config=host.config(NAME, **overrides))


@pytest.fixture(scope="module")
def videotag(mirror: PublisherHost):
    """The module from the repository, 8 frames per video."""
    return load_videotag(MODULE_DIR, mirror, sampling={"seg_num": SEG_NUM})


@pytest.fixture(scope="module")
def served_weights(publisher_host: PublisherHost, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The two .pdparams members of the served archives, extracted here without the product's code."""
    out = tmp_path_factory.mktemp("served-weights")
    paths = {}
    for key, archive, member in (("tsn", "video_tag_tsn.tar", TSN_MEMBER),
                                 ("lstm", "video_tag_lstm.tar", LSTM_MEMBER)):
        with tarfile.open(publisher_host.server.root / archive) as tar:
            source = tar.extractfile(member)
            assert source is not None
            paths[key] = out / Path(member).name
            paths[key].write_bytes(source.read())
    return paths


@pytest.fixture(scope="module")
def tsn_state(served_weights: dict[str, Path]) -> dict[str, np.ndarray]:
    return load_pdparams(served_weights["tsn"])


@pytest.fixture(scope="module")
def lstm_state(served_weights: dict[str, Path]) -> dict[str, np.ndarray]:
    return load_pdparams(served_weights["lstm"])


@pytest.fixture(scope="module")
def full_result(videotag, short_video: Path) -> dict:
    """classify() of the short video with every class kept (top_k=3396, threshold=0)."""
    (entry,) = videotag.classify([str(short_video)], top_k=NUM_CLASSES, threshold=0.0)
    return entry


@pytest.fixture(scope="module")
def raw(videotag, short_video: Path, full_result: dict) -> np.ndarray:
    """The module's sigmoid output for the short video, before labels/top-k (its internal pieces)."""
    return raw_probabilities(videotag, short_video)


# ---------------------------------------------------------------- helpers


def raw_probabilities(module, path: Path) -> np.ndarray:
    probs = module.predict_fn(False)(module.preprocess(str(path)))
    return np.asarray(probs, dtype=np.float32).reshape(-1)


def expected_prediction(probs: np.ndarray, labels: list[str], top_k: int, threshold: float) -> dict[str, float]:
    """The published rule: the top_k classes (descending), then those with prob >= threshold;
    a name that occurs twice keeps its first, i.e. higher, probability."""
    order = sorted(range(len(probs)), key=lambda i: -float(probs[i]))[:top_k]
    result: dict[str, float] = {}
    for class_id in order:
        if float(probs[class_id]) >= threshold and labels[class_id] not in result:
            result[labels[class_id]] = float(probs[class_id])
    return result


def assert_published_entry(entry: dict, path: str) -> None:
    assert set(entry) == {"path", "prediction"}
    assert entry["path"] == path
    values = list(entry["prediction"].values())
    assert all(type(v) is float for v in values)
    assert all(isinstance(k, str) for k in entry["prediction"])
    assert values == sorted(values, reverse=True)




def link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*"))}


# ---------------------------------------------------------------- independent reference


def publisher_indices(num_frames: int, seg_num: int) -> list[int]:
    step = num_frames // seg_num
    if step >= 1:
        return [(step - 1) // 2 + i * step for i in range(seg_num)]
    return [i % num_frames for i in range(seg_num)]


def reference_preprocess(rgb: np.ndarray) -> np.ndarray:
    """PIL bilinear to 341x256 / 256x341 unless the short side is 256, round() centre crop, ImageNet norm."""
    image = Image.fromarray(rgb)
    width, height = image.size
    if not ((width <= height and width == 256) or (height <= width and height == 256)):
        image = image.resize((256, 341) if width < height else (341, 256), Image.BILINEAR)
    pixels = np.asarray(image).astype(np.float64).transpose(2, 0, 1)
    top, left = int(round((pixels.shape[1] - 224) / 2)), int(round((pixels.shape[2] - 224) / 2))
    crop = pixels[:, top : top + 224, left : left + 224] / 255.0
    return ((crop - MEAN) / STD).astype(np.float32)


def reference_frames(path: Path, seg_num: int) -> np.ndarray:
    frames = read_every_frame(path)
    return np.stack([reference_preprocess(frames[i]) for i in publisher_indices(len(frames), seg_num)])


def resnet101_block_names(stage: int, count: int) -> list[str]:
    if stage == 4:
        return ["res4a"] + [f"res4b{i}" for i in range(1, count)]
    return [f"res{stage}{'abcdefghijklmnopqrstuvwxyz'[i]}" for i in range(count)]


def eager_tsn_features(frames: np.ndarray, weights: dict[str, np.ndarray]) -> np.ndarray:
    """ResNet-101 (no fc) + global average pool, eager mode, one 2048-d vector per frame."""
    assert paddle.in_dynamic_mode()
    p = {name: paddle.to_tensor(value) for name, value in weights.items()}

    def conv_bn(x, name: str, stride: int = 1, relu: bool = True):
        kernel = p[f"{name}_weights"]
        y = F.conv2d(x, kernel, stride=stride, padding=(kernel.shape[2] - 1) // 2)
        bn = "bn_conv1" if name == "conv1" else "bn" + name[len("res"):]
        y = F.batch_norm(y, p[f"{bn}_mean"], p[f"{bn}_variance"], weight=p[f"{bn}_scale"],
                         bias=p[f"{bn}_offset"], training=False, epsilon=1e-5)
        return F.relu(y) if relu else y

    with paddle.no_grad():
        x = F.max_pool2d(conv_bn(paddle.to_tensor(frames), "conv1", stride=2), kernel_size=3, stride=2, padding=1)
        for stage, count in zip((2, 3, 4, 5), (3, 4, 23, 3), strict=True):
            for i, block in enumerate(resnet101_block_names(stage, count)):
                stride = 2 if i == 0 and stage > 2 else 1
                y = conv_bn(x, f"{block}_branch2a")
                y = conv_bn(y, f"{block}_branch2b", stride=stride)
                y = conv_bn(y, f"{block}_branch2c", relu=False)
                shortcut = conv_bn(x, f"{block}_branch1", stride=stride, relu=False) if i == 0 else x
                x = F.relu(y + shortcut)
        return F.adaptive_avg_pool2d(x, 1).reshape([frames.shape[0], 2048]).numpy()


# ---------------------------------------------------------------- result format


def test_full_ranking_is_the_published_format(full_result: dict, raw: np.ndarray, short_video: Path) -> None:
    assert_published_entry(full_result, str(short_video))
    prediction = full_result["prediction"]
    assert len(prediction) == NUM_CLASSES - 1  # one duplicated name collapses into one key
    assert set(prediction) == set(VIDEOTAG_LABELS)
    # The network's output is informative (not saturated, not constant), so the checks below mean something.
    assert raw.shape == (NUM_CLASSES,) and 0.0 < raw.min() and raw.max() < 1.0 and raw.std() > 0.01
    for class_id, label in enumerate(VIDEOTAG_LABELS):
        if class_id not in DUPLICATE_IDS:
            assert prediction[label] == float(raw[class_id]), label


def test_duplicate_label_keeps_its_higher_probability(full_result: dict, raw: np.ndarray) -> None:
    first, second = DUPLICATE_IDS
    assert VIDEOTAG_LABELS[first] == VIDEOTAG_LABELS[second]
    assert raw[first] != raw[second]
    assert full_result["prediction"][VIDEOTAG_LABELS[first]] == float(max(raw[first], raw[second]))


def test_default_threshold_and_top_k(videotag, short_video: Path, raw: np.ndarray) -> None:
    defaults = inspect.signature(type(videotag).classify).parameters
    assert (defaults["use_gpu"].default, defaults["threshold"].default, defaults["top_k"].default) == (False, 0.5, 10)
    result = videotag.classify([str(short_video)])
    expected = expected_prediction(raw, VIDEOTAG_LABELS, top_k=10, threshold=0.5)
    assert result == [{"path": str(short_video), "prediction": expected}]
    assert list(result[0]["prediction"].items()) == list(expected.items())
    assert all(v >= 0.5 for v in result[0]["prediction"].values())


def test_threshold_is_inclusive_and_applied_after_top_k(videotag, short_video: Path, raw: np.ndarray) -> None:
    seventh = float(np.sort(raw)[::-1][6])
    (at_seventh,) = videotag.classify([str(short_video)], top_k=10, threshold=seventh)
    expected = expected_prediction(raw, VIDEOTAG_LABELS, top_k=10, threshold=seventh)
    assert list(at_seventh["prediction"].items()) == list(expected.items())
    # >= keeps the class whose probability equals the threshold; > would drop it.
    assert min(at_seventh["prediction"].values()) == seventh
    assert len(expected_prediction(raw, VIDEOTAG_LABELS, 10, float(np.nextafter(seventh, 1.0)))) == len(expected) - 1


def test_order_errors_and_paths_with_spaces(videotag, short_video: Path, portrait_video: Path, raw: np.ndarray,
                                            tmp_path: Path) -> None:
    spaced = tmp_path / "my videos" / "my clip 1.mp4"
    spaced.parent.mkdir()
    shutil.copyfile(short_video, spaced)
    missing = tmp_path / "no such video.mp4"
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    paths = [str(spaced), str(missing), str(garbage), str(portrait_video)]

    results = videotag.classify(paths, top_k=5, threshold=0.0)

    assert [entry["path"] for entry in results] == paths
    assert results[0] == {"path": str(spaced), "prediction": expected_prediction(raw, VIDEOTAG_LABELS, 5, 0.0)}
    for entry, path in zip(results[1:3], paths[1:3], strict=True):
        assert set(entry) == {"path", "prediction", "error"}
        assert entry["prediction"] == {}
        assert isinstance(entry["error"], str) and path in entry["error"]
    assert_published_entry(results[3], str(portrait_video))
    assert len(results[3]["prediction"]) == 5
    assert results[3]["prediction"] != results[0]["prediction"]


def test_empty_paths_give_an_empty_list(videotag) -> None:
    assert videotag.classify([]) == []


@pytest.mark.parametrize("paths", ["video.mp4", None, Path("video.mp4"), 3])
def test_paths_must_be_a_list(videotag, paths: object) -> None:
    with pytest.raises(ValueError, match="paths"):
        videotag.classify(paths)


@pytest.mark.parametrize("top_k", [0, -1, 2.5, "3", None, True])
def test_invalid_top_k(videotag, short_video: Path, top_k: object) -> None:
    with pytest.raises(ValueError, match="top_k"):
        videotag.classify([str(short_video)], top_k=top_k)


@pytest.mark.parametrize("threshold", [-0.1, 1.5, float("nan"), "0.5", None, True])
def test_invalid_threshold(videotag, short_video: Path, threshold: object) -> None:
    with pytest.raises(ValueError, match="threshold"):
        videotag.classify([str(short_video)], threshold=threshold)


def test_a_failed_call_leaves_paddle_in_dynamic_mode(videotag) -> None:
    assert paddle.in_dynamic_mode()
    with pytest.raises(ValueError):
        videotag.classify("video.mp4")
    assert paddle.in_dynamic_mode()


# ---------------------------------------------------------------- device


def test_use_gpu_on_a_cpu_build_raises_and_the_next_call_runs_on_cpu(videotag, short_video: Path,
                                                                     raw: np.ndarray) -> None:
    if paddle.is_compiled_with_cuda():
        pytest.skip("this Paddle build has CUDA: the CPU-only error path does not apply")
    with pytest.raises(DeviceError, match=r"use_gpu=True.*no CUDA support") as info:
        videotag.classify([str(short_video)], use_gpu=True)
    assert "use_gpu=False" in str(info.value)
    result = videotag.classify([str(short_video)], use_gpu=False, top_k=3, threshold=0.0)
    assert result == [{"path": str(short_video), "prediction": expected_prediction(raw, VIDEOTAG_LABELS, 3, 0.0)}]


# ---------------------------------------------------------------- build once


def test_models_are_converted_and_predictors_created_once(videotag, mirror: PublisherHost, short_video: Path,
                                                          raw: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    inference_dir = cache_root() / "inference"
    before = snapshot(inference_dir)
    assert before, "the first classify call should have converted the models"
    requests = len(mirror.server.requests)
    models = videotag.bundle()
    assert videotag.bundle() is models

    def no_conversion(*args: object, **kwargs: object) -> None:
        raise AssertionError("a converted model was rebuilt")

    created: list[tuple] = []

    class CountingPredictor(predictor_module.Predictor):
        def __init__(self, *args: object, **kwargs: object) -> None:
            created.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(inference_model, "_convert", no_conversion)
    monkeypatch.setattr(predictor_module, "Predictor", CountingPredictor)

    # A second instance in the same process reuses the converted models and the predictors.
    fresh = load_videotag(MODULE_DIR, mirror, sampling={"seg_num": SEG_NUM})
    result = fresh.classify([str(short_video)], top_k=4, threshold=0.0)
    assert result == [{"path": str(short_video), "prediction": expected_prediction(raw, VIDEOTAG_LABELS, 4, 0.0)}]
    assert created == []
    assert snapshot(inference_dir) == before
    assert len(mirror.server.requests) == requests

    tsn_prefix = models.models["tsn"]
    shared = predictor_module.shared_predictor(tsn_prefix, False, 1, True)
    assert predictor_module.shared_predictor(tsn_prefix, False, 1, True) is shared
    assert videotag.predictor(tsn_prefix, False) is shared
    assert fresh.predictor(tsn_prefix, False) is shared
    assert created == []


# ---------------------------------------------------------------- published package layout


def test_hub_package_layout_is_used_without_download(mirror: PublisherHost, served_weights: dict[str, Path],
                                                     short_video: Path, raw: np.ndarray, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "installed" / NAME
    shutil.copytree(MODULE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    link_or_copy(served_weights["tsn"], package / "weights" / "tsn.pdparams")
    link_or_copy(served_weights["lstm"], package / "weights" / "attention_lstm.pdparams")
    (package / "resource").mkdir()
    package_labels = [f"包{i}" for i in range(NUM_CLASSES)]
    (package / "resource" / "label_3396.txt").write_text("\n".join(package_labels) + "\n", encoding="utf-8")
    monkeypatch.setenv("PADDLEHUB_VIDEO_MIRROR", CLOSED_PORT_URL)
    requests = len(mirror.server.requests)

    module = load_videotag(package, mirror, sampling={"seg_num": SEG_NUM})
    for key, file in (("tsn_weights", "weights/tsn.pdparams"), ("lstm_weights", "weights/attention_lstm.pdparams"),
                      ("labels", "resource/label_3396.txt")):
        assert module.asset(key) == package / file
    result = module.classify([str(short_video)], top_k=3, threshold=0.0)

    assert result == [{"path": str(short_video), "prediction": expected_prediction(raw, package_labels, 3, 0.0)}]
    assert len(mirror.server.requests) == requests


# ---------------------------------------------------------------- numerical faithfulness


def test_end_to_end_matches_independent_reference(videotag, full_result: dict, raw: np.ndarray, short_video: Path,
                                                  tsn_state: dict, lstm_state: dict) -> None:
    frames = reference_frames(short_video, SEG_NUM)
    assert frames.shape == (SEG_NUM, 3, 224, 224)
    # The network input itself: same frames, same pixels (sampling and preprocessing are exact).
    crops = videotag.preprocess(str(short_video))
    assert crops.shape == (SEG_NUM, 224, 224, 3) and crops.dtype == np.uint8
    pre = videotag.config["preprocess"]
    network_input = np.concatenate(list(tensor_batches(crops, 7, pre["mean"], pre["std"])), axis=1)
    assert network_input.shape == (1, SEG_NUM, 3, 224, 224)
    input_diff = float(np.abs(network_input[0] - frames).max())
    assert input_diff < 1e-5

    features = eager_tsn_features(frames, tsn_state)
    reference = np_attention_lstm(lstm_state, features.astype(np.float64))[0]
    assert reference.shape == (NUM_CLASSES,)
    expected = reference.copy()
    expected[list(DUPLICATE_IDS)] = reference[list(DUPLICATE_IDS)].max()
    got = prediction_vector(full_result["prediction"], VIDEOTAG_LABELS)
    diff = float(np.abs(got - expected).max())
    raw_diff = float(np.abs(raw - reference).max())
    print(f"\nvideotag vs independent reference, max abs diff: input {input_diff:.3g}, "
          f"classify() over 3396 classes {diff:.3g}, raw output {raw_diff:.3g}")
    assert diff < 1e-4
    assert raw_diff < 1e-4
    # The tolerance is tight against what matters: the same features in reverse order differ far more.
    reversed_order = np_attention_lstm(lstm_state, features[::-1].astype(np.float64))[0]
    assert float(np.abs(reversed_order - reference).max()) > 100 * max(diff, 1e-6)


# ---------------------------------------------------------------- the real 300-frame path


@pytest.mark.slow
def test_default_300_frames_on_a_short_clip_cycles_frames(mirror: PublisherHost, make_video: MakeVideo,
                                                          lstm_state: dict) -> None:
    clip = make_video("videotag_clip40", 40, 64, 48)
    module = load_videotag(MODULE_DIR, mirror, runtime={"cpu_threads": 2})
    assert module.config["sampling"]["seg_num"] == 300

    (entry,) = module.classify([str(clip)], top_k=NUM_CLASSES, threshold=0.0)

    assert_published_entry(entry, str(clip))
    assert len(entry["prediction"]) == NUM_CLASSES - 1
    # Sampling 300 of 40 frames repeats the clip cyclically: features of the 40 distinct frames
    # (the module's own extractor, reference pre-processing), tiled 0..39, 0..39, ..., then the
    # NumPy AttentionLSTM over all 300 steps must give the module's answer.
    distinct = np.stack([reference_preprocess(f) for f in read_every_frame(clip)])
    assert distinct.shape[0] == 40
    tsn_model = module.bundle().models["tsn"]
    features = module.predictor(tsn_model, False).run({"image": distinct[np.newaxis]})[0][0]
    tiled = features[[i % 40 for i in range(300)]]
    reference = np_attention_lstm(lstm_state, tiled.astype(np.float64))[0]
    reference[list(DUPLICATE_IDS)] = reference[list(DUPLICATE_IDS)].max()
    diff = float(np.abs(prediction_vector(entry["prediction"], VIDEOTAG_LABELS) - reference).max())
    print(f"max abs diff videotag 300-frame classify vs tiled reference: {diff:.3g}")
    assert diff < 1e-4
    # ... and not what 40 unrepeated steps give (the 300-step sequence matters).
    unrepeated = np_attention_lstm(lstm_state, features.astype(np.float64))[0]
    assert float(np.abs(unrepeated - reference).max()) > 10 * max(diff, 1e-6)

