"""Serving in production: `hub serving start --use_multiprocess` (gunicorn) and the WSGI factory under a
real gunicorn, on 127.0.0.1, with the SMALL settings.

The multiprocess server (2 workers) answers as `classify`, a request longer than gunicorn's default
30 s timeout (a client uploading slowly: real, and no CPU spent waiting), a worker SIGKILLed in the
middle of a request (its client gets an error at once, the next request is answered, its temporary
folder is removed), a client that hangs up (its request stops at the next video), the body and idle
bounds, and drains on SIGTERM (the request in flight answered, new connections refused, nothing left
in the temporary folder). The unit tests need no server.
"""
from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import flask
import psutil
import pytest
import yaml

from paddlehub_video.interfaces import gunicorn_app, wsgi
from paddlehub_video.interfaces.gunicorn_app import (
    GRACEFUL_TIMEOUT_ENV,
    WORKER_MEMORY_ENV,
    WORKER_TEMP_PREFIX,
    WORKER_TIMEOUT_ENV,
    bound_multiprocess_serving,
    choose_workers,
)
from paddlehub_video.interfaces.serving import IDLE_TIMEOUT_ENV, MAX_UPLOAD_ENV
from paddlehub_video.interfaces.wsgi import CLIENT_GONE, Loader, client_gone, instrument
from tests.fixtures.hub_cli import describe, run_hub, stop_process_group
from tests.fixtures.publisher import SMALL, PublisherHost
from tests.test_serving import NO_PROXY, REPO, VIDEOTAG, free_port, same_entry

START_TIMEOUT_S = 240
REQUEST_TIMEOUT_S = 120
GUNICORN_DEFAULT_TIMEOUT_S = 30
IDLE_TIMEOUT_S = 10  # the in-flight request of the SIGTERM test must outlive the wait for refusal
REFUSED_WITHIN_S = 8
# `hub serving start --use_multiprocess` binds gunicorn to 0.0.0.0 (no option): the test pins it to 127.0.0.1.
HUB_SERVE = [sys.executable, "-c", "import sys; from paddlehub.serving import http_server as h; "
             "load = h.StandaloneApplication.load_config; h.StandaloneApplication.load_config = lambda self: "
             "(load(self), self.cfg.set('bind', [b.replace('0.0.0.0', '127.0.0.1') for b in self.cfg.bind])); "
             "from paddlehub.commands.utils import execute; sys.exit(execute())"]


class Gunicorn:
    """A gunicorn server (`hub serving --use_multiprocess` or our factory) in its own process group."""

    def __init__(self, command: list[str], folder: Path, env: dict[str, str], port: int):
        self.url, self.port, self.folder = f"http://127.0.0.1:{port}", port, folder
        self.log = folder / "server.log"
        self.tmpdir = Path(env["TMPDIR"])
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(command, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def get(self, path: str) -> tuple[int, dict]:
        try:
            with NO_PROXY.open(self.url + path, timeout=10) as response:
                return response.status, json.loads(response.read())
        except OSError as error:
            code = getattr(error, "code", None)
            return (code, json.loads(error.read())) if code else (0, {})

    def wait_ready(self) -> None:
        """Poll /ready until a worker says its models are loaded; fail with the log if it exits or never does."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while self.get("/ready")[0] != 200:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}\n{self.text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready after {START_TIMEOUT_S} s\n{self.text()}")
            time.sleep(0.5)

    def post(self, module: str, body: Any) -> dict:
        request = urllib_request(f"{self.url}/predict/{module}", json.dumps(body).encode())
        with NO_PROXY.open(request, timeout=REQUEST_TIMEOUT_S) as response:
            assert response.status == 200
            return json.loads(response.read())

    def workers(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children()

    def worker_folders(self) -> list[Path]:
        return sorted(self.tmpdir.glob(f"{WORKER_TEMP_PREFIX}*"))

    def stop(self) -> None:
        stop_process_group(self.proc)


def urllib_request(url: str, data: bytes) -> Any:
    import urllib.request

    return urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})


def open_request(server: Gunicorn, body: bytes, send: int) -> socket.socket:
    """A connection that sent a request's head and the first `send` bytes of its `body`."""
    connection = socket.create_connection(("127.0.0.1", server.port), timeout=REQUEST_TIMEOUT_S)
    connection.sendall(f"POST /predict/{VIDEOTAG} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:send])
    return connection


def read_answer(connection: socket.socket) -> tuple[int, dict]:
    """Status and JSON of the answer on `connection` (gunicorn closes it after answering)."""
    raw = b""
    while chunk := connection.recv(65536):
        raw += chunk
    head, _, payload = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(payload)


def serving_worker(server: Gunicorn, client: socket.socket) -> psutil.Process:
    """The worker holding `client`'s connection (bounded wait: it is accepted within moments)."""
    local = client.getsockname()[1]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for worker in server.workers():
            try:
                if any(c.raddr and c.raddr.port == local for c in worker.net_connections("tcp")):
                    return worker
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.05)
    pytest.fail("no worker took the connection")


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


@pytest.fixture(scope="module")
def installed(hub_env: dict[str, str], publisher_host: PublisherHost,
              tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """videotag installed with `hub install`; the folder and environment servers run with (SMALL settings)."""
    folder = tmp_path_factory.mktemp("serving_prod")
    config = folder / "small.yaml"
    config.write_text(yaml.safe_dump({VIDEOTAG: publisher_host.config(VIDEOTAG, **SMALL)}))
    (folder / "tmp").mkdir()
    done = run_hub(["install", str(REPO / VIDEOTAG)], cwd=folder, env=hub_env)
    assert done.returncode == 0, describe(done)
    return folder, {**hub_env, "PADDLEHUB_VIDEO_CONFIG": str(config), "TMPDIR": str(folder / "tmp"),
                    MAX_UPLOAD_ENV: "1", IDLE_TIMEOUT_ENV: str(IDLE_TIMEOUT_S), "PYTHONFAULTHANDLER": "1"}


@pytest.fixture(scope="module")
def server(installed: tuple[Path, dict[str, str]]) -> Iterator[Gunicorn]:
    """`hub serving start --use_multiprocess --workers 2`, ready; always stopped."""
    folder, env = installed
    port = free_port()
    served = Gunicorn([*HUB_SERVE, "serving", "start", "-m", VIDEOTAG, "-p", str(port), "--use_multiprocess",
                       "--workers", "2"], folder, env, port)
    try:
        served.wait_ready()
        yield served
    finally:
        served.stop()


@pytest.fixture(scope="module")
def clip(make_video: Any) -> Path:
    return make_video("prod_a", 40, 64, 48)


def test_multiprocess_answers_as_classify_with_readiness_and_request_logs(server, small_videotag, clip):
    expected = small_videotag.classify([str(clip)], top_k=3)[0]
    answer = server.post(VIDEOTAG, {"videos": [{"name": "a.mp4", "data": b64(clip)}], "top_k": 3})
    assert answer["status"] == "000" and same_entry(answer["results"][0], expected, "a.mp4"), answer
    assert server.get("/health")[0] == 200
    status, ready = server.get("/ready")
    assert status == 200 and ready["modules"] == [VIDEOTAG], ready
    log = server.text()
    assert "2 gunicorn worker(s) (2 asked)" in log and WORKER_TIMEOUT_ENV in log, log
    assert f"POST /predict/{VIDEOTAG} -> 200 status=000 items=1 failed=0 in " in log, log
    assert len(server.workers()) == 2 and "SIGSEGV" not in log


def test_a_request_longer_than_gunicorns_default_timeout_is_answered(server, clip):
    """A client uploading slowly (a piece every 3 s, within the idle bound) for longer than gunicorn's
    default 30 s worker timeout: with it, the worker was killed ("WORKER TIMEOUT") and the client got
    nothing."""
    body = json.dumps({"videos": [b64(clip)], "top_k": 1}).encode()
    pieces = 12
    step = len(body) // pieces + 1
    started = time.monotonic()
    with open_request(server, body, 0) as connection:
        for start in range(0, len(body), step):
            connection.sendall(body[start:start + step])
            if start + step < len(body):
                time.sleep(3)  # the slow client itself: a bandwidth, not a wait on the server
        status, answer = read_answer(connection)
    assert time.monotonic() - started > GUNICORN_DEFAULT_TIMEOUT_S
    assert status == 200 and answer["status"] == "000" and answer["results"][0]["prediction"], answer
    assert "WORKER TIMEOUT" not in server.text()


def test_a_killed_workers_client_gets_an_error_and_the_next_request_is_answered(server, clip):
    body = json.dumps({"videos": [b64(clip)]}).encode()
    with open_request(server, body, len(body) // 2) as connection:
        worker = serving_worker(server, connection)
        folder = next(f for f in server.worker_folders() if f.name.startswith(f"{WORKER_TEMP_PREFIX}{worker.pid}-"))
        worker.send_signal(signal.SIGKILL)
        connection.settimeout(10)  # an error promptly, never a hang
        try:
            assert connection.recv(65536) == b""
        except ConnectionResetError:
            pass
    answer = server.post(VIDEOTAG, {"videos": [b64(clip)], "top_k": 1})
    assert answer["status"] == "000" and answer["results"][0]["prediction"], answer
    deadline = time.monotonic() + 30  # the master reaps the worker, removes its folder, starts another
    while (folder.exists() or len(server.workers()) != 2) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not folder.exists() and len(server.workers()) == 2 and worker.pid not in [w.pid for w in server.workers()]


def test_a_client_that_hangs_up_stops_its_request_at_the_next_video(server, clip):
    body = json.dumps({"videos": [b64(clip)] * 4, "top_k": 1}).encode()
    with open_request(server, body, len(body)):
        pass  # closed at once: nobody reads the answer
    deadline = time.monotonic() + REQUEST_TIMEOUT_S
    while CLIENT_GONE not in server.text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert f"status=101 msg='{CLIENT_GONE}'" in server.text(), server.text()


def test_body_and_idle_bounds_hold_under_gunicorn(server, clip):
    head = f"POST /predict/{VIDEOTAG} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=REQUEST_TIMEOUT_S) as connection:
        connection.sendall((head + f"Content-Length: {10 * 2**30}\r\n\r\n").encode())
        assert connection.recv(65536).startswith(b"HTTP/1.1 413")
    with socket.create_connection(("127.0.0.1", server.port), timeout=REQUEST_TIMEOUT_S) as silent:
        silent.sendall(head.encode())  # and nothing more: dropped after the idle timeout
        assert silent.recv(65536) == b""  # without the bound: held until gunicorn's timeout (a socket.timeout)
    assert server.post(VIDEOTAG, {"videos": [b64(clip)], "top_k": 1})["status"] == "000"


def test_sigterm_finishes_the_request_in_flight_refuses_new_ones_and_leaves_no_files(server, clip):
    body = json.dumps({"videos": [b64(clip)], "top_k": 1}).encode()
    with open_request(server, body, len(body) - 10) as connection:
        serving_worker(server, connection)
        os.kill(server.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + REFUSED_WITHIN_S  # before the idle bound drops the request in flight
        while time.monotonic() < deadline:  # new connections refused while the request is in flight
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
                time.sleep(0.1)
            except ConnectionRefusedError:
                break
        else:
            pytest.fail(f"new connections still accepted {REFUSED_WITHIN_S} s after SIGTERM")
        connection.sendall(body[-10:])
        status, answer = read_answer(connection)
    assert status == 200 and answer["status"] == "000" and answer["results"][0]["prediction"], answer
    assert server.proc.wait(timeout=60) == 0, server.text()
    assert server.worker_folders() == [] and list(server.tmpdir.iterdir()) == []


def test_the_factory_served_by_a_real_gunicorn(installed, small_videotag, clip):
    folder, env = installed
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "--workers", "1",
               "-c", "python:paddlehub_video.interfaces.gunicorn_conf",
               f"paddlehub_video.interfaces.wsgi:create_app('{VIDEOTAG}')"]
    served = Gunicorn(command, folder, {**env, "PADDLEHUB_VIDEO_MODULES": VIDEOTAG}, port)
    try:
        served.wait_ready()
        expected = small_videotag.classify([str(clip)], top_k=2)[0]
        answer = served.post(VIDEOTAG, {"videos": [b64(clip)], "top_k": 2})
        assert answer["status"] == "000" and same_entry(answer["results"][0], expected, "videos[0]"), answer
        assert served.post("no_such_module", {"videos": []})["status"] == "111"
        log = served.text()
        assert "1 gunicorn worker(s) (" in log and "VideoWorker" in log, log
        assert f"POST /predict/{VIDEOTAG} -> 200 status=000 items=1 failed=0 in " in log, log
    finally:
        served.stop()


# ---------------------------------------------------------------- no server


def test_timeouts_and_workers_reach_paddlehubs_gunicorn_app(monkeypatch):
    import paddlehub.commands.serving as command

    monkeypatch.setattr(command, "StandaloneApplication", command.StandaloneApplication)
    monkeypatch.setenv(WORKER_TIMEOUT_ENV, "777")
    monkeypatch.setenv(GRACEFUL_TIMEOUT_ENV, "33")
    monkeypatch.setattr(sys, "argv", ["hub", "serving", "start", "--use_multiprocess"])
    bound_multiprocess_serving()
    app = command.StandaloneApplication(flask.Flask("t"), {"bind": "127.0.0.1:0", "workers": 3})
    assert (app.cfg.timeout, app.cfg.graceful_timeout, app.cfg.workers, app.cfg.preload_app) == (777, 33, 3, True)
    assert app.cfg.worker_class is gunicorn_app.VideoWorker
    default = command.StandaloneApplication(flask.Flask("u"), {"workers": command.number_of_workers()})
    assert default.cfg.workers == choose_workers(None, 0)[0] < command.number_of_workers()
    monkeypatch.delenv(WORKER_TIMEOUT_ENV)
    monkeypatch.delenv(GRACEFUL_TIMEOUT_ENV)
    assert gunicorn_app.worker_timeout_s() == gunicorn_app.graceful_timeout_s() > GUNICORN_DEFAULT_TIMEOUT_S


def test_the_worker_count_fits_memory_and_says_why(monkeypatch):
    monkeypatch.delenv(WORKER_MEMORY_ENV, raising=False)
    assert choose_workers(None, 1, cpus=32, memory_mb=64_000) == (8, "one per 4 of 32 usable CPUs")
    workers, why = choose_workers(None, 2, cpus=32, memory_mb=9_000)
    assert workers == 3 and "lowered to the 3 that 9000 MB of available memory holds at 3000 MB" in why
    assert choose_workers(65, 1, cpus=32, memory_mb=4_000)[0] == 2  # an asked count is lowered too
    assert choose_workers(None, 1, cpus=2, memory_mb=100)[0] == 1  # always one
    monkeypatch.setenv(WORKER_MEMORY_ENV, "1000")
    assert choose_workers(5, 1, cpus=2, memory_mb=4_500)[0] == 4


def test_readiness_flips_once_the_models_are_loaded():
    release = threading.Event()

    class SlowModule:
        def predict_fn(self) -> None:
            release.wait(30)

    app = flask.Flask("ready")
    loader = instrument(app, {"slow": SlowModule()})
    client = app.test_client()
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 503  # this request also started the loading
    release.set()
    assert loader.wait(30)
    answer = client.get("/ready")
    assert answer.status_code == 200 and answer.get_json()["ready"] is True


def test_a_failed_load_is_not_ready_and_says_why():
    class Broken:
        def predict_fn(self) -> None:
            raise OSError("weights missing")

    loader = Loader({"broken": Broken()})
    assert not loader.wait(30) and loader.error == "OSError: weights missing"


def test_a_closed_connection_is_seen_as_gone():
    ours, theirs = socket.socketpair()
    with ours:
        assert not client_gone(ours)
        theirs.sendall(b"GET / HTTP/1.1\r\n")  # a pipelined request: still there
        assert not client_gone(ours)
        ours.recv(100)
        theirs.close()
        assert client_gone(ours)
    assert not client_gone(None)
    assert wsgi.module_names("a, b") == ["a", "b"]
