"""A module's settings: resolved in one place, validated once when the module is made, then frozen.

Precedence, lowest first:

1. `configs/<module>.yaml` (the defaults, with a comment on every key);
2. the section named after the module in the YAML file `$PADDLEHUB_VIDEO_CONFIG`;
3. the caller's overrides (`hub.Module(name=..., config={...})`, a mapping or a YAML file);
4. environment fallbacks, only for keys still null after 1-3: `runtime.cpu_threads` from
   `$PADDLEHUB_VIDEO_CPU_THREADS`, `runtime.workers` from `$PADDLEHUB_VIDEO_WORKERS`,
   `runtime.precision` from `$PADDLEHUB_VIDEO_PRECISION` (else fp32).

`settings.downloads` (where the assets' files come from) belongs to the process, not the module: it
comes from the environment only, read here once with the rest. Every variable is parsed and checked
in `environment.py`.

Every key is checked here: an unknown one is a `ConfigError` naming it and the closest valid key, a
wrong type or range names the key and what it accepts. Each stage is given its own section
(`settings.sampling`, `.preprocess`, `.runtime`, `.limits`, `.timeline`, `.assets`); choices made per call
(`use_gpu`, `workers` of one `hub run`, thresholds) travel as arguments and never change these.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from types import MappingProxyType
from typing import Any

from . import environment
from .config import ConfigOverrides, load_module_config
from .cpus import PRECISIONS
from .decode.limits import DecodeLimits
from .errors import ConfigError
from .inputs import DEFAULT_MAX_INPUT_BYTES
from .timeline import DEFAULT_MAX_WINDOWS, WindowLimit

Check = Callable[[str, Any], Any]


def positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be a positive integer, got {value!r}")
    return value


def optional_positive_int(key: str, value: Any) -> int | None:
    return None if value is None else positive_int(key, value)


def boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    return value


def optional_boolean(key: str, value: Any) -> bool | None:
    return None if value is None else boolean(key, value)


def three_floats(key: str, value: Any) -> tuple[float, float, float]:
    ok = isinstance(value, (list, tuple)) and len(value) == 3
    if not ok or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
        raise ConfigError(f"{key} must be a list of 3 numbers (one per RGB channel), got {value!r}")
    return tuple(float(v) for v in value)  # type: ignore[return-value]


def positive_floats(key: str, value: Any) -> tuple[float, float, float]:
    numbers = three_floats(key, value)
    if min(numbers) <= 0:
        raise ConfigError(f"{key} must be 3 positive numbers, got {value!r}")
    return numbers


def optional_text(key: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {value!r}")
    return value


def text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a non-empty string, got {value!r}")
    return value


def precision_choice(key: str, value: Any) -> str | None:
    if value is not None and value not in PRECISIONS:
        raise ConfigError(f"{key} must be one of {', '.join(PRECISIONS)}, got {value!r}")
    return value


def _field(check: Check, default: Any = None, required: bool = False) -> Any:
    """A settings field: `check(key, value)` validates a given value; a required one has no default."""
    return field(default=MISSING if required else default, metadata={"check": check})


@dataclass(frozen=True)
class SamplingSettings:
    """Which frames a model reads: `seg_num` segments (of `seglen` consecutive frames, StNet)."""

    seg_num: int = _field(positive_int, required=True)
    seglen: int | None = _field(optional_positive_int)


@dataclass(frozen=True)
class PreprocessSettings:
    """Scale the short side to `short_size`, centre-crop `crop_size`, normalise by `mean` and `std`."""

    short_size: int = _field(positive_int, required=True)
    crop_size: int = _field(positive_int, required=True)
    mean: tuple[float, float, float] = _field(three_floats, required=True)
    std: tuple[float, float, float] = _field(positive_floats, required=True)


@dataclass(frozen=True)
class ModelSettings:
    num_classes: int = _field(positive_int, required=True)


@dataclass(frozen=True)
class RuntimeSettings:
    """How the predictors run: threads (None: the usable CPUs shared among workers), workers (None:
    automatic), oneDNN, frames per TSN run (videotag), the CNNs' precision (`fp32`, `bf16`, `auto`:
    see `cpus.resolve_precision`; never null once built), and whether the next video decodes while the
    current one is in the network (None: automatic, `VideoModule.decode_ahead`)."""

    cpu_threads: int | None = _field(optional_positive_int)
    workers: int | None = _field(optional_positive_int)
    use_onednn: bool = _field(boolean, True)
    frames_per_batch: int | None = _field(optional_positive_int)
    precision: str | None = _field(precision_choice)
    decode_ahead: bool | None = _field(optional_boolean)


@dataclass(frozen=True)
class LimitsSettings:
    """Bounds checked before a video is decoded (None: no limit)."""

    max_frames: int | None = _field(optional_positive_int)
    max_pixels: int | None = _field(optional_positive_int)
    # The most bytes one URL, bytes or file-object input may take (it is held in a temporary file).
    max_input_bytes: int = _field(positive_int, DEFAULT_MAX_INPUT_BYTES)

    def decode_limits(self) -> DecodeLimits:
        return DecodeLimits(self.max_frames, self.max_pixels)


@dataclass(frozen=True)
class TimelineSettings:
    """`classify_timeline`: most windows per video (each costs a classify), checked before decoding."""

    max_windows: int = _field(positive_int, DEFAULT_MAX_WINDOWS)

    def window_limit(self) -> WindowLimit:
        return WindowLimit(self.max_windows)


@dataclass(frozen=True)
class AssetSettings:
    """One file a module needs (see `model.assets.AssetSpec`); `network` names its parameter manifest."""

    url: str = _field(text, required=True)
    sha256: str | None = _field(optional_text)
    member: str | None = _field(optional_text)
    module_file: str | None = _field(optional_text)
    network: str | None = _field(optional_text)
    max_bytes: int | None = _field(optional_positive_int)

    def as_manifest(self) -> dict[str, Any]:
        """The entry as `AssetSpec.from_dict` reads it."""
        return {key: value for key, value in asdict(self).items() if value is not None}


SECTIONS = {
    "sampling": SamplingSettings,
    "preprocess": PreprocessSettings,
    "model": ModelSettings,
    "runtime": RuntimeSettings,
    "limits": LimitsSettings,
    "timeline": TimelineSettings,
}


@dataclass(frozen=True)
class Settings:
    """All of one module's settings (see the module docstring for where each value comes from)."""

    module: str
    sampling: SamplingSettings
    preprocess: PreprocessSettings
    model: ModelSettings
    runtime: RuntimeSettings
    limits: LimitsSettings
    timeline: TimelineSettings
    assets: Mapping[str, AssetSettings]
    # where the assets' files come from: process-wide, from the environment only (environment.py)
    downloads: environment.DownloadEnvironment = field(default_factory=environment.DownloadEnvironment)

    def as_dict(self) -> dict[str, Any]:
        """The resolved settings as plain data (a new copy: changing it changes nothing)."""
        data = {name: asdict(getattr(self, name)) for name in SECTIONS}
        data["preprocess"] = {k: list(v) if isinstance(v, tuple) else v for k, v in data["preprocess"].items()}
        data["assets"] = {name: asdict(entry) for name, entry in self.assets.items()}
        return data


def build_settings(
    module: str, overrides: ConfigOverrides = None, fixed: Mapping[str, Mapping[str, Any]] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """`module`'s settings from its YAML, $PADDLEHUB_VIDEO_CONFIG, `overrides` and the environment, checked;
    `fixed` ({section: {key: value}}) are values the module's converted program is built for."""
    merged = load_module_config(module, overrides, environ)
    unknown(merged, [*SECTIONS, "assets"], "")
    sections = {name: _section(cls, merged.get(name) or {}, name) for name, cls in SECTIONS.items()}
    sections["runtime"] = _with_environment(sections["runtime"], environ)
    assets = merged.get("assets") or {}
    if not isinstance(assets, Mapping):
        raise ConfigError(f"assets must be a mapping of asset names to entries, got {assets!r}")
    entries = {name: _section(AssetSettings, entry, f"assets.{name}") for name, entry in assets.items()}
    settings = Settings(module=module, **sections, assets=MappingProxyType(entries),
                        downloads=environment.downloads(environ))
    _check_fixed(settings, fixed or {})
    return settings


def unknown(given: Mapping[str, Any], valid: list[str], where: str) -> None:
    """A ConfigError for the first key of `given` not in `valid`, with the closest valid key."""
    for key in given:
        if key not in valid:
            name = f"{where}.{key}" if where else str(key)
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f"; did you mean {(where + '.' if where else '') + close[0]!r}?" if close else ""
            raise ConfigError(f"unknown setting {name!r}{hint} (valid here: {', '.join(valid)})")


def _section(cls: type, given: Any, where: str) -> Any:
    """`given` (a mapping) checked key by key into the frozen dataclass `cls`."""
    if not isinstance(given, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {given!r}")
    specs = {f.name: f for f in fields(cls)}
    unknown(given, list(specs), where)
    values = {}
    for name, spec in specs.items():
        if name in given:
            values[name] = spec.metadata["check"](f"{where}.{name}", given[name])
        elif spec.default is MISSING:
            raise ConfigError(f"{where}.{name} is required")
    return cls(**values)


def _with_environment(runtime: RuntimeSettings, environ: Mapping[str, str] | None) -> RuntimeSettings:
    """Threads and workers from the environment where the settings left them null."""
    values = asdict(runtime)
    for key, value in environment.runtime_fallbacks(environ).items():
        if values[key] is None:
            values[key] = value
    if values["precision"] is None:
        values["precision"] = "fp32"
    return RuntimeSettings(**values)


def _check_fixed(settings: Settings, fixed: Mapping[str, Mapping[str, Any]]) -> None:
    for section, values in fixed.items():
        for key, value in values.items():
            given = getattr(getattr(settings, section), key)
            if given != value:
                raise ConfigError(f"{settings.module}: {section}.{key} must be {value!r} "
                                  f"(the network is built for it), got {given!r}")
