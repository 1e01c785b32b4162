"""The serving app for operators' own servers: `hub serving`'s endpoint and JSON, as a WSGI factory.

    gunicorn -c python:paddlehub_video.interfaces.gunicorn_conf \\
        'paddlehub_video.interfaces.wsgi:create_app("videotag_tsn_lstm")'

`create_app` builds PaddleHub's own Flask app (`paddlehub.serving.app_compat.create_app`) around the
installed modules, so `POST /predict/<module>` answers exactly as under `hub serving` (the same
limits, the same `{"status", "msg", "results"}`), and `instrument` adds what a production server
needs; `hub serving start --use_multiprocess` instruments its app the same way (gunicorn_app.py):

- `GET /health`: 200 while the process answers (liveness, costs nothing);
- `GET /ready`: 200 once this process has made every module's predictors, 503 before (readiness).
  Loading starts in a background thread on the first request a process sees, or as soon as a
  gunicorn worker boots under this package's worker class; a request meanwhile waits for it;
- one log line per request (logger `paddlehub_video.serving`): method, path, HTTP status,
  PaddleHub's status code, items answered / failed, duration.

`stop_when_client_gone` ends a request whose client has hung up at the next video boundary, so a
worker is not held for videos nobody will read.
"""
from __future__ import annotations

import functools
import logging
import os
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .. import environment

LOG = logging.getLogger("paddlehub_video.serving")
CLIENT_GONE = "the client disconnected; the request was stopped"
MODULES_ENV = environment.MODULES
DEFAULT_MODULE = "videotag_tsn_lstm"


class ClientGone(RuntimeError):
    """The client of the request being answered closed its connection."""


def log_to_stderr() -> None:
    """Request logs on stderr (where gunicorn and `hub serving` write theirs), unless configured already."""
    if not LOG.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"))
        LOG.addHandler(handler)
        LOG.setLevel(logging.INFO)
        LOG.propagate = False


# ---------------------------------------------------------------- client disconnects


def client_socket() -> socket.socket | None:
    """The connection of the request being handled: gunicorn's or Werkzeug's; None outside one."""
    import flask

    if not flask.has_request_context():
        return None
    environ = flask.request.environ
    return environ.get("gunicorn.socket") or environ.get("werkzeug.socket")


def client_gone(connection: socket.socket | None) -> bool:
    """Whether the peer of `connection` has closed it: readable with nothing to read (an orderly close)
    or an error (a reset). A client that sent more bytes (a pipelined request) is still there."""
    if connection is None or connection.fileno() < 0:
        return False
    try:
        readable, _, _ = select.select([connection], [], [], 0)
        if not readable:
            return False
        return connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def stop_when_client_gone(classify: Callable[..., list[dict]]) -> Callable[..., list[dict]]:
    """`classify`, which first raises ClientGone when the request's client has hung up: `classify_request`
    calls it once per video, so a worker is freed at the next video instead of finishing them all."""
    connection = client_socket()
    if connection is None:
        return classify

    @functools.wraps(classify)
    def checked(*args: Any, **kwargs: Any) -> list[dict]:
        if client_gone(connection):
            raise ClientGone(CLIENT_GONE)
        return classify(*args, **kwargs)

    return checked


# ---------------------------------------------------------------- the models, loaded once per process


class Loader:
    """Makes every served module's predictors once per process, in a background thread."""

    def __init__(self, modules: Mapping[str, Any]):
        self.modules = dict(modules)
        self._lock = threading.Lock()
        self._pid: int | None = None  # the process whose thread was started (a fork starts again)
        self._done = threading.Event()
        self.error: str | None = None

    def start(self) -> None:
        """Start loading in this process, once (not in a parent that will fork: call it in the worker)."""
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid, self._done, self.error = os.getpid(), threading.Event(), None
            threading.Thread(target=self._load, args=(self._done,), name="paddlehub_video-load", daemon=True).start()

    def _load(self, done: threading.Event) -> None:
        started = time.monotonic()
        try:
            for module in self.modules.values():
                module.predict_fn()  # fetch, convert (once per machine, under a file lock), make the predictors
            LOG.info("models loaded: %s in %.1f s", ", ".join(self.modules), time.monotonic() - started)
        except Exception as exc:  # the readiness answer says why; requests get the module's own error
            self.error = f"{type(exc).__name__}: {exc}"
            LOG.error("loading the models failed: %s", self.error)
        finally:
            done.set()

    def ready(self) -> bool:
        """Whether this process has made every module's predictors (and none failed)."""
        return self._pid == os.getpid() and self._done.is_set() and self.error is None

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until loading ends in this process (for tests and warm-up); whether it succeeded."""
        self.start()
        self._done.wait(timeout)
        return self.ready()


# ---------------------------------------------------------------- the app


def served_modules() -> dict[str, Any]:
    """The modules PaddleHub's serving app answers for, by name (`hub serving` or `create_app` added them)."""
    from paddlehub.serving.model_service.base_model_service import v2_module_info

    return {name: info["module"] for name, info in v2_module_info.modules_info.items() if "module" in info}


def instrument(app: Any, modules: Mapping[str, Any] | None = None) -> Loader:
    """Add /health, /ready, per-request logs and background loading to PaddleHub's Flask `app`; its Loader."""
    import flask

    if "paddlehub_video" in app.extensions:
        return app.extensions["paddlehub_video"]
    loader = Loader(served_modules() if modules is None else modules)
    app.extensions["paddlehub_video"] = loader
    log_to_stderr()

    @app.route("/health", methods=["GET"])
    def health() -> Any:
        return {"alive": True, "pid": os.getpid()}

    @app.route("/ready", methods=["GET"])
    def ready() -> Any:
        body = {"ready": loader.ready(), "modules": list(loader.modules), "pid": os.getpid()}
        if loader.error:
            body["error"] = loader.error
        return body, 200 if body["ready"] else 503

    @app.before_request
    def start_clock() -> None:
        loader.start()
        flask.g.paddlehub_video_started = time.monotonic()

    @app.after_request
    def log_request(response: Any) -> Any:
        started = flask.g.get("paddlehub_video_started", time.monotonic())
        LOG.info("%s %s -> %s%s in %.2f s", flask.request.method, flask.request.path, response.status_code,
                 outcome(response), time.monotonic() - started)
        return response

    return loader


def outcome(response: Any) -> str:
    """A /predict answer in a few words: PaddleHub's status, and items answered and failed."""
    if response.is_streamed or response.mimetype != "application/json":
        return ""
    answer = response.get_json(silent=True)
    if not isinstance(answer, dict) or "status" not in answer:
        return ""
    results = answer.get("results")
    if isinstance(results, list):
        failed = sum(1 for entry in results if isinstance(entry, dict) and "error" in entry)
        return f" status={answer['status']} items={len(results)} failed={failed}"
    return f" status={answer['status']} msg={str(answer.get('msg', ''))[:200]!r}"


def load_modules(names: Iterable[str]) -> dict[str, dict]:
    """PaddleHub's serving configs for the installed modules `names`, as `hub serving start -m` makes them."""
    import paddlehub as hub

    configs = {}
    for name in names:
        module = hub.Module(name=name)
        configs[name] = {
            "init_args": {"name": name}, "predict_args": {}, "module": module, "name": module.name,
            "version": module.version, "category": str(module.type).split("/")[0].upper(),
            "method_name": module.serving_func_name, "serving_method": getattr(module, module.serving_func_name),
        }
    return configs


def module_names(modules: str | Iterable[str] | None) -> list[str]:
    """Names from an argument ("a,b" or a list), else $PADDLEHUB_VIDEO_MODULES, else videotag_tsn_lstm."""
    if modules is None:
        modules = list(environment.serving().modules) or [DEFAULT_MODULE]
    names = modules.split(",") if isinstance(modules, str) else list(modules)
    names = [name.strip() for name in names if name.strip()]
    if not names:
        raise ValueError(f"no module to serve: give create_app a module name or set {MODULES_ENV}")
    return names


def create_app(modules: str | Iterable[str] | None = None) -> Any:
    """A WSGI app serving the installed `modules` as `hub serving start -m <modules>` does, instrumented.

    `modules`: names ("videotag_tsn_lstm,stnet_kinetics400" or a list), default $PADDLEHUB_VIDEO_MODULES,
    else videotag_tsn_lstm. Nothing of Paddle runs here (with gunicorn's `--preload` this is the master,
    and Paddle's executor does not survive a fork): each serving process fetches the models and makes
    its predictors when it starts (`Loader`).
    """
    from paddlehub.serving import app_compat

    from .serving import bound_request_bodies

    configs = load_modules(module_names(modules))
    bound_request_bodies()  # PaddleHub's app is bounded as under `hub serving`
    app = app_compat.create_app(init_flag=False, configs=configs)
    instrument(app, {name: info["module"] for name, info in configs.items()})
    return app
