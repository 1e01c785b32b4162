"""`hub serving` for both modules: videos given as server paths or base64 bytes, answered like `classify`.

PaddleHub 2.4 passes the JSON body of `POST /predict/<module>` as keyword arguments to the module's
`@serving` method and wraps what it returns as `{"status": "000", "msg": "", "results": ...}`; an
exception becomes `{"status": "101", "msg": str(exc), "results": ""}`. Its Flask app is built inside
PaddleHub after the modules are loaded and is never exposed, so a body-size limit cannot be set on it:
the limits are enforced here, before anything is decoded or written. PaddleHub answers one request
at a time, so each is bounded: items per request, base64 bytes, frames and pixels per video (a probe
before decoding, `limits.py`), and one temporary file at a time. Server paths are refused unless
they lie in a directory the operator named.

A request the client got wrong (a body that is not a JSON object, a wrong field or option, too many
items, an upload over the limit) is answered before PaddleHub's view sees it (`bound_request_bodies`)
with an HTTP 4xx status and a body in PaddleHub's format, `{"status": "101", "msg": reason,
"results": ""}`: no HTML page, no traceback in the log.
"""
from __future__ import annotations

import base64
import binascii
import functools
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import environment
from ..decode.limits import DecodeLimits, applied_limits
from ..decode.video import VIDEO_EXTENSIONS
from ..errors import ConfigError
from ..http_rules import HostPolicy
from ..inputs import UrlInput, UrlPolicy, applied_url_policy, as_input
from ..names import is_utf8
from ..pipeline import validate_paths
from ..timeline import WindowLimit

# The variables and their defaults are in paddlehub_video/environment.py (its `ServingEnvironment`).
MAX_UPLOAD_ENV, MAX_ITEMS_ENV = environment.MAX_UPLOAD_MB, environment.MAX_ITEMS
MAX_FRAMES_ENV, MAX_PIXELS_ENV = environment.MAX_FRAMES, environment.MAX_PIXELS
MAX_WINDOWS_ENV, SERVING_DIRS_ENV = environment.MAX_WINDOWS, environment.SERVING_DIRS
IDLE_TIMEOUT_ENV = environment.IDLE_TIMEOUT_S
DEFAULT_MAX_ITEMS = environment.ServingEnvironment.max_items
MAX_PATH_CHARS = 4096  # Linux's PATH_MAX
# One answer for every refused path, whatever is (or is not) there: a client must not learn from it
# whether a file exists, is a directory, is empty or is readable.
PATH_REFUSED = (f"refused: server paths are read only from the directories named by {SERVING_DIRS_ENV} "
                f"on the server (none when unset); send the video in 'videos' instead")
SERVING_URL_HOSTS_ENV = environment.SERVING_URL_HOSTS
URL_REFUSED = (f"refused: URLs are read only from the hosts named by {SERVING_URL_HOSTS_ENV} on the server "
               f"(none when unset); send the video in 'videos' instead")
TEMP_PREFIX = "paddlehub_video-serving-"
_DATA_URL = re.compile(r"^data:[^,]*;base64,")  # what a browser's FileReader.readAsDataURL gives
_WHITESPACE = re.compile(rb"\s+")  # `base64` wraps its output at 76 columns
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}$")

# PaddleHub's Flask endpoint of `POST /predict/<module_name>` (its view function's name).
PREDICT_ENDPOINT = "predict_serving_v2"
# PaddleHub's answer codes: 101 the request failed; 112 the body is not `application/json`.
STATUS_FAILED, STATUS_NOT_JSON = "101", "112"

Classify = Callable[..., list[dict]]


class RequestError(ValueError):
    """A request the client got wrong: refused before any work, with HTTP `status` (4xx) where the module
    can answer it so (under `hub serving`), else as PaddleHub answers any failure."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Item:
    """One video of a request: how results name it, and its resolved server path, its base64 text,
    or why it cannot be used."""

    label: str
    text: str = ""
    error: str | None = None
    path: str | None = None


def max_upload_bytes() -> int:
    """The upload limit from $PADDLEHUB_VIDEO_MAX_UPLOAD_MB, in bytes."""
    return int(environment.serving().max_upload_mb * 1024 * 1024)


def max_items() -> int:
    """Most videos (paths and uploads together) in one request, from $PADDLEHUB_VIDEO_MAX_ITEMS."""
    return environment.serving().max_items


def serving_limits() -> DecodeLimits:
    """Frames per video and pixels per frame, from $PADDLEHUB_VIDEO_MAX_FRAMES and _MAX_PIXELS."""
    bounds = environment.serving()
    return DecodeLimits(bounds.max_frames, bounds.max_pixels, frames_setting=MAX_FRAMES_ENV,
                        pixels_setting=MAX_PIXELS_ENV)


def serving_max_windows() -> WindowLimit:
    """Most windows per video of a `timeline` request, from $PADDLEHUB_VIDEO_MAX_WINDOWS."""
    return WindowLimit(environment.serving().max_windows, MAX_WINDOWS_ENV)


def serving_dirs() -> list[str]:
    """The directories server paths may come from ($PADDLEHUB_VIDEO_SERVING_DIRS, resolved); [] when unset."""
    return list(environment.serving().dirs)


def serving_url_policy() -> UrlPolicy:
    """Where URL items may come from: the hosts of $PADDLEHUB_VIDEO_SERVING_URL_HOSTS (none when unset),
    each at most the upload limit ($PADDLEHUB_VIDEO_MAX_UPLOAD_MB)."""
    entries = environment.serving().url_hosts
    hosts = HostPolicy.from_entries(entries, SERVING_URL_HOSTS_ENV) if entries else None
    return UrlPolicy(hosts, URL_REFUSED, max_upload_bytes(), MAX_UPLOAD_ENV)


def server_paths(paths: list[object], dirs: list[str]) -> list[Item]:
    """One Item per entry of `paths`: its resolved path if it lies in one of `dirs`, else PATH_REFUSED."""
    return [_server_path(index, path, dirs) for index, path in enumerate(paths)]


def _server_path(index: int, path: object, dirs: list[str]) -> Item:
    if not isinstance(path, str) or not path or len(path) > MAX_PATH_CHARS:
        label = f"paths[{index}]"
        what = f"a path of {len(path)} characters" if isinstance(path, str) else type(path).__name__
        return Item(label, error=f"{label}: expected a path string of 1 to {MAX_PATH_CHARS} characters, got {what}")
    url = as_input(path)
    if isinstance(url, UrlInput):  # read under serving_url_policy(): refused unless its host is listed
        return Item(url.name, path=path)
    resolved = _resolved_inside(path, dirs)
    if resolved is None:
        return Item(path, error=f"{path}: {PATH_REFUSED}")
    return Item(path, path=resolved)


def _resolved_inside(path: str, dirs: list[str]) -> str | None:
    """`path` with every symlink resolved, if that lies in one of `dirs`; else None.

    The video is then opened by this resolved name, so a link changed after the check is not followed.
    """
    if not dirs or "\0" in path:
        return None
    try:
        resolved = os.path.realpath(path)
    except (OSError, ValueError):
        return None
    return resolved if any(os.path.commonpath([resolved, folder]) == folder for folder in dirs) else None


def parse_uploads(videos: object) -> list[Item]:
    """`videos`: a list of base64 strings or `{"data": base64, "name": optional label}`; one Item each."""
    if not isinstance(videos, (list, tuple)):
        raise RequestError(f"videos must be a list of base64 strings, got {type(videos).__name__}")
    return [_parse_upload(index, item) for index, item in enumerate(videos)]


def _parse_upload(index: int, item: object) -> Item:
    """One item of `videos` (the `index`-th), or the reason it is not a usable one."""
    label = f"videos[{index}]"
    if isinstance(item, str):
        return Item(label, item)
    if not isinstance(item, Mapping):
        return Item(label, error=f"{label}: expected a base64 string or {{'data': ..., 'name': ...}}, "
                                f"got {type(item).__name__}")
    name = item.get("name")
    if isinstance(name, str) and name.strip() and len(name) <= MAX_PATH_CHARS:
        label = name
    data = item.get("data")
    if not isinstance(data, str):
        return Item(label, error=f"{label}: 'data' must be a base64 string, got {type(data).__name__}")
    return Item(label, data)


def check_item_count(count: int) -> None:
    """Refuse a request of more videos than $PADDLEHUB_VIDEO_MAX_ITEMS, before any is looked at."""
    limit = max_items()
    if count > limit:
        raise RequestError(f"too many videos: {count} in one request, over the limit of {limit} "
                         f"(set {MAX_ITEMS_ENV} on the server to change it)")


def check_upload_size(uploads: list[Item]) -> None:
    """Refuse the whole request when its base64 text is over the limit, before decoding any of it."""
    total, limit = sum(len(upload.text) for upload in uploads), max_upload_bytes()
    if total > limit:
        raise RequestError(
            f"upload too large: {total / 2**20:.1f} MB of base64 video data, over the limit of "
            f"{limit / 2**20:.1f} MB (set {MAX_UPLOAD_ENV} on the server to change it)", status=413
        )


def decode_base64(text: str) -> bytes:
    """Strict base64 (a data: URL prefix and line breaks allowed); binascii.Error when it is not."""
    raw = _WHITESPACE.sub(b"", _DATA_URL.sub("", text, count=1).encode("ascii", errors="strict"))
    return base64.b64decode(raw, validate=True)


def _write_upload(upload: Item, folder: Path, index: int) -> Path | None:
    """Decode `upload` into a file of `folder`; None (and `upload.error` set) if that fails."""
    try:
        data = decode_base64(upload.text)
    except (binascii.Error, UnicodeEncodeError) as exc:
        upload.error = f"{upload.label}: invalid base64 ({exc})"
        return None
    # The label is never part of the file name (it comes from the client); only a video extension
    # is kept, as a hint for the demuxer (never one that makes FFmpeg read a playlist, e.g. .m3u8).
    suffix = _SUFFIX.search(upload.label)
    extension = suffix.group(0).lower() if suffix else ""
    path = folder / f"video_{index}{extension if extension in VIDEO_EXTENSIONS else '.mp4'}"
    try:
        path.write_bytes(data)
    except OSError as exc:
        path.unlink(missing_ok=True)
        upload.error = f"{upload.label}: the server could not store the upload ({exc.strerror})"
        return None
    return path


@contextmanager
def _video_file(item: Item, folder: Path, index: int) -> Iterator[str | None]:
    """The file to classify for `item` (None if it is unusable); an upload's file is removed on exit."""
    if item.error is not None or item.path is not None:
        yield item.path
        return
    written = _write_upload(item, folder, index)
    try:
        yield None if written is None else str(written)
    finally:
        if written is not None:
            written.unlink(missing_ok=True)


def _relabel(entry: dict, file: str, label: str) -> dict:
    """A result of `classify` on `file` (a temporary or resolved path), named by the client's label."""
    entry = {**entry, "path": label}
    if "error" in entry:
        entry["error"] = entry["error"].replace(file, label)
    return entry


def check_fields(fields: Collection[str], accepted: Collection[str]) -> None:
    """Refuse request fields not in `accepted`, so a typo is not silently ignored."""
    unknown = sorted(set(fields) - set(accepted))
    if unknown:
        raise RequestError(f"unknown field(s) {', '.join(repr(name[:100]) for name in unknown)}; accepted: "
                           f"{', '.join(accepted)}")


def readable_json() -> None:
    """Make the Flask app serving this request answer in UTF-8, keep our key order, and carry any file name.

    PaddleHub sets `JSON_AS_ASCII = False`, which Flask 2.3+ ignores (its JSON provider's
    `ensure_ascii` replaced it), so Chinese labels came back as `\\u5c11\\u513f`; and Flask sorts keys,
    which put the predictions in label order. A file name that is not UTF-8 (a client names it with
    JSON's `\\udcXX` escapes, which Python reads as surrogate escapes) cannot be UTF-8 text: an
    answer holding one is written with `\\u` escapes throughout, which read back to the same name.
    The app is within reach only while it handles a request (`flask.current_app`), before it
    serialises the answer; outside one this does nothing.
    """
    import flask  # here, not at the top: a library user never pays for it

    if flask.has_app_context() and not isinstance(flask.current_app.json, _readable_json_provider()):
        app = flask.current_app._get_current_object()
        app.json = _readable_json_provider()(app)


@functools.cache
def _readable_json_provider() -> type:
    """Flask's JSON provider, not sorting keys, in UTF-8 unless the answer holds a surrogate (see readable_json)."""
    from flask.json.provider import DefaultJSONProvider

    class ReadableJSON(DefaultJSONProvider):
        ensure_ascii = False
        sort_keys = False

        def dumps(self, obj: Any, **kwargs: Any) -> str:
            text = super().dumps(obj, **kwargs)
            return text if is_utf8(text) else super().dumps(obj, **{**kwargs, "ensure_ascii": True})

    return ReadableJSON


def max_request_bytes() -> int:
    """The largest request body worth reading: the upload limit (with room for a client that escapes
    every `/` of its base64 as `\\/`, ~3% of it) plus 1 MiB for paths and options."""
    return int(max_upload_bytes() * 1.05) + 2**20


def idle_timeout_s() -> float:
    """Seconds `hub serving` waits for a client's next bytes, from $PADDLEHUB_VIDEO_IDLE_TIMEOUT_S."""
    return environment.serving().idle_timeout_s


def bound_request_bodies() -> None:
    """Make PaddleHub's serving app refuse a body over `max_request_bytes()` with HTTP 413, before reading it,
    answer a request the client got wrong with a 4xx in PaddleHub's format (`refuse_bad_requests`), and
    drop a client silent for `idle_timeout_s()` (its development server, `hub serving` without
    `--use_multiprocess`; gunicorn has its own timeouts).

    PaddleHub reads and parses the whole body (`request.json`) before the module sees the request,
    so the upload limit alone would still let a 10 GB body into memory; and a body that is not a JSON
    object fails its view (HTTP 500, an HTML page, a traceback in the log). Its Flask app is created
    after the modules are loaded (in `paddlehub.serving.app_compat`, both with and without
    `--use_multiprocess`): where that module is loaded, the name `Flask` in it is given a subclass that
    sets `MAX_CONTENT_LENGTH` (Werkzeug checks `Content-Length` at once and counts a chunked body
    as it comes) and checks each request first. No other Flask app, and nothing outside a `hub`
    process, is touched.
    """
    app_compat = sys.modules.get("paddlehub.serving.app_compat")
    if app_compat is None or getattr(app_compat.Flask, "bounded_by_paddlehub_video", False):
        return

    from werkzeug.exceptions import HTTPException
    from werkzeug.serving import WSGIRequestHandler

    class IdleBoundedRequestHandler(WSGIRequestHandler):
        """Gives up on a client that sends nothing for `idle_timeout_s()` (the server answers one request
        at a time: a connection left open without a request would hold it for ever)."""

        timeout = idle_timeout_s()

    class BoundedFlask(app_compat.Flask):
        bounded_by_paddlehub_video = True

        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.config["MAX_CONTENT_LENGTH"] = max_request_bytes()
            # Before PaddleHub's own hook and view, which are added to the app after this.
            self.before_request(lambda: refuse_bad_requests(self, served_module))
            self.register_error_handler(HTTPException, lambda error: http_error_answer(self, error))

        def run(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("request_handler", IdleBoundedRequestHandler)
            super().run(*args, **kwargs)

    def served_module(name: str) -> object | None:
        """The module PaddleHub serves as `name`, if any."""
        served = app_compat.v2_module_info
        return served.get_module(name) if name in served.modules else None

    app_compat.Flask = BoundedFlask


def answer(app: Any, http_status: int, message: str, status: str = STATUS_FAILED) -> Any:
    """A response of `app` in PaddleHub's format, `{"status", "msg", "results": ""}`, with `http_status`."""
    body = json.dumps({"status": status, "msg": message, "results": ""}, ensure_ascii=False)
    return app.response_class(body, status=http_status, mimetype="application/json")


def http_error_answer(app: Any, error: Any) -> Any:
    """An HTTP error (413 body too large, 400 invalid JSON, 415 not JSON, 404, 405, 500) in PaddleHub's format."""
    status = STATUS_NOT_JSON if error.code == 415 else STATUS_FAILED
    return answer(app, error.code or 500, f"{error.name}: {error.description}", status)


def refuse_bad_requests(app: Any, served_module: Callable[[str], object | None]) -> Any:
    """Flask `before_request` hook: for `POST /predict/<module>`, an answer in PaddleHub's format with an HTTP
    4xx status when the client got the request wrong; None (PaddleHub's view answers) otherwise.

    The body must be a JSON object (PaddleHub passes its fields to the module as keyword arguments);
    a module of this project then checks its fields and options (`check_serving_request`).
    """
    import flask
    from werkzeug.exceptions import BadRequest

    request = flask.request
    if request.endpoint != PREDICT_ENDPOINT:
        return None
    try:
        body = request.get_json()  # not `application/json`: HTTP 415, answered by `http_error_answer`
    except RecursionError:
        return answer(app, 400, "the JSON body is nested too deep")
    except BadRequest as error:
        if type(error) is not BadRequest:  # a client that went away, say: not a JSON mistake
            raise
        return answer(app, 400, f"the body is not valid JSON ({_json_error(request.get_data())})")
    if not isinstance(body, dict):
        return answer(app, 400, f"the body must be a JSON object of fields (paths, videos, options), got "
                                f"{_json_kind(body)}")
    check = getattr(served_module((request.view_args or {}).get("module_name", "")), "check_serving_request", None)
    try:
        if check is not None:
            check(body)
    except RequestError as exc:
        return answer(app, exc.status, str(exc))
    except ConfigError:
        return None  # the server's mistake, not the client's: PaddleHub's view answers it, as any failure
    return None


def _json_error(data: bytes) -> str:
    """Why `data` is not JSON (Flask says it only in debug mode)."""
    try:
        json.loads(data)
    except ValueError as exc:
        return str(exc)
    return "unreadable"


def _json_kind(value: object) -> str:
    """The JSON name of a parsed value's type."""
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def refused_entry(label: str, error: str) -> dict:
    """The answer to an item that cannot be used, in `classify`'s shape."""
    return {"path": label, "prediction": {}, "error": error}


def check_request(classify: Classify, paths: object, videos: object,
                  options: Mapping[str, Any]) -> tuple[list[str], list[Item]]:
    """The request's server paths and uploads, once its shape, item count, upload size and options are
    checked (nothing decoded or written); RequestError with the reason if the client got it wrong."""
    try:
        if paths is None and videos is None:
            raise RequestError("give 'paths' (video files on the server) and/or 'videos' (base64-encoded video "
                               "files)")
        # Each item is checked on its own (a per-item error), the list here.
        paths = [] if paths is None else paths if isinstance(paths, list) else validate_paths(paths)
        uploads = [] if videos is None else parse_uploads(videos)
        check_item_count(len(paths) + len(uploads))
        check_upload_size(uploads)
        classify([], **options)  # the options checked once, before any file is written
    except (ConfigError, RequestError):
        raise  # a server setting's mistake is not the client's; a RequestError has its status
    except (ValueError, TypeError) as exc:  # an option's value, checked by `classify` itself
        raise RequestError(str(exc)) from None
    return paths, uploads


def classify_request(classify: Classify, paths: object, videos: object, options: Mapping[str, Any],
                     refused: Callable[[str, str], dict] = refused_entry) -> list[dict]:
    """`classify` of each of `paths` then `videos`, one at a time, with the serving limits: their results in order.

    Each base64 video is written to a private temporary folder just before it is classified and
    removed right after. An item that cannot be used (a refused path, not base64, not a video, over
    a limit) gets `{'path': label, 'prediction': {}, 'error': reason}`, `label` being the path, its
    `name` or `videos[i]`; the other items are answered all the same. `refused(label, reason)` gives
    that entry in the shape of `classify`'s (a timeline's, for `classify_timeline`). A request the
    client got wrong raises RequestError (`check_request`) before any of it is looked at.
    """
    readable_json()
    paths, uploads = check_request(classify, paths, videos, options)
    items = [*(server_paths(paths, serving_dirs()) if paths else []), *uploads]
    limits = serving_limits()
    policy = serving_url_policy()
    with applied_limits(limits), applied_url_policy(policy), tempfile.TemporaryDirectory(prefix=TEMP_PREFIX) as folder:
        return [_answer(classify, item, Path(folder), index, options, refused) for index, item in enumerate(items)]


def _answer(classify: Classify, item: Item, folder: Path, index: int, options: Mapping[str, Any],
            refused: Callable[[str, str], dict]) -> dict:
    """The result entry of one item, classified on its own."""
    with _video_file(item, folder, index) as file:
        if file is None:
            return refused(item.label, item.error)
        return _relabel(classify([file], **options)[0], file, item.label)
