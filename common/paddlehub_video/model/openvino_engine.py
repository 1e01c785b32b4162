"""bf16 on CPU through OpenVINO: the converted Paddle model, exported once to ONNX and compiled in bf16.

Why OpenVINO (bench/bench_precision.py; README Speed): on an AMD EPYC with avx512_bf16 (Zen 5), one
thread, CPU seconds per run, same process, interleaved: TSN (2 frames) fp32 Paddle+oneDNN 0.157,
Paddle oneDNN bf16 0.078, OpenVINO bf16 0.069; StNet (25 windows) 2.80, 1.64 and 0.98. Paddle's own
bf16 passes also fold batch norm into the conv weights in bf16 with oneDNN's reference kernel (~9 s
at the first run, twice the deviation from fp32 of OpenVINO's) and break StNet's temporal reshapes
(`operator_reshape_onednn_fuse_pass` then feeds a 5-D tensor to a conv).

The export (paddle2onnx, a PaddleHub dependency) is cached next to the converted model and verified like
it (`inference_model.cached_entry`); OpenVINO compiles it at each process start (a few seconds).
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import progress
from .inference_model import cached_entry, make_entry
from .predictor import Predictor

ONNX_OPSET = 17
_ONNX_FILES = ("model.onnx",)
EXPORT_TIMEOUT = 1800  # seconds; TSN's export takes a few
INSTALL_HINT = "pip install 'paddlehub-video[bf16]' (OpenVINO)"


def engine_problem() -> str | None:
    """Why the bf16 engine cannot run in this environment, or None if it can."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return f"OpenVINO, the bf16 engine, is not installed ({INSTALL_HINT})"
    return None


def cached_onnx_model(prefix: Path) -> Path:
    """The ONNX export of the converted model at `prefix` (`.../<entry>/model`), made once and cached."""
    import paddle2onnx

    source = Path(prefix).parent
    entry = source.with_name(f"{source.name}-onnx{ONNX_OPSET}-p2o{paddle2onnx.__version__}")

    def convert(entry: Path) -> None:
        with progress.current().converting(f"{source.name} (ONNX, for bf16)", [Path(prefix).name + ".json"]):
            make_entry(entry, _ONNX_FILES, lambda folder: _export_in_child(Path(prefix), folder / "model.onnx"))

    cached_entry(entry, _ONNX_FILES, convert)
    return entry / "model.onnx"


def _export_in_child(prefix: Path, onnx_file: Path) -> None:
    """`_export` in a child process: paddle2onnx holds the model about five times over while it exports
    (+821 MiB for TSN), which took a first bf16 use past the 1.5 GB a process is promised (README
    Limits); a child gives all of it back when it exits. The child imports this package from where
    this process did."""
    model = Path(prefix).parent.name
    package_root = str(Path(__file__).resolve().parents[2])
    python_path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    command = [sys.executable, "-c", "import sys\nfrom paddlehub_video.model.openvino_engine import _export\n"
               "_export(sys.argv[1], sys.argv[2])", str(prefix), str(onnx_file)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
                              env={**os.environ, "PYTHONPATH": python_path}, timeout=EXPORT_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"the ONNX export of {model} for bf16 took over {EXPORT_TIMEOUT} s") from None
    if done.returncode != 0 or not Path(onnx_file).is_file():
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(f"the ONNX export of {model} for bf16 failed (exit status {done.returncode}): {last}")


def _export(prefix: Path | str, onnx_file: Path | str) -> None:
    import paddle2onnx

    # optimize_tool: paddle2onnx's default, "polygraphy", sets POLYGRAPHY_AUTOINSTALL_DEPS=1, and Polygraphy
    # then pip-installs onnxruntime (and protobuf 7, which breaks paddlehub) into the running environment.
    # OpenVINO folds constants itself when it compiles the model.
    paddle2onnx.export(str(prefix) + ".json", str(prefix) + ".pdiparams", str(onnx_file),
                       opset_version=ONNX_OPSET, enable_onnx_checker=False, verbose=False, optimize_tool="None")


_core: Any = None
_core_lock = threading.Lock()


def _openvino_core() -> Any:
    """One OpenVINO Core per process (it holds the plugins)."""
    global _core
    with _core_lock:
        if _core is None:
            import openvino

            _core = openvino.Core()
        return _core


class _Compiled:
    """A compiled model and one infer request of it, with the names `Predictor` reads."""

    def __init__(self, compiled: Any):
        self.compiled = compiled
        self.request = compiled.create_infer_request()

    def get_input_names(self) -> list[str]:
        return [port.get_any_name() for port in self.compiled.inputs]

    def get_output_names(self) -> list[str]:
        return [port.get_any_name() for port in self.compiled.outputs]

    def clone(self) -> _Compiled:
        """Another request of the same compiled model: its own activations, the same weights."""
        return _Compiled(self.compiled)


def _compile(onnx_file: Path, cpu_threads: int) -> _Compiled:
    config = {
        "INFERENCE_PRECISION_HINT": "bf16",
        "INFERENCE_NUM_THREADS": cpu_threads,
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        # Workers and other processes share the cores: pinning would put them all on the same ones.
        "ENABLE_CPU_PINNING": False,
    }
    return _Compiled(_openvino_core().compile_model(str(onnx_file), "CPU", config))


class OpenVinoPredictor(Predictor):
    """`Predictor`'s interface (named inputs in, outputs out, `clone`) on an OpenVINO bf16 model."""

    def __init__(self, onnx_file: str | Path, cpu_threads: int = 1):
        self.cpu_threads = cpu_threads
        self._start(lambda path: _compile(Path(path), cpu_threads), onnx_file, False)

    def _run(
        self,
        inputs: Mapping[str, np.ndarray],
        lod: Mapping[str, Sequence[Sequence[int]]] | None,
    ) -> list[np.ndarray]:
        if lod:
            raise ValueError("LoD inputs run on Paddle Inference, not OpenVINO")
        request = self._predictor.request
        # share_inputs: StNet's 98 MB input is read in place rather than copied.
        request.infer({name: np.ascontiguousarray(array) for name, array in inputs.items()}, share_inputs=True)
        return [request.get_output_tensor(index).data.copy() for index in range(len(self.output_names))]
