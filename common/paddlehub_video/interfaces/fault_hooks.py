"""Test hooks for fleet jobs: a module class whose workers crash or stop on chosen videos.

Nothing in the package uses this: tests hand `hooked_module(StNet, ...)` to `run_fleet` as the
module, so that the faults happen inside real Ray actors, where the fleet has to survive them.
The class is made inside a function, so Ray pickles it by value; its base is imported by name.

- `poison`: a video file name whose decoding kills the process (`os._exit`), every time.
- `hold_decode` (a file name) / `hold_model` (a call number, from 0; -1: none): the first process, on
  any node, to decode that video / to call the model for the `hold_model`-th time writes
  `<events>/hold-decode.json` / `hold-model.json` with its pid and Ray node id, then blocks (at
  most `HOLD_SECONDS`) so that the test can kill it, remove its node or stop the driver while a
  video is in flight; the model's earlier calls have been answered by then. Later attempts go through.
- Every decode appends the file name to `<events>/decoded.log`: what a run actually decoded.
"""
from __future__ import annotations

import itertools
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

HOLD_SECONDS = 300.0
POISON_EXIT_STATUS = 71


def hold_once(events: Path, stage: str) -> None:
    """The first caller of all processes announces itself in `events/hold-<stage>.json` and blocks."""
    try:
        os.close(os.open(events / f"hold-{stage}.claimed", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    import ray

    info = {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}
    temporary = events / f".hold-{stage}.json.tmp"
    temporary.write_text(json.dumps(info), encoding="utf-8")
    os.replace(temporary, events / f"hold-{stage}.json")  # complete when it appears
    threading.Event().wait(HOLD_SECONDS)  # until the test kills this process


def hooked_module(base: type, events: str, poison: str = "", hold_decode: str = "", hold_model: int = -1) -> type:
    """`base` (a module class) with the hooks above."""
    folder = Path(events)

    class Hooked(base):  # type: ignore[misc, valid-type]
        def preprocess(self, path: str) -> Any:
            name = os.path.basename(path)
            with open(folder / "decoded.log", "a", encoding="utf-8") as log:
                log.write(name + "\n")
            if name == poison:
                os._exit(POISON_EXIT_STATUS)
            if name == hold_decode:
                hold_once(folder, "decode")
            return super().preprocess(path)

        def predict_fn(self, use_gpu: bool = False) -> Callable[[Any], Any]:
            predict = super().predict_fn(use_gpu)
            if hold_model < 0:
                return predict
            calls = itertools.count()

            def held(frames: Any) -> Any:
                if next(calls) == hold_model:
                    hold_once(folder, "model")
                return predict(frames)

            return held

    Hooked.__name__ = Hooked.__qualname__ = f"Hooked{base.__name__}"
    return Hooked
