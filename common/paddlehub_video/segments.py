"""Segments: a timeline's windows merged into `{label, start, end, confidence}` spans per tag.

The rule (README, "Segments"), for each tag separately, on the windows in time order:

1. A window *shows* a tag when the tag is in its prediction, i.e. among its `top_k` tags at or
   over the `threshold` (the prediction is already filtered so; nothing else is thresholded here).
2. Each window speaks for the part of its span nearest its centre: where two windows overlap, the
   overlap is split halfway between their centres. So the spans of the windows never overlap, side
   by side windows speak for exactly their span, and a window that does not show the tag cuts a
   segment even when its neighbours overlap it (no segment of a tag overlaps another of the same
   tag: one lane per tag). Time that no window analysed (stride longer than the window, a stretch
   of the video without frames) belongs to none.
3. Consecutive windows that show the tag form a segment, from the start of the first one's span to
   the end of the last one's; a gap of at most MAX_GAP_SECONDS between two segments of the same tag
   (unanalysed time, or a window that missed it) is bridged, so a tag does not flicker apart.
4. `confidence`: the mean of the tag's probability over the windows that show it in the segment.
   The mean, not the maximum: a long span is rated by its windows on the whole, not by its best one.

Segments come sorted by start, then by confidence (highest first), then label. Pure: no I/O.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

# Two segments of one tag at most this far apart are one: a window that misses a tag for a moment
# (or a second no window analysed) does not split what a person would call one scene.
MAX_GAP_SECONDS = 1.0
DIGITS = 6  # times and confidences to the microsecond / millionth, as the windows' times
# Labels of each stretch written out in the report, most confident first.
STRETCH_TAGS = 3


class Span(NamedTuple):
    """The part of the video one window speaks for."""

    start: float
    end: float


class Stretch(NamedTuple):
    """A stretch of the video with one leading tag: [(label, confidence)], the leader first (`stretches`)."""

    start: float
    end: float
    tags: list[tuple[str, float]]


def segments_of(windows: Sequence[dict], max_gap: float = MAX_GAP_SECONDS) -> list[dict]:
    """The segments of a timeline's `windows` (`{start, end, prediction}`), by the rule above."""
    ordered = sorted(windows, key=lambda w: (w["start"], w["end"]))
    spans = spans_of(ordered)
    found = []
    for label in dict.fromkeys(label for window in ordered for label in window["prediction"]):
        found += _segments_of_tag(label, ordered, spans, max_gap)
    return sorted(found, key=lambda s: (s["start"], -s["confidence"], s["label"]))


def spans_of(windows: Sequence[dict]) -> list[Span]:
    """What each window (in time order) speaks for: its span, cut halfway between its centre and its
    neighbours' where they overlap it."""
    centres = [(w["start"] + w["end"]) / 2 for w in windows]
    spans: list[Span] = []
    for k, window in enumerate(windows):
        start = window["start"] if k == 0 else max(window["start"], (centres[k - 1] + centres[k]) / 2)
        end = window["end"] if k == len(windows) - 1 else min(window["end"], (centres[k] + centres[k + 1]) / 2)
        start = max(start, spans[-1].end) if spans else start  # windows nested in others: never overlap
        spans.append(Span(start, max(start, end)))
    return spans


def _segments_of_tag(label: str, windows: Sequence[dict], spans: Sequence[Span], max_gap: float) -> list[dict]:
    """One tag's segments: its windows' spans joined while they are at most `max_gap` apart."""
    runs: list[tuple[float, float, list[float]]] = []
    for window, span in zip(windows, spans):
        if label not in window["prediction"]:
            continue
        probability = window["prediction"][label]
        if runs and span.start - runs[-1][1] <= max_gap:
            start, _, probabilities = runs[-1]
            runs[-1] = (start, span.end, [*probabilities, probability])
        else:
            runs.append((span.start, span.end, [probability]))
    return [segment(label, start, end, sum(ps) / len(ps)) for start, end, ps in runs]


def segment(label: str, start: float, end: float, confidence: float) -> dict:
    """One segment entry, its numbers rounded as a timeline's are."""
    return {"label": label, "start": round(start, DIGITS), "end": round(end, DIGITS),
            "confidence": round(confidence, DIGITS)}


def stretches(segments: Iterable[dict], count: int = STRETCH_TAGS) -> list[Stretch]:
    """The video in stretches that each have one leading tag (the most confident of the segments
    holding there), cut where the leader changes or where no tag holds (such time is left out).
    Each stretch lists its leader, then the other tags whose segments cover at least half of it
    (confidence: their segments' mean, weighted by the time they cover), at most `count` in all: a
    tag that flickers for a moment does not cut the story into crumbs."""
    segments = list(segments)
    cuts = sorted({t for s in segments for t in (s["start"], s["end"])})
    found: list[tuple[float, float, dict]] = []
    for start, end in zip(cuts, cuts[1:]):
        holding = [s for s in segments if s["start"] <= start and end <= s["end"]]
        if not holding:
            continue
        leader = min(holding, key=lambda s: (-s["confidence"], s["label"]))
        if found and found[-1][1] == start and found[-1][2]["label"] == leader["label"]:
            found[-1] = (found[-1][0], end, found[-1][2])
        else:
            found.append((start, end, leader))
    return [Stretch(start, end, _stretch_tags(start, end, leader, segments, count)) for start, end, leader in found]


def _stretch_tags(start: float, end: float, leader: dict, segments: Sequence[dict],
                  count: int) -> list[tuple[str, float]]:
    """The leader, then the tags covering at least half of [start, end], most confident first."""
    covered: dict[str, list[tuple[float, float]]] = {}
    for s in segments:
        overlap = min(end, s["end"]) - max(start, s["start"])
        if s["label"] != leader["label"] and overlap > 0:
            covered.setdefault(s["label"], []).append((overlap, s["confidence"]))
    others = [(label, round(sum(t * c for t, c in parts) / sum(t for t, _ in parts), DIGITS))
              for label, parts in covered.items() if sum(t for t, _ in parts) >= (end - start) / 2]
    others.sort(key=lambda tag: (-tag[1], tag[0]))
    return [(leader["label"], leader["confidence"]), *others][:count]
