"""Publisher weights -> a Paddle Inference model, converted once and cached on disk.

The cache entry is keyed by the program (name, version, build arguments: see `Program`) and the sha256
of every weights file, so new weights or a changed network give a new entry and nothing stale is used.
Each entry records the sha256 of its files when it is made and is checked against it whenever it is
loaded (0.16 s for TSN's 170 MB of parameters): an entry changed or damaged since is converted again.
"""
from __future__ import annotations

import functools
import gc
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np
import paddle
from filelock import FileLock

from .. import progress
from ..errors import AssetError, WeightsError
from .assets import cache_root, file_digest, read_fetched, sha256_file
from .networks.layers import feed_values, static_mode
from .regular_file import read_bounded
from .weights import load_checked_weights

logger = logging.getLogger("paddlehub_video")
_DIGESTS = "digests.json"  # in each entry: {file name: sha256} of the model files it holds
_DIGESTS_MAX_BYTES = 4096  # two names and digests; read only as a regular file of at most this
_MODEL_FILES = ("model.json", "model.pdiparams")

# What every network builder returns: (main program, startup program, feed names, fetch values).
StaticProgram = tuple[Any, Any, list[str], list[Any]]


class Program(NamedTuple):
    """A network program as data: `build(**arguments)` makes it, and everything baked into it is here.

    `version` is the program's own: bump it when its builder changes what it computes. The name,
    the version and the arguments all go into the conversion cache key.
    """

    name: str
    version: int
    build: Callable[..., StaticProgram]
    arguments: Mapping[str, Any] = MappingProxyType({})

    def key(self) -> str:
        """What identifies the program in the cache key."""
        return f"{self.name}|{self.version}|{sorted(self.arguments.items())}"

    def make(self) -> StaticProgram:
        """The program, built with its arguments."""
        return self.build(**self.arguments)


def program_parameters(program: Any) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every parameter of a PIR program."""
    return {value.name: tuple(value.shape) for value in program.global_block().all_parameters()}


def save_inference_model(program: StaticProgram, state: Mapping[str, np.ndarray], prefix: Path) -> None:
    """Load `state` into `program` (every parameter must be covered; other entries are left out) and save it
    at `prefix`."""
    main, startup, feed_names, fetches = program
    parameters = program_parameters(main)
    missing = sorted(set(parameters) - set(state))
    if missing:  # set_program_state would silently leave these at their random initial values
        raise WeightsError(f"the weights do not cover {len(missing)} program parameters: {missing[:10]}")
    # A program may use part of the weights (StNet's head): the rest is not its, nor warned about.
    state = {name: state[name] for name in parameters}
    scope = paddle.static.Scope()
    try:
        with static_mode():
            executor = paddle.static.Executor(paddle.CPUPlace())
            with paddle.static.scope_guard(scope):
                executor.run(startup)
                paddle.static.set_program_state(main, dict(state))
                feeds = feed_values(main, feed_names)
                paddle.static.save_inference_model(str(prefix), feeds, fetches, executor, program=main)
    finally:
        free_tensors(scope, parameters)


def free_tensors(scope: Any, names: Iterable[str]) -> None:
    """Free the memory of the tensors `names` in `scope`. Paddle's executor keeps the scopes it ran in
    (its cache of PIR programs and their interpreters, which `Executor.close` does not clear), so the
    parameters of a conversion stayed in memory for the life of the process: +452 MiB after
    videotag's two conversions."""
    for name in names:
        variable = scope.find_var(name)
        if variable is not None:
            variable.get_tensor()._clear()


def cached_inference_model(program: Program, weights: Mapping[str, Path]) -> Path:
    """Return the prefix of the converted model of `program` for `weights` ({network: .pdparams path}).

    Converts on first use only (see `cached_entry`).
    """
    key = hashlib.sha256(program.key().encode())
    for network in sorted(weights):
        key.update(f"|{network}={file_digest(weights[network])}".encode())
    entry = cache_root() / "inference" / f"{program.name}-v{program.version}-{key.hexdigest()[:16]}"

    def convert(entry: Path) -> None:
        with progress.current().converting(program.name, [Path(path).name for path in weights.values()]):
            _convert(program.make, weights, entry)
        # The weights read and the program built sit in reference cycles until the collector next runs:
        # 250 MiB more held through a whole StNet video-context timeline after its head's conversion.
        gc.collect()

    cached_entry(entry, _MODEL_FILES, convert)
    return entry / "model"


def cached_entry(entry: Path, files: tuple[str, ...], convert: Callable[[Path], None]) -> None:
    """Make the cache folder `entry` holding `files` with `convert(entry)` (which writes it with
    `make_entry`), unless it is there intact.

    A file lock keeps two processes from converting the same entry, and the entry appears by an
    atomic rename, so a reader never sees a half-written model; the digests of `files` are recorded
    and checked at every use, and an entry changed since is converted again.
    """
    if _intact(entry, files):
        return
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{entry}.lock"):
            if not _intact(entry, files):
                if entry.exists():
                    logger.warning("%s: the converted model differs from the digest recorded when it was made "
                                   "(changed or damaged since); converting it again", entry)
                    _remove_entry(entry)
                convert(entry)
    except OSError as exc:
        raise AssetError(f"cannot write the converted model under {entry.parent}: {exc}") from exc


def _model_digests(entry: Path, files: tuple[str, ...] = _MODEL_FILES) -> dict[str, str]:
    return {name: sha256_file(entry / name) for name in files}


def _intact(entry: Path, files: tuple[str, ...] = _MODEL_FILES) -> bool:
    """Whether the entry exists and its model files have the digests recorded at conversion."""
    try:
        recorded = json.loads(read_bounded(entry / _DIGESTS, _DIGESTS_MAX_BYTES, follow_links=False))
        return recorded == _model_digests(entry, files)
    except (OSError, ValueError, RecursionError):  # missing (not converted, or by an older version), unreadable
        return False


def _remove_entry(entry: Path) -> None:
    """Move a bad entry aside (one rename, so no reader sees it half deleted), then delete it."""
    trash = entry.with_name(f"{entry.name}.old{os.getpid()}")
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(entry, trash)
    shutil.rmtree(trash, ignore_errors=True)


def make_entry(entry: Path, files: tuple[str, ...], write: Callable[[Path], None]) -> None:
    """`write(folder)` into a temporary folder, record the digests of `files`, rename it to `entry`."""
    tmp = entry.with_name(f"{entry.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        (tmp / _DIGESTS).write_text(json.dumps(_model_digests(tmp, files)), encoding="utf-8")
        os.replace(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _convert(build: Callable[[], StaticProgram], weights: Mapping[str, Path], entry: Path) -> None:
    state: dict[str, np.ndarray] = {}
    for network, path in weights.items():
        state.update(read_fetched(path, functools.partial(load_checked_weights, network=network)))
    make_entry(entry, _MODEL_FILES, lambda folder: save_inference_model(build(), state, folder / "model"))
