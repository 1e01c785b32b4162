"""Segments from hand-made window predictions (`paddlehub_video.segments`): the rule README's "Segments" states."""
from __future__ import annotations

import pytest

from paddlehub_video.segments import MAX_GAP_SECONDS, Span, Stretch, segments_of, spans_of, stretches
from paddlehub_video.timeline import failed_entry, timeline_entry


def windows(size: float, stride: float, predictions: list[dict[str, float]]) -> list[dict]:
    """Windows of `size` seconds every `stride` seconds, with these predictions."""
    return [{"start": k * stride, "end": k * stride + size, "prediction": p} for k, p in enumerate(predictions)]


def spans(found: list[dict]) -> list[tuple]:
    return [(s["label"], s["start"], s["end"], s["confidence"]) for s in found]


def test_no_window_and_no_tag_make_no_segment():
    assert segments_of([]) == []
    assert segments_of(windows(2, 2, [{}, {}])) == []


def test_one_window_is_one_segment_per_tag_most_confident_first():
    found = segments_of(windows(4, 4, [{"dance": 0.5, "gym": 0.9}]))
    assert spans(found) == [("gym", 0, 4, 0.9), ("dance", 0, 4, 0.5)]


def test_side_by_side_windows_join_while_the_tag_lasts_and_confidence_is_their_mean():
    found = segments_of(windows(10, 10, [{"a": 0.9}, {"a": 0.7, "b": 0.6}, {"b": 0.8}, {"b": 0.4}]))
    assert spans(found) == [("a", 0, 20, 0.8), ("b", 10, 40, 0.6)]


def test_a_tag_that_disappears_and_comes_back_is_two_segments():
    found = segments_of(windows(10, 10, [{"a": 0.9}, {"b": 0.5}, {"a": 0.5}]))
    assert spans(found) == [("a", 0, 10, 0.9), ("b", 10, 20, 0.5), ("a", 20, 30, 0.5)]


def test_overlapping_windows_split_their_overlap_halfway_between_centres():
    # 4 s windows every 2 s: centres 2, 4, 6, 8; each speaks for the time nearest its centre.
    assert spans_of(windows(4, 2, [{}] * 4)) == [Span(0, 3), Span(3, 5), Span(5, 7), Span(7, 10)]
    found = segments_of(windows(4, 2, [{"a": 0.6}, {"a": 0.8}, {"b": 0.5}, {"b": 0.7}]))
    assert spans(found) == [("a", 0, 5, 0.7), ("b", 5, 10, 0.6)]  # no overlap: one lane per tag


def test_one_window_missing_a_tag_among_overlapping_ones_cuts_it_unless_the_gap_is_small():
    # 10 s every 5 s: the middle window speaks for 5 s, more than the tolerated gap.
    found = segments_of(windows(10, 5, [{"a": 0.9}, {"b": 0.3}, {"a": 0.9}]))
    assert spans(found) == [("a", 0, 7.5, 0.9), ("b", 7.5, 12.5, 0.3), ("a", 12.5, 20, 0.9)]
    # 2 s every 1 s: the window that missed it speaks for 1 s, which is bridged.
    found = segments_of(windows(2, 1, [{"a": 0.9}, {"b": 0.3}, {"a": 0.5}]))
    assert spans(found) == [("a", 0, 4, 0.7), ("b", 1.5, 2.5, 0.3)]
    assert spans(segments_of(windows(2, 1, [{"a": 0.9}, {}, {"a": 0.5}]), max_gap=0)) == [
        ("a", 0, 1.5, 0.9), ("a", 2.5, 4, 0.5)]


def test_stride_longer_than_the_window_bridges_a_small_unanalysed_gap_only():
    assert spans_of(windows(2, 3, [{}] * 3)) == [Span(0, 2), Span(3, 5), Span(6, 8)]  # the gaps belong to none
    assert spans(segments_of(windows(2, 3, [{"a": 0.4}, {"a": 0.6}, {"a": 0.8}]))) == [("a", 0, 8, 0.6)]
    assert spans(segments_of(windows(2, 5, [{"a": 0.4}, {"a": 0.6}]))) == [("a", 0, 2, 0.4), ("a", 5, 7, 0.6)]
    float_gap = [{"start": 0.2, "end": 1.2, "prediction": {"a": 0.5}},
                 {"start": 2.2, "end": 3.2, "prediction": {"a": 0.5}}]
    assert len(segments_of(float_gap)) == 1  # 2.2 - 1.2 == 1.0000000000000002: still a 1 s gap
    assert MAX_GAP_SECONDS == 1.0


def test_a_stretch_of_the_video_without_frames_is_not_claimed():
    # Windows follow the frames' timestamps: nothing between 2 s and 8 s.
    found = segments_of([{"start": 0.0, "end": 2.0, "prediction": {"a": 0.5}},
                         {"start": 8.0, "end": 10.0, "prediction": {"a": 0.7}}])
    assert spans(found) == [("a", 0, 2, 0.5), ("a", 8, 10, 0.7)]


def test_the_last_window_cut_by_the_end_of_the_video_and_windows_out_of_order():
    ordered = [{"start": 0.0, "end": 4.0, "prediction": {"a": 0.5}},
               {"start": 2.0, "end": 5.0, "prediction": {"a": 0.7}}]
    assert spans_of(ordered) == [Span(0, 2.75), Span(2.75, 5)]
    assert segments_of(ordered[::-1]) == segments_of(ordered)


def test_a_window_nested_in_another_never_makes_overlapping_spans():
    nested = [{"start": 0.0, "end": 10.0, "prediction": {"a": 0.5}},
              {"start": 1.0, "end": 2.0, "prediction": {"b": 0.5}}]
    first, second = spans_of(nested)
    assert first.end <= second.start <= second.end


def test_numbers_are_rounded_as_a_timelines_are():
    (found,) = segments_of(windows(0.1, 0.1, [{"a": 0.1}, {"a": 0.2}, {"a": 0.2}]))
    assert found == {"label": "a", "start": 0.0, "end": 0.3, "confidence": 0.166667}


def test_stretches_follow_the_leading_tag_with_the_tags_holding_over_half_of_each():
    found = segments_of(windows(10, 10, [{"a": 0.9, "b": 0.2}, {"a": 0.8, "b": 0.3, "c": 0.1}, {"c": 0.9},
                                         {}, {"d": 0.5}]))
    assert stretches(found, count=2) == [
        Stretch(0, 20, [("a", 0.85), ("c", 0.5)]),  # c holds over half of it, and beats b: two tags at most
        Stretch(20, 30, [("c", 0.5)]),
        Stretch(40, 50, [("d", 0.5)]),  # 30-40: no tag, no stretch
    ]
    assert stretches(found)[0] == Stretch(0, 20, [("a", 0.85), ("c", 0.5), ("b", 0.25)])
    assert stretches([]) == []


def test_a_tag_that_flickers_does_not_cut_a_stretch_into_crumbs():
    flicker = [{"a": 0.9, "x": 0.2} if k % 3 == 0 else {"a": 0.9} for k in range(12)]
    found = segments_of(windows(5, 5, flicker))
    assert len([s for s in found if s["label"] == "x"]) == 4
    assert stretches(found) == [Stretch(0, 60, [("a", 0.9)])]  # x holds over a third of it only


def test_a_stretch_lists_a_tag_by_the_time_weighted_mean_of_its_segments():
    found = [{"label": "a", "start": 0, "end": 10, "confidence": 0.9},
             {"label": "b", "start": 0, "end": 2, "confidence": 0.2}, {"label": "b", "start": 6, "end": 10,
                                                                      "confidence": 0.5}]
    assert stretches(found) == [Stretch(0, 10, [("a", 0.9), ("b", 0.4)])]  # (2 * 0.2 + 4 * 0.5) / 6


@pytest.mark.parametrize("entry", [timeline_entry("v.mp4", 20.0, windows(10, 10, [{"a": 0.9}, {"a": 0.7}])),
                                   failed_entry("v.mp4", "v.mp4: gone")])
def test_timeline_entries_carry_their_segments(entry):
    assert entry["segments"] == segments_of(entry["windows"])
