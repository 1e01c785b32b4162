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
from dataclasses import dataclass
from itertools import pairwise
from typing import NamedTuple

# Two segments of one tag at most this far apart are one: a window that misses a tag for a moment
# (or a second no window analysed) does not split what a person would call one scene.
MAX_GAP_SECONDS = 1.0
EPSILON = 1e-9  # a gap of exactly MAX_GAP_SECONDS stays one, whatever the float arithmetic (2.2 - 1.2 > 1.0)
DIGITS = 6  # times and confidences to the microsecond / millionth, as the windows' times
# The most tags written out per stretch (the report's "what happens when").
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


@dataclass
class _Run:
    """A segment being made: its span so far and its windows' probabilities of the tag."""

    start: float
    end: float
    probabilities: list[float]


def segments_of(windows: Sequence[dict], max_gap: float = MAX_GAP_SECONDS) -> list[dict]:
    """The segments of a timeline's `windows` (`{start, end, prediction}`), by the rule above: one
    pass over the windows, in proportion to their tags."""
    ordered = sorted(windows, key=lambda w: (w["start"], w["end"]))
    runs: dict[str, list[_Run]] = {}  # label -> its segments so far
    for window, span in zip(ordered, spans_of(ordered), strict=True):
        for label, probability in window["prediction"].items():
            own = runs.setdefault(label, [])
            if own and span.start - own[-1].end <= max_gap + EPSILON:  # the tag goes on (or comes back soon enough)
                own[-1].end = span.end
                own[-1].probabilities.append(probability)
            else:
                own.append(_Run(span.start, span.end, [probability]))
    found = [segment(label, run.start, run.end, sum(run.probabilities) / len(run.probabilities))
             for label, own in runs.items() for run in own]
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


def segment(label: str, start: float, end: float, confidence: float) -> dict:
    """One segment entry, its numbers rounded as a timeline's are."""
    return {"label": label, "start": round(start, DIGITS), "end": round(end, DIGITS),
            "confidence": round(confidence, DIGITS)}


def stretches(segments: Iterable[dict], count: int = STRETCH_TAGS) -> list[Stretch]:
    """The video in stretches that each have one leading tag (the most confident of the segments
    holding there), cut where the leader changes or where no tag holds (such time is left out).
    Each stretch lists its leader, then the other tags whose segments cover at least half of it
    (confidence: their segments' mean, weighted by the time they cover), at most `count` in all: a
    tag that flickers for a moment does not cut the story into crumbs. One sweep along the cuts,
    each piece costing the segments holding over it."""
    by_start = sorted(segments, key=lambda s: s["start"])
    by_end = sorted(by_start, key=lambda s: s["end"])
    cuts = sorted({t for s in by_start for t in (s["start"], s["end"])})
    holding: dict[int, dict] = {}
    opened = closed = 0
    found: list[_Stretching] = []
    for start, end in pairwise(cuts):
        while opened < len(by_start) and by_start[opened]["start"] <= start:
            holding[id(by_start[opened])] = by_start[opened]
            opened += 1
        while closed < len(by_end) and by_end[closed]["end"] <= start:
            holding.pop(id(by_end[closed]), None)
            closed += 1
        if not holding:
            continue
        leader = min(holding.values(), key=lambda s: (-s["confidence"], s["label"]))
        if not (found and found[-1].end == start and found[-1].leader["label"] == leader["label"]):
            found.append(_Stretching(start, start, leader, {}))
        found[-1].add(end, holding.values())
    return [stretching.stretch(count) for stretching in found]


@dataclass
class _Stretching:
    """A stretch being made: its span so far, its leader, and per other tag the (time, confidence)
    of the segments covering it."""

    start: float
    end: float
    leader: dict
    covered: dict[str, list[tuple[float, float]]]

    def add(self, end: float, holding: Iterable[dict]) -> None:
        """Extend to `end`, over which the segments `holding` hold."""
        for s in holding:
            if s["label"] != self.leader["label"]:
                self.covered.setdefault(s["label"], []).append((end - self.end, s["confidence"]))
        self.end = end

    def stretch(self, count: int) -> Stretch:
        """The leader, then the tags covering at least half of the stretch, most confident first."""
        others = [(label, round(sum(t * c for t, c in parts) / sum(t for t, _ in parts), DIGITS))
                  for label, parts in self.covered.items() if sum(t for t, _ in parts) >= (self.end - self.start) / 2]
        others.sort(key=lambda tag: (-tag[1], tag[0]))
        return Stretch(self.start, self.end, [(self.leader["label"], self.leader["confidence"]), *others][:count])
