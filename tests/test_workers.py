"""Several videos at once (`runtime.workers`): each worker runs its own videos on its own predictor
(a clone sharing the weights); the results are those of one worker, in input order, with the same
per-video errors. The module runs with the SMALL settings on the simulated publisher's weights.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.fixtures.publisher import REPO, SMALL, PublisherHost

NAME = "videotag_tsn_lstm"


def module_with(mirror: PublisherHost, workers: int):
    import paddlehub as hub  # not at import: conftest sets HUB_HOME first

    settings = {**SMALL, "runtime": {"workers": workers}}
    return hub.Module(directory=str(REPO / NAME), config=mirror.config(NAME, **settings))


@pytest.fixture(scope="module")
def paths(short_video: Path, portrait_video: Path, long_video: Path, tmp_path_factory) -> list[str]:
    missing = str(tmp_path_factory.mktemp("workers") / "missing.mp4")
    return [str(short_video), missing, str(portrait_video), str(long_video), str(short_video)]


def test_two_workers_give_one_workers_results_in_order(mirror: PublisherHost, paths: list[str]) -> None:
    one, two = module_with(mirror, 1), module_with(mirror, 2)
    expected = one.classify(paths, threshold=0.0, top_k=5)
    seen: set[str] = set()
    model = two.forward

    def spy(frames, predictors):  # which threads run the network
        seen.add(threading.current_thread().name)
        return model(frames, predictors)

    two.forward = spy
    assert two.classify(paths, threshold=0.0, top_k=5) == expected
    assert [entry["path"] for entry in expected] == paths
    assert "error" in expected[1] and "missing.mp4" in expected[1]["error"]
    assert len(seen) == 2  # both workers ran videos
    # Worker 1 has its own predictor (a clone), not worker 0's.
    assert two.predictors(False, 1)["tsn"] is not two.predictors(False, 0)["tsn"]


def test_features_with_two_workers(mirror: PublisherHost, paths: list[str]) -> None:
    one, two = module_with(mirror, 1), module_with(mirror, 2)
    for a, b in zip(one.extract_features(paths), two.extract_features(paths), strict=True):
        assert a["path"] == b["path"] and a.get("error") == b.get("error")
        if "error" not in a:
            assert (a["tsn_features"] == b["tsn_features"]).all()


def test_a_stream_left_early_releases_its_workers(mirror: PublisherHost, paths: list[str]) -> None:
    two = module_with(mirror, 2)
    stream = two.classify_stream(paths * 2)
    assert next(stream)["path"] == paths[0]
    stream.close()
    for thread in threading.enumerate():
        if thread.name.startswith("paddlehub_video-worker"):
            thread.join(timeout=60)
            assert not thread.is_alive()


def test_hub_run_workers_option(mirror: PublisherHost, short_video: Path) -> None:
    from paddlehub_video.interfaces.cli import build_parser

    parser = build_parser(NAME, "", top_k=5, threshold=0.0)
    assert parser.parse_args(["--input_path", "x"]).workers is None  # automatic
    assert parser.parse_args(["--input_path", "x", "--workers", "3"]).workers == 3
    for bad in ("0", "-1", "two"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--input_path", "x", "--workers", bad])
    module = module_with(mirror, 1)
    asked = []
    outcomes = module.outcomes

    def spy(paths, use_gpu, model=None, workers=None):
        asked.append(workers)
        return outcomes(paths, use_gpu, model, workers)

    module.outcomes = spy
    module.run_cmd(["--input_path", str(short_video), "--workers", "2"])
    assert asked == [2]  # this run's choice, passed to the call
    assert module.workers() == 1 and module.settings.runtime.workers == 1  # and not kept for the next call


@pytest.mark.parametrize("workers", [1, 2])
def test_first_videos_decode_while_the_models_load(mirror: PublisherHost, paths: list[str], workers: int) -> None:
    """On a module's first call, each worker's first video is already decoding when the models are
    loaded; later calls load nothing and decode as before. Results are the same either way."""
    module = module_with(mirror, workers)
    decoding: list[str] = []
    two_started = threading.Event()
    seen_when_loading: list[list[str]] = []
    preprocess, predictors = module.preprocess, module.predictors

    def spy_preprocess(path):
        decoding.append(path)
        if len(decoding) >= workers:
            two_started.set()
        return preprocess(path)

    def spy_predictors(use_gpu, worker=0, planned=None):
        if not seen_when_loading:  # waits on an event, not on time: the bound only catches a hang
            assert two_started.wait(timeout=300), "the first videos did not start decoding while the models loaded"
        seen_when_loading.append(list(decoding))
        return predictors(use_gpu, worker, planned)

    module.preprocess, module.predictors = spy_preprocess, spy_predictors
    first = module.classify(paths, threshold=0.0, top_k=5)
    assert sorted(seen_when_loading[0]) == sorted(paths[:workers])
    assert sorted(decoding) == sorted(paths)  # each video decoded once: the early ones were used
    decoding.clear()
    seen_when_loading.clear()
    assert module.classify(paths, threshold=0.0, top_k=5) == first
    assert seen_when_loading[0] == []  # the models were loaded: nothing decodes ahead of the call
    assert first == module_with(mirror, 1).classify(paths, threshold=0.0, top_k=5)


@pytest.mark.parametrize(("cpu_threads", "decode_ahead", "ahead"),
                         [(2, None, False), (1, None, True), (2, True, True), (1, False, False)])
def test_the_next_video_decodes_ahead_only_where_a_cpu_is_left_idle(
    mirror: PublisherHost, short_video: Path, portrait_video: Path, monkeypatch: pytest.MonkeyPatch,
    cpu_threads: int, decode_ahead: bool | None, ahead: bool,
) -> None:
    """On 2 CPUs 2 threads (as the automatic count gives) take both: each video decodes once the one
    before was inferred, so a decode's buffers never add to a network's peak. With 1 thread a CPU is
    idle: the next video decodes while the current one is inferred. `runtime.decode_ahead` true or
    false decides instead. Results are the same either way."""
    import paddlehub as hub

    from paddlehub_video import cpus

    monkeypatch.setattr(cpus, "usable_cpus", lambda cgroup_root=None: 2)
    runtime = {"workers": 1, "cpu_threads": cpu_threads, "decode_ahead": decode_ahead}
    module = hub.Module(directory=str(REPO / NAME), config=mirror.config(NAME, **SMALL, runtime=runtime))
    paths = [str(short_video), str(portrait_video), str(short_video)]
    module.classify(paths[:1])  # models loaded: no first video decodes while they load
    events: list[tuple[str, int]] = []
    second_loading = threading.Event()
    preprocess, forward = module.preprocess, module.forward

    def spy_preprocess(path):
        events.append(("load", len([e for e in events if e[0] == "load"])))
        if len(events) > 1:
            second_loading.set()
        return preprocess(path)

    def spy_forward(frames, predictors):
        number = len([e for e in events if e[0] == "infer"])
        if number == 0 and ahead:  # waits on an event: the bound only catches a hang
            assert second_loading.wait(timeout=300), "the next video did not decode during the inference"
        result = forward(frames, predictors)
        events.append(("infer", number))
        return result

    module.preprocess, module.forward = spy_preprocess, spy_forward
    results = module.classify(paths, threshold=0.0, top_k=5)
    if not ahead:
        assert events == [("load", 0), ("infer", 0), ("load", 1), ("infer", 1), ("load", 2), ("infer", 2)]
    assert results[0] == results[2] and all("error" not in r for r in results)
