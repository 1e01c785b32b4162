"""Module configuration: the YAML in configs/, then user overrides, merged key by key."""
from __future__ import annotations

import copy
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from . import environment
from .errors import ConfigError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

ConfigOverrides = Mapping[str, Any] | str | Path | None

# A YAML file of overrides keyed by module name, e.g. {videotag_tsn_lstm: {sampling: {seg_num: 8}}}.
CONFIG_ENV = environment.CONFIG


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
        raise ConfigError(f"{path}: a configuration must be a YAML mapping")
    return data


def config_files() -> Traversable:
    """The folder of the module YAML and `params/`: installed as `paddlehub_video.configs`; in a clone used
    without installing (`PYTHONPATH=common`), the repository's top-level `configs/`."""
    try:
        return resources.files("paddlehub_video.configs")
    except ModuleNotFoundError:
        clone = Path(__file__).resolve().parents[2] / "configs"
        if not clone.is_dir():
            raise
        return clone


def read_overrides(overrides: ConfigOverrides) -> dict[str, Any]:
    """A caller's overrides as a mapping: a YAML file's, a mapping's, or none."""
    if isinstance(overrides, (str, Path)):
        return _read_yaml(overrides)
    if overrides is not None and not isinstance(overrides, Mapping):
        raise ConfigError(f"config must be a mapping or a YAML file's path, got {type(overrides).__name__}")
    return dict(overrides or {})


def load_module_config(module_name: str, overrides: ConfigOverrides = None,
                       environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """configs/<module_name>.yaml, then $PADDLEHUB_VIDEO_CONFIG[module_name], then `overrides`, merged
    (unchecked: `settings.build_settings` checks them)."""
    text = config_files().joinpath(f"{module_name}.yaml").read_text(encoding="utf-8")
    config = yaml.safe_load(text)
    env_file = environment.config_file(environ)
    if env_file:
        section = _read_yaml(env_file).get(module_name) or {}
        if not isinstance(section, Mapping):
            raise ConfigError(f"{env_file} ({CONFIG_ENV}): {module_name!r} must be a mapping, got {section!r}")
        config = merge(config, section)
    return merge(config, read_overrides(overrides))
