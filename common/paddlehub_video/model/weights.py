"""The publisher's weight files: pickled `{name: ndarray}` dicts, read safely and checked.

Reading stays within a memory bound: a file may be at most `max_file_bytes(network)` long (known
from the network's parameter manifest); it may hold only the opcodes and globals a fluid.save
pickle of arrays holds; what the unpickler builds from it counts against two budgets, checked
before each allocation:
- bytes: text, byte strings and arrays may add up to three times the file's size. A genuine file
  never needs more: each array's data is in it as text of at least one byte per data byte, decoded
  to a string, turned into a byte string, then into an array.
- objects: every opcode run (each pushes, stores or links at most one small object, at most about
  a hundred bytes) and every item a callable copies counts one, up to `max_objects(parameters)`:
  a genuine file runs about 32 opcodes per parameter.
Every array's shape and dtype are checked before its memory is allocated.
"""
from __future__ import annotations

import json
import math
import pickle
import pickletools
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..config import config_files
from ..errors import WeightsError
from .regular_file import open_regular

# Per parameter, what a protocol-2 pickle adds around the data: the name, shape, dtype and opcodes.
_PICKLE_OVERHEAD_BYTES = 1024
_MARGIN_BYTES = 16 << 20
# Objects (opcodes run, items copied) per parameter: a genuine file runs about 32 per parameter.
_OBJECTS_PER_PARAMETER = 64
_OBJECT_MARGIN = 4096
# Parameters assumed when the caller names no network: more than any of the publisher's (520).
_DEFAULT_PARAMETERS = 1024
_BYTES_PER_FILE_BYTE = 3
# The only text encoding a fluid.save pickle uses for array data (`_codecs.encode(text, "latin1")`);
# others (`hex`, `utf-8`, `base64`) could inflate a small file step by step.
_LATIN1 = {"latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1"}
# UTF-8 lead bytes of code points above U+00FF: text a weights file never holds (names are ASCII,
# data is latin-1), and which would take 2 or 4 bytes of memory per character.
_BEYOND_LATIN1 = bytes(range(0xC4))  # deleted by translate: what is left is a byte >= 0xC4
_LONGEST_LINE = 256  # a GLOBAL's module or name
# What a protocol-2 pickle of {name: ndarray} holds, as fluid.save wrote it under Python 2 or 3
# (a dict, or an OrderedDict whose Python 2 form is a list of [name, array] lists). Any other
# opcode (sets, frozensets, DUP, text-form numbers, frames, out-of-band buffers, persistent ids,
# object creation) is refused before it runs.
_OPCODES = frozenset(
    op.code.encode("latin1")[0] for op in pickletools.opcodes if op.name in {
        "PROTO", "STOP", "MARK", "EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2",
        "TUPLE3", "BINPUT", "LONG_BINPUT", "BINGET", "LONG_BINGET", "BININT", "BININT1", "BININT2", "LONG1",
        "NONE", "NEWTRUE", "NEWFALSE", "BINUNICODE", "SHORT_BINSTRING", "BINSTRING", "GLOBAL", "REDUCE",
        "BUILD", "SETITEM", "SETITEMS", "APPEND", "APPENDS"})
_DTYPES = {f"{order}{kind}{size}" for order in ("", "<", ">", "|", "=") for kind, sizes in
           (("f", (2, 4, 8)), ("i", (1, 2, 4, 8)), ("u", (1, 2, 4, 8)), ("b", (1,)), ("c", (8, 16)))
           for size in sizes}


def max_objects(parameters: int) -> int:
    """How many objects (opcodes run, items copied) reading a file of `parameters` arrays may build."""
    return _OBJECTS_PER_PARAMETER * parameters + _OBJECT_MARGIN


class _Budget:
    """Bytes and objects the unpickler may still build; exceeding either stops the read before allocating."""

    def __init__(self, limit: int, largest_array: int | None, objects: int) -> None:
        self.left = limit
        self.largest_array = largest_array
        self.objects_left = objects
        self.objects = objects

    def take(self, nbytes: int, what: str) -> None:
        if nbytes > self.left:
            raise pickle.UnpicklingError(f"{what} would take {nbytes} bytes, more than the file can hold "
                                         f"({self.left} bytes left of {_BYTES_PER_FILE_BYTE} times its size)")
        self.left -= nbytes

    def take_objects(self, count: int) -> None:
        if count > self.objects_left:
            raise pickle.UnpicklingError(f"it builds more than {self.objects} objects, more than a weights "
                                         f"file of its parameters holds")
        self.objects_left -= count

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


class _BoundedFile:
    """The file as the unpickler reads it: no read past its end (a length field claiming gigabytes
    is refused before anything is allocated for it), no line longer than a GLOBAL's."""

    def __init__(self, file: BinaryIO, size: int) -> None:
        self._file = file
        self._left = size

    def read(self, n: int) -> bytes:
        if n > self._left:
            raise pickle.UnpicklingError(f"a length of {n} bytes runs past the end of the file")
        data = self._file.read(n)
        self._left -= len(data)
        return data

    def readline(self) -> bytes:
        line = self._file.readline(_LONGEST_LINE)
        if not line.endswith(b"\n"):
            raise pickle.UnpicklingError(f"a text line longer than {_LONGEST_LINE} bytes, or cut off")
        self._left -= len(line)
        return line


class _NdarrayName:
    """What the global `numpy.ndarray` stands for: an argument of `_reconstruct`, never called
    itself (`ndarray(shape, object)` would allocate and fill any size)."""

    def __call__(self, *args: object) -> None:
        raise pickle.UnpicklingError("numpy.ndarray may be named only as what _reconstruct rebuilds")


_NDARRAY = _NdarrayName()


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


def _refuse(code: int) -> Callable[[Any], None]:
    name = pickletools.code2op[chr(code)].name if chr(code) in pickletools.code2op else f"byte {code:#04x}"

    def refuse(unpickler: Any) -> None:
        raise pickle.UnpicklingError(f"opcode {name} is not in a weights file (a pickle of arrays)")
    return refuse


def _counted(load: Callable[[Any], None]) -> Callable[[Any], None]:
    def run(unpickler: _ArrayUnpickler) -> None:
        unpickler.budget.take_objects(1)
        load(unpickler)
    return run


class _ArrayUnpickler(pickle._Unpickler):
    """Only what a fluid.save of numpy arrays needs, so a tampered file can neither run code nor
    make the reader allocate more than `budget` allows.

    The pure-Python unpickler, not the C one: its opcodes can be checked and counted one by one
    (`dispatch`), and its memo is a dict (the C unpickler's is an array grown to any index a PUT
    opcode names: 9 bytes made it allocate 512 MB).
    """

    def __init__(self, file: BinaryIO, size: int, budget: _Budget) -> None:
        super().__init__(_BoundedFile(file, size), encoding="latin1")
        # A subclass per reader, so that concurrent reads keep their own budgets.
        self._array_type = type("_CheckedArray", (_CheckedArray,), {"budget": budget})
        self.budget = budget
        self._allowed: dict[tuple[str, str], Callable[..., Any]] = {
            ("numpy", "ndarray"): _NDARRAY,
            ("numpy", "dtype"): self._dtype,
            ("collections", "OrderedDict"): self._ordered_dict,  # a plain dict is what callers get
            ("_codecs", "encode"): self._encode,
        }
        for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            self._allowed[(module, "_reconstruct")] = self._reconstruct
            self._allowed[(module, "scalar")] = self._scalar

    def find_class(self, module: str, name: str) -> Callable[..., Any]:
        if (module, name) not in self._allowed:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a weights file")
        return self._allowed[(module, name)]

    def _take_text(self, n: int) -> bytes:
        """`n` bytes of a string's text, counted (its string takes at most as many)."""
        self.budget.take(n, "a string")
        return self.read(n)

    def load_binunicode(self) -> None:
        (n,) = struct.unpack("<I", self.read(4))
        data = self._take_text(n)
        if data.translate(None, _BEYOND_LATIN1):
            raise pickle.UnpicklingError("text beyond latin-1, which no weights file holds")
        self.append(str(data, "utf-8", "surrogatepass"))

    def load_binstring(self) -> None:
        (n,) = struct.unpack("<i", self.read(4))
        if n < 0:
            raise pickle.UnpicklingError("BINSTRING pickle has negative byte count")
        self.append(self._decode_string(self._take_text(n)))

    def load_short_binstring(self) -> None:
        self.append(self._decode_string(self._take_text(self.read(1)[0])))

    def _encode(self, text: object, encoding: object = "utf-8", errors: object = "strict") -> bytes:
        if not isinstance(text, str) or str(encoding).lower() not in _LATIN1:
            raise pickle.UnpicklingError(f"_codecs.encode of a {type(text).__name__} to {encoding!r} is not "
                                         f"what a weights file holds (text to latin1 only)")
        self.budget.take(len(text), "a byte string")
        return text.encode("latin1")

    def _dtype(self, name: object, align: object = False, copy: object = False) -> np.dtype:
        if not isinstance(name, str) or name not in _DTYPES:
            raise pickle.UnpicklingError(f"numpy.dtype({name!r}) is not a number type a weights file holds")
        return np.dtype(name)

    def _ordered_dict(self, items: object = ()) -> dict[Any, Any]:
        """An OrderedDict as Python 3 pickles it (empty, then SETITEMS) or Python 2 ([[name, array], ...])."""
        if not isinstance(items, (list, tuple)):
            raise pickle.UnpicklingError(f"OrderedDict of a {type(items).__name__} is not in a weights file")
        self.budget.take_objects(len(items))  # every item is copied into the new dict
        return dict(items)

    def _reconstruct(self, cls: object, shape: object, typecode: object) -> np.ndarray:
        if cls is not _NDARRAY:
            raise pickle.UnpicklingError(f"only numpy.ndarray may be rebuilt, not {cls!r}")
        self.budget.take_array(shape, np.dtype(np.uint8))  # the placeholder numpy makes: (0,) bytes
        return np.ndarray.__new__(self._array_type, shape, np.uint8)

    def _scalar(self, dtype: object, data: object = None) -> Any:
        if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes) or len(data) > 64:
            raise pickle.UnpicklingError("malformed numpy scalar")
        return np.frombuffer(data, dtype, count=1)[0]


def _dispatch() -> dict[int, Callable[[Any], None]]:
    """Every opcode byte: the allowed ones run counted (strings through the reader's own loaders),
    all others refused."""
    table = {code: _counted(pickle._Unpickler.dispatch[code]) if code in _OPCODES else _refuse(code)
             for code in range(256)}
    for opcode, load in ((pickle.BINUNICODE, _ArrayUnpickler.load_binunicode),
                         (pickle.BINSTRING, _ArrayUnpickler.load_binstring),
                         (pickle.SHORT_BINSTRING, _ArrayUnpickler.load_short_binstring)):
        table[opcode[0]] = _counted(load)
    return table


_ArrayUnpickler.dispatch = _dispatch()


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


def load_pdparams(path: str | Path, largest_array: int | None = None,
                  parameters: int | None = None) -> dict[str, np.ndarray]:
    """Read a fluid.save `.pdparams` pickle (protocol 2, Python 2 strings as latin1).

    `largest_array` (bytes) refuses any larger array before allocating it; `parameters` (how many
    arrays the file should hold; the publisher's largest by default) sets the object budget. Whatever
    is wrong with the file, the error is a WeightsError naming it.
    """
    path = Path(path)
    objects = max_objects(_DEFAULT_PARAMETERS if parameters is None else parameters)
    try:
        f, info = open_regular(path)
        with f:
            budget = _Budget(_BYTES_PER_FILE_BYTE * info.st_size, largest_array, objects)
            state = _ArrayUnpickler(f, info.st_size, budget).load()
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
    state = load_pdparams(path, largest_array=parameter_bytes(network), parameters=len(expected))
    check_parameters(state, expected, f"{path} ({network})")
    return {name: state[name] for name in expected}
