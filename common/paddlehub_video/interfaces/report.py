"""A report people can look at: one self-contained HTML file (no network needed to open it).

At the top a summary of the run (module, date, threshold, top_k, windows, videos answered and
failed, their total duration). Per video: a strip of frames spread over it, each captioned with
its time, and its tags: as bars with their probabilities for `classify` entries; for timeline
entries, drawn from their segments (`segments.py`): a time axis with ticks in mm:ss, one lane per
tag with its segments (each with its confidence written on it when it fits), a legend that names
each tag's colour and writes out its segments, and the top tags of each stretch of the video as
text. Failed videos listed with their reasons. Every value is written as text (tooltips only
repeat it), and a print stylesheet keeps the colours and keeps a video on one page where it fits.

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
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from ..decode.video import FrameTimes, frame_times, read_sampled_frames
from ..errors import PaddleHubVideoError
from ..names import printable
from ..segments import segments_of, stretches
from .output_files import checked_target, write_checked

# How every report starts: what marks a file as one this project wrote (and so may replace).
REPORT_HEAD = ('<!DOCTYPE html><html lang="zh"><head><meta charset="utf-8">'
               '<meta name="generator" content="paddlehub_video report">')
REPORT_KIND = "a report written by paddlehub_video (hub run --report)"
Roles = Iterable[tuple[str, Iterable[str]]]

THUMBNAILS = 5
THUMB_HEIGHT = 144  # pixels: a scene can be recognised, and 5 fit side by side on a page
# Tick spacings in seconds: the smallest that gives at most MAX_TICKS ticks along a video is used.
TICK_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600)
MAX_TICKS = 10
# Tag colours (lanes, legend), distinct in colour and in print; more tags than colours reuse them.
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22")
# Lanes drawn at most per video (the tags holding the longest): more are no longer a picture one can read.
MAX_LANES = 40
MIN_LABELED_PERCENT = 7.0  # a segment narrower than this share of the axis has no room for its number
STYLE = """
body { font-family: "Noto Sans CJK SC", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "Microsoft YaHei",
       "PingFang SC", sans-serif; margin: 1.5em; color: #222; }
h1 { margin: 0 0 0.3em; }
.summary { border-collapse: collapse; margin-bottom: 1.2em; }
.summary th { text-align: left; font-weight: normal; color: #555; padding: 1px 1.2em 1px 0; }
.summary td { font-weight: bold; }
.video { border: 1px solid #ccc; border-radius: 6px; padding: 0.8em 1em; margin-bottom: 1.2em; }
.video h2 { font-size: 1.1em; margin: 0 0 0.2em; word-break: break-all; }
.facts { margin: 0 0 0.6em; color: #444; }
.strip { display: flex; gap: 6px; margin-bottom: 0.8em; }
.strip figure { margin: 0; flex: 0 1 256px; min-width: 0; }
.strip img { display: block; max-width: 100%; max-height: 144px; margin: 0 auto; border-radius: 3px; }
.strip figcaption { font-size: 0.8em; color: #444; text-align: center; }
.tag { display: flex; align-items: center; margin: 2px 0; }
.tag .name { width: 14em; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.tag .bar { background: #4a7bd0; height: 0.9em; margin-right: 0.5em; }
.lane { display: flex; align-items: stretch; height: 1.7em; }
.lane .name { width: 11em; flex: none; overflow: hidden; text-overflow: ellipsis; white-space: nowrap;
              line-height: 1.7em; padding-right: 0.5em; text-align: right; }
.track { position: relative; flex: 1; background: #f4f4f4; border-bottom: 1px solid #fff; }
.grid { position: absolute; top: 0; bottom: 0; width: 0; border-left: 1px solid #d4d4d4; }
.seg { position: absolute; top: 2px; bottom: 2px; border-radius: 2px; overflow: hidden; white-space: nowrap;
       font-size: 0.85em; font-weight: 600; line-height: 1.75em; padding-left: 3px; box-sizing: border-box; color: #000;
       text-shadow: 0 0 2px #fff, 0 0 2px #fff; }
.axis { position: relative; flex: 1; height: 1.4em; font-size: 0.8em; color: #333; }
.axis .tick { position: absolute; top: 0; transform: translateX(-50%); white-space: nowrap; }
.axis .tick.first { transform: none; }
.axis .tick.last { transform: translateX(-100%); }
.axis .tick::before { content: ""; position: absolute; left: 50%; top: -3px; height: 4px; border-left: 1px solid #777; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; border-radius: 2px; vertical-align: -0.1em;
          margin-right: 0.3em; }
.legend { border-collapse: collapse; margin: 0.8em 0 0.4em; font-size: 0.9em; }
.legend td, .legend th { padding: 1px 0.8em 1px 0; vertical-align: top; text-align: left; }
.legend th { font-weight: normal; color: #555; }
.legend td:first-child, .legend td:nth-child(2) { white-space: nowrap; }
.stretches { margin: 0.2em 0 0.8em; padding-left: 1.6em; }
.stretches .when { font-variant-numeric: tabular-nums; font-weight: bold; margin-right: 0.5em; }
.note { color: #555; font-size: 0.85em; margin: 0.3em 0; }
.failed li { color: #a00; }
@page { size: A4 landscape; margin: 12mm; }
@media print {
  body { margin: 0; font-size: 10.5pt; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  .video { break-inside: avoid; border-color: #999; }
}
"""


class Thumbnail(NamedTuple):
    """One frame of a video's strip: when it is shown (None if unknown) and its JPEG bytes."""

    time: float | None
    jpeg: bytes


class Strip(NamedTuple):
    """A video's thumbnails, and its duration in seconds (None where it could not be read)."""

    frames: list[Thumbnail]
    duration: float | None


NO_STRIP = Strip([], None)
Thumbnails = Callable[[str], Strip]


@dataclass(frozen=True)
class RunInfo:
    """What the report's summary says of the run besides its entries (None: not said)."""

    module: str | None = None
    threshold: float | None = None
    top_k: int | None = None
    window: float | None = None
    stride: float | None = None
    date: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


def thumbnails(path: str, count: int = THUMBNAILS) -> Strip:
    """`count` frames spread over the video as JPEG, THUMB_HEIGHT pixels high, each with its time (from
    the packets' timestamps); no frame if it cannot be read."""
    times = _frame_times(path)
    shown: list[float | None] = []

    def spread(n: int) -> list[int]:
        picked = sorted({min(n - 1, (2 * i + 1) * n // (2 * count)) for i in range(count)})
        known = times is not None and n == len(times.times)  # else the decoder counted other frames
        shown[:] = [times.times[i] if known else None for i in picked]  # type: ignore[union-attr]
        return picked

    try:
        frames = read_sampled_frames(path, spread, _small_jpeg)
    except (PaddleHubVideoError, ValueError):
        return NO_STRIP
    unique = dict(zip(frames, shown, strict=True))  # a still video: the same picture once
    return Strip([Thumbnail(time, jpeg) for jpeg, time in unique.items()], times.duration if times else None)


def _frame_times(path: str) -> FrameTimes | None:
    """The video's frame times, or None where its packets cannot be read."""
    try:
        return frame_times(path)
    except (PaddleHubVideoError, ValueError):
        return None


def _small_jpeg(rgb: np.ndarray) -> bytes:
    """An RGB frame scaled to THUMB_HEIGHT and encoded as JPEG."""
    height, width = rgb.shape[:2]
    size = (max(1, round(width * THUMB_HEIGHT / height)), THUMB_HEIGHT)
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()


def render_report(entries: Iterable[dict], title: str = "Video classification",
                  frames: Thumbnails = thumbnails, about: RunInfo | None = None) -> str:
    """The report's HTML for `classify` or `classify_timeline` entries; `frames(path)` gives the
    thumbnails, `about` what the summary says of the run."""
    entries = list(entries)
    answered = [(e, frames(e["path"])) for e in entries if "error" not in e]
    failed = [e for e in entries if "error" in e]
    parts = [f"{REPORT_HEAD}<title>{_text(title)}</title><style>{STYLE}</style></head><body><h1>{_text(title)}</h1>",
             _summary(about or RunInfo(), answered, failed)]
    parts += [_video_section(entry, strip) for entry, strip in answered]
    if failed:
        items = "".join(f"<li data-path=\"{_text(e['path'])}\">{_text(e['error'])}</li>" for e in failed)
        parts.append(f"<section class=\"failed\"><h2>Failed videos ({len(failed)})</h2><ul>{items}</ul></section>")
    parts.append("</body></html>")
    return "".join(parts)


def write_report(entries: Iterable[dict], path: str | Path, title: str = "Video classification",
                 frames: Thumbnails = thumbnails, never: Roles = (), about: RunInfo | None = None) -> Path:
    """Write `render_report(entries)` to `path` (UTF-8, atomically); returns the path.

    `path` may name a new file or a report written before (a symlink is followed); anything else,
    and any of `never` ((role, paths) of the run's other files), raises `output_files.Refused`.
    """
    check_report_target(path, never)  # before the thumbnails are made: a refusal costs nothing
    page = render_report(entries, title, frames, about)
    write_checked(path, page.encode("utf-8"), is_report, REPORT_KIND, never)
    return Path(path)


def check_report_target(path: str | Path, never: Roles = ()) -> None:
    """Refused (with the reason) unless `write_report` may write `path`."""
    checked_target(path, is_report, REPORT_KIND, never)


def is_report(head: bytes) -> bool:
    """Whether a file starting with `head` is a report this project wrote."""
    return head.startswith(REPORT_HEAD.encode("utf-8"))


def _summary(about: RunInfo, answered: Sequence[tuple[dict, Strip]], failed: Sequence[dict]) -> str:
    """The table at the top: the run's options, its videos answered and failed, their total duration."""
    durations = [_duration(entry, strip) for entry, strip in answered]
    known = [d for d in durations if d is not None]
    total = clock(sum(known)) if known else "unknown"
    if known and len(known) < len(durations):
        total += f" ({len(known)} of {len(durations)} videos)"
    rows = [("Module", about.module), ("Date", about.date), ("Threshold", _number(about.threshold)),
            ("top_k", about.top_k), ("Windows", _windows(about.window, about.stride)),
            ("Videos", f"{len(answered)} answered, {len(failed)} failed"), ("Total duration", total)]
    cells = "".join(f"<tr><th>{_text(name)}</th><td data-summary=\"{_text(name)}\">{_text(value)}</td></tr>"
                    for name, value in rows if value is not None)
    return f"<table class=\"summary\">{cells}</table>"


def _duration(entry: dict, strip: Strip) -> float | None:
    """A video's duration: its timeline's, else the one its thumbnails found."""
    return entry.get("duration") if entry.get("duration") is not None else strip.duration


def _windows(window: float | None, stride: float | None) -> str | None:
    """How a timeline run cut its videos, in words (None for a `classify` run)."""
    if window is None:
        return None
    return f"{window:g} s every {window if stride is None else stride:g} s"


def _video_section(entry: dict, strip: Strip) -> str:
    """One answered video: name, facts, thumbnails, tags (for a timeline, its segments over time)."""
    figures = "".join(
        f"<figure><img alt=\"frame at {clock(t.time) if t.time is not None else '?'}\" "
        f"src=\"data:image/jpeg;base64,{base64.b64encode(t.jpeg).decode()}\">"
        f"<figcaption>{clock(t.time) if t.time is not None else ''}</figcaption></figure>"
        for t in strip.frames)
    body = _timeline(entry) if "windows" in entry else _bars(entry["prediction"])
    duration = _duration(entry, strip)
    facts = [f"duration {clock(duration)}" if duration is not None else "duration unknown"]
    if "windows" in entry:
        facts.append(f"{len(entry['windows'])} windows")
    return (f"<section class=\"video\" data-path=\"{_text(entry['path'])}\"><h2>{_text(entry['path'])}</h2>"
            f"<p class=\"facts\">{', '.join(facts)}</p><div class=\"strip\">{figures}</div>{body}</section>")


def _bars(prediction: dict[str, float]) -> str:
    """Tags as horizontal bars, longest for the most probable."""
    rows = "".join(
        f"<div class=\"tag\" data-label=\"{_text(label)}\"><span class=\"name\">{_text(label)}</span>"
        f"<span class=\"bar\" style=\"width:{20 * prob:.2f}em\"></span><span class=\"prob\">{prob:.4f}</span></div>"
        for label, prob in prediction.items()
    )
    return f"<div class=\"tags\">{rows}</div>"


def _timeline(entry: dict) -> str:
    """The tags over time, from the entry's segments (made from its windows for a file written before
    segments existed): axis, one lane per tag in order of appearance, legend, stretches as text."""
    segments = entry["segments"] if "segments" in entry else segments_of(entry["windows"])
    if not segments:
        return "<p class=\"note\">No tag in any window.</p>"
    duration = entry["duration"] or max(s["end"] for s in segments) or 1.0
    by_label: dict[str, list[dict]] = {}  # in order of appearance
    for s in segments:
        by_label.setdefault(s["label"], []).append(s)
    colours = {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(by_label)}
    drawn = lane_labels(by_label)
    ticks = tick_times(duration)
    grid = "".join(f"<span class=\"grid\" style=\"left:{_percent(t, duration)}\"></span>" for t in ticks)
    lanes = "".join(_lane(label, by_label[label], colours[label], duration, grid) for label in drawn)
    axis = _axis(ticks, duration)
    more = len(by_label) - len(drawn)
    note = (f"<p class=\"note\">{more} more tags, each holding for less time, are in the legend only.</p>"
            if more else "")
    return (f"{_stretches(segments)}<div class=\"timeline\">{axis}{lanes}{axis}</div>{note}"
            f"{_legend(by_label, colours)}")


def lane_labels(by_label: dict[str, list[dict]], most: int = MAX_LANES) -> list[str]:
    """The tags that get a lane, in order of appearance: all of them, or the `most` that hold the longest."""
    held = {label: sum(s["end"] - s["start"] for s in own) for label, own in by_label.items()}
    kept = set(sorted(held, key=lambda label: -held[label])[:most])
    return [label for label in by_label if label in kept]


def tick_times(duration: float) -> list[float]:
    """Where the axis of a video of `duration` seconds has ticks: from 0, every step, the smallest of
    TICK_STEPS that makes at most MAX_TICKS ticks (the largest for a longer video)."""
    intervals = lambda step: math.floor(duration / step + 1e-9)  # noqa: E731
    step = next((s for s in TICK_STEPS if intervals(s) + 1 <= MAX_TICKS), TICK_STEPS[-1])
    return [round(k * step, 6) for k in range(intervals(step) + 1)]


def _axis(ticks: Sequence[float], duration: float) -> str:
    """The time axis: a label in mm:ss at each tick (the first and last kept inside the axis)."""
    marks = []
    for k, t in enumerate(ticks):
        place = " first" if k == 0 else " last" if t >= duration * 0.97 else ""
        marks.append(f"<span class=\"tick{place}\" data-tick=\"{clock(t)}\" "
                     f"style=\"left:{_percent(t, duration)}\">{clock(t)}</span>")
    return f"<div class=\"lane axis-row\"><span class=\"name\"></span><div class=\"axis\">{''.join(marks)}</div></div>"


def _lane(label: str, segments: Sequence[dict], colour: str, duration: float, grid: str) -> str:
    """One tag's lane: its segments as blocks in its colour, darker when more confident, each with its
    confidence written on it where it fits."""
    blocks = []
    for s in segments:
        width = 100 * (s["end"] - s["start"]) / duration
        text = confidence(s["confidence"]) if width >= MIN_LABELED_PERCENT else ""
        blocks.append(
            f"<span class=\"seg\" data-segment=\"{_text(_span_text(s))}\" title=\"{_text(_span_text(s))}\" "
            f"style=\"left:{_percent(s['start'], duration)};width:{width:.3f}%;"
            f"background:{_tint(colour, s['confidence'])}\">{text}</span>")
    return (f"<div class=\"lane\" data-label=\"{_text(label)}\"><span class=\"name\" title=\"{_text(label)}\">"
            f"<i class=\"swatch\" style=\"background:{colour}\"></i>{_text(label)}</span>"
            f"<div class=\"track\">{grid}{''.join(blocks)}</div></div>")


def _legend(by_label: dict[str, list[dict]], colours: dict[str, str]) -> str:
    """Each tag's colour, its time in all, and its segments written out (so a printout holds every value)."""
    rows = []
    for label, own in by_label.items():
        total = sum(s["end"] - s["start"] for s in own)
        spans = "; ".join(_span_text(s, label=False) for s in own)
        rows.append(f"<tr data-legend=\"{_text(label)}\"><td><i class=\"swatch\" style=\"background:{colours[label]}\">"
                    f"</i>{_text(label)}</td><td>{clock(total)}</td><td>{_text(spans)}</td></tr>")
    return ("<table class=\"legend\"><tr><th>Tag</th><th>In all</th><th>Segments (confidence: mean probability "
            "of its windows; darker bars are more confident)</th></tr>" + "".join(rows) + "</table>")


def _stretches(segments: Sequence[dict]) -> str:
    """The top tags of each stretch of the video, in words."""
    items = "".join(
        f"<li data-stretch=\"{clock(st.start)}-{clock(st.end)}\"><span class=\"when\">{clock(st.start)}–"
        f"{clock(st.end)}</span>{_text(', '.join(f'{label} {confidence(c)}' for label, c in st.tags))}</li>"
        for st in stretches(segments))
    return ("<p class=\"note\">What happens when: each stretch's leading tag, then the tags holding over at "
            f"least half of it</p><ol class=\"stretches\">{items}</ol>")


def _span_text(segment: dict, label: bool = True) -> str:
    """`label mm:ss–mm:ss (0.93)`."""
    where = f"{clock(segment['start'])}–{clock(segment['end'])} ({confidence(segment['confidence'])})"
    return f"{segment['label']} {where}" if label else where


def clock(seconds: float) -> str:
    """Seconds as mm:ss (h:mm:ss from an hour), with tenths where they are not whole."""
    tenths = round(seconds * 10)
    whole, tenth = divmod(tenths, 10)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"
    return f"{text}.{tenth}" if tenth else text


def confidence(value: float) -> str:
    """A segment's confidence as written: two decimals (0.85 and 0.96 read apart at a glance), three
    under 0.1 (a model with spread-out probabilities still shows which tag leads)."""
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


def _percent(seconds: float, duration: float) -> str:
    """A time as a CSS position along an axis of `duration` seconds."""
    return f"{min(100.0, 100 * seconds / duration):.3f}%"


def _tint(colour: str, confidence: float) -> str:
    """`colour` (#rrggbb) mixed with white: pale for a confidence near 0, the full colour at 1."""
    strength = 0.25 + 0.75 * max(0.0, min(1.0, confidence))
    channels = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return "#" + "".join(f"{round(255 - (255 - c) * strength):02x}" for c in channels)


def _number(value: float | None) -> str | None:
    """A number as written in the summary (None: not said)."""
    return None if value is None else f"{value:g}"


def _text(value: object) -> str:
    """`value` as HTML text or attribute value (a file name that is not UTF-8 shown as `names.printable` does)."""
    return html.escape(printable(str(value)), quote=True)
