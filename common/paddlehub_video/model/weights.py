"""The publisher's weight files: pickled `{name: ndarray}` dicts, read safely and checked.

Reading stays within a memory bound: a file may be at most `max_file_bytes(network)` long (known
from the network's parameter manifest), and what the unpickler builds from it may not add up to
more than twice the file's size: a genuine file never needs more, as its array data is stored in it
as text of at least one byte per data byte, turned into a byte string, then into an array. Every array's shape and
dtype are checked before its memory is allocated.
"""
from __future__ import annotations

import json
import math
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..config import config_files
from ..errors import WeightsError

# Per parameter, what a protocol-2 pickle adds around the data: the name, shape, dtype and opcodes.
_PICKLE_OVERHEAD_BYTES = 1024
_MARGIN_BYTES = 16 << 20
# The only text encoding a fluid.save pickle uses for array data (`_codecs.encode(text, "latin1")`);
# others (`hex`, `utf-8`, `base64`) could inflate a small file step by step.
_LATIN1 = {"latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1"}


class _Budget:
    """Bytes the unpickler may still build; exceeding it stops the read before allocating."""

    def __init__(self, limit: int, largest_array: int | None) -> None:
        self.left = limit
        self.largest_array = largest_array

    def take(self, nbytes: int, what: str) -> None:
        if nbytes > self.left:
            raise pickle.UnpicklingError(f"{what} would take {nbytes} bytes, more than the file can hold "
                                         f"({self.left} bytes left of twice its size)")
        self.left -= nbytes

    def take_array(self, shape: object, dtype: object) -> None:
        """Check an array's shape and dtype and count its bytes, before anything is allocated."""
        if not isinstance(dtype, np.dtype) or dtype.hasobject:
            raise pickle.UnpicklingError(f"an array of dtype {dtype!r} is not allowed (numbers only)")
        if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise pickle.UnpicklingError(f"an array shape must be a tuple of sizes, got {shape!r}")
        nbytes = math.prod(shape) * dtype.itemsize
        if self.largest_array is not None and nbytes > self.largest_array:
            raise pickle.UnpicklingError(f"an array of shape {list(shape)} ({nbytes} bytes) is larger than "
                                         f"all parameters of the network together ({self.largest_array} bytes)")
        self.take(nbytes, f"an array of shape {list(shape)}")


class _CheckedArray(np.ndarray):
    """What `_reconstruct` builds while reading: its state is checked against the budget first."""

    budget: _Budget

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("malformed array state")
        shape, dtype, _, data = state[-4:]
        self.budget.take_array(shape, dtype)
        if isinstance(data, bytes) and len(data) != math.prod(shape) * dtype.itemsize:
            raise pickle.UnpicklingError(f"an array of shape {list(shape)} comes with {len(data)} bytes of data")
        super().__setstate__(state)


class _ArrayUnpickler(pickle._Unpickler):
    """Only what a fluid.save of numpy arrays needs, so a tampered file can neither run code nor
    make the reader allocate more than `budget` allows.

    The pure-Python unpickler, not the C one: the C unpickler's memo is an array grown to any index
    a PUT opcode names (9 bytes made it allocate 512 MB); this one's memo is a dict.
    """

    def __init__(self, file: Any, budget: _Budget) -> None:
        super().__init__(file, encoding="latin1")
        # A subclass per reader, so that concurrent reads keep their own budgets.
        self._array_type = type("_CheckedArray", (_CheckedArray,), {"budget": budget})
        self._budget = budget
        self._allowed: dict[tuple[str, str], Callable[..., Any]] = {
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("collections", "OrderedDict"): dict,  # same items; a plain dict is what callers get
            ("_codecs", "encode"): self._encode,
        }
        for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            self._allowed[(module, "_reconstruct")] = self._reconstruct
            self._allowed[(module, "scalar")] = self._scalar

    def find_class(self, module: str, name: str) -> Callable[..., Any]:
        if (module, name) not in self._allowed:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a weights file")
        return self._allowed[(module, name)]

    def _encode(self, text: object, encoding: object = "utf-8", errors: object = "strict") -> bytes:
        if not isinstance(text, str) or str(encoding).lower() not in _LATIN1:
            raise pickle.UnpicklingError(f"_codecs.encode of a {type(text).__name__} to {encoding!r} is not "
                                         f"what a weights file holds (text to latin1 only)")
        self._budget.take(len(text), "a byte string")
        return text.encode("latin1")

    def _reconstruct(self, cls: object, shape: object, typecode: object) -> np.ndarray:
        if cls is not np.ndarray:
            raise pickle.UnpicklingError(f"only numpy.ndarray may be rebuilt, not {cls!r}")
        self._budget.take_array(shape, np.dtype(np.uint8))  # the placeholder numpy makes: (0,) bytes
        return np.ndarray.__new__(self._array_type, shape, np.uint8)

    def _scalar(self, dtype: object, data: object = None) -> Any:
        if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes) or len(data) > 64:
            raise pickle.UnpicklingError("malformed numpy scalar")
        return np.frombuffer(data, dtype, count=1)[0]


def expected_parameters(network: str) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every parameter the publisher's `network` holds (configs/params/)."""
    text = config_files().joinpath("params", f"{network}.json").read_text()
    return {name: tuple(shape) for name, shape in json.loads(text)}


def parameter_bytes(network: str) -> int:
    """Bytes of all of `network`'s float32 parameters."""
    return sum(4 * math.prod(shape) for shape in expected_parameters(network).values())


def max_file_bytes(network: str) -> int:
    """The largest `.pdparams` file that can hold `network`'s parameters: protocol 2 writes array data
    as latin-1 text in UTF-8 (1 or 2 bytes per data byte), plus per-parameter overhead and a margin."""
    return 2 * parameter_bytes(network) + _PICKLE_OVERHEAD_BYTES * len(expected_parameters(network)) + _MARGIN_BYTES


def load_pdparams(path: str | Path, largest_array: int | None = None) -> dict[str, np.ndarray]:
    """Read a fluid.save `.pdparams` pickle (protocol 2, Python 2 strings as latin1).

    `largest_array` (bytes) refuses any larger array before allocating it. Whatever is
    wrong with the file, the error is a WeightsError naming it.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            budget = _Budget(limit=2 * path.stat().st_size, largest_array=largest_array)
            state = _ArrayUnpickler(f, budget).load()
    except Exception as exc:  # MemoryError, RecursionError, UnicodeError, ...: any way a hostile file fails
        raise WeightsError(f"{path}: not a readable .pdparams file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a pickled dict of arrays, found {type(state).__name__}")
    return {name: np.asarray(value) if isinstance(value, np.ndarray) else value for name, value in state.items()}


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
    limit = max_file_bytes(network)
    try:
        size = Path(path).stat().st_size
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read the weights file ({exc.strerror or exc})") from exc
    if size > limit:
        raise WeightsError(f"{path} ({network}): {size} bytes, more than the {limit} bytes a file of "
                           f"this network's parameters can be")
    state = load_pdparams(path, largest_array=parameter_bytes(network))
    check_parameters(state, expected, f"{path} ({network})")
    return {name: state[name] for name in expected}
