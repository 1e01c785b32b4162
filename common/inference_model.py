"""Publisher weights -> a Paddle Inference model, converted once and cached on disk.

The cache entry is keyed by the model name, the program version (configs/*.yaml) and the sha256 of
every weights file, so new weights or a changed network give a new entry and nothing stale is used.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import numpy as np
import paddle
from filelock import FileLock

from .assets import cache_root, sha256_file
from .errors import AssetError, WeightsError
from .networks.layers import feed_values, static_mode
from .weights import load_checked_weights

# What every network builder returns: (main program, startup program, feed names, fetch values).
StaticProgram = tuple[Any, Any, list[str], list[Any]]


def program_parameters(program: Any) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every parameter of a PIR program."""
    return {value.name: tuple(value.shape) for value in program.global_block().all_parameters()}


def save_inference_model(program: StaticProgram, state: Mapping[str, np.ndarray], prefix: Path) -> None:
    """Load `state` into `program` (every parameter must be covered) and save it at `prefix`."""
    main, startup, feed_names, fetches = program
    missing = sorted(set(program_parameters(main)) - set(state))
    if missing:  # set_program_state would silently leave these at their random initial values
        raise WeightsError(f"the weights do not cover {len(missing)} program parameters: {missing[:10]}")
    with static_mode():
        executor = paddle.static.Executor(paddle.CPUPlace())
        with paddle.static.scope_guard(paddle.static.Scope()):
            executor.run(startup)
            paddle.static.set_program_state(main, dict(state))
            feeds = feed_values(main, feed_names)
            paddle.static.save_inference_model(str(prefix), feeds, fetches, executor, program=main)


def weights_digest(path: Path) -> str:
    """sha256 of a weights file, remembered per (path, size, mtime) so start-up does not rehash."""
    path = Path(path).resolve()
    stat = path.stat()
    memo_file = cache_root() / "digests.json"
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    if key not in memo:
        memo[key] = sha256_file(path)
        with contextlib.suppress(OSError):  # the memo is an optimisation only
            memo_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo_file.with_suffix(f".tmp{os.getpid()}-{threading.get_ident()}")  # one per writer
            tmp.write_text(json.dumps(memo))
            os.replace(tmp, memo_file)
    return memo[key]


def cached_inference_model(
    name: str,
    program_version: int | str,
    build: Callable[[], StaticProgram],
    weights: Mapping[str, Path],
) -> Path:
    """Return the prefix of the converted model for `weights` ({network: .pdparams path}).

    Converts on first use only; a file lock keeps two processes from converting the same entry,
    and the entry appears by an atomic rename, so a reader never sees a half-written model.
    """
    # Build arguments (image size, seg_num, ...) are baked into the program, so they are part of the key.
    arguments = sorted(build.keywords.items()) if isinstance(build, functools.partial) else []
    key = hashlib.sha256(f"{name}|{program_version}|{arguments}".encode())
    for network in sorted(weights):
        key.update(f"|{network}={weights_digest(weights[network])}".encode())
    entry = cache_root() / "inference" / f"{name}-v{program_version}-{key.hexdigest()[:16]}"
    prefix = entry / "model"
    if Path(f"{prefix}.pdiparams").exists():
        return prefix
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{entry}.lock"):
            if not Path(f"{prefix}.pdiparams").exists():
                _convert(build, weights, entry)
    except OSError as exc:
        raise AssetError(f"cannot write the converted model under {entry.parent}: {exc}") from exc
    return prefix


def _convert(build: Callable[[], StaticProgram], weights: Mapping[str, Path], entry: Path) -> None:
    state: dict[str, np.ndarray] = {}
    for network, path in weights.items():
        state.update(load_checked_weights(path, network))
    tmp = entry.with_name(f"{entry.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        save_inference_model(build(), state, tmp / "model")
        os.replace(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
