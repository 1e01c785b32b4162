"""Module configuration: the YAML in configs/, then user overrides, merged key by key."""
from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Union

import yaml

ConfigOverrides = Union[Mapping[str, Any], str, Path, None]

# A YAML file of overrides keyed by module name, e.g. {videotag_tsn_lstm: {sampling: {seg_num: 8}}}.
CONFIG_ENV = "PADDLEHUB_VIDEO_CONFIG"


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge recursively, anything else in `override` replaces."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _read_yaml(path: str | Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a configuration must be a YAML mapping")
    return data


def load_module_config(module_name: str, overrides: ConfigOverrides = None) -> dict[str, Any]:
    """configs/<module_name>.yaml, then $PADDLEHUB_VIDEO_CONFIG[module_name], then `overrides`."""
    text = resources.files("paddlehub_video.configs").joinpath(f"{module_name}.yaml").read_text(encoding="utf-8")
    config = yaml.safe_load(text)
    env_file = os.environ.get(CONFIG_ENV)
    if env_file:
        config = merge(config, _read_yaml(env_file).get(module_name) or {})
    if isinstance(overrides, (str, Path)):
        overrides = _read_yaml(overrides)
    if overrides:
        config = merge(config, overrides)
    return config
