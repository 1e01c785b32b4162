"""stnet_kinetics400 end to end: API contract, errors, `hub run` entry, reuse, and numerical faithfulness.

The faithfulness test rebuilds the publisher's whole pipeline here, independently of paddlehub_video:
naive cv2 decoding of every frame, the mp4 window rule, PIL resize, Python-3 rounded centre crop,
ImageNet normalisation, 15-channel super-images, and StNet in eager mode with `paddle.nn.functional`
on the served weights. A small seg_num keeps it fast; the crop is the real 256.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import paddle
import paddle.nn.functional as F
import paddlehub as hub
import pytest
from PIL import Image

import paddlehub_video.model.predictor as predictor_module
import paddlehub_video.module_base as module_base
from paddlehub_video.errors import ConfigError, DeviceError
from paddlehub_video.model import inference_model
from paddlehub_video.model.weights import load_pdparams
from tests.fixtures.publisher import KINETICS_LABELS
from tests.fixtures.videos import read_every_frame

MODULE_DIR = Path(__file__).resolve().parents[1] / "stnet_kinetics400"
SEG_NUM = 3  # the windows of every test video below exercise a different branch of the mp4 rule
SEGLEN = 5
CROP = 256
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(3, 1, 1)
TOLERANCE = 1e-5


# ---------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def dynamic_mode_after_each_test() -> Iterator[None]:
    """Whatever a failing test did, later tests (and files) start in dynamic mode again."""
    yield
    if not paddle.in_dynamic_mode():
        paddle.disable_static()


def new_module(publisher_host: Any, seg_num: int = SEG_NUM, crop_size: int = CROP) -> Any:
    config = publisher_host.config(
        "stnet_kinetics400", sampling={"seg_num": seg_num}, preprocess={"crop_size": crop_size}
    )
    return hub.Module(directory=str(MODULE_DIR), config=config)


@pytest.fixture(scope="module")
def stnet(mirror: Any) -> Any:
    """One module object (seg_num 3, crop 256) shared by the tests of this file."""
    return new_module(mirror)


@pytest.fixture(scope="module")
def wrap_video(make_video: Any) -> Path:
    """21 frames 80x48: d = 7 >= 5, so the last window 17..21 wraps to frame 0; squashed to 341x256."""
    return make_video("stnet_wrap", 21, 80, 48)


@pytest.fixture(scope="module")
def short256_video(make_video: Any) -> Path:
    """12 frames 320x256: short side already 256 (no resize); d = 4 < 5, windows start at i*d."""
    return make_video("stnet_short256", 12, 320, 256)


@pytest.fixture
def broken_videos(tmp_path: Path) -> tuple[Path, Path]:
    """(a path that does not exist, an .mp4 full of garbage)."""
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return tmp_path / "missing.mp4", garbage


def classify_one(module: Any, path: Path, **kwargs: Any) -> dict[str, float]:
    return module.video_classification(data={"image": [str(path)]}, **kwargs)[0]


def top(result: dict[str, float], k: int) -> dict[str, float]:
    return dict(list(result.items())[:k])


@pytest.fixture(scope="module")
def full_result(stnet: Any) -> Any:
    """path -> the module's top_k=400 result for that video alone (computed once per video)."""
    cache: dict[Path, dict[str, float]] = {}

    def get(path: Path) -> dict[str, float]:
        if path not in cache:
            cache[path] = classify_one(stnet, path, top_k=400)
        return cache[path]

    return get


def all_probabilities(result: dict[str, float]) -> np.ndarray:
    """A top_k=400 result as a probability vector in class-id order."""
    assert len(result) == 400
    return np.array([result[label] for label in KINETICS_LABELS])


def assert_same_result(a: dict[str, float], b: dict[str, float]) -> None:
    assert list(a) == list(b)
    np.testing.assert_allclose(list(a.values()), list(b.values()), rtol=0, atol=1e-7)


# ---------------------------------------------------------------- 1. video_classification contract


def test_results_are_top5_label_probability_dicts_in_input_order(stnet, full_result, wrap_video, portrait_video):
    results = stnet.video_classification(data={"image": [str(wrap_video), str(portrait_video)]})
    assert isinstance(results, list) and len(results) == 2
    for path, result in zip((wrap_video, portrait_video), results, strict=True):
        assert len(result) == 5
        assert all(type(p) is float for p in result.values())
        assert set(result) <= set(KINETICS_LABELS)
        probs = list(result.values())
        assert probs == sorted(probs, reverse=True)
        full = all_probabilities(full_result(path))  # the same video classified alone
        assert list(result) == [KINETICS_LABELS[i] for i in np.argsort(-full, kind="stable")[:5]]
        np.testing.assert_allclose(list(result.values()), np.sort(full)[::-1][:5], rtol=0, atol=1e-7)
    assert results[0] != results[1]
    assert stnet.last_errors == {}


def test_all_400_probabilities_form_a_softmax(full_result, one_frame_video):
    result = full_result(one_frame_video)
    probs = all_probabilities(result)
    assert abs(probs.sum() - 1.0) < 1e-4
    assert (probs > 0).all()
    assert list(result.values()) == sorted(result.values(), reverse=True)


def test_threshold_keeps_probabilities_at_or_above_it(stnet, full_result, wrap_video):
    full = full_result(wrap_video)
    third = list(full.values())[2]
    kept = classify_one(stnet, wrap_video, top_k=400, threshold=third)
    assert list(kept) == list(full)[:3]  # `>=`: the third one itself is kept
    assert list(classify_one(stnet, wrap_video, top_k=2, threshold=third)) == list(full)[:2]


def test_failing_videos_give_empty_dicts_and_reasons(stnet, full_result, wrap_video, portrait_video, broken_videos):
    missing, garbage = broken_videos
    paths = [wrap_video, missing, garbage, portrait_video]
    results = stnet.video_classification(data={"image": [str(p) for p in paths]})
    errors = dict(stnet.last_errors)
    assert len(results) == 4
    assert results[1] == {} and results[2] == {}
    assert sorted(errors) == [1, 2]
    assert str(missing) in errors[1] and "not found" in errors[1]
    assert str(garbage) in errors[2]
    assert_same_result(results[0], top(full_result(wrap_video), 5))
    assert_same_result(results[3], top(full_result(portrait_video), 5))
    stnet.video_classification(data={"image": [str(wrap_video)]})
    assert stnet.last_errors == {}  # reset by the next call


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (["a.mp4"], "must be a dict"),
        (None, "must be a dict"),
        ({"images": ["a.mp4"]}, '"image"'),
        ({"image": "a.mp4"}, r"single path .*\['a.mp4'\]"),
        ({"image": 3}, "list of video paths, got int"),
        ({"image": []}, "empty"),
    ],
)
def test_bad_data_is_a_value_error(stnet, data, message):
    with pytest.raises(ValueError, match=message):
        stnet.video_classification(data=data)


@pytest.mark.parametrize(
    "kwargs",
    [{"top_k": 0}, {"top_k": -3}, {"top_k": 2.5}, {"top_k": True}, {"top_k": "5"},
     {"threshold": -0.1}, {"threshold": 1.5}, {"threshold": "0.5"}, {"threshold": True}],
)
def test_invalid_top_k_or_threshold_is_a_value_error(stnet, wrap_video, kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        stnet.video_classification(data={"image": [str(wrap_video)]}, **kwargs)
    with pytest.raises(ValueError, match=name):
        stnet.classify([str(wrap_video)], **kwargs)


# ---------------------------------------------------------------- 2. classify


def test_classify_returns_videotag_style_entries(stnet, full_result, wrap_video, broken_videos):
    missing, _ = broken_videos
    results = stnet.classify([str(wrap_video), str(missing)], top_k=3)
    assert [r["path"] for r in results] == [str(wrap_video), str(missing)]
    assert set(results[0]) == {"path", "prediction"}
    assert_same_result(results[0]["prediction"], top(full_result(wrap_video), 3))
    assert results[1]["prediction"] == {}
    assert str(missing) in results[1]["error"]
    assert stnet.classify([]) == []
    with pytest.raises(ValueError, match="single path"):
        stnet.classify(str(wrap_video))


# ---------------------------------------------------------------- 3. device


@pytest.mark.skipif(paddle.is_compiled_with_cuda(), reason="checks the CPU-only build")
def test_use_gpu_on_cpu_build_raises_device_error_then_cpu_works(stnet, full_result, wrap_video, capsys):
    before = top(full_result(wrap_video), 5)
    with pytest.raises(DeviceError, match="CUDA"):
        classify_one(stnet, wrap_video, use_gpu=True)
    with pytest.raises(DeviceError, match="CUDA"):
        stnet.classify([str(wrap_video)], use_gpu=True)
    with pytest.raises(SystemExit) as exit_info:  # `hub run`: one clear line and status 1, no traceback
        stnet.run_cmd(["--input_path", str(wrap_video), "--use_gpu", "True"])
    assert exit_info.value.code == 1
    assert "no CUDA support" in capsys.readouterr().err
    assert_same_result(classify_one(stnet, wrap_video, use_gpu=False), before)


# ---------------------------------------------------------------- 4. faithfulness: independent reference


def mp4_window_frames(num_frames: int, seg_num: int, seglen: int, centred: bool = False) -> list[int]:
    """UPSTREAM 2.5, mp4 rule (`centred` gives the pkl rule instead, for the sensitivity check)."""
    d = num_frames // seg_num
    if d >= seglen:
        starts = [((d - seglen) // 2 if centred else (d - 1) // 2) + i * d for i in range(seg_num)]
    elif d >= 1:
        starts = [i * d for i in range(seg_num)]
    else:
        starts = list(range(seg_num))
    return [(s + j) % num_frames for s in starts for j in range(seglen)]


def reference_frame(rgb: np.ndarray, crop: int, round_offset: Any = round) -> np.ndarray:
    """group_scale (PIL bilinear, forced 4:3 unless short side is 256) -> centre crop -> CHW normalised."""
    image = Image.fromarray(rgb)
    w, h = image.size
    if not ((w <= h and w == 256) or (h <= w and h == 256)):
        image = image.resize((256, 341) if w < h else (341, 256), Image.BILINEAR)
    array = np.asarray(image).astype(np.float32)
    y = int(round_offset((array.shape[0] - crop) / 2))
    x = int(round_offset((array.shape[1] - crop) / 2))
    chw = array[y : y + crop, x : x + crop].transpose(2, 0, 1) / np.float32(255)
    return (chw - MEAN) / STD


def reference_input(path: Path, centred: bool = False, round_offset: Any = round) -> np.ndarray:
    """Super-images `[T, 15, H, W]` of a video, built without paddlehub_video."""
    frames = read_every_frame(path)
    indices = mp4_window_frames(len(frames), SEG_NUM, SEGLEN, centred)
    stacked = np.stack([reference_frame(frames[i], CROP, round_offset) for i in indices])
    return stacked.reshape(SEG_NUM, 3 * SEGLEN, CROP, CROP)


def bn(x: Any, p: dict, names: list[str], relu: bool = False) -> Any:
    """Inference batch norm written out: (x - mean) / sqrt(var + 1e-5) * scale + offset."""
    scale, offset, mean, var = (p[n].reshape([1, -1] + [1] * (x.ndim - 2)) for n in names)
    y = (x - mean) / paddle.sqrt(var + 1e-5) * scale + offset
    return F.relu(y) if relu else y


def resnet_bn_names(conv: str) -> list[str]:
    prefix = "bn_conv1" if conv == "conv1" else "bn" + conv[len("res") :]
    return [f"{prefix}_{part}" for part in ("scale", "offset", "mean", "variance")]


def auto_bn_names(name: str) -> list[str]:
    return [f"{name}.w_0", f"{name}.b_0", f"{name}.w_1", f"{name}.w_2"]


def conv_bn(x: Any, p: dict, name: str, stride: int = 1, relu: bool = True) -> Any:
    weight = p[f"{name}_weights"]
    y = F.conv2d(x, weight, stride=stride, padding=(weight.shape[-1] - 1) // 2)
    return bn(y, p, resnet_bn_names(name), relu)


def bottleneck(x: Any, p: dict, name: str, stride: int, project: bool) -> Any:
    y = conv_bn(x, p, f"{name}_branch2a")
    y = conv_bn(y, p, f"{name}_branch2b", stride)
    y = conv_bn(y, p, f"{name}_branch2c", relu=False)
    shortcut = conv_bn(x, p, f"{name}_branch1", stride, relu=False) if project else x
    return F.relu(y + shortcut)


def temporal(x: Any, p: dict, t: int, conv: str, norm: str) -> Any:
    n, c, h, w = x.shape
    clip = x.reshape([n // t, t, c, h, w]).transpose([0, 2, 1, 3, 4])
    y = F.relu(F.conv3d(clip, p[f"{conv}.w_0"], bias=p[f"{conv}.b_0"], padding=(1, 0, 0)))
    y = bn(y, p, auto_bn_names(norm)) + clip
    return y.transpose([0, 2, 1, 3, 4]).reshape([n, c, h, w])


def xception(x: Any, p: dict) -> Any:
    def conv(y: Any, name: str, groups: int = 1, padding: Any = 0) -> Any:
        return F.conv2d(y, p[f"{name}.w_0"], bias=p[f"{name}.b_0"], padding=padding, groups=groups)

    normed = bn(x, p, auto_bn_names("xception_bn"))
    a = conv(normed, "xception_att_conv", groups=2048, padding=(1, 0))
    a = bn(conv(a, "xception_att_2"), p, auto_bn_names("xception_bndw"), relu=True)
    a = conv(a, "xception_att1", groups=1024, padding=(1, 0))
    a = conv(a, "xception_att1_2")
    return bn(a + conv(normed, "xception_dw"), p, auto_bn_names("xception_bn2"), relu=True)


def reference_stnet(images: np.ndarray, p: dict) -> np.ndarray:
    """`[T, 15, H, W]` -> 400 softmax probabilities; ResNet-50 + temporal blocks + Xception + max + fc_0."""
    t = images.shape[0]
    x = F.max_pool2d(conv_bn(paddle.to_tensor(images), p, "conv1", stride=2), 3, stride=2, padding=1)
    for stage, depth in zip((2, 3, 4, 5), (3, 4, 6, 3), strict=True):
        for i in range(depth):
            stride = 2 if i == 0 and stage > 2 else 1
            x = bottleneck(x, p, f"res{stage}{'abcdef'[i]}", stride, project=i == 0)
        if stage == 3:
            x = temporal(x, p, t, "conv3d_0", "batch_norm_24")
        elif stage == 4:
            x = temporal(x, p, t, "conv3d_1", "batch_norm_44")
    sequence = x.mean(axis=[2, 3]).reshape([1, t, 2048, 1]).transpose([0, 2, 1, 3])
    feature = xception(sequence, p).max(axis=[2, 3])
    return F.softmax(feature @ p["fc_0.w_0"] + p["fc_0.b_0"], axis=-1).numpy()[0]


@pytest.fixture(scope="module")
def served_weights(publisher_host: Any) -> dict:
    assert paddle.in_dynamic_mode()
    state = load_pdparams(publisher_host.server.root / "STNET.pdparams")
    return {name: paddle.to_tensor(value) for name, value in state.items()}


@pytest.mark.parametrize("video", ["wrap_video", "portrait_video", "short256_video"])
def test_matches_independent_eager_reference(full_result, served_weights, request, video):
    path = request.getfixturevalue(video)
    module_probs = all_probabilities(full_result(path))
    reference = reference_stnet(reference_input(path), served_weights)
    diff = float(np.abs(module_probs - reference).max())
    print(f"\n{video}: max abs diff over 400 probabilities = {diff:.3g} (max prob {reference.max():.4f})")
    assert diff < TOLERANCE
    assert reference.max() > 5 / 400  # not a flat distribution, so the comparison means something
    if video == "wrap_video":  # the test tells near-misses apart: pkl window rule, Python-2 rounding
        pkl = reference_stnet(reference_input(path, centred=True), served_weights)
        py2 = reference_stnet(reference_input(path, round_offset=lambda v: np.floor(v + 0.5)), served_weights)
        print(f"pkl window rule: {np.abs(module_probs - pkl).max():.3g}, "
              f"Python-2 rounding: {np.abs(module_probs - py2).max():.3g}")
        assert np.abs(module_probs - pkl).max() > 10 * TOLERANCE
        assert np.abs(module_probs - py2).max() > 10 * TOLERANCE


# ---------------------------------------------------------------- 5. hub run entry (in process)


def test_run_cmd_reads_an_input_file_with_comments_blanks_and_spaces(
    stnet, full_result, wrap_video, portrait_video, tmp_path
):
    spaced = tmp_path / "my videos" / "clip one.mp4"
    spaced.parent.mkdir()
    shutil.copy(wrap_video, spaced)
    listing = tmp_path / "list.txt"
    listing.write_text(f"# videos to classify\n\n{spaced}\n   \n  # indented comment\n{portrait_video}\r\n\n")
    results = stnet.run_cmd(["--input_file", str(listing), "--top_k", "3"])  # a list file: paths printed
    assert [entry["path"] for entry in results] == [str(spaced), str(portrait_video)]
    assert_same_result(results[0]["prediction"], top(full_result(wrap_video), 3))
    assert_same_result(results[1]["prediction"], top(full_result(portrait_video), 3))
    both = stnet.run_cmd(["--input_path", str(portrait_video), "--input_file", str(listing)])
    assert [entry["path"] for entry in both] == [str(portrait_video), str(spaced), str(portrait_video)]
    assert [len(entry["prediction"]) for entry in both] == [5, 5, 5]
    assert_same_result(both[0]["prediction"], both[2]["prediction"])


def test_run_cmd_without_input_is_a_usage_error(publisher_host, capsys):
    module = new_module(publisher_host)
    start = time.monotonic()
    with pytest.raises(SystemExit) as exit_info:
        module.run_cmd([])
    assert exit_info.value.code == 2
    assert "--input_path" in capsys.readouterr().err
    assert time.monotonic() - start < 5
    assert module._bundle is None  # nothing was fetched or built


# ---------------------------------------------------------------- 6. built once per process


def test_second_call_reuses_converted_model_and_predictor(mirror, stnet, full_result, wrap_video, monkeypatch):
    first = top(full_result(wrap_video), 5)
    models = stnet.bundle().models
    assert set(models) == {"windows", "temporal"}
    predictors = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        predictors.append(predictor_module.shared_predictor(*args, **kwargs))
        return predictors[-1]

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("rebuilt something that should have been reused")

    monkeypatch.setattr(module_base, "shared_predictor", spy)
    monkeypatch.setattr(inference_model, "_convert", forbidden)
    monkeypatch.setattr(predictor_module, "Predictor", forbidden)
    stnet_source = sys.modules[type(stnet).__module__]
    monkeypatch.setattr(stnet_source, "build_stnet_window_program", forbidden)
    monkeypatch.setattr(stnet_source, "build_stnet_temporal_program", forbidden)

    assert_same_result(classify_one(stnet, wrap_video), first)
    fresh = new_module(mirror)  # a second object in the same process: same cache entries, same predictors
    assert_same_result(classify_one(fresh, wrap_video), first)
    assert fresh.bundle().models == models
    assert len(predictors) == 4 and predictors[:2] == predictors[2:]
    assert predictors[:2] == [stnet.predictor(models["windows"], False), stnet.predictor(models["temporal"], False)]


def test_two_crop_sizes_with_the_same_seg_num_get_their_own_programs(mirror, monkeypatch, tmp_path):
    # A private cache, and a stand-in for the (slow) conversion that only marks the entry as done.
    monkeypatch.setenv("HUB_HOME", str(tmp_path / "hub"))

    def mark_converted(build: Any, weights: Any, entry: Path) -> None:
        entry.mkdir(parents=True)
        (entry / "model.pdiparams").touch()

    monkeypatch.setattr(inference_model, "_convert", mark_converted)
    small, large = new_module(mirror, crop_size=128), new_module(mirror, crop_size=160)
    for name in ("windows", "temporal"):
        assert small.bundle().models[name] != large.bundle().models[name]


def test_a_seglen_the_network_is_not_built_for_is_a_config_error_at_construction(mirror):
    config = mirror.config("stnet_kinetics400", sampling={"seglen": 4})
    with pytest.raises(ConfigError, match="sampling.seglen must be 5"):
        hub.Module(directory=str(MODULE_DIR), config=config)


def test_calls_leave_the_callers_paddle_mode_alone(stnet, one_frame_video):
    """PaddleHub 2.4 wraps module methods in a static-mode switch that an exception leaves on."""
    assert paddle.in_dynamic_mode()
    with pytest.raises(ValueError):
        stnet.video_classification(data={"image": []})
    assert paddle.in_dynamic_mode()
    paddle.enable_static()
    try:
        assert len(classify_one(stnet, one_frame_video)) == 5
        assert not paddle.in_dynamic_mode()
    finally:
        paddle.disable_static()
