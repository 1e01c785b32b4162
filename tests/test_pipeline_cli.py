"""The video pipeline (order, overlap, per-video errors) and the shared command-line helpers."""
import argparse
import gc
import threading
import time
import weakref

import numpy as np
import pytest

from paddlehub_video.errors import VideoDecodeError
from paddlehub_video.interfaces.cli import build_parser, input_paths, parse_bool, read_path_list
from paddlehub_video.pipeline import VideoPipeline, validate_paths


def test_outcomes_in_input_order_with_errors_in_place():
    def load(path):
        if path == "bad":
            raise VideoDecodeError(path, "no decodable video frame")
        if path == "boom":
            raise RuntimeError("predictor exploded")
        return float(len(path))

    outcomes = list(VideoPipeline(load, lambda x: np.array([x])).run(["a", "bad", "ccc", "boom", "a"]))
    assert [o.path for o in outcomes] == ["a", "bad", "ccc", "boom", "a"]
    assert [None if o.output is None else o.output[0] for o in outcomes] == [1.0, None, 3.0, None, 1.0]
    assert outcomes[1].error == "bad: no decodable video frame"
    assert outcomes[3].error == "boom: RuntimeError: predictor exploded"


def test_next_video_decodes_while_the_current_one_is_inferred():
    loading_second = threading.Event()

    def load(path):
        if path == "second":
            loading_second.set()
        return path

    def infer(path):
        if path == "first":  # the second load must start before the first inference ends
            assert loading_second.wait(timeout=5)
        return np.zeros(1)

    outcomes = list(VideoPipeline(load, infer).run(["first", "second"]))
    assert [o.error for o in outcomes] == [None, None]


def test_at_most_one_video_is_decoded_ahead():
    loaded, inferred = [], []

    def load(path):
        loaded.append(path)
        return path

    def infer(path):
        time.sleep(0.01)
        assert len(loaded) - len(inferred) <= 2  # the current video and the next one
        inferred.append(path)
        return np.zeros(1)

    outcomes = list(VideoPipeline(load, infer).run([str(i) for i in range(6)]))
    assert all(o.error is None for o in outcomes)


class _Decoded:
    """A video's decoded inputs, weakly referenceable: the tests count how many are alive."""

    def __init__(self, path: str):
        self.path = path


def _counting_pipeline(ahead: bool) -> tuple[VideoPipeline, list[tuple[str, str, int]], dict[str, threading.Event]]:
    """A pipeline whose load and infer record (event, path, decoded inputs alive at that moment), and an
    event per path set once its load has recorded."""
    alive: weakref.WeakSet = weakref.WeakSet()
    events: list[tuple[str, str, int]] = []
    loaded: dict[str, threading.Event] = {}

    def load(path: str) -> _Decoded:
        gc.collect()  # only what is still referenced counts, not a cycle waiting for the collector
        events.append(("load", path, len(alive)))
        loaded.setdefault(path, threading.Event()).set()
        decoded = _Decoded(path)
        alive.add(decoded)
        return decoded

    def infer(decoded: _Decoded) -> np.ndarray:
        events.append(("infer", decoded.path, len(alive)))
        return np.zeros(1)

    return VideoPipeline(load, infer, ahead=ahead), events, loaded


def test_without_ahead_one_video_is_decoded_at_a_time():
    """Each decode starts after the video before was inferred and its inputs were released, even while
    the caller still holds that video's outcome (a paused stream)."""
    pipeline, events, loaded = _counting_pipeline(ahead=False)
    paths = [str(i) for i in range(5)]
    outcomes = []
    for index, outcome in enumerate(pipeline.run(paths)):
        outcomes.append(outcome)
        if index + 1 < len(paths):  # the stream paused here until the next load has counted
            assert loaded.setdefault(paths[index + 1], threading.Event()).wait(timeout=30)
    assert [o.error for o in outcomes] == [None] * 5
    assert events == [(kind, p, alive) for p in paths for kind, alive in (("load", 0), ("infer", 1))]


def test_with_ahead_at_most_two_videos_are_decoded_at_once():
    """The next video decodes while the current one is inferred, and the one before is gone by then."""
    pipeline, events, _ = _counting_pipeline(ahead=True)
    paths = [str(i) for i in range(6)]
    assert all(o.error is None for o in pipeline.run(paths))
    assert max(alive for kind, _, alive in events if kind == "load") <= 1  # the current one only
    assert max(alive for _, _, alive in events) <= 2


@pytest.mark.parametrize("bad", ["a.mp4", b"a.mp4", None, 3, {"a.mp4"}])
def test_paths_must_be_a_list(bad):
    with pytest.raises(ValueError, match="paths must be a list"):
        validate_paths(bad)


def test_paths_may_be_a_tuple_of_path_likes(tmp_path):
    assert validate_paths((tmp_path / "a b.mp4", "c.mp4")) == [str(tmp_path / "a b.mp4"), "c.mp4"]


@pytest.mark.parametrize("text,value", [
    ("True", True), ("False", False), ("1", True), ("0", False),  # the published modules' (Python literals)
    ("true", True), ("FALSE", False), (" True ", True), ("yes", True), ("No", False), ("on", True), ("OFF", False),
])  # the words of a PADDLEHUB_VIDEO_* switch (environment.flag)
def test_use_gpu_takes_the_spellings_readme_lists(text, value):
    assert parse_bool(text) is value
    parser = build_parser("m", "d", top_k=5, threshold=0.0)
    assert parser.parse_args(["--use_gpu", text]).use_gpu is value


def test_use_gpu_alone_means_true_as_serving_and_fleet_take_it():
    parser = build_parser("m", "d", top_k=5, threshold=0.0)
    assert parser.parse_args(["--use_gpu"]).use_gpu is True
    args = parser.parse_args(["--use_gpu", "--input_path", "a.mp4", "b.mp4"])
    assert (args.use_gpu, args.input_path) == (True, ["a.mp4", "b.mp4"])
    assert parser.parse_args(["--input_path", "a.mp4"]).use_gpu is False


@pytest.mark.parametrize("text", ["maybe", "y", "n", "2", "None", "'True'", "(True)", ""])
def test_use_gpu_refuses_every_other_word_saying_what_it_takes(text, capsys):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_bool(text)
    parser = build_parser("m", "d", top_k=5, threshold=0.0)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--input_path", "a.mp4", "--use_gpu", text])
    assert info.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    expected = "expected True or False (or 1/0, yes/no, on/off)"
    assert error == f"hub run m: error: argument --use_gpu: {expected}, got {text!r}"


def test_list_file_skips_blanks_and_comments_and_keeps_spaces(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("# header\n\n/a b/c.mp4\r\n   \n  # indented\nd.mp4\n", encoding="utf-8")
    assert read_path_list(listing) == ["/a b/c.mp4", "d.mp4"]


def test_input_path_then_listed_paths(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("x.mp4\n", encoding="utf-8")
    parser = build_parser("m", "d", top_k=5, threshold=0.0)
    args = parser.parse_args(["--input_path", "first.mp4", "--input_file", str(listing), "--batch_size", "4"])
    assert input_paths(parser, args) == ["first.mp4", "x.mp4"]
    assert (args.top_k, args.threshold, args.use_gpu) == (5, 0.0, False)


def test_no_input_is_a_usage_error(capsys):
    parser = build_parser("m", "d", top_k=5, threshold=0.0)
    with pytest.raises(SystemExit) as info:
        input_paths(parser, parser.parse_args([]))
    assert info.value.code == 2
    assert "--input_path" in capsys.readouterr().err


def test_unreadable_list_file_is_a_usage_error(tmp_path, capsys):
    parser = build_parser("m", "d", top_k=5, threshold=0.0)
    with pytest.raises(SystemExit):
        input_paths(parser, parser.parse_args(["--input_file", str(tmp_path / "missing.txt")]))
    assert "missing.txt" in capsys.readouterr().err


@pytest.mark.parametrize("argv,option", [
    (["--top_k", "0"], "--top_k"),
    (["--top_k", "-3"], "--top_k"),
    (["--top_k", "2.5"], "--top_k"),
    (["--threshold", "2"], "--threshold"),
    (["--threshold", "-0.1"], "--threshold"),
    (["--threshold", "nan"], "--threshold"),
    (["--threshold", "high"], "--threshold"),
    (["--use_gpu", "maybe"], "--use_gpu"),
])
def test_a_bad_option_value_is_a_usage_error_with_one_line(argv, option, capsys):
    parser = build_parser("m", "d", top_k=5, threshold=0.0)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--input_path", "a.mp4", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: hub run m")
    error_lines = [line for line in err.splitlines() if "error:" in line]
    assert len(error_lines) == 1, err
    assert error_lines[0].startswith(f"hub run m: error: argument {option}: expected "), err
    assert error_lines[0].endswith(f"got {argv[1]!r}"), err


@pytest.mark.parametrize("argv,hint", [
    (["a.mp4"], True),  # as other tools take a video
    (["--input_path", "a.mp4", "--top_k", "3", "b.mp4"], True),
    (["--input_path", "a.mp4", "--no_such_option"], False),
])
def test_an_unknown_argument_is_a_usage_error_a_bare_path_hints_at_input_path(argv, hint, capsys):
    parser = build_parser("m", "d", top_k=5, threshold=0.0)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(argv)
    assert info.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith(f"hub run m: error: unrecognized arguments: {argv[-1]}"), error
    assert ("videos go after --input_path: --input_path a.mp4 b.mp4 videos/" in error) is hint, error


def test_good_option_values_are_taken():
    parser = build_parser("m", "d", top_k=5, threshold=0.0)
    args = parser.parse_args(["--top_k", "3396", "--threshold", "1", "--use_gpu", "False"])
    assert (args.top_k, args.threshold, args.use_gpu, args.list_labels) == (3396, 1.0, False, False)
    assert parser.parse_args(["--threshold", "0"]).threshold == 0.0
