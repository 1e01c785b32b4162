"""What both hub modules share: configuration, model files, predictors, the `hub run` entry."""
from __future__ import annotations

import inspect
import os
import threading
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .assets import AssetSpec, fetch_assets, read_fetched
from .config import ConfigOverrides, load_module_config
from .limits import DecodeLimits, check_video, effective_limits
from .postprocess import read_labels
from .predictor import Predictor, shared_predictor
from .video import read_sampled_frames

T = TypeVar("T")


class HubRunEntry:
    """The `_run_func` of a module class.

    `hub run NAME` started in a folder that holds a directory called NAME makes PaddleHub 2.4 load
    that directory with `Module.load`, which returns the class instead of an instance; its run
    command then calls `_run_func` on the class. Here that creates the instance first.
    """

    def __get__(self, instance: Any, owner: type) -> Any:
        if instance is None:
            return lambda argv: owner().run_cmd(argv)
        return instance.run_cmd


class VideoModule:
    """Base of the module classes: `NAME` picks configs/<NAME>.yaml, overridable per instance."""

    NAME = ""
    _run_func = HubRunEntry()
    # PaddleHub 2.4 wraps every method of a module in a switch to static-graph mode (for fluid-era
    # modules) that is not restored when the method raises, and that flips the mode for the whole
    # process while it runs. Our code builds its programs in its own guarded scope, so it opts out.
    __getattribute__ = object.__getattribute__

    def __init__(self, config: ConfigOverrides = None, **kwargs: Any):
        self.config = load_module_config(self.NAME, config)
        self._models: Any = None  # what `_load_models` made, once
        self._models_lock = threading.Lock()

    def _load_once(self, load: Callable[[], Any]) -> Any:
        """`load()` on first use, then its result: once per object, even when threads start together."""
        models = self._models
        if models is None:
            with self._models_lock:
                if self._models is None:
                    self._models = load()
                models = self._models
        return models

    @property
    def module_dir(self) -> Path:
        """The installed module directory (PaddleHub sets `directory`), else the source folder."""
        directory = getattr(self, "directory", None)
        return Path(directory) if directory else Path(inspect.getfile(type(self))).parent

    def asset(self, key: str) -> Path:
        """Local path of the asset `key` of the config's `assets`, fetched on first use."""
        return self.assets(key)[0]

    def assets(self, *keys: str) -> list[Path]:
        """Local paths of the assets `keys`; all are looked for first, so one error names every missing file."""
        specs = [AssetSpec.from_dict(key, self.config["assets"][key]) for key in keys]
        return fetch_assets(specs, module_dir=self.module_dir, owner=self.NAME)

    @property
    def labels(self) -> list[str]:
        """The class names, index = class id (`hub run <module> --list_labels` prints them).

        Reads the label file only (fetched on first use, a small file): no weights are fetched or
        converted. A new list on each access.
        """
        return self.read_label_file(self.asset("labels"))

    def read_label_file(self, path: Path) -> list[str]:
        """The class names in the fetched label file `path`; a downloaded file that fails the check is deleted."""
        return read_fetched(path, partial(read_labels, expected_count=self.config["model"]["num_classes"]))

    def predictor(self, model_prefix: Path, use_gpu: bool, use_onednn: bool | None = None) -> Predictor:
        """The process-wide predictor of a converted model, on CPU or GPU as asked for this call."""
        runtime = self.config["runtime"]
        onednn = runtime["use_onednn"] if use_onednn is None else use_onednn
        return shared_predictor(model_prefix, bool(use_gpu), runtime["cpu_threads"], onednn)

    def decode_limits(self) -> DecodeLimits:
        """The config's `limits`, made stricter by any the caller applied (`limits.applied_limits`)."""
        return effective_limits(DecodeLimits.from_config(self.config.get("limits")))

    def read_frames(
        self, path: str | os.PathLike[str], sample_indices: Callable[[int], Sequence[int]],
        transform: Callable[[np.ndarray], T],
    ) -> list[T]:
        """`video.read_sampled_frames`, after checking the video against `decode_limits()` (if any)."""
        check_video(path, self.decode_limits())
        return read_sampled_frames(path, sample_indices, transform)
