"""Every `PADDLEHUB_VIDEO_*` environment variable: named, parsed and checked here, and nowhere else.

Two kinds:

- a module's settings the environment may fill (`CONFIG`, `CPU_THREADS`, `WORKERS`, `PRECISION`): read by
  `settings.build_settings` when a module is made (see there for the precedence);
- settings of the process rather than of one module, which come from the environment only:
  `downloads` (where model files and demo videos come from), `serving` (the bounds of `hub serving`
  and gunicorn) and `terminal` (what `hub run` draws). Each is read as one frozen section where that
  kind of work starts: downloads when a module is made or the demo fetches its videos, serving on
  each request (an operator's change applies from the next one) and when gunicorn starts, the
  terminal when `hub run` starts.

A value that cannot be used is a `ConfigError` naming the variable, the value and what it accepts;
an unset or empty variable means the default.
"""
from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError

PREFIX = "PADDLEHUB_VIDEO_"

# a module's settings (settings.py)
CONFIG = PREFIX + "CONFIG"
CPU_THREADS = PREFIX + "CPU_THREADS"
WORKERS = PREFIX + "WORKERS"
PRECISION = PREFIX + "PRECISION"
PRECISIONS = ("fp32", "bf16", "auto")  # runtime.precision (cpus.resolve_precision)
# downloads
ASSETS = PREFIX + "ASSETS"
MIRROR = PREFIX + "MIRROR"
TIMEOUT = PREFIX + "TIMEOUT"
DEADLINE = PREFIX + "DEADLINE"
# serving
MAX_UPLOAD_MB = PREFIX + "MAX_UPLOAD_MB"
MAX_ITEMS = PREFIX + "MAX_ITEMS"
MAX_FRAMES = PREFIX + "MAX_FRAMES"
MAX_PIXELS = PREFIX + "MAX_PIXELS"
MAX_WINDOWS = PREFIX + "MAX_WINDOWS"
SERVING_DIRS = PREFIX + "SERVING_DIRS"
SERVING_URL_HOSTS = PREFIX + "SERVING_URL_HOSTS"
IDLE_TIMEOUT_S = PREFIX + "IDLE_TIMEOUT_S"
WORKER_TIMEOUT_S = PREFIX + "WORKER_TIMEOUT_S"
GRACEFUL_TIMEOUT_S = PREFIX + "GRACEFUL_TIMEOUT_S"
WORKER_MEMORY_MB = PREFIX + "WORKER_MEMORY_MB"
MODULES = PREFIX + "MODULES"
# terminal
PROGRESS = PREFIX + "PROGRESS"
VERBOSE = PREFIX + "VERBOSE"

Parse = Callable[[str, str], Any]  # (variable, its non-empty value) -> the value, or ConfigError


# ---------------------------------------------------------------- parsers


def positive_number(variable: str, raw: str, unit: str = "number") -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{variable}={raw!r}: expected a positive {unit}")
    return value


def seconds(variable: str, raw: str) -> float:
    return positive_number(variable, raw, "number of seconds")


def megabytes(variable: str, raw: str) -> float:
    return positive_number(variable, raw, "number of megabytes")


def positive_int(variable: str, raw: str) -> int:
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{variable}={raw!r}: expected a positive whole number")
    return int(raw)


def precision(variable: str, raw: str) -> str:
    if raw not in PRECISIONS:
        raise ConfigError(f"{variable}={raw!r}: expected one of {', '.join(PRECISIONS)}")
    return raw


def flag(variable: str, raw: str) -> bool:
    word = raw.lower()
    if word in {"1", "yes", "true", "on"}:
        return True
    if word in {"0", "no", "false", "off"}:
        return False
    raise ConfigError(f"{variable}={raw!r}: expected 1, yes, true, on or 0, no, false, off")


def directory(variable: str, raw: str) -> Path:
    return Path(raw).expanduser()


def http_url(variable: str, raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{variable}={raw!r}: expected an http:// or https:// URL")
    return raw.rstrip("/")


def absolute_dirs(variable: str, raw: str) -> tuple[str, ...]:
    """Directories separated by os.pathsep, each absolute, returned with every symlink resolved."""
    entries = [entry for entry in raw.split(os.pathsep) if entry.strip()]
    relative = [entry for entry in entries if not os.path.isabs(entry)]
    if relative:
        raise ConfigError(f"{variable}: {relative[0]!r} is not an absolute path")
    return tuple(os.path.realpath(entry) for entry in entries)


def url_hosts(variable: str, raw: str) -> tuple[str, ...]:
    """Hosts URLs may come from, separated by commas or spaces: host names, `*` (any name), addresses
    and networks (`10.0.0.0/8`); lower case, without a trailing dot or an IPv6 address's brackets."""
    entries = tuple(entry.lower().rstrip(".").strip("[]") for entry in raw.replace(",", " ").split())
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            labels = entry.split(".")
            if entry != "*" and not all(0 < len(label) < 64 and label.replace("-", "").isalnum() for label in labels):
                raise ConfigError(f"{variable}: {entry!r} is not a host name, an address or a network") from None
    return entries


def names(variable: str, raw: str) -> tuple[str, ...]:
    """Comma-separated names."""
    return tuple(name.strip() for name in raw.split(",") if name.strip())


# ---------------------------------------------------------------- sections


@dataclass(frozen=True)
class DownloadEnvironment:
    """Where model files and demo videos come from (`model.assets.fetch`) and how long a download may take."""

    assets_dir: Path | None = None  # files found here are used (never deleted); the others are fetched
    mirror: str | None = None  # fetch file X from <mirror>/X instead of the publisher's URL
    timeout_s: float = 30.0  # seconds without data before a download is retried, then fails
    deadline_s: float | None = None  # seconds one download may take in all; None: from the file's size limit


@dataclass(frozen=True)
class ServingEnvironment:
    """The bounds of `hub serving` and of the gunicorn server (interfaces/serving.py, gunicorn_app.py)."""

    max_upload_mb: float = 100.0  # megabytes of base64 video data per request
    max_items: int = 8  # about 8 minutes of one core for videotag: other clients wait that long at most
    max_frames: int = 18_000  # 10 minutes at 30 fps
    max_pixels: int = 3840 * 2160  # 4K UHD: ~100 MB to decode a frame; 16384x8192 took 1.6 GB
    max_windows: int = 20  # a timeline's windows per video: each costs a classify
    dirs: tuple[str, ...] = ()  # the directories server paths may come from (resolved); none when unset
    url_hosts: tuple[str, ...] = ()  # the hosts URLs in `paths` may come from (http_rules.HostPolicy); none when unset
    idle_timeout_s: float = 60.0  # a client silent this long between bytes is dropped
    worker_timeout_s: float | None = None  # None: the longest request the limits allow (gunicorn_app)
    graceful_timeout_s: float | None = None  # None: the worker timeout
    worker_memory_mb: float | None = None  # None: the measured peak of one module per module served
    modules: tuple[str, ...] = ()  # what the WSGI app serves when not told; none: videotag_tsn_lstm


@dataclass(frozen=True)
class TerminalEnvironment:
    """What `hub run` draws on stderr."""

    progress: bool | None = None  # None: only when stderr is a terminal
    verbose: bool = False  # native libraries' output and tracebacks


# section -> {field: (variable, parse)}: the one table of the process-wide variables
_TABLES: dict[type, dict[str, tuple[str, Parse]]] = {
    DownloadEnvironment: {
        "assets_dir": (ASSETS, directory), "mirror": (MIRROR, http_url),
        "timeout_s": (TIMEOUT, seconds), "deadline_s": (DEADLINE, seconds),
    },
    ServingEnvironment: {
        "max_upload_mb": (MAX_UPLOAD_MB, megabytes), "max_items": (MAX_ITEMS, positive_int),
        "max_frames": (MAX_FRAMES, positive_int), "max_pixels": (MAX_PIXELS, positive_int),
        "max_windows": (MAX_WINDOWS, positive_int), "dirs": (SERVING_DIRS, absolute_dirs),
        "url_hosts": (SERVING_URL_HOSTS, url_hosts),
        "idle_timeout_s": (IDLE_TIMEOUT_S, seconds), "worker_timeout_s": (WORKER_TIMEOUT_S, seconds),
        "graceful_timeout_s": (GRACEFUL_TIMEOUT_S, seconds), "worker_memory_mb": (WORKER_MEMORY_MB, megabytes),
        "modules": (MODULES, names),
    },
    TerminalEnvironment: {"progress": (PROGRESS, flag), "verbose": (VERBOSE, flag)},
}

# a module's settings the environment fills where they are null: {key of `runtime`: (variable, parse)}
RUNTIME_FALLBACKS: dict[str, tuple[str, Parse]] = {"cpu_threads": (CPU_THREADS, positive_int),
                                                  "workers": (WORKERS, positive_int),
                                                  "precision": (PRECISION, precision)}

VARIABLES: tuple[str, ...] = (CONFIG, *(variable for variable, _ in RUNTIME_FALLBACKS.values()),
                              *(variable for table in _TABLES.values() for variable, _ in table.values()))


def raw_value(variable: str, environ: Mapping[str, str] | None = None) -> str:
    """The variable's value, stripped; "" when unset."""
    return (os.environ if environ is None else environ).get(variable, "").strip()


def _read(section: type, environ: Mapping[str, str] | None) -> Any:
    values = {}
    for name, (variable, parse) in _TABLES[section].items():
        raw = raw_value(variable, environ)
        if raw:
            values[name] = parse(variable, raw)
    return section(**values)


def downloads(environ: Mapping[str, str] | None = None) -> DownloadEnvironment:
    return _read(DownloadEnvironment, environ)


def serving(environ: Mapping[str, str] | None = None) -> ServingEnvironment:
    return _read(ServingEnvironment, environ)


def terminal(environ: Mapping[str, str] | None = None) -> TerminalEnvironment:
    return _read(TerminalEnvironment, environ)


def runtime_fallbacks(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """{`runtime` key: value} for each fallback variable that is set."""
    found = {}
    for key, (variable, parse) in RUNTIME_FALLBACKS.items():
        raw = raw_value(variable, environ)
        if raw:
            found[key] = parse(variable, raw)
    return found


def config_file(environ: Mapping[str, str] | None = None) -> str | None:
    """The YAML file named by $PADDLEHUB_VIDEO_CONFIG, or None."""
    return raw_value(CONFIG, environ) or None
