"""Fleet jobs (interfaces/fleet.py) on a real local Ray cluster: every video answered exactly once
despite a killed actor, a removed node, a poison video and a stopped driver; resumed runs do only
the rest. Plus the parts that need no cluster: the result folder, the resource plan, SIGTERM.

The cluster: a head without CPUs (the drivers and the attempt ledger live there) and one worker
node of 2 CPUs (one decode and one model actor); the node test adds a second. Each fleet run is a
driver subprocess (bounded by a timeout, killable) running StNet with the SMALL settings and the
hooks of `fault_hooks`, which also say when a video is in flight (files the actors write).
"""
from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from paddlehub_video.segments import segments_of
from tests.fixtures.publisher import REPO, SMALL, PublisherHost
from tests.fixtures.videos import MakeVideo

pytest.importorskip("ray")
fleet = importlib.import_module("paddlehub_video.interfaces.fleet")

STORE_BYTES = 100 * 2**20  # per node
# The head's own address, so that a driver attaches to the head (as on a real cluster, where the driver
# runs there): Ray 2.48 attaches a driver to any node at its host's address, and all the nodes here share
# one host; a driver on the worker node the node test removes died with it (exit 1, no traceback).
HEAD_IP = "127.0.0.2"
RUN_S = 420  # a driver that has not finished by then hangs
HANG_S = 300  # a marker that has not appeared by then never will
MAX_ATTEMPTS = 3

DRIVER = """
import json, sys
from dataclasses import asdict
import ray
from paddlehub_video.interfaces.fault_hooks import hooked_module
from paddlehub_video.interfaces.fleet import run_fleet
from stnet_kinetics400.module import StNet

spec = json.loads(sys.argv[1])
ray.init(address=spec.pop("address"), _node_ip_address=spec.pop("node_ip"), log_to_driver=False,
         logging_level="WARNING")
ray.data.DataContext.get_current().enable_progress_bars = False
module = hooked_module(StNet, **spec.pop("hooks"))
print("SUMMARY", json.dumps(asdict(run_fleet(spec.pop("paths"), module, spec.pop("output"), **spec))))
"""


def wait_for(condition: Callable[[], bool], driver: subprocess.Popen | None = None) -> None:
    """Poll `condition` until it holds; fail if it never does or if `driver` exits first."""
    deadline = time.monotonic() + HANG_S
    while not condition():
        if driver is not None and driver.poll() is not None:
            pytest.fail(f"the driver exited ({driver.returncode}) first:\n{driver.stderr.read()[-4000:]}")
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def cluster(mirror: PublisherHost) -> Iterator[Any]:
    """A head with no CPUs and one worker node of 2 CPUs; workers import this checkout's modules."""
    from ray.cluster_utils import Cluster

    with pytest.MonkeyPatch.context() as patch:  # the nodes' processes inherit this environment
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "object_store_memory": STORE_BYTES, "include_dashboard": False, "node_ip_address": HEAD_IP})
        cluster.add_node(num_cpus=2, object_store_memory=STORE_BYTES)
        cluster.wait_for_nodes()
    try:
        yield cluster
    finally:
        cluster.shutdown()


@pytest.fixture(scope="module")
def videos(make_video: MakeVideo, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Four small videos, one file of garbage (a video's ordinary error) and `poison.mp4` (only its name matters)."""
    folder = tmp_path_factory.mktemp("fleet-videos")
    good = [make_video(f"fleet_{c}", 20 + 10 * i, 64, 48) for i, c in enumerate("abcd")]
    (folder / "garbage.mp4").write_bytes(np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (folder / "poison.mp4").write_bytes(good[0].read_bytes())
    return [str(good[0]), str(good[1]), str(folder / "garbage.mp4"), str(good[2]), str(folder / "poison.mp4"),
            str(good[3])]


class Drivers:
    """Fleet driver subprocesses on the cluster, each killed at the end of its test if still running."""

    def __init__(self, cluster: Any, mirror: PublisherHost):
        self.cluster, self.mirror, self.started = cluster, mirror, []

    def start(self, events: Path, output: Path, paths: list[str], **options: Any) -> subprocess.Popen:
        events.mkdir(exist_ok=True)
        hooks = {"events": str(events), **options.pop("hooks", {})}
        spec = {"address": self.cluster.address, "node_ip": HEAD_IP, "paths": paths, "output": str(output),
                "hooks": hooks, "config": self.mirror.config("stnet_kinetics400", **SMALL), "batch_size": 1,
                "decode_actors": 1,
                "model_actors": 1, "model_cpus": 1, "max_attempts": MAX_ATTEMPTS, **options}
        driver = subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(spec)], cwd=REPO, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.started.append(driver)
        return driver

    def run(self, events: Path, output: Path, paths: list[str], **options: Any) -> dict:
        return finish(self.start(events, output, paths, **options))

    def close(self) -> None:
        for driver in self.started:
            if driver.poll() is None:
                driver.kill()
                driver.communicate()


@pytest.fixture
def drivers(cluster: Any, mirror: PublisherHost) -> Iterator[Drivers]:
    started = Drivers(cluster, mirror)
    try:
        yield started
    finally:
        started.close()


def finish(driver: subprocess.Popen) -> dict:
    """The driver's summary, once it exits 0; a driver still running after RUN_S is a hang."""
    try:
        out, err = driver.communicate(timeout=RUN_S)
    except subprocess.TimeoutExpired:
        driver.kill()
        out, err = driver.communicate()
        pytest.fail(f"the driver did not finish in {RUN_S} s:\n{err[-4000:]}")
    assert driver.returncode == 0, f"driver exited {driver.returncode}\nstdout:\n{out[-3000:]}\nstderr:\n{err[-6000:]}"
    [summary] = [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("SUMMARY ")]
    return json.loads(summary)  # not simply the last line: Ray's own messages come on stdout too


def rows_by_path(output: Path) -> dict[str, dict]:
    """The output's rows by path, asserting that no path has two."""
    rows = fleet.read_results(output)
    twice = [path for path, n in Counter(row["path"] for row in rows).items() if n > 1]
    assert not twice, f"answered more than once: {twice}"
    return {row["path"]: row for row in rows}


def assert_answered(rows: dict[str, dict], videos: list[str], failed: set[str]) -> None:
    """Every video has its row: an error for those in `failed`, StNet's 5 labels for the others."""
    assert sorted(rows) == sorted(videos)
    for path, row in rows.items():
        if path in failed:
            assert row["error"].startswith(path) and row["prediction"] == "{}", row
        else:
            assert row["error"] == "" and len(json.loads(row["prediction"])) == 5, row


def decoded(events: Path) -> Counter:
    log = events / "decoded.log"
    return Counter(log.read_text(encoding="utf-8").split()) if log.exists() else Counter()


def hold_info(events: Path, stage: str) -> dict:
    return json.loads((events / f"hold-{stage}.json").read_text(encoding="utf-8"))


# --- on the cluster --------------------------------------------------------------------------


@pytest.mark.slow  # a cluster and a fleet run: ~25-30 s each on 2 idle cores, minutes on a loaded machine
def test_a_poison_video_and_a_killed_model_actor_cost_no_answer(drivers, videos, tmp_path):
    events, output = tmp_path / "events", tmp_path / "out"
    driver = drivers.start(events, output, videos, hooks={"poison": "poison.mp4", "hold_model": 0})
    wait_for(lambda: (events / "hold-model.json").exists(), driver)
    os.kill(hold_info(events, "model")["pid"], signal.SIGKILL)  # the model actor, mid-video
    summary = finish(driver)

    poison, garbage = videos[4], videos[2]
    rows = rows_by_path(output)
    assert_answered(rows, videos, failed={poison, garbage})
    assert f"the decode worker died {MAX_ATTEMPTS} times" in rows[poison]["error"]
    assert decoded(events)["poison.mp4"] == MAX_ATTEMPTS  # retried, then answered without a fourth crash
    assert (summary["videos"], summary["written"], summary["failed"], summary["skipped"]) == (6, 6, 2, 0)


@pytest.mark.slow  # a cluster and a fleet run: ~25-30 s each on 2 idle cores, minutes on a loaded machine
def test_a_node_removed_mid_run_costs_no_answer(cluster, drivers, videos, tmp_path):
    cluster.add_node(num_cpus=2, object_store_memory=STORE_BYTES)
    cluster.wait_for_nodes()
    events, output = tmp_path / "events", tmp_path / "out"
    paths = [p for p in videos if not p.endswith("poison.mp4")]
    driver = drivers.start(events, output, paths, hooks={"hold_decode": "fleet_c.mp4"})
    wait_for(lambda: (events / "hold-decode.json").exists(), driver)
    held_on = hold_info(events, "decode")["node_id"]
    [node] = [n for n in cluster.worker_nodes if n.node_id == held_on]
    cluster.remove_node(node)  # the decode actor's node, with the video it holds and the blocks stored there
    summary = finish(driver)

    assert_answered(rows_by_path(output), paths, failed={videos[2]})
    assert decoded(events)["fleet_c.mp4"] == 2  # in flight on the lost node, then once more elsewhere
    assert (summary["written"], summary["failed"]) == (5, 1)


@pytest.mark.slow  # a cluster and a fleet run: ~25-30 s each on 2 idle cores, minutes on a loaded machine
def test_a_killed_driver_is_resumed_with_only_the_rest(drivers, videos, tmp_path):
    events, output = tmp_path / "events", tmp_path / "out"
    paths = [p for p in videos if not p.endswith("poison.mp4")]
    # One row per file; the model stops at its third video, so two are written and the job cannot end.
    driver = drivers.start(events, output, paths, rows_per_file=1, hooks={"hold_model": 2})
    wait_for(lambda: (events / "hold-model.json").exists() and len(fleet.ResultFolder(output).result_files()) >= 2,
             driver)
    driver.kill()  # SIGKILL: what a lost head node does to the driver; nothing is flushed
    driver.communicate(timeout=RUN_S)
    first = {file.name: file.read_bytes() for file in fleet.ResultFolder(output).result_files()}
    first_paths = set(rows_by_path(output))
    (output / ".part-000099.parquet.tmp").write_bytes(b"PAR1 half a file")  # as if killed mid-write
    (events / "decoded.log").unlink()

    summary = drivers.run(events, output, paths)

    assert len(first_paths) >= 2 and summary["skipped"] == len(first_paths)
    assert summary["written"] == len(paths) - len(first_paths)
    assert not set(decoded(events)) & {Path(p).name for p in first_paths}  # done videos are not decoded again
    assert {name: (output / name).read_bytes() for name in first} == first  # written rows never rewritten
    assert not list(output.glob(".part-*"))
    assert_answered(rows_by_path(output), paths, failed={videos[2]})


@pytest.mark.slow  # a cluster and a fleet run: ~25-30 s each on 2 idle cores, minutes on a loaded machine
def test_timelines_as_json_lines(drivers, videos, tmp_path):
    paths = [videos[5], videos[2]]  # fleet_d.mp4: 50 frames at 25 fps; garbage
    summary = drivers.run(tmp_path / "events", tmp_path / "out", paths, timeline=1.0, fmt="jsonl",
                          decode_actors=None, model_cpus=None)

    rows = rows_by_path(tmp_path / "out")
    # one file per block Ray wrote: one or two here, depending on how it split the work
    assert {p.suffix for p in fleet.ResultFolder(tmp_path / "out").result_files()} == {".jsonl"}
    good, garbage = rows[paths[0]], rows[paths[1]]
    windows = json.loads(good["timeline"])
    assert good["error"] == "" and good["duration"] == pytest.approx(2.0)
    assert [(w["start"], w["end"]) for w in windows] == [(0.0, 1.0), (1.0, 2.0)]
    assert all(len(w["prediction"]) == 5 for w in windows)
    assert json.loads(good["segments"]) == segments_of(windows)
    assert garbage["error"].startswith(paths[1]) and garbage["duration"] is None and garbage["timeline"] == "[]"
    assert garbage["segments"] == "[]"
    assert summary["plan"]["decode_actors"] == 0 and summary["plan"]["model_actors"] == 1


# --- without a cluster -----------------------------------------------------------------------


def table(*paths: str) -> Any:
    return fleet.pa.Table.from_pylist([{"path": p, "prediction": "{}", "error": ""} for p in paths],
                                      schema=fleet.RESULTS)


@pytest.mark.parametrize("fmt", fleet.FORMATS)
def test_result_files_are_complete_or_absent(tmp_path, fmt):
    folder = fleet.ResultFolder(tmp_path / "out", fmt)
    with folder.locked():
        assert folder.write(table("a.mp4", "b.mp4")).name == f"part-000000.{fmt}"
        (folder.folder / f".part-000001.{fmt}.tmp").write_bytes(b"half")  # a stopped writer's
        assert folder.write(table("c.mp4")).name == f"part-000001.{fmt}"
        assert folder.done_paths() == {"a.mp4", "b.mp4", "c.mp4"}
        assert not list(folder.folder.glob(".part-*"))
    assert [row["path"] for row in fleet.read_results(tmp_path / "out")] == ["a.mp4", "b.mp4", "c.mp4"]


def test_a_foreign_file_in_the_output_is_named_not_read(tmp_path):
    (tmp_path / "part-000000.parquet").write_bytes(b"not parquet")
    with pytest.raises(fleet.FleetError, match=r"part-000000\.parquet is not a fleet result file"):
        fleet.ResultFolder(tmp_path).done_paths()


def test_one_job_per_output_folder(tmp_path):
    with fleet.ResultFolder(tmp_path).locked():
        with pytest.raises(fleet.FleetError, match="another fleet job is writing"):
            with fleet.ResultFolder(tmp_path).locked():
                pass


class StoppedStream:
    """A dataset whose stream is stopped (as SIGTERM does) after two batches."""

    def iter_batches(self, **_: Any) -> Iterator[Any]:
        yield table("a.mp4")
        yield table("b.mp4", "a.mp4")  # a retried batch answering a.mp4 again
        os.kill(os.getpid(), signal.SIGTERM)
        yield table("never.mp4")


def test_sigterm_writes_the_rows_received_then_stops(tmp_path):
    folder = fleet.ResultFolder(tmp_path)
    summary = fleet.FleetSummary(str(tmp_path), 3, 0, 0, 0, 0)
    with fleet.stop_on_sigterm(), pytest.raises(KeyboardInterrupt):
        fleet.write_stream(StoppedStream(), folder, set(), summary, rows_per_file=100, flush_seconds=3600)
    assert [row["path"] for row in fleet.read_results(tmp_path)] == ["a.mp4", "b.mp4"]
    assert (summary.written, summary.files) == (2, 1)


def test_plan_fits_the_cluster():
    assert fleet.plan_resources({"CPU": 2}) == fleet.FleetPlan(1, 1, 1, 0, 2)
    assert fleet.plan_resources({"CPU": 32}) == fleet.FleetPlan(8, 6, 4, 0, 2)  # 24 CPUs for the model
    assert fleet.plan_resources({"CPU": 16, "GPU": 2}, use_gpu=True) == fleet.FleetPlan(14, 2, 1, 1, 2)
    assert fleet.plan_resources({"CPU": 16}, timeline=True) == fleet.FleetPlan(0, 4, 4, 0, 2)  # they decode too
    with pytest.raises(fleet.FleetError, match="no GPU"):
        fleet.plan_resources({"CPU": 8}, use_gpu=True)
    with pytest.raises(fleet.FleetError, match="need 5 CPUs .* has 4 CPUs"):
        fleet.plan_resources({"CPU": 4}, decode_actors=3, model_actors=2, model_cpus=1)


def test_the_command_without_videos_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        fleet.main(["--module", "stnet_kinetics400", "--output", str(tmp_path)])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "give a video with --input_path, or a list of videos with --input_file" in err


def test_the_command_takes_every_input_path(tmp_path):
    # as hub run does (cli.add_input_options): --input_path repeated, or several after one, nothing dropped
    parser = fleet.build_parser()
    args = parser.parse_args(["--module", "m", "--output", str(tmp_path), "--input_path", "a.mp4", "b.mp4",
                              "--input_path", "c.mp4"])
    assert fleet.input_paths(parser, args) == ["a.mp4", "b.mp4", "c.mp4"]


@pytest.mark.parametrize("words,use_gpu", [([], False), (["--use_gpu"], True), (["--use_gpu", "True"], True),
                                           (["--use_gpu", "false"], False)])
def test_the_command_takes_use_gpu_as_hub_run_does(tmp_path, words, use_gpu):
    # `--use_gpu True`, as hub run takes it, was "unrecognized arguments: True"
    args = fleet.build_parser().parse_args(["--module", "m", "--output", str(tmp_path), *words, "--input_path", "a"])
    assert args.use_gpu is use_gpu


def test_the_video_context_is_refused_for_videotag_before_ray_starts(tmp_path, capsys):
    video = tmp_path / "a.mp4"
    video.write_bytes(b"")
    status = fleet.main(["--module", str(REPO / "videotag_tsn_lstm"), "--output", str(tmp_path / "out"),
                         "--input_path", str(video), "--timeline", "2", "--timeline-context", "video"])
    assert status == 2 and "fleet: error: context='video' is for StNet" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as usage:
        fleet.main(["--module", "m", "--output", str(tmp_path), "--input_path", str(video), "--timeline", "2",
                    "--timeline-context", "clip"])
    assert usage.value.code == 2
