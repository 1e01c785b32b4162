"""`classify_timeline(..., context="video")`: StNet run once over the whole video's segment sequence.

- the sequence program on one window's segments gives, through the head, the windowed program's
  probabilities, and on a longer sequence the same rows wherever a position's receptive field
  (SEQUENCE_HALO segments each side) lies inside the window; the rows next to the window's ends differ;
- chunked (with the halo) equals one run over the whole sequence;
- the grid, the chunks and the rows kept (pure functions, on hand-made data);
- the mode's name is validated, videotag refuses "video" clearly, and resumed windows never mix modes.

StNet with 10 segments on 64-pixel crops (as tests/test_stnet_dedup.py keeps ResNet-50 cheap).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import paddle
import pytest

from paddlehub_video.decode.sampling import sample_stnet_indices, segment_grid
from paddlehub_video.interfaces.results_file import WindowsFile, windows_path
from paddlehub_video.model.networks.layers import static_mode
from paddlehub_video.model.networks.stnet import (
    SEQUENCE_HALO,
    build_stnet_head_program,
    build_stnet_program,
    build_stnet_sequence_program,
    build_stnet_window_program,
)
from paddlehub_video.timeline import (
    Chunk,
    SequenceModel,
    chunk_features,
    chunks,
    fresh_inputs,
    sequence_windows,
    validate_context,
)
from tests.fixtures.publisher import REPO, PublisherHost
from tests.fixtures.videos import write_encoded_video
from tests.test_networks import load_params, random_params

NAME = "stnet_kinetics400"
SEG_NUM = 10
SEGLEN = 5
CROP = 64


# ---------------------------------------------------------------- the programs


@pytest.fixture(scope="module")
def programs() -> Any:
    """(run windowed, run sequence (the window program, then the sequence program), run head) on one scope
    holding random parameters for all of them."""
    with static_mode():
        scope = paddle.static.Scope()
        with paddle.static.scope_guard(scope):
            executor = paddle.static.Executor(paddle.CPUPlace())
            windowed, startup, _, windowed_fetch = build_stnet_program(seg_num=SEG_NUM, image_size=CROP)
            spatial, spatial_startup, _, spatial_fetch = build_stnet_window_program(CROP)
            temporal, temporal_startup, _, temporal_fetch = build_stnet_sequence_program(CROP)
            head, head_startup, _, head_fetch = build_stnet_head_program(seg_num=SEG_NUM)
            for program in (startup, spatial_startup, temporal_startup, head_startup):
                executor.run(program)
            rng = np.random.default_rng(11)
            load_params(windowed, random_params(windowed, rng, lambda name, s: 0.01 if name == "fc_0.w_0" else None))

    def run(program: Any, fetches: list, **feed: np.ndarray) -> np.ndarray:
        with static_mode(), paddle.static.scope_guard(scope):
            return executor.run(program, feed=feed, fetch_list=fetches)[0]

    def sequence(segments: np.ndarray) -> np.ndarray:
        return run(temporal, temporal_fetch, maps=run(spatial, spatial_fetch, windows=segments))

    return (lambda image: run(windowed, windowed_fetch, image=image), sequence,
            lambda features: run(head, head_fetch, features=features))


def segments(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (count, 3 * SEGLEN, CROP, CROP)).astype(np.float32)


def test_one_window_through_the_sequence_program_is_the_windowed_program(programs) -> None:
    windowed, sequence, head = programs
    window = segments(SEG_NUM, 1)
    rows = sequence(window)
    assert rows.shape == (SEG_NUM, 1024)
    expected = windowed(window[np.newaxis])
    got = head(rows[np.newaxis])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert expected.max() > 5 / 400  # not a flat distribution, so the comparison means something

    # Within a longer sequence, the rows whose receptive field lies inside the window are the same; the
    # rows at the window's ends see the neighbours instead of zeros.
    before, after = segments(6, 2), segments(5, 3)
    longer = sequence(np.concatenate([before, window, after]))
    inside = range(SEQUENCE_HALO, SEG_NUM - SEQUENCE_HALO)
    np.testing.assert_allclose(longer[[len(before) + p for p in inside]], rows[list(inside)], rtol=0, atol=1e-5)
    for edge in (0, SEQUENCE_HALO - 1, SEG_NUM - SEQUENCE_HALO, SEG_NUM - 1):
        assert np.abs(longer[len(before) + edge] - rows[edge]).max() > 1e-3


def chunked(sequence: Any, inputs: np.ndarray, size: int) -> np.ndarray:
    """The rows of every position of `inputs`, computed chunk by chunk with the halo."""
    planned = chunks(0, len(inputs), len(inputs), size, SEQUENCE_HALO)
    computed = (sequence(inputs[c.inputs.start:c.inputs.stop]) for c in planned)
    # One "window" per position (span 1): every row, in order.
    return np.concatenate(list(sequence_windows(range(len(inputs)), 1, planned, computed)))


@pytest.mark.parametrize("size", [SEG_NUM, 7, 1])
def test_chunked_equals_one_run_over_the_whole_sequence(programs, size) -> None:
    _, sequence, _ = programs
    inputs = segments(23, 4)
    whole = sequence(inputs)
    got = chunked(sequence, inputs, size)
    assert got.shape == whole.shape
    # Not bit for bit: the convolutions' sums run in another order for another number of segments.
    difference = float(np.abs(got - whole).max())
    print(f"chunks of {size}: max |difference| {difference:.3g} of rows up to {np.abs(whole).max():.3g}")
    assert difference <= 1e-5 * float(np.abs(whole).max())
    # Without the halo, the rows at the chunks' ends differ: the halo is what makes them equal.
    planned = [Chunk(c.outputs, c.outputs) for c in chunks(0, len(inputs), len(inputs), size, 0)]
    bare = np.concatenate(list(sequence_windows(range(len(inputs)), 1, planned,
                                                (sequence(inputs[c.inputs.start:c.inputs.stop]) for c in planned))))
    assert np.abs(bare - whole).max() > 1e-3


# ---------------------------------------------------------------- the grid, the chunks, the rows kept


def test_the_grid_takes_the_publishers_segments_of_a_window() -> None:
    # 150-frame windows, 25 segments: step 6, each segment from frame 2 of its step, as the publisher samples.
    grid = segment_grid(600, 150, 25, SEGLEN)
    assert (grid.step, grid.offset, grid.count) == (6, 2, 99)  # the 99th starts at 590 and ends at 594
    # The same frames, but for the publisher's wrap of a clip's last frame to its first (150 -> 0).
    assert grid.indices(range(25)) == sample_stnet_indices(150, 25, SEGLEN)[:-1] + [150]
    window_at_120 = [120 + i for i in sample_stnet_indices(150, 25, SEGLEN)]
    assert grid.indices(range(grid.nearest(120, 25), grid.nearest(120, 25) + 25)) == window_at_120[:-1] + [270]
    assert grid.nearest(123, 25) == 21 and grid.nearest(122, 25) == 20  # nearest: 123 is 20.5 steps, rounded up
    assert grid.nearest(580, 25) == grid.count - 25  # a last window is moved back to positions that exist
    # A video of one window: its 25 segments as classify takes them, the last one wrapping to frame 0.
    short = segment_grid(150, 150, 25, SEGLEN)
    assert short.count == 25 and short.indices(range(25)) == sample_stnet_indices(150, 25, SEGLEN)
    # Windows shorter than 25 frames (step 1) and a video shorter than 25 frames.
    assert segment_grid(20, 20, 25, SEGLEN).indices(range(25)) == sample_stnet_indices(20, 25, SEGLEN)
    assert segment_grid(100, 60, 25, SEGLEN).indices(range(2)) == [0, 1, 2, 3, 4, 2, 3, 4, 5, 6]


def test_chunks_are_aligned_and_carry_the_halo() -> None:
    assert chunks(0, 10, 10, 4, 2) == [Chunk(range(0, 6), range(0, 4)), Chunk(range(2, 10), range(4, 8)),
                                       Chunk(range(6, 10), range(8, 10))]
    # From position 5 (a resumed timeline): the chunk holding it, as an uninterrupted run makes it.
    assert chunks(5, 7, 10, 4, 2) == [Chunk(range(2, 10), range(4, 8))]
    # Chunks of equal lengths: 99 positions in chunks of at most 64 are two of 50 (the second one 49).
    assert chunks(0, 99, 99, 64, 4) == [Chunk(range(0, 54), range(0, 50)), Chunk(range(46, 99), range(50, 99))]
    with pytest.raises(ValueError, match="size of at least 1"):
        chunks(0, 10, 10, 0, 2)


def test_rows_are_kept_only_while_a_window_needs_them() -> None:
    planned = chunks(0, 9, 9, 3, 1)
    held: list[int] = []

    def computed():
        for chunk in planned:
            held.append(chunk.outputs.start)
            yield np.arange(chunk.inputs.start, chunk.inputs.stop, dtype=np.float32)[:, None]

    found = [w[:, 0].tolist() for w in sequence_windows([0, 2, 2, 5], 4, planned, computed())]
    assert found == [[0, 1, 2, 3], [2, 3, 4, 5], [2, 3, 4, 5], [5, 6, 7, 8]]
    assert held == [0, 3, 6]


def test_each_position_goes_through_the_position_model_once_and_no_frame_is_held_meanwhile() -> None:
    planned = chunks(0, 18, 18, 6, 2)  # inputs 0-8, 4-14, 10-18: each shares 4 positions with the one before
    assert fresh_inputs(planned) == [range(0, 8), range(8, 14), range(14, 18)]
    frame = np.zeros((4, 4, 3), np.uint8)
    lists: list[list] = []

    def frames():
        for fresh in fresh_inputs(planned):
            # Each position's frames filled with its number, SEGLEN per position.
            lists.append([frame + p for p in fresh for _ in range(SEGLEN)])
            yield lists[-1]

    seen: list[int] = []

    def position(frames: np.ndarray) -> np.ndarray:
        assert frames.shape == (SEGLEN, 4, 4, 3) and len(set(frames[:, 0, 0, 0])) == 1
        seen.append(int(frames[0, 0, 0, 0]))
        return np.full((2, 3), float(frames[0, 0, 0, 0]), np.float32)

    fed: list[list[int]] = []

    def features(inputs: np.ndarray) -> np.ndarray:
        assert not lists[-1]  # the chunk's frames are given back before the sequence runs
        fed.append(inputs[:, 0, 0].astype(int).tolist())
        return inputs[:, :1, 0]

    model = SequenceModel(grid=None, position=position, features=features, head=None, span=1, halo=2, chunk=6)
    rows = list(chunk_features(planned, frames(), model, SEGLEN))
    assert seen == list(range(18))  # each position once, in order, though the chunks overlap
    assert fed == [list(c.inputs) for c in planned]  # each chunk fed all its inputs, the shared ones kept
    assert [r[:, 0].tolist() for r in rows] == [list(map(float, c.inputs)) for c in planned]
    # Without the halo nothing is shared; from a later chunk (a resumed timeline) its inputs are all fresh.
    assert fresh_inputs(chunks(0, 18, 18, 6, 0)) == [c.inputs for c in chunks(0, 18, 18, 6, 0)]
    assert fresh_inputs(chunks(9, 18, 18, 6, 2))[0] == range(4, 14)


def test_the_context_is_validated() -> None:
    assert validate_context("window") == "window" and validate_context("video") == "video"
    for bad in ("Video", "", None, 1):
        with pytest.raises(ValueError, match="context must be one of 'window', 'video'"):
            validate_context(bad)


# ---------------------------------------------------------------- the module


@pytest.fixture(scope="module")
def stnet(mirror: PublisherHost) -> Any:
    import paddlehub as hub  # not at import: conftest sets HUB_HOME first

    settings = {"sampling": {"seg_num": SEG_NUM}, "preprocess": {"short_size": CROP, "crop_size": CROP}}
    return hub.Module(directory=str(REPO / NAME), config=mirror.config(NAME, **settings))


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """250 frames at 25 fps (10 s): 2 s windows of 50 frames, a grid step of 5 frames, 49 positions."""
    return write_encoded_video(tmp_path_factory.mktemp("context") / "v.mp4", 250, 64, 48, "libx264", {"bf": "2"})


def every_class(module: Any, path: Path, context: str, **options: Any) -> list[dict]:
    """The windows of `path`'s timeline in `context`, with every class's probability."""
    every = len(module.class_names())
    (entry,) = module.classify_timeline([str(path)], top_k=every, threshold=0.0, context=context, **options)
    assert "error" not in entry, entry.get("error")
    return entry["windows"]


def with_chunk(module: Any, monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    """`module`'s sequence model with chunks of `size` positions."""
    make = type(module).sequence_model
    monkeypatch.setattr(module, "sequence_model", lambda use_gpu: make(module, use_gpu)._replace(chunk=size))


def test_video_context_windows_are_the_exact_ones_with_neighbours(stnet, video, monkeypatch) -> None:
    exact = every_class(stnet, video, "window", window_seconds=2, stride_seconds=0.5)
    whole = every_class(stnet, video, "video", window_seconds=2, stride_seconds=0.5)
    assert [(w["start"], w["end"]) for w in whole] == [(w["start"], w["end"]) for w in exact]
    differences = [abs(w["prediction"][c] - e["prediction"][c])
                   for w, e in zip(whole, exact, strict=True) for c in w["prediction"]]
    assert 0 < max(differences) < 0.5  # neighbours instead of zeros at the ends: close, not equal
    # Chunks of one window's positions (SEG_NUM, the least) give the same as one chunk for the whole video.
    with_chunk(stnet, monkeypatch, SEG_NUM)
    small = every_class(stnet, video, "video", window_seconds=2, stride_seconds=0.5)
    with_chunk(stnet, monkeypatch, 10_000)
    one = every_class(stnet, video, "video", window_seconds=2, stride_seconds=0.5)
    gap = max(abs(a["prediction"][c] - b["prediction"][c])
              for a, b in zip(small, one, strict=True) for c in a["prediction"])
    print(f"video context, chunks of {SEG_NUM} vs one chunk: max |dp| {gap:.3g}")
    assert gap < 1e-6  # 0 here (oneDNN, AMD EPYC): the predictor's sums do not depend on the chunk's length


def test_each_grid_position_goes_through_the_windows_model_once(stnet, video, monkeypatch) -> None:
    """Chunks of SEG_NUM positions share 2 x SEQUENCE_HALO inputs with the one before: kept, not run again."""
    make = type(stnet).sequence_model
    calls: list[bytes] = []

    def model(use_gpu: bool) -> Any:
        made = make(stnet, use_gpu)

        def position(frames: np.ndarray) -> np.ndarray:
            calls.append(frames.tobytes())
            return made.position(frames)

        return made._replace(position=position, chunk=SEG_NUM)

    monkeypatch.setattr(stnet, "sequence_model", model)
    every_class(stnet, video, "video", window_seconds=2, stride_seconds=0.5)
    # The grid's 49 positions (250 frames, a step of 5), each once: not 49 + 4 x 8 (5 chunks, 8 shared at each join).
    assert len(calls) == 49


def test_one_window_over_a_short_video_is_its_classify(stnet, video) -> None:
    """A window covering the whole video: the grid is the clip's sampling, the sequence the window's."""
    (only,) = every_class(stnet, video, "video", window_seconds=20)
    (classified,) = stnet.classify([str(video)], top_k=len(stnet.class_names()))
    gap = max(abs(only["prediction"][c] - p) for c, p in classified["prediction"].items())
    print(f"one window over the video vs classify: max |dp| {gap:.3g}")
    assert gap < 1e-5


def test_videotag_refuses_the_video_context(mirror: PublisherHost, video) -> None:
    videotag = mirror.small_module("videotag_tsn_lstm")
    with pytest.raises(ValueError, match="context='video' is for StNet; videotag_tsn_lstm has no whole-video"):
        videotag.classify_timeline([str(video)], window_seconds=2, context="video")
    with pytest.raises(ValueError, match="context must be one of"):
        videotag.classify_timeline([str(video)], window_seconds=2, context="clip")


def stop_heads(module: Any, monkeypatch: pytest.MonkeyPatch, stop: int | None = None) -> list:
    """The windows whose probabilities `module`'s video-context timelines compute from now on (one entry per
    window); a Ctrl-C when window `stop` (from 0) would be computed."""
    done: list = []
    make = type(module).sequence_model

    def model(use_gpu: bool) -> Any:
        made = make(module, use_gpu)

        def head(rows: np.ndarray) -> np.ndarray:
            if len(done) == stop:
                raise KeyboardInterrupt
            done.append(rows.shape)
            return made.head(rows)

        return made._replace(head=head)

    monkeypatch.setattr(module, "sequence_model", model)
    return done


OPTIONS = ["--timeline", "2", "--stride", "0.5"]  # 17 windows


def test_a_stopped_video_context_timeline_resumes_and_never_mixes_contexts(stnet, video, tmp_path, monkeypatch,
                                                                           capsys) -> None:
    args = ["--input_path", str(video), *OPTIONS, "--timeline-context", "video"]
    whole = tmp_path / "whole.jsonl"
    assert len(stop_heads(stnet, monkeypatch)) == 0
    stnet.run_cmd([*args, "--output", str(whole)])
    stopped = tmp_path / "stopped.jsonl"
    stop_heads(stnet, monkeypatch, stop=10)
    with pytest.raises(SystemExit) as interrupted:
        stnet.run_cmd([*args, "--output", str(stopped)])
    assert interrupted.value.code == 130
    kept = [json.loads(line) for line in windows_path(stopped).read_text(encoding="utf-8").splitlines()]
    assert len(kept) == 10 and all(k["options"]["context"] == "video" for k in kept)
    rest = stop_heads(stnet, monkeypatch)
    stnet.run_cmd([*args, "--output", str(stopped)])
    assert len(rest) == 7  # only the windows left; their chunks are those of an uninterrupted run
    assert stopped.read_bytes() == whole.read_bytes()

    # The other context's finished windows (here made up) are not taken, in either direction.
    exact = tmp_path / "exact.jsonl"
    stnet.run_cmd(["--input_path", str(video), *OPTIONS, "--output", str(exact)])
    capsys.readouterr()
    for context, expected in (("video", whole), ("window", exact)):
        output = tmp_path / f"mixed-{context}.jsonl"
        other = {"module": NAME, "window": 2.0, "stride": 0.5, "top_k": 5, "threshold": 0.0}
        if context == "window":
            other["context"] = "video"
        with WindowsFile(windows_path(output), set()) as store:
            for window in json.loads(expected.read_text(encoding="utf-8"))["windows"][:10]:
                store.add(str(video), other, {**window, "prediction": {"made up": 0.5}})
        stnet.run_cmd(["--input_path", str(video), *OPTIONS, "--timeline-context", context, "--output", str(output)])
        assert output.read_bytes() == expected.read_bytes()


def test_the_command_line_checks_the_context(stnet, mirror, video, capsys) -> None:
    for argv, message in (
        ([*OPTIONS, "--timeline-context", "clip"], "invalid choice: 'clip'"),
        (["--timeline-context", "video"], "--timeline-context needs --timeline"),
    ):
        with pytest.raises(SystemExit) as usage:
            stnet.run_cmd(["--input_path", str(video), *argv])
        assert usage.value.code == 2 and message in capsys.readouterr().err
    videotag = mirror.small_module("videotag_tsn_lstm")
    with pytest.raises(SystemExit) as usage:
        videotag.run_cmd(["--input_path", str(video), *OPTIONS, "--timeline-context", "video"])
    assert usage.value.code == 2
    assert "--timeline-context video: context='video' is for StNet" in capsys.readouterr().err
