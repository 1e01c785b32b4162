"""Conversion of weights into a cached inference model, and the predictor wrapper."""
import os
from pathlib import Path

import numpy as np
import paddle
import pytest

from paddlehub_video.errors import DeviceError, WeightsError
from paddlehub_video.model.assets import cache as asset_cache
from paddlehub_video.model.assets import file_digest
from paddlehub_video.model.inference_model import Program, cached_inference_model
from paddlehub_video.model.networks.layers import conv2d, new_program
from paddlehub_video.model.predictor import Predictor, shared_predictor
from paddlehub_video.testing import write_pdparams

TINY = {"tiny_w": (4, 3, 3, 3), "tiny_b": (4,)}


def build_tiny():
    """A one-conv program whose parameters are TINY."""
    with new_program() as (main, startup):
        image = paddle.static.data("image", [-1, 3, 8, 8], "float32")
        out = paddle.nn.functional.relu(conv2d(image, "tiny_w", 3, 4, 3, bias_name="tiny_b"))
    return main, startup, ["image"], [out]


@pytest.fixture
def tiny_network(monkeypatch, tmp_path):
    """Register TINY as network 'tiny' and point the cache at a fresh HUB_HOME."""
    monkeypatch.setattr("paddlehub_video.model.weights.expected_parameters", lambda network: dict(TINY))
    monkeypatch.setenv("HUB_HOME", str(tmp_path / "hub"))
    rng = np.random.default_rng(0)
    return {name: rng.normal(size=shape).astype(np.float32) for name, shape in TINY.items()}


def counting(build):
    calls = []

    def wrapped():
        calls.append(1)
        return build()

    return wrapped, calls


def reference_conv(state, image):
    out = paddle.nn.functional.conv2d(paddle.to_tensor(image), paddle.to_tensor(state["tiny_w"]),
                                      paddle.to_tensor(state["tiny_b"]), padding=1)
    return np.maximum(out.numpy(), 0)


def test_converts_once_and_predicts_with_the_weights(tiny_network, tmp_path):
    weights = write_pdparams(tiny_network, tmp_path / "tiny.pdparams")
    build, calls = counting(build_tiny)
    prefix = cached_inference_model(Program("tiny", 1, build), {"tiny": weights})
    assert cached_inference_model(Program("tiny", 1, build), {"tiny": weights}) == prefix
    assert len(calls) == 1
    assert Path(f"{prefix}.json").exists() and Path(f"{prefix}.pdiparams").exists()
    image = np.random.default_rng(1).normal(size=(2, 3, 8, 8)).astype(np.float32)
    out = Predictor(prefix).run({"image": image})[0]
    np.testing.assert_allclose(out, reference_conv(tiny_network, image), atol=1e-5)
    assert paddle.in_dynamic_mode()



def test_a_conversion_frees_the_parameters_paddle_keeps_its_scope_for(tiny_network, tmp_path, monkeypatch):
    """Paddle's executor keeps the scope it ran the startup program in (README Limits: +452 MiB after
    videotag's conversions): the conversion frees its parameters' tensors, whoever still holds it."""
    scopes = []

    def recorded_scope():
        scopes.append(paddle.base.core.Scope())
        return scopes[-1]

    monkeypatch.setattr(paddle.static, "Scope", recorded_scope)
    weights = write_pdparams(tiny_network, tmp_path / "tiny.pdparams")
    prefix = cached_inference_model(Program("tiny", 1, build_tiny), {"tiny": weights})
    [scope] = scopes
    assert not any(scope.find_var(name).get_tensor()._is_initialized() for name in TINY)
    image = np.random.default_rng(1).normal(size=(2, 3, 8, 8)).astype(np.float32)
    out = Predictor(prefix).run({"image": image})[0]  # what was saved is whole
    np.testing.assert_allclose(out, reference_conv(tiny_network, image), atol=1e-5)

def test_a_conversion_collects_its_garbage_once(tiny_network, tmp_path, monkeypatch):
    """The weights read and the program built sit in reference cycles after a conversion (+250 MiB held
    through a StNet video-context timeline after its head's): collected then, not when the cache serves."""
    from paddlehub_video.model import inference_model

    collected = []
    monkeypatch.setattr(inference_model.gc, "collect", lambda: collected.append(1))
    weights = write_pdparams(tiny_network, tmp_path / "tiny.pdparams")
    cached_inference_model(Program("tiny", 1, build_tiny), {"tiny": weights})
    assert len(collected) == 1
    cached_inference_model(Program("tiny", 1, build_tiny), {"tiny": weights})
    assert len(collected) == 1


def test_new_weights_or_version_give_a_new_entry(tiny_network, tmp_path):
    first = write_pdparams(tiny_network, tmp_path / "a.pdparams")
    changed = dict(tiny_network, tiny_b=tiny_network["tiny_b"] + 1)
    second = write_pdparams(changed, tmp_path / "b.pdparams")
    a = cached_inference_model(Program("tiny", 1, build_tiny), {"tiny": first})
    assert cached_inference_model(Program("tiny", 1, build_tiny), {"tiny": second}) != a
    assert cached_inference_model(Program("tiny", 2, build_tiny), {"tiny": first}) != a


def test_build_arguments_are_passed_to_the_builder_and_keyed(tiny_network, tmp_path):
    weights = write_pdparams(tiny_network, tmp_path / "tiny.pdparams")
    seen = []

    def build(size: int):
        seen.append(size)
        return build_tiny()

    small = cached_inference_model(Program("tiny", 1, build, {"size": 8}), {"tiny": weights})
    large = cached_inference_model(Program("tiny", 1, build, {"size": 9}), {"tiny": weights})
    assert small != large and seen == [8, 9]
    assert cached_inference_model(Program("tiny", 1, build, {"size": 8}), {"tiny": weights}) == small
    assert seen == [8, 9]


def test_weights_missing_a_parameter_leave_nothing_in_the_cache(tiny_network, tmp_path, monkeypatch):
    weights = write_pdparams({"tiny_w": tiny_network["tiny_w"]}, tmp_path / "short.pdparams")
    with pytest.raises(WeightsError, match="missing tiny_b"):
        cached_inference_model(Program("tiny", 1, build_tiny), {"tiny": weights})
    entries = list((tmp_path / "hub" / "paddlehub_video" / "inference").iterdir())
    assert [e.name for e in entries if not e.name.endswith(".lock")] == []


def test_program_parameters_not_covered_by_weights_are_an_error(tiny_network, tmp_path, monkeypatch):
    # The manifest is satisfied, but the program has a parameter the manifest does not list.
    monkeypatch.setattr("paddlehub_video.model.weights.expected_parameters", lambda network: {"tiny_w": TINY["tiny_w"]})
    weights = write_pdparams(tiny_network, tmp_path / "tiny.pdparams")
    with pytest.raises(WeightsError, match="do not cover 1 program parameters"):
        cached_inference_model(Program("tiny", 1, build_tiny), {"tiny": weights})


def test_digest_is_remembered(tiny_network, tmp_path, monkeypatch):
    weights = write_pdparams(tiny_network, tmp_path / "tiny.pdparams")
    first = file_digest(weights)
    monkeypatch.setattr(asset_cache, "sha256_file", lambda path: pytest.fail("rehashed"))
    assert file_digest(weights) == first
    os.utime(weights, ns=(1, 1))  # a touched file is hashed again
    monkeypatch.undo()
    monkeypatch.setenv("HUB_HOME", str(tmp_path / "hub"))
    assert file_digest(weights) == first


def test_predictor_rejects_unknown_inputs_and_gpu_on_cpu_build(tiny_network, tmp_path):
    weights = write_pdparams(tiny_network, tmp_path / "t")
    prefix = cached_inference_model(Program("tiny", 1, build_tiny), {"tiny": weights})
    predictor = shared_predictor(prefix)
    assert shared_predictor(prefix) is predictor
    assert predictor.input_names == ["image"]
    with pytest.raises(KeyError, match="unknown inputs"):
        predictor.run({"rgb": np.zeros((1, 3, 8, 8), np.float32)})
    if paddle.is_compiled_with_cuda():
        pytest.skip("this Paddle build has CUDA")
    with pytest.raises(DeviceError, match="CUDA"):
        Predictor(prefix, use_gpu=True)


@pytest.mark.parametrize("damage", ["weights changed in place", "truncated", "digests missing"])
def test_a_changed_or_damaged_converted_model_is_converted_again(tiny_network, tmp_path, caplog, damage):
    weights = write_pdparams(tiny_network, tmp_path / "tiny.pdparams")
    prefix = cached_inference_model(Program("tiny", 1, build_tiny), {"tiny": weights})
    params = Path(f"{prefix}.pdiparams")
    good = params.read_bytes()
    stat = params.stat()
    if damage == "weights changed in place":
        changed = bytearray(good)
        changed[-8:] = np.float32([7.0, -7.0]).tobytes()  # two values of the bias: same size
        params.write_bytes(bytes(changed))
        os.utime(params, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same time: only a digest sees it
    elif damage == "truncated":
        params.write_bytes(good[: len(good) // 2])
    else:
        (prefix.parent / "digests.json").unlink()
    build, calls = counting(build_tiny)

    with caplog.at_level("WARNING", logger="paddlehub_video"):
        assert cached_inference_model(Program("tiny", 1, build), {"tiny": weights}) == prefix

    assert len(calls) == 1 and params.read_bytes() == good
    assert [r.getMessage() for r in caplog.records] == [
        f"{prefix.parent}: the converted model differs from the digest recorded when it was made "
        f"(changed or damaged since); converting it again"]
    image = np.random.default_rng(2).normal(size=(1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(Predictor(prefix).run({"image": image})[0], reference_conv(tiny_network, image),
                               atol=1e-5)
    assert sorted(p.name for p in prefix.parent.parent.iterdir() if not p.name.endswith(".lock")) == [
        prefix.parent.name]  # the bad copy is gone, no temp left


def test_weights_that_came_from_a_download_and_fail_the_check_are_deleted(tiny_network, tmp_path):
    downloads = tmp_path / "hub" / "paddlehub_video" / "downloads"
    weights = write_pdparams({"tiny_w": tiny_network["tiny_w"]}, downloads / "tiny.pdparams")
    mine = write_pdparams({"tiny_w": tiny_network["tiny_w"]}, tmp_path / "mine.pdparams")
    with pytest.raises(WeightsError, match="missing tiny_b; the download was deleted, the next run fetches it again"):
        cached_inference_model(Program("tiny", 1, build_tiny), {"tiny": weights})
    assert not weights.exists()
    with pytest.raises(WeightsError, match="missing tiny_b$"):
        cached_inference_model(Program("tiny", 1, build_tiny), {"tiny": mine})
    assert mine.exists()  # a user's own file is never deleted
