"""Concurrent and repeated use: threads sharing one module object, processes sharing one HUB_HOME,
many calls in a row, and what a call leaves behind in the caller's process (threads, file
descriptors, memory, signal handlers, Paddle's static/dynamic mode)."""

from __future__ import annotations

import ctypes
import gc
import json
import os
import subprocess
import sys
import textwrap
import threading
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import yaml

from paddlehub_video.model import assets
from tests.fixtures.http_server import FileServer
from tests.fixtures.hub_cli import describe, hub_home_config
from tests.fixtures.publisher import SMALL, PublisherHost
from tests.fixtures.videos import MakeVideo

REPO = Path(__file__).resolve().parents[1]
VIDEOTAG, STNET = "videotag_tsn_lstm", "stnet_kinetics400"

@pytest.fixture(scope="module")
def videos(make_video: MakeVideo, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Two different videos and, between them, one that does not exist."""
    missing = tmp_path_factory.mktemp("concurrency") / "missing.mp4"
    return [str(make_video("concurrency_a", 40, 64, 48)), str(missing), str(make_video("concurrency_b", 30, 48, 64))]


def rotated(items: list[str], by: int) -> list[str]:
    return items[by % len(items):] + items[: by % len(items)]


# ---------------------------------------------------------------- threads


@pytest.mark.parametrize("name", [VIDEOTAG, STNET])
def test_threads_sharing_one_module_object_get_the_sequential_answers(mirror: PublisherHost, videos: list[str],
                                                                      name: str) -> None:
    """Four threads at once on a fresh object (so first use races too), four more in a new pool, then
    four new threads one after another: a Paddle predictor run from changing threads fails at random
    (oneDNN keeps its cache per thread) unless one thread owns it."""
    module = mirror.small_module(name)
    loads = []
    load = module.load_bundle
    module.load_bundle = lambda: loads.append(1) or load()
    start = threading.Barrier(4)

    def work(index: int, together: bool = True) -> tuple[list, dict]:
        if together:
            start.wait()
        paths = rotated(videos, index)
        if name == STNET:  # the published call, whose per-call errors are kept per thread
            return module.video_classification(data={"image": paths}, top_k=3), dict(module.last_errors)
        return module.classify(paths, top_k=3, threshold=0.0), {}

    answers = []
    for _ in range(2):
        with ThreadPoolExecutor(4) as pool:
            answers += list(pool.map(work, range(4)))
    for index in range(4):
        with ThreadPoolExecutor(1) as pool:
            answers.append(pool.submit(work, index, False).result())

    assert loads == [1]
    if name == STNET:
        sequential = dict(zip(videos, module.video_classification(data={"image": videos}, top_k=3), strict=True))
    else:
        sequential = {entry["path"]: entry for entry in module.classify(videos, top_k=3, threshold=0.0)}
    for index, (results, errors) in enumerate(answers):
        paths = rotated(videos, index % 4)
        assert results == [sequential[p] for p in paths], index
        if name == STNET:
            assert list(errors) == [paths.index(videos[1])] and videos[1] in errors[paths.index(videos[1])]


# ---------------------------------------------------------------- processes

COLD_START = textwrap.dedent("""
    import json, sys
    import paddlehub as hub
    module = hub.Module(directory=sys.argv[1], config=sys.argv[2])
    print("RESULT " + json.dumps(module.classify(sys.argv[3:], top_k=3)))
""")


def test_two_processes_start_cold_on_one_hub_home_at_once(
    http_server: FileServer, publisher_host: PublisherHost, videos: list[str], tmp_path: Path
) -> None:
    """One download of each file, one conversion, both processes answered alike."""
    for source in publisher_host.server.root.iterdir():
        os.link(source, http_server.root / source.name)
    http_server.set_fault("STNET.pdparams", delay_s=1.0)  # hold the first one in the lock a while
    hub_home = tmp_path / "shared hub home"
    hub_home_config(hub_home)
    config = tmp_path / "stnet.yaml"
    config.write_text(yaml.safe_dump(publisher_host.config(STNET, **SMALL)))
    env = {**os.environ, "HUB_HOME": str(hub_home), assets.ENV_MIRROR: http_server.base_url,
           "no_proxy": "127.0.0.1,localhost"}
    command = [sys.executable, "-c", COLD_START, str(REPO / STNET), str(config), videos[0], videos[2]]
    children = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(2)]
    outputs = [child.communicate(timeout=300) for child in children]
    procs = [subprocess.CompletedProcess(command, c.returncode, out, err)
             for c, (out, err) in zip(children, outputs, strict=True)]
    for proc in procs:
        assert proc.returncode == 0, describe(proc)
    results = [json.loads(next(line for line in p.stdout.splitlines() if line.startswith("RESULT "))[7:])
               for p in procs]
    assert results[0] == results[1] and all(entry["prediction"] for entry in results[0])
    assert len(http_server.requests_for("STNET.pdparams")) == 1
    assert len(http_server.requests_for("kinetics_labels.json")) == 1
    cache = hub_home / "paddlehub_video"
    entries = sorted(p.name.split("-")[0] for p in (cache / "inference").iterdir() if p.is_dir())
    assert entries == ["stnet_temporal", "stnet_windows"], entries  # one conversion of each program, no temp left
    assert not [p for p in cache.rglob("*") if p.name.endswith((".part", ".tmp"))]


FORKED = textwrap.dedent("""
    import json, os, sys
    import paddlehub as hub
    from paddlehub_video.errors import DeviceError
    directory, config, threads, video = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    config["runtime"] = {"cpu_threads": threads}
    module = hub.Module(directory=directory, config=config)
    parent = module.classify([video], top_k=3)
    kept = module.predictors(False)  # the parent's predictors, still held in the child
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            answer = ["result", module.classify([video], top_k=3)]
        except Exception as exc:
            answer = ["error", type(exc).__name__ + ": " + str(exc)]
        try:
            next(iter(kept.values())).run({})
            held = "ran"
        except DeviceError as exc:
            held = str(exc)
        with os.fdopen(write_end, "w") as out:
            json.dump({"answer": answer, "held": held}, out)
        os._exit(0)  # as multiprocessing's children leave: Paddle's teardown in a forked child can crash
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child = json.load(pipe)
    _, status = os.waitpid(pid, 0)
    print("RESULT " + json.dumps({"parent": parent, "child": child, "status": status}))
""")


@pytest.mark.parametrize("threads", [1, 2])
def test_a_process_forked_after_classifying_answers_or_says_why(
    mirror: PublisherHost, videos: list[str], threads: int
) -> None:
    """A child forked after its parent classified: with one CPU thread it makes its own predictor and
    answers alike; after a multi-threaded predictor (Paddle's OpenMP runtime does not survive fork, a
    new predictor would wait forever) it gets an error saying what to do, not a hang. Either way the
    parent's predictors it still holds refuse to run (their threads are the parent's)."""
    config = json.dumps(mirror.config(STNET, **SMALL))
    command = [sys.executable, "-c", FORKED, str(REPO / STNET), config, str(threads), videos[0]]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, describe(proc)
    found = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    parent, child = found["parent"], found["child"]
    assert parent[0]["prediction"], found
    assert found["status"] == 0, (found, proc.stderr[-5000:])
    assert child["held"].startswith("this predictor was made before the process forked"), found
    if threads == 1:
        assert child["answer"] == ["result", parent], found
    else:
        kind, message = child["answer"]
        assert kind == "error" and message.startswith("DeviceError: this process was forked"), found
        assert "'spawn'" in message, found


# ---------------------------------------------------------------- many calls


def resident_mib(process: psutil.Process) -> float:
    """RSS after a garbage collection and after the C allocator hands its free memory back, so that
    what remains is memory in use, not what glibc keeps around for the next call (per-thread arenas)."""
    gc.collect()
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return process.memory_info().rss / 2**20


@pytest.mark.parametrize(("name", "calls"), [(STNET, 30), (VIDEOTAG, 10)])
def test_repeated_calls_leak_no_threads_file_descriptors_or_memory(mirror: PublisherHost, videos: list[str],
                                                                   name: str, calls: int) -> None:
    """`calls` calls of one good and one missing video each (videotag: fewer, it is slower); a heavier
    soak belongs in bench/. Python and NumPy memory is counted exactly (tracemalloc); the RSS, which
    also holds Paddle's native memory, moves by up to ~10 MiB between calls here without growing."""
    module = mirror.small_module(name)
    process = psutil.Process()

    def call() -> None:
        results = module.classify(videos[:2], top_k=3)
        assert [bool(entry["prediction"]) for entry in results] == [True, False]

    for _ in range(5):  # warm-up: predictors, thread pools of the math libraries, allocator arenas
        call()
    threads = set(threading.enumerate())
    tracemalloc.start()
    try:
        before = (process.num_fds(), len(threads), process.num_threads(), resident_mib(process))
        traced = tracemalloc.get_traced_memory()[0]
        for _ in range(calls):
            call()
        gc.collect()
        traced = (tracemalloc.get_traced_memory()[0] - traced) / 2**20
    finally:
        tracemalloc.stop()
    after = (process.num_fds(), threading.active_count(), process.num_threads(), resident_mib(process))
    print(f"\n{name}: {calls} calls; fds {before[0]}->{after[0]}, Python threads {before[1]}->{after[1]}, "
          f"OS threads {before[2]}->{after[2]}, RSS {before[3]:.1f}->{after[3]:.1f} MiB, "
          f"Python/NumPy memory {traced:+.2f} MiB")
    # Nothing new; a thread started before (PaddleHub's update check of a new module) may have ended.
    assert set(threading.enumerate()) <= threads
    assert after[0] <= before[0] and after[2] <= before[2]
    # One video's network input alone is 0.75 MiB (videotag) or 3.75 MiB (StNet) at these settings.
    assert traced < 0.5, f"Python/NumPy memory grew by {traced:.2f} MiB over {calls} calls"
    assert after[3] - before[3] < 32, f"RSS grew by {after[3] - before[3]:.1f} MiB over {calls} calls"


# ---------------------------------------------------------------- the caller's process state

CALLER = textwrap.dedent("""
    import json, signal, sys
    SIGNALS = sorted(signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP})

    def handlers():
        return {getattr(s, "name", str(s)): repr(signal.getsignal(s)) for s in SIGNALS}  # real-time: ints

    before = handlers()  # before paddle, PaddleHub or the modules are imported
    import paddle
    import paddlehub as hub
    directory, config, video, missing = sys.argv[1:]
    modes = []
    for static in (False, True):
        if static:
            paddle.enable_static()
        for name in ("videotag_tsn_lstm", "stnet_kinetics400"):
            module = hub.Module(directory=f"{directory}/{name}", config=json.loads(config)[name])
            module.classify([video, missing])
            try:
                module.classify(video)  # a ValueError on the way in
            except ValueError:
                pass
            try:
                module.run_cmd(["--input_path", missing])  # exits 1: the video failed
            except SystemExit:
                pass
            modes.append(paddle.in_dynamic_mode())
    changed = {name: (before[name], now) for name, now in handlers().items() if now != before[name]}
    print("STATE " + json.dumps({"changed": changed, "dynamic": modes}))
""")


def test_using_the_modules_installs_no_signal_handler_and_keeps_the_paddle_mode(
    mirror: PublisherHost, videos: list[str], hub_env: dict[str, str]
) -> None:
    for name in (VIDEOTAG, STNET):
        mirror.small_module(name).bundle()  # converted in this run's cache, which the child uses
    configs = json.dumps({name: mirror.config(name, **SMALL) for name in (VIDEOTAG, STNET)})
    proc = subprocess.run([sys.executable, "-c", CALLER, str(REPO), configs, videos[0], videos[1]],
                          env=hub_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, describe(proc)
    state = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("STATE "))[6:])
    assert state == {"changed": {}, "dynamic": [True, True, False, False]}, describe(proc)
