"""Scale-out on Ray Data: decode videos in CPU workers, infer in model actors, one result row per video.

Use the two callable classes with `Dataset.map_batches` (see README, "Scale out with Ray Data"):

    ds = ray.data.from_items([{"path": p} for p in paths])
    ds = ds.map_batches(DecodeStage, fn_constructor_kwargs={"module": "videotag_tsn_lstm"},
                        batch_format="pyarrow", batch_size=4, compute=ray.data.ActorPoolStrategy(size=4))
    ds = ds.map_batches(ModelStage, fn_constructor_kwargs={"module": "videotag_tsn_lstm", "top_k": 5},
                        batch_format="pyarrow", batch_size=4,
                        compute=ray.data.ActorPoolStrategy(size=2), num_gpus=1)

Columns, plain Arrow types so that any sink (parquet, json, csv) can write them:

- DecodeStage input: `path`, a string, or binary for a file name that is not UTF-8 (an Arrow string
  cannot hold it: `os.fsencode(path)`).
- DecodeStage output: `path` (string; a name that is not UTF-8 as `names.printable` shows it),
  `tensor` (large_binary: the module's `preprocess` array in C order, for both modules uint8 frames
  `[T, H, W, 3]`), `shape` (list<int64>), `dtype` (string), `error` (string, "" when the video was
  read). Tensors travel as bytes, a shape and a dtype rather than a Ray tensor column: a failed
  video has no tensor, and a tensor column cannot mix ranks.
- ModelStage output: `path`, `prediction` (string: the JSON of `classify`'s `{label: prob}` dict,
  in its order, floats exact, so `json.loads` gives back `classify`'s value), `error` ("" or the
  reason `classify` would give; `prediction` is then "{}").

Importing this module needs Ray; importing `paddlehub_video` never does.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, Union

import numpy as np

try:
    import pyarrow as pa
    import ray.data  # noqa: F401  (fail here, with the fix, rather than inside a worker)
except ImportError as exc:  # ray is an optional extra
    raise ImportError(
        f"paddlehub_video.interfaces.ray_adapter needs Ray Data ({exc}): pip install 'paddlehub-video[ray]'"
    ) from exc

from .. import environment
from ..config import ConfigOverrides, merge, read_overrides
from ..model.postprocess import validate_threshold, validate_top_k
from ..names import as_str_path, printable
from ..pipeline import report_failure

ModuleRef = Union[str, "os.PathLike[str]", type]
Batch = pa.Table | Mapping[str, Any]

DECODED = pa.schema(
    [
        ("path", pa.string()),
        ("tensor", pa.large_binary()),
        ("shape", pa.list_(pa.int64())),
        ("dtype", pa.string()),
        ("error", pa.string()),
    ]
)
RESULTS = pa.schema([("path", pa.string()), ("prediction", pa.string()), ("error", pa.string())])

# What the modules read from the environment. A local `ray.init` hands its workers the environment of
# that moment only; workers of a cluster never see the driver's: pass these with `runtime_env`.
FORWARDED_ENV = ("HUB_HOME", "no_proxy", "NO_PROXY", "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY")
FORWARDED_PREFIX = environment.PREFIX


def runtime_env(**env_vars: str) -> dict[str, dict[str, str]]:
    """A Ray `runtime_env` carrying this process's HUB_HOME, PADDLEHUB_VIDEO_* and proxy settings, plus `env_vars`."""
    forwarded = {
        name: value
        for name, value in os.environ.items()
        if name in FORWARDED_ENV or name.startswith(FORWARDED_PREFIX)
    }
    return {"env_vars": {**forwarded, **env_vars}}


def load_module(module: ModuleRef, config: ConfigOverrides = None) -> Any:
    """A module object from a module class, a module directory, or the name of a `hub install`ed module."""
    if isinstance(module, type):
        return module(config=config)
    import paddlehub as hub  # here, not at import: PaddleHub reads HUB_HOME when imported

    if os.path.isdir(module):
        return hub.Module(directory=os.fspath(module), config=config)
    return hub.Module(name=module, config=config)


def with_assigned_cpus(module: Any, reference: ModuleRef, config: ConfigOverrides) -> Any:
    """In a Ray actor, a module whose settings leave `runtime.cpu_threads` unset (nor set by
    $PADDLEHUB_VIDEO_CPU_THREADS) gets the CPUs Ray assigned the actor (`num_cpus`): Ray does not
    narrow the actor's affinity mask, so the automatic count would be the node's. Settings are
    frozen: that is a second module made with the override (making one loads no model)."""
    if module.settings.runtime.cpu_threads is not None or not ray.is_initialized():
        return module
    assigned = ray.get_runtime_context().get_assigned_resources().get("CPU")
    if not assigned:
        return module
    overrides = merge(read_overrides(config), {"runtime": {"cpu_threads": max(1, int(assigned))}})
    return load_module(reference, overrides)


def column(batch: Batch, name: str) -> list:
    """One column of a pyarrow, numpy or pandas batch, as a Python list."""
    column = batch[name]
    return column.to_pylist() if isinstance(column, (pa.Array, pa.ChunkedArray)) else list(column)


class DecodeStage:
    """CPU stage: rows {path} -> {path, tensor, shape, dtype, error}; a video that cannot be read gets its error."""

    def __init__(self, module: ModuleRef, config: ConfigOverrides = None):
        self.module = load_module(module, config)  # configuration only: no model is fetched here

    def __call__(self, batch: Batch) -> pa.Table:
        rows = [self._decode(as_str_path(path)) for path in column(batch, "path")]
        return pa.Table.from_pylist(rows, schema=DECODED)

    def _decode(self, path: str) -> dict[str, Any]:
        try:
            tensor = np.ascontiguousarray(self.module.preprocess(path))
        except Exception as exc:  # one bad video must not cost the others their results
            return {"path": printable(path), "tensor": b"", "shape": [0], "dtype": "",
                    "error": printable(report_failure(path, exc))}
        return {"path": printable(path), "tensor": tensor.tobytes(), "shape": list(tensor.shape),
                "dtype": tensor.dtype.str, "error": ""}


class ModelStage:
    """Model stage: DecodeStage rows -> {path, prediction, error}; the model is loaded once per actor."""

    def __init__(
        self,
        module: ModuleRef,
        config: ConfigOverrides = None,
        use_gpu: bool = False,
        top_k: int | None = None,
        threshold: float | None = None,
    ):
        # None keeps the module's `classify` default (videotag: 10 and 0.5, StNet: 5 and 0.0).
        self.options: dict[str, Any] = {}
        if top_k is not None:
            self.options["top_k"] = validate_top_k(top_k)
        if threshold is not None:
            self.options["threshold"] = validate_threshold(threshold)
        self.module = with_assigned_cpus(load_module(module, config), module, config)
        self.predict = self.module.predict_fn(use_gpu)  # fetch, convert, load: here, once, not per batch

    def __call__(self, batch: Batch) -> pa.Table:
        columns = (column(batch, name) for name in ("path", "tensor", "shape", "dtype", "error"))
        rows = [self._answer(*row) for row in zip(*columns, strict=True)]
        return pa.Table.from_pylist(rows, schema=RESULTS)

    def _answer(self, path: str, tensor: bytes, shape: list[int], dtype: str, error: str) -> dict[str, str]:
        if error:
            return {"path": path, "prediction": "{}", "error": error}
        try:
            probs = self.predict(np.frombuffer(tensor, dtype=np.dtype(dtype)).reshape(shape))
            prediction = self.module.postprocess(probs, **self.options)
        except Exception as exc:  # as in `classify`: an inference failure is this video's error
            return {"path": path, "prediction": "{}", "error": report_failure(path, exc)}
        return {"path": path, "prediction": json.dumps(prediction, ensure_ascii=False), "error": ""}
