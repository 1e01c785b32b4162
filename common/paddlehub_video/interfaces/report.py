"""A report people can look at: one self-contained HTML file (no network needed to open it).

Per video: a strip of a few frames as small inline JPEG thumbnails, its tags as bars with their
probabilities, and for timeline entries the tags along the video's time axis (one row per tag, a
band per window, as opaque as the tag is probable); failed videos listed with their reasons.
Everything is escaped, so a label or path cannot inject markup; Chinese labels are UTF-8 text,
rendered with the CJK fonts the viewer's system has; a file name that is not UTF-8 shows each of its
other bytes as `\\udcXX` (`names.printable`).

Written as `output_files.py` writes every file of the command line: whole, atomically, and only
over a report this project wrote (recognised by its first bytes, REPORT_HEAD), never over any
other file, an input of the run, a FIFO or a device.
"""
from __future__ import annotations

import base64
import html
from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import numpy as np

from ..decode.video import read_sampled_frames
from ..errors import PaddleHubVideoError
from ..names import printable
from .output_files import checked_target, write_checked

# How every report starts: what marks a file as one this project wrote (and so may replace).
REPORT_HEAD = ('<!DOCTYPE html><html lang="zh"><head><meta charset="utf-8">'
               '<meta name="generator" content="paddlehub_video report">')
REPORT_KIND = "a report written by paddlehub_video (hub run --report)"
Roles = Iterable[tuple[str, Iterable[str]]]

THUMBNAILS = 4
THUMB_HEIGHT = 72
STYLE = """
body { font-family: "Noto Sans CJK SC", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "Microsoft YaHei",
       "PingFang SC", sans-serif; margin: 1.5em; color: #222; }
.video { border: 1px solid #ddd; border-radius: 6px; padding: 0.8em 1em; margin-bottom: 1.2em; }
.strip img { height: 72px; margin-right: 4px; border-radius: 3px; }
.tag { display: flex; align-items: center; margin: 2px 0; }
.tag .name { width: 14em; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.tag .bar { background: #4a7bd0; height: 0.9em; margin-right: 0.5em; }
.axis { position: relative; height: 1.1em; background: #f3f3f3; flex: 1; }
.band { position: absolute; top: 0; bottom: 0; background: #d0584a; }
.ticks { flex: 1; font-size: 0.8em; color: #666; }
.failed li { color: #a00; }
"""
Thumbnails = Callable[[str], list[bytes]]


def thumbnails(path: str, count: int = THUMBNAILS) -> list[bytes]:
    """JPEG bytes of `count` frames spread over the video, THUMB_HEIGHT pixels high; none if it cannot be read."""
    spread = lambda n: sorted({min(n - 1, (2 * i + 1) * n // (2 * count)) for i in range(count)})  # noqa: E731
    try:
        frames = read_sampled_frames(path, spread, _small_jpeg)
    except (PaddleHubVideoError, ValueError):
        return []
    return list(dict.fromkeys(frames))


def _small_jpeg(rgb: np.ndarray) -> bytes:
    """An RGB frame scaled to THUMB_HEIGHT and encoded as JPEG."""
    height, width = rgb.shape[:2]
    size = (max(1, round(width * THUMB_HEIGHT / height)), THUMB_HEIGHT)
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()


def render_report(entries: Iterable[dict], title: str = "Video classification",
                  frames: Thumbnails = thumbnails) -> str:
    """The report's HTML for `classify` or `classify_timeline` entries; `frames(path)` gives the thumbnails."""
    entries = list(entries)
    answered = [e for e in entries if "error" not in e]
    failed = [e for e in entries if "error" in e]
    parts = [f"{REPORT_HEAD}<title>{_text(title)}</title><style>{STYLE}</style></head><body><h1>{_text(title)}</h1>"]
    parts += [_video_section(entry, frames(entry["path"])) for entry in answered]
    if failed:
        items = "".join(f"<li data-path=\"{_text(e['path'])}\">{_text(e['error'])}</li>" for e in failed)
        parts.append(f"<section class=\"failed\"><h2>Failed videos ({len(failed)})</h2><ul>{items}</ul></section>")
    parts.append("</body></html>")
    return "".join(parts)


def write_report(entries: Iterable[dict], path: str | Path, title: str = "Video classification",
                 frames: Thumbnails = thumbnails, never: Roles = ()) -> Path:
    """Write `render_report(entries)` to `path` (UTF-8, atomically); returns the path.

    `path` may name a new file or a report written before (a symlink is followed); anything else,
    and any of `never` ((role, paths) of the run's other files), raises `output_files.Refused`.
    """
    check_report_target(path, never)  # before the thumbnails are made: a refusal costs nothing
    write_checked(path, render_report(entries, title, frames).encode("utf-8"), is_report, REPORT_KIND, never)
    return Path(path)


def check_report_target(path: str | Path, never: Roles = ()) -> None:
    """Refused (with the reason) unless `write_report` may write `path`."""
    checked_target(path, is_report, REPORT_KIND, never)


def is_report(head: bytes) -> bool:
    """Whether a file starting with `head` is a report this project wrote."""
    return head.startswith(REPORT_HEAD.encode("utf-8"))


def _video_section(entry: dict, jpegs: list[bytes]) -> str:
    """One answered video: name, thumbnails, tags (and, for a timeline, the tags over time)."""
    images = "".join(f"<img alt=\"frame\" src=\"data:image/jpeg;base64,{base64.b64encode(j).decode()}\">"
                     for j in jpegs)
    body = _timeline(entry) if "windows" in entry else _bars(entry["prediction"])
    return (f"<section class=\"video\" data-path=\"{_text(entry['path'])}\"><h2>{_text(entry['path'])}</h2>"
            f"<div class=\"strip\">{images}</div>{body}</section>")


def _bars(prediction: dict[str, float]) -> str:
    """Tags as horizontal bars, longest for the most probable."""
    rows = "".join(
        f"<div class=\"tag\" data-label=\"{_text(label)}\"><span class=\"name\">{_text(label)}</span>"
        f"<span class=\"bar\" style=\"width:{20 * prob:.2f}em\"></span><span class=\"prob\">{prob:.4f}</span></div>"
        for label, prob in prediction.items()
    )
    return f"<div class=\"tags\">{rows}</div>"


def _timeline(entry: dict) -> str:
    """One row per tag seen in any window: a band over each window's span, more opaque as it is more
    probable (never fully transparent, so a kept tag with a small probability still shows)."""
    duration = entry["duration"] or 1.0
    labels = list(dict.fromkeys(label for window in entry["windows"] for label in window["prediction"]))
    rows = []
    for label in labels:
        bands = "".join(
            f"<span class=\"band\" title=\"{w['start']:g}-{w['end']:g} s: {w['prediction'][label]:.4f}\" "
            f"style=\"left:{100 * w['start'] / duration:.3f}%;width:{100 * (w['end'] - w['start']) / duration:.3f}%;"
            f"opacity:{0.15 + 0.85 * w['prediction'][label]:.3f}\"></span>"
            for w in entry["windows"] if label in w["prediction"]
        )
        rows.append(f"<div class=\"tag\" data-label=\"{_text(label)}\"><span class=\"name\">{_text(label)}</span>"
                    f"<div class=\"axis\">{bands}</div></div>")
    axis = (f"<div class=\"tag\"><span class=\"name\"></span><div class=\"ticks\"><span>0 s</span>"
            f"<span style=\"float:right\">{entry['duration']:g} s</span></div></div>")
    return (f"<p>{entry['duration']:g} s, {len(entry['windows'])} windows</p>"
            f"<div class=\"timeline\">{''.join(rows)}{axis}</div>")


def _text(value: object) -> str:
    """`value` as HTML text or attribute value (a file name that is not UTF-8 shown as `names.printable` does)."""
    return html.escape(printable(str(value)), quote=True)
