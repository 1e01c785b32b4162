"""Network builders: exact parameter manifests and numerics against NumPy references written here."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import paddle
import pytest

from paddlehub_video.model.inference_model import program_parameters
from paddlehub_video.model.networks.attention_lstm import (
    build_attention_lstm_program,
    lod_tensor,
    peephole_lstm,
)
from paddlehub_video.model.networks.layers import feed_values, new_program, static_mode
from paddlehub_video.model.networks.resnet import bottleneck, stem
from paddlehub_video.model.networks.stnet import (
    build_stnet_program,
    build_stnet_temporal_program,
    build_stnet_window_program,
    temporal_block,
    xception_head,
)
from paddlehub_video.model.networks.tsn import build_tsn_program
from tests.fixtures.references import (
    np_attention_lstm,
    np_auto_bn,
    np_bottleneck,
    np_conv2d,
    np_maxpool_3x3_s2,
    np_peephole_lstm,
    np_resnet_bn,
)

PARAMS_DIR = Path(__file__).parents[1] / "configs" / "params"


# ---------------------------------------------------------------- helpers


@pytest.fixture
def static_scope() -> Iterator[Any]:
    """Static mode plus a private scope: TSN and StNet share names (conv1_weights) with other shapes."""
    with static_mode():
        scope = paddle.static.Scope()
        with paddle.static.scope_guard(scope):
            yield paddle.static.Executor(paddle.CPUPlace())


def program_params(program: Any) -> dict[str, list[int]]:
    return {name: list(shape) for name, shape in program_parameters(program).items()}


def random_params(
    program: Any, rng: np.random.Generator, scale: Callable[[str, list[int]], float | None] | None = None
) -> dict[str, np.ndarray]:
    """Random float32 parameters: BN variances positive, other std `scale(...)` or 1/sqrt(fan_in)."""
    state = {}
    for name, shape in program_params(program).items():
        if name.endswith(("_variance", ".w_2")) and len(shape) == 1:
            value = rng.uniform(0.5, 1.5, shape)
        elif name.endswith(("_scale", ".w_0")) and len(shape) == 1:
            value = rng.uniform(0.5, 1.5, shape)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) == 4 or len(shape) == 5 else shape[0]
            std = scale(name, shape) if scale else None
            if std is None:
                std = 1.0 / np.sqrt(max(fan_in, 1))
            value = rng.normal(0.0, std, shape)
        state[name] = value.astype(np.float32)
    return state


def load_params(program: Any, state: dict[str, np.ndarray]) -> None:
    assert set(state) == set(program_params(program))
    paddle.static.set_program_state(program, state)


def report(label: str, diff: float) -> None:
    print(f"max abs diff {label}: {diff:.3g}")


# ---------------------------------------------------------------- NumPy references
























# ---------------------------------------------------------------- parameter manifests


@pytest.mark.parametrize(
    ("manifest", "build"),
    [
        ("videotag_tsn_resnet101", build_tsn_program),
        ("videotag_attention_lstm", build_attention_lstm_program),
        ("stnet_resnet50_kinetics400", build_stnet_program),
        ("stnet_resnet50_kinetics400", partial(build_stnet_program, distinct_windows=True)),
    ],
)
def test_parameters_match_manifest(manifest: str, build: Callable[[], tuple]) -> None:
    expected = json.loads((PARAMS_DIR / f"{manifest}.json").read_text())
    main, _startup, _feeds, _fetches = build()
    got = program_params(main)
    assert len(got) == len(expected)
    assert sorted(got) == sorted(name for name, _shape in expected)
    for name, shape in expected:
        assert got[name] == shape, name


def test_builders_restore_dynamic_mode() -> None:
    assert paddle.in_dynamic_mode()
    build_attention_lstm_program()
    assert paddle.in_dynamic_mode()


def test_repeated_builds_keep_names() -> None:
    first = program_params(build_attention_lstm_program()[0])
    second = program_params(build_attention_lstm_program()[0])
    assert first == second


# ---------------------------------------------------------------- AttentionLSTM


@pytest.mark.parametrize("reverse", [False, True])
def test_peephole_lstm_layer(static_scope: Any, reverse: bool) -> None:
    exe = static_scope
    d = 8
    with new_program() as (main, startup):
        proj = paddle.static.data("proj", [-1, 4 * d], "float32", lod_level=1)
        hidden = peephole_lstm(proj, "lstm", d, is_reverse=reverse)
    exe.run(startup)
    rng = np.random.default_rng(1)
    state = {
        "lstm.w_0": rng.normal(0, 0.5, (d, 4 * d)).astype(np.float32),
        "lstm.b_0": rng.normal(0, 0.5, (1, 7 * d)).astype(np.float32),
    }
    load_params(main, state)
    worst = 0.0
    for steps in (1, 7, 300):
        x = rng.normal(0, 1, (steps, 4 * d)).astype(np.float32)
        (out,) = exe.run(main, feed={"proj": lod_tensor(x)}, fetch_list=[hidden], return_numpy=False)
        expected = np_peephole_lstm(x.astype(np.float64), state["lstm.w_0"], state["lstm.b_0"], reverse)
        worst = max(worst, float(np.abs(np.array(out) - expected).max()))
    report(f"peephole LSTM layer reverse={reverse}", worst)
    assert worst < 1e-5


def lstm_scale(name: str, shape: list[int]) -> float:
    """Weight scales that keep every activation away from saturation (attention not uniform either)."""
    fan_in = shape[0]
    if name.endswith(".b_0"):
        return 0.3
    if name in ("rgb_weight.w_0", "fc1.w_0"):
        return 5.0 / np.sqrt(fan_in)  # the 0.5-scaled LSTM states are small
    if name.startswith("rgb_lstm"):
        return 0.7 / np.sqrt(fan_in)
    return 1.0 / np.sqrt(fan_in)


def test_attention_lstm_predictor_matches_numpy(static_scope: Any, tmp_path: Path) -> None:
    exe = static_scope
    main, startup, feeds, fetches = build_attention_lstm_program()
    exe.run(startup)
    rng = np.random.default_rng(2)
    state = random_params(main, rng, lstm_scale)
    load_params(main, state)
    prefix = str(tmp_path / "attention_lstm")
    paddle.static.save_inference_model(prefix, feed_values(main, feeds), fetches, exe, program=main)

    inputs = {steps: rng.normal(0, 1, (steps, 2048)).astype(np.float32) for steps in (1, 7, 300)}
    expected = {steps: np_attention_lstm(state, x.astype(np.float64)) for steps, x in inputs.items()}
    # Outputs must be informative: neither saturated nor constant.
    assert 0.05 < float(np.std(expected[300])) and 0.01 < float(expected[300].min())
    assert float(expected[300].max()) < 0.99
    # ... and sensitive to fluid's inference dropout factor.
    assert np.abs(np_attention_lstm(state, inputs[7].astype(np.float64), keep=1.0) - expected[7]).max() > 1e-3

    for use_onednn in (True, False):
        config = paddle.inference.Config(prefix + ".json", prefix + ".pdiparams")
        config.disable_glog_info()
        if not use_onednn:
            config.disable_mkldnn()
        predictor = paddle.inference.create_predictor(config)
        assert predictor.get_input_names() == ["rgb"]
        handle = predictor.get_input_handle("rgb")
        output = predictor.get_output_handle(predictor.get_output_names()[0])
        for steps in (300, 1, 7, 300):  # one predictor, varying T: LoD must be set on every run
            handle.reshape([steps, 2048])
            handle.copy_from_cpu(inputs[steps])
            handle.set_lod([[0, steps]])
            predictor.run()
            got = output.copy_to_cpu()
            assert got.shape == (1, 3396)
            diff = float(np.abs(got - expected[steps]).max())
            report(f"AttentionLSTM predictor T={steps} onednn={use_onednn}", diff)
            assert diff < 1e-5


def test_numpy_lstm_reference_is_sensitive() -> None:
    """The reference tells apart what matters: peepholes, new-cell output peephole, direction."""
    rng = np.random.default_rng(3)
    d = 8
    w, b = rng.normal(0, 0.5, (d, 4 * d)), rng.normal(0, 0.5, (1, 7 * d))
    x = rng.normal(0, 1, (7, 4 * d))
    without_peepholes = b.copy()
    without_peepholes[0, 4 * d :] = 0.0
    assert np.abs(np_peephole_lstm(x, w, b, False) - np_peephole_lstm(x, w, without_peepholes, False)).max() > 1e-2
    assert np.abs(np_peephole_lstm(x, w, b, False) - np_peephole_lstm(x, w, b, True)).max() > 1e-2
    old_cell = np_peephole_lstm(x, w, b, False, new_cell_peephole=False)
    assert np.abs(np_peephole_lstm(x, w, b, False) - old_cell).max() > 1e-2


# ---------------------------------------------------------------- ResNet / TSN


def test_resnet_stem_and_bottlenecks_match_numpy(static_scope: Any) -> None:
    exe = static_scope
    with new_program() as (main, startup):
        image = paddle.static.data("x", [2, 15, 32, 32], "float32")
        y = stem(image, in_channels=15)
        y = bottleneck(y, "res2a", 64, 64, stride=1)
        y = bottleneck(y, "res3a", 256, 128, stride=2)
    exe.run(startup)
    rng = np.random.default_rng(4)
    state = random_params(main, rng)
    load_params(main, state)
    x = rng.normal(0, 1, (2, 15, 32, 32)).astype(np.float32)
    (got,) = exe.run(main, feed={"x": x}, fetch_list=[y])
    assert got.shape == (2, 512, 4, 4)

    p = {k: v.astype(np.float64) for k, v in state.items()}
    ref = np_conv2d(x.astype(np.float64), p["conv1_weights"], stride=(2, 2), pad=(3, 3))
    ref = np_maxpool_3x3_s2(np.maximum(np_resnet_bn(p, "bn_conv1", ref), 0))
    ref = np_bottleneck(p, "res2a", ref, stride=1, project=True)
    ref = np_bottleneck(p, "res3a", ref, stride=2, project=True)
    diff = float(np.abs(got - ref).max() / np.abs(ref).max())
    report("ResNet stem+res2a+res3a (relative to max |ref|)", diff)
    assert diff < 1e-5


def test_tsn_features_shape_and_frame_order(static_scope: Any) -> None:
    exe = static_scope
    main, startup, feeds, fetches = build_tsn_program(image_size=64)
    assert feeds == ["image"]
    exe.run(startup)
    rng = np.random.default_rng(5)
    load_params(main, random_params(main, rng))
    frames = rng.normal(0, 1, (2, 3, 3, 64, 64)).astype(np.float32)
    (features,) = exe.run(main, feed={"image": frames}, fetch_list=fetches)
    assert features.shape == (2, 3, 2048)
    # Each [b, t] row is the feature of frame [b, t] alone: batching must not regroup frames.
    (single,) = exe.run(main, feed={"image": frames[1:2, 2:3]}, fetch_list=fetches)
    diff = float(np.abs(single[0, 0] - features[1, 2]).max() / np.abs(features[1, 2]).max())
    report("TSN batched vs single frame (relative)", diff)
    assert diff < 1e-5
    assert np.abs(features[0, 0] - features[1, 2]).max() > 1e-3 * np.abs(features).max()


# ---------------------------------------------------------------- StNet


def test_temporal_block_matches_numpy(static_scope: Any) -> None:
    exe = static_scope
    batch, seg, channels, h, w = 2, 3, 4, 3, 2
    with new_program() as (main, startup):
        x = paddle.static.data("x", [batch * seg, channels, h, w], "float32")
        y = temporal_block(x, seg, channels, "conv3d_0", "batch_norm_24")
    assert program_params(main) == {
        "conv3d_0.w_0": [channels, channels, 3, 1, 1],
        "conv3d_0.b_0": [channels],
        "batch_norm_24.w_0": [channels],
        "batch_norm_24.b_0": [channels],
        "batch_norm_24.w_1": [channels],
        "batch_norm_24.w_2": [channels],
    }
    exe.run(startup)
    rng = np.random.default_rng(6)
    state = random_params(main, rng)
    load_params(main, state)
    data = rng.normal(0, 1, (batch * seg, channels, h, w)).astype(np.float32)
    (got,) = exe.run(main, feed={"x": data}, fetch_list=[y])

    p = {k: v.astype(np.float64) for k, v in state.items()}
    clip = data.astype(np.float64).reshape(batch, seg, channels, h, w).transpose(0, 2, 1, 3, 4)
    padded = np.pad(clip, ((0, 0), (0, 0), (1, 1), (0, 0), (0, 0)))
    kernel = p["conv3d_0.w_0"][:, :, :, 0, 0]  # [out, in, k]
    conv = np.zeros_like(clip) + p["conv3d_0.b_0"].reshape(1, -1, 1, 1, 1)
    for k in range(3):
        conv += np.einsum("oc,bcthw->bothw", kernel[:, :, k], padded[:, :, k : k + seg])
    ref = np_auto_bn(p, "batch_norm_24", np.maximum(conv, 0)) + clip
    ref = ref.transpose(0, 2, 1, 3, 4).reshape(batch * seg, channels, h, w)
    diff = float(np.abs(got - ref).max())
    report("StNet temporal block", diff)
    assert diff < 1e-5


def test_xception_head_matches_numpy(static_scope: Any) -> None:
    exe = static_scope
    batch, c_in, c_out, seg = 2, 6, 4, 5
    with new_program() as (main, startup):
        x = paddle.static.data("x", [batch, c_in, seg, 1], "float32")
        y = xception_head(x, in_channels=c_in, out_channels=c_out)
    exe.run(startup)
    rng = np.random.default_rng(7)
    state = random_params(main, rng)
    load_params(main, state)
    data = rng.normal(0, 1, (batch, c_in, seg, 1)).astype(np.float32)
    (got,) = exe.run(main, feed={"x": data}, fetch_list=[y])

    p = {k: v.astype(np.float64) for k, v in state.items()}

    def conv(name: str, value: np.ndarray, groups: int = 1) -> np.ndarray:
        weight = p[f"{name}.w_0"]
        pad = ((weight.shape[2] - 1) // 2, 0)
        return np_conv2d(value, weight, p[f"{name}.b_0"], pad=pad, groups=groups)

    normed = np_auto_bn(p, "xception_bn", data.astype(np.float64))
    a = conv("xception_att_2", conv("xception_att_conv", normed, groups=c_in))
    a = np.maximum(np_auto_bn(p, "xception_bndw", a), 0)
    a = conv("xception_att1_2", conv("xception_att1", a, groups=c_out))
    ref = np.maximum(np_auto_bn(p, "xception_bn2", a + conv("xception_dw", normed)), 0)
    diff = float(np.abs(got - ref).max())
    report("StNet Xception head", diff)
    assert diff < 1e-5


def test_stnet_small_forward_and_predictor(static_scope: Any, tmp_path: Path) -> None:
    exe = static_scope
    main, startup, feeds, fetches = build_stnet_program(seg_num=2, image_size=64)
    assert feeds == ["image"]
    exe.run(startup)
    rng = np.random.default_rng(8)
    # fc_0 scaled so the softmax is neither uniform nor one-hot and comparisons mean something.
    load_params(main, random_params(main, rng, lambda name, shape: 0.01 if name == "fc_0.w_0" else None))
    clips = rng.normal(0, 1, (2, 2, 15, 64, 64)).astype(np.float32)
    (probabilities,) = exe.run(main, feed={"image": clips}, fetch_list=fetches)
    assert probabilities.shape == (2, 400)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert probabilities.max() > 10.0 / 400
    assert probabilities.max() < 0.9
    assert np.abs(probabilities[0] - probabilities[1]).max() > 1e-3
    # Clips are independent: the second clip alone gives the same probabilities.
    (alone,) = exe.run(main, feed={"image": clips[1:]}, fetch_list=fetches)
    diff = float(np.abs(alone[0] - probabilities[1]).max())
    report("StNet batched vs single clip", diff)
    assert diff < 1e-6

    # conv3d and the temporal reshapes survive export and the default (oneDNN) predictor.
    prefix = str(tmp_path / "stnet")
    paddle.static.save_inference_model(prefix, feed_values(main, feeds), fetches, exe, program=main)
    config = paddle.inference.Config(prefix + ".json", prefix + ".pdiparams")
    config.disable_glog_info()
    predictor = paddle.inference.create_predictor(config)
    handle = predictor.get_input_handle("image")
    handle.reshape(list(clips.shape))
    handle.copy_from_cpu(clips)
    predictor.run()
    got = predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
    diff = float(np.abs(got - probabilities).max())
    report("StNet predictor vs executor", diff)
    assert diff < 1e-5


def test_stnet_distinct_windows_equal_feeding_every_segment(static_scope: Any) -> None:
    """The deduplicating variant (same parameters) on the distinct windows plus a gather index gives,
    bit for bit, what the default program gives on every segment; repeated windows in one clip and
    across the two clips of a batch."""
    exe = static_scope
    seg_num, size = 4, 64
    main, startup, feeds, fetches = build_stnet_program(seg_num=seg_num, image_size=size)
    dedup, _dedup_startup, dedup_feeds, dedup_fetches = build_stnet_program(
        seg_num=seg_num, image_size=size, distinct_windows=True
    )
    assert dedup_feeds == ["windows", "window_index"]
    assert program_params(dedup) == program_params(main)
    exe.run(startup)
    rng = np.random.default_rng(9)
    load_params(main, random_params(main, rng, lambda name, shape: 0.01 if name == "fc_0.w_0" else None))
    windows = rng.normal(0, 1, (3, 15, size, size)).astype(np.float32)
    index = np.array([0, 1, 0, 1, 2, 2, 2, 0], dtype=np.int64)  # clip 1: 0 1 0 1; clip 2: 2 2 2 0
    (every,) = exe.run(main, feed={"image": windows[index].reshape(2, seg_num, 15, size, size)}, fetch_list=fetches)
    # The same scope holds the parameters: both programs name them alike.
    (distinct,) = exe.run(dedup, feed={"windows": windows, "window_index": index}, fetch_list=dedup_fetches)
    assert distinct.shape == (2, 400)
    assert np.abs(distinct[0] - distinct[1]).max() > 1e-3
    np.testing.assert_array_equal(distinct, every)


def test_stnet_window_and_temporal_programs_are_the_whole_network(static_scope: Any) -> None:
    """The two programs the module runs hold the whole network's parameters between them, each once,
    and the per-window one run on one window at a time, then the temporal one on the gathered maps,
    give bit for bit the whole program's probabilities fed every segment at once."""
    exe = static_scope
    seg_num, size = 4, 64
    main, startup, _, fetches = build_stnet_program(seg_num=seg_num, image_size=size)
    window, _, window_feeds, window_fetches = build_stnet_window_program(image_size=size)
    temporal, _, temporal_feeds, temporal_fetches = build_stnet_temporal_program(seg_num=seg_num, image_size=size)
    assert (window_feeds, temporal_feeds) == (["windows"], ["maps", "window_index"])
    assert not set(program_params(window)) & set(program_params(temporal))
    assert program_params(window) | program_params(temporal) == program_params(main)
    exe.run(startup)
    rng = np.random.default_rng(10)
    load_params(main, random_params(main, rng, lambda name, shape: 0.01 if name == "fc_0.w_0" else None))
    windows = rng.normal(0, 1, (3, 15, size, size)).astype(np.float32)
    index = np.array([0, 1, 0, 1, 2, 2, 2, 0], dtype=np.int64)
    (every,) = exe.run(main, feed={"image": windows[index].reshape(2, seg_num, 15, size, size)}, fetch_list=fetches)
    maps = np.concatenate([exe.run(window, feed={"windows": w[np.newaxis]}, fetch_list=window_fetches)[0]
                           for w in windows])
    assert maps.shape == (3, 512, size // 8, size // 8)
    (split,) = exe.run(temporal, feed={"maps": maps, "window_index": index}, fetch_list=temporal_fetches)
    assert np.abs(split[0] - split[1]).max() > 1e-3
    np.testing.assert_array_equal(split, every)
