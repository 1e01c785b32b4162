"""runtime.precision: fp32 by default, bf16 (OpenVINO, on a CPU with the instructions), auto.

The CPU's flags are faked where a test is about a CPU without bf16; the bf16 runs themselves need a
CPU that has it (avx512_bf16 or amx_bf16) and OpenVINO, and are skipped elsewhere. The seeded weights
say nothing about accuracy: these tests bound the deviation from fp32, bench/bench_precision.py
measures it over many videos.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from paddlehub_video import cpus
from paddlehub_video.errors import ConfigError, DeviceError
from paddlehub_video.model import inference_model, openvino_engine
from paddlehub_video.settings import build_settings
from tests.fixtures.publisher import PublisherHost

MODULES = ("videotag_tsn_lstm", "stnet_kinetics400")
NO_BF16 = frozenset({"fpu", "sse2", "avx2", "avx512f", "avx512_vnni"})  # AVX-512 without bf16 (Ice Lake)
needs_bf16 = pytest.mark.skipif(
    not cpus.has_native_bf16() or openvino_engine.engine_problem() is not None,
    reason="needs a CPU with avx512_bf16 or amx_bf16, and OpenVINO",
)


@pytest.fixture(autouse=True)
def fresh_auto_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees the auto fallback's log line as if first in the process."""
    monkeypatch.setattr(cpus, "_auto_logged", set())
    monkeypatch.delenv(cpus.PRECISION_ENV, raising=False)


# ---------------------------------------------------------------- the setting


def test_precision_is_fp32_unless_configured_and_the_environment_fills_a_null() -> None:
    assert build_settings("stnet_kinetics400", environ={}).runtime.precision == "fp32"
    assert build_settings("stnet_kinetics400", environ={cpus.PRECISION_ENV: "auto"}).runtime.precision == "auto"
    given = {"runtime": {"precision": "bf16"}}
    assert build_settings("stnet_kinetics400", given, environ={cpus.PRECISION_ENV: "fp32"}).runtime.precision == "bf16"


@pytest.mark.parametrize("value", ["int8", "BF16", 16, True])
def test_an_unknown_precision_is_a_config_error_naming_the_key(value: object) -> None:
    with pytest.raises(ConfigError, match=r"runtime.precision must be one of fp32, bf16, auto"):
        build_settings("videotag_tsn_lstm", {"runtime": {"precision": value}}, environ={})
    with pytest.raises(ConfigError, match=cpus.PRECISION_ENV):
        build_settings("videotag_tsn_lstm", environ={cpus.PRECISION_ENV: str(value)})


# ---------------------------------------------------------------- which CPUs


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16 amx_tile\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpus.cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512_bf16", "amx_tile"}
    assert cpus.cpu_flags(tmp_path / "missing") == frozenset()
    assert cpus.has_native_bf16(frozenset({"amx_bf16"})) and not cpus.has_native_bf16(NO_BF16)


def test_bf16_on_a_cpu_without_the_instructions_is_an_error_naming_them() -> None:
    with pytest.raises(DeviceError, match=r"runtime.precision is bf16, but this CPU has none of the instructions "
                                          r"avx512_bf16 or amx_bf16 .*set runtime.precision to fp32 or auto"):
        cpus.resolve_precision("bf16", flags=NO_BF16)
    with pytest.raises(DeviceError, match="CPU only"):
        cpus.resolve_precision("bf16", use_gpu=True, flags=frozenset({"avx512_bf16"}))


def test_auto_on_a_cpu_without_the_instructions_runs_fp32_with_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="paddlehub_video"):
        assert [cpus.resolve_precision("auto", flags=NO_BF16) for _ in range(3)] == ["fp32"] * 3
    lines = [r.getMessage() for r in caplog.records if "runtime.precision auto" in r.getMessage()]
    assert lines == ["runtime.precision auto: running fp32, as this CPU has none of the instructions "
                     "avx512_bf16 or amx_bf16 (bf16 would be emulated, slower than fp32)"]
    assert cpus.resolve_precision("auto", flags=frozenset({"avx512_bf16"})) == "bf16"
    assert cpus.resolve_precision("fp32", flags=frozenset({"avx512_bf16"})) == "fp32"


def test_without_openvino_bf16_is_an_error_saying_what_to_install_and_auto_is_fp32() -> None:
    problem = "OpenVINO, the bf16 engine, is not installed (pip install 'paddlehub-video[bf16]' (OpenVINO))"
    with pytest.raises(DeviceError, match=r"paddlehub-video\[bf16\]"):
        cpus.resolve_precision("bf16", flags=frozenset({"avx512_bf16"}), engine_problem=problem)
    assert cpus.resolve_precision("auto", flags=frozenset({"avx512_bf16"}), engine_problem=problem) == "fp32"


@pytest.mark.parametrize("name", MODULES)
def test_classify_in_bf16_on_a_cpu_without_it_fails_before_decoding(
    mirror: PublisherHost, name: str, monkeypatch: pytest.MonkeyPatch, short_video: Path
) -> None:
    monkeypatch.setattr(cpus, "cpu_flags", lambda cpuinfo=None: NO_BF16)
    module = mirror.small_module(name).with_precision("bf16")
    decoded = []
    monkeypatch.setattr(module, "preprocess", lambda path: decoded.append(path))
    with pytest.raises(DeviceError, match="avx512_bf16 or amx_bf16"):
        module.classify([str(short_video)])
    assert decoded == [] and module._bundle is None  # nothing decoded, fetched or converted


def test_hub_run_precision_chooses_for_the_run_only(
    mirror: PublisherHost, monkeypatch: pytest.MonkeyPatch, short_video: Path, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(cpus, "cpu_flags", lambda cpuinfo=None: NO_BF16)
    module = mirror.small_module("stnet_kinetics400")
    with pytest.raises(SystemExit) as exited:
        module.run_cmd(["--input_path", str(short_video), "--precision", "bf16"])
    assert exited.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "runtime.precision is bf16, but this CPU has none" in err[0], err
    assert module.settings.runtime.precision == "fp32"  # the object's settings are its own
    assert module.with_precision("auto").settings.runtime.precision == "auto"
    with pytest.raises(ConfigError):
        module.with_precision("fp16")


# ---------------------------------------------------------------- bf16 itself (a CPU that has it)


def top5(probs: np.ndarray) -> set[int]:
    return set(np.argsort(-probs, kind="stable")[:5].tolist())


@needs_bf16
@pytest.mark.parametrize("name", MODULES)
def test_bf16_stays_close_to_fp32_on_the_seeded_weights(
    mirror: PublisherHost, name: str, short_video: Path, portrait_video: Path
) -> None:
    fp32 = mirror.small_module(name)
    bf16 = fp32.with_precision("bf16")
    assert bf16.precision() == "bf16" and fp32.precision() == "fp32"
    for video in (short_video, portrait_video):
        frames = fp32.preprocess(str(video))
        reference = fp32.forward(frames, fp32.predictors(False))
        probs = bf16.forward(frames, bf16.predictors(False))
        assert probs.shape == reference.shape and probs.dtype == np.float32
        assert np.abs(probs - reference).max() < 0.02, (video, np.abs(probs - reference).max())
        assert int(np.argmax(probs)) in top5(reference)
        assert len(top5(probs) & top5(reference)) >= 3
        # fp32 keeps its own predictors: its answer does not move once bf16 ran in the same process.
        np.testing.assert_array_equal(fp32.forward(frames, fp32.predictors(False)), reference)
    models = bf16.predictors(False)
    assert all(type(p).__name__ == ("Predictor" if n == "lstm" else "OpenVinoPredictor") for n, p in models.items())


@needs_bf16
def test_the_onnx_export_is_cached_and_a_damaged_one_made_again(
    mirror: PublisherHost, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = mirror.small_module("stnet_kinetics400").bundle().models["temporal"]
    onnx_file = openvino_engine.cached_onnx_model(prefix)
    assert onnx_file.parent.name.startswith(prefix.parent.name + "-onnx")

    def forbidden(*args: object) -> None:
        raise AssertionError("exported again")

    with monkeypatch.context() as patch:
        patch.setattr(openvino_engine, "_export", forbidden)
        assert openvino_engine.cached_onnx_model(prefix) == onnx_file
    original = onnx_file.read_bytes()
    onnx_file.write_bytes(original[:-10] + b"0123456789")
    with caplog.at_level(logging.WARNING, logger="paddlehub_video"):
        assert openvino_engine.cached_onnx_model(prefix) == onnx_file
    assert "converting it again" in caplog.text
    assert onnx_file.read_bytes() == original
    assert inference_model._intact(onnx_file.parent, ("model.onnx",))


# ---------------------------------------------------------------- the heap (README Limits: 1.5 GB)


def test_the_onnx_export_never_installs_packages(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """paddle2onnx's default optimizer (Polygraphy) pip-installs onnxruntime and protobuf 7 into the
    running environment, which breaks paddlehub: the export must not use it."""
    import paddle2onnx

    asked: dict = {}
    monkeypatch.setattr(paddle2onnx, "export", lambda *args, **kwargs: asked.update(kwargs))
    monkeypatch.delenv("POLYGRAPHY_AUTOINSTALL_DEPS", raising=False)
    openvino_engine._export(tmp_path / "model", tmp_path / "model.onnx")
    assert asked["optimize_tool"] not in ("polygraphy", "onnxsim")
    assert "POLYGRAPHY_AUTOINSTALL_DEPS" not in __import__("os").environ


def test_the_onnx_export_runs_in_a_child_and_its_failure_names_the_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """paddle2onnx holds the model about five times over while exporting: in this process that passed the
    1.5 GB bound on a first bf16 use, so the export runs in a child (which cannot see this monkeypatch)."""
    import paddle2onnx

    asked: dict = {}
    monkeypatch.setattr(paddle2onnx, "export", lambda *args, **kwargs: asked.update(kwargs))
    missing = tmp_path / "tsn-v1-0123" / "model"  # no such converted model: the child's export fails
    with pytest.raises(RuntimeError, match=r"the ONNX export of tsn-v1-0123 for bf16 failed \(exit status [1-9]"):
        openvino_engine._export_in_child(missing, tmp_path / "model.onnx")
    assert asked == {}  # not exported here


def test_malloc_is_configured_once_and_an_environment_choice_is_left_to_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    from paddlehub_video import heap

    calls: list[tuple] = []

    class FakeLibc:
        def mallopt(self, *args: int) -> int:
            calls.append(("mallopt", *args))
            return 1

        def malloc_trim(self, pad: int) -> int:
            calls.append(("malloc_trim", pad))
            return 1

    monkeypatch.setattr(heap, "_LIBC", FakeLibc())
    monkeypatch.setattr(heap, "_done", False)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    heap.configure_malloc()
    assert calls == []
    monkeypatch.setattr(heap, "_done", False)
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    heap.configure_malloc()
    heap.configure_malloc()
    heap.release_free_memory()
    assert calls == [("mallopt", -8, heap.ARENAS), ("mallopt", -3, heap.MMAP_THRESHOLD), ("malloc_trim", 0)]
