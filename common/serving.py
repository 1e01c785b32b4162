"""`hub serving` for both modules: videos given as server paths or base64 bytes, answered like `classify`.

PaddleHub 2.4 passes the JSON body of `POST /predict/<module>` as keyword arguments to the module's
`@serving` method and wraps what it returns as `{"status": "000", "msg": "", "results": ...}`; an
exception becomes `{"status": "101", "msg": str(exc), "results": ""}`. Its Flask app is built inside
PaddleHub after the modules are loaded and is never exposed, so a body-size limit cannot be set on it:
the upload limit is enforced here, on the base64 text, before anything is decoded or written.
"""
from __future__ import annotations

import base64
import binascii
import inspect
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .pipeline import validate_paths

MAX_UPLOAD_ENV = "PADDLEHUB_VIDEO_MAX_UPLOAD_MB"
DEFAULT_MAX_UPLOAD_MB = 100.0
TEMP_PREFIX = "paddlehub_video-serving-"
_DATA_URL = re.compile(r"^data:[^,]*;base64,")  # what a browser's FileReader.readAsDataURL gives
_WHITESPACE = re.compile(rb"\s+")  # `base64` wraps its output at 76 columns
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}$")

Classify = Callable[..., list[dict]]


@dataclass
class Upload:
    """One item of `videos`: how results name it, its base64 text, or why it cannot be used."""

    label: str
    text: str = ""
    error: str | None = None


def max_upload_bytes() -> int:
    """The upload limit from $PADDLEHUB_VIDEO_MAX_UPLOAD_MB (read on every request), in bytes."""
    raw = os.environ.get(MAX_UPLOAD_ENV, "").strip()
    try:
        megabytes = float(raw) if raw else DEFAULT_MAX_UPLOAD_MB
    except ValueError:
        megabytes = -1.0
    if not megabytes > 0:
        raise ValueError(f"{MAX_UPLOAD_ENV}={raw!r}: expected a positive number of megabytes")
    return int(megabytes * 1024 * 1024)


def parse_uploads(videos: object) -> list[Upload]:
    """`videos`: a list of base64 strings or `{"data": base64, "name": optional label}`; one Upload each."""
    if not isinstance(videos, (list, tuple)):
        raise ValueError(f"videos must be a list of base64 strings, got {type(videos).__name__}")
    return [_parse_upload(index, item) for index, item in enumerate(videos)]


def _parse_upload(index: int, item: object) -> Upload:
    """One item of `videos` (the `index`-th), or the reason it is not a usable one."""
    label = f"videos[{index}]"
    if isinstance(item, str):
        return Upload(label, item)
    if not isinstance(item, Mapping):
        return Upload(label, error=f"{label}: expected a base64 string or {{'data': ..., 'name': ...}}, "
                                  f"got {type(item).__name__}")
    name = item.get("name")
    if isinstance(name, str) and name.strip():
        label = name
    data = item.get("data")
    if not isinstance(data, str):
        return Upload(label, error=f"{label}: 'data' must be a base64 string, got {type(data).__name__}")
    return Upload(label, data)


def check_upload_size(uploads: list[Upload]) -> None:
    """Refuse the whole request when its base64 text is over the limit, before decoding any of it."""
    total, limit = sum(len(upload.text) for upload in uploads), max_upload_bytes()
    if total > limit:
        raise ValueError(
            f"upload too large: {total / 2**20:.1f} MB of base64 video data, over the limit of "
            f"{limit / 2**20:.1f} MB (set {MAX_UPLOAD_ENV} on the server to change it)"
        )


def decode_base64(text: str) -> bytes:
    """Strict base64 (a data: URL prefix and line breaks allowed); binascii.Error when it is not."""
    raw = _WHITESPACE.sub(b"", _DATA_URL.sub("", text, count=1).encode("ascii", errors="strict"))
    return base64.b64decode(raw, validate=True)


def _write_upload(upload: Upload, folder: Path, index: int) -> Path | None:
    """Decode `upload` into a file of `folder`; None (and `upload.error` set) if it is not base64."""
    try:
        data = decode_base64(upload.text)
    except (binascii.Error, UnicodeEncodeError) as exc:
        upload.error = f"{upload.label}: invalid base64 ({exc})"
        return None
    # The label is never part of the file name (it comes from the client); only a plain extension
    # is kept, as a hint for the demuxer.
    suffix = _SUFFIX.search(upload.label)
    path = folder / f"video_{index}{suffix.group(0) if suffix else '.mp4'}"
    path.write_bytes(data)
    return path


def _relabel(entry: dict, temp_path: Path, label: str) -> dict:
    """A result of `classify` on a temporary file, named by the client's label instead."""
    entry = {**entry, "path": label}
    if "error" in entry:
        entry["error"] = entry["error"].replace(str(temp_path), label)
    return entry


def check_options(classify: Classify, options: Mapping[str, Any]) -> None:
    """Refuse request fields `classify` does not take, so a typo is not silently ignored."""
    accepted = [name for name in inspect.signature(classify).parameters if name != "paths"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(map(repr, unknown))}; accepted: paths, videos, "
                         f"{', '.join(accepted)}")


def classify_request(classify: Classify, paths: object, videos: object, options: Mapping[str, Any]) -> list[dict]:
    """`classify(paths + decoded videos, **options)`: results for `paths` then `videos`, in order.

    Each base64 video is written to a private temporary folder, removed before returning. An item
    that is not base64 or not a video gets `{'path': label, 'prediction': {}, 'error': reason}`,
    `label` being its `name` or `videos[i]`; the other items are answered all the same.
    """
    check_options(classify, options)
    if paths is None and videos is None:
        raise ValueError("give 'paths' (video files on the server) and/or 'videos' (base64-encoded video files)")
    paths = [] if paths is None else validate_paths(paths)
    uploads = [] if videos is None else parse_uploads(videos)
    check_upload_size(uploads)
    with tempfile.TemporaryDirectory(prefix=TEMP_PREFIX) as folder:
        files = [_write_upload(u, Path(folder), i) if u.error is None else None for i, u in enumerate(uploads)]
        results = classify([*paths, *(str(f) for f in files if f is not None)], **options)
    answered = iter(results[len(paths):])
    return results[: len(paths)] + [_upload_result(u, f, answered) for u, f in zip(uploads, files)]


def _upload_result(upload: Upload, temp_path: Path | None, answered: Iterator[dict]) -> dict:
    """The entry of one upload: its error if it was never classified, else its (relabelled) result."""
    if temp_path is None:
        return {"path": upload.label, "prediction": {}, "error": upload.error}
    return _relabel(next(answered), temp_path, upload.label)
