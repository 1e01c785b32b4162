"""The publisher's weight files: pickled `{name: ndarray}` dicts, read safely and checked."""
from __future__ import annotations

import json
import pickle
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import WeightsError

# A .pdparams file is a pickle; only the classes a fluid.save of numpy arrays needs are allowed,
# so a tampered file cannot run code while it is read.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a weights file")
        return super().find_class(module, name)


def expected_parameters(network: str) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every parameter the publisher's `network` holds (configs/params/)."""
    text = resources.files("paddlehub_video.configs").joinpath("params", f"{network}.json").read_text()
    return {name: tuple(shape) for name, shape in json.loads(text)}


def load_pdparams(path: str | Path) -> dict[str, np.ndarray]:
    """Read a fluid.save `.pdparams` pickle (protocol 2, Python 2 strings as latin1)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            state = _ArrayUnpickler(f, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as exc:
        raise WeightsError(f"{path}: not a readable .pdparams file ({exc})") from exc
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a pickled dict of arrays, found {type(state).__name__}")
    return state


def check_parameters(state: Mapping[str, object], expected: Mapping[str, tuple[int, ...]], source: str) -> None:
    """Raise WeightsError listing every expected parameter missing or of the wrong shape/dtype."""
    problems = []
    for name, shape in expected.items():
        value = state.get(name)
        if value is None:
            problems.append(f"missing {name}")
        elif not isinstance(value, np.ndarray):
            problems.append(f"{name} is a {type(value).__name__}, not an array")
        elif tuple(value.shape) != tuple(shape):
            problems.append(f"{name} has shape {list(value.shape)}, expected {list(shape)}")
        elif value.dtype != np.float32:
            problems.append(f"{name} has dtype {value.dtype}, expected float32")
    if problems:
        shown = "; ".join(problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise WeightsError(f"{source}: {len(problems)} of {len(expected)} parameters are wrong: {shown}{more}")


def load_checked_weights(path: str | Path, network: str) -> dict[str, np.ndarray]:
    """Load a `.pdparams` file and return exactly the parameters of `network`, verified."""
    expected = expected_parameters(network)
    state = load_pdparams(path)
    check_parameters(state, expected, f"{path} ({network})")
    return {name: state[name] for name in expected}
