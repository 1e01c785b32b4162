"""`hub serving start` with both modules, answering real HTTP requests on 127.0.0.1.

One server serves both modules (`-m videotag_tsn_lstm stnet_kinetics400`), installed first with
`hub install`, with this run's HUB_HOME, the simulated publisher host, the SMALL settings through
$PADDLEHUB_VIDEO_CONFIG and a 1 MB upload limit. Its answers are checked against `classify` of the
same module settings in this process. The unit tests at the end need no server and no model.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from paddlehub_video.serving import (
    MAX_UPLOAD_ENV,
    TEMP_PREFIX,
    classify_request,
    decode_base64,
    max_upload_bytes,
)
from tests.fixtures.publisher import SMALL, PublisherHost
from tests.fixtures.videos import MakeVideo
from tests.test_hub_cli import HUB_TIMEOUT_S, describe, run_hub

REPO = Path(__file__).resolve().parents[1]
VIDEOTAG, STNET = "videotag_tsn_lstm", "stnet_kinetics400"
# The `hub` console entry point, with one change: `hub serving start` binds Flask to 0.0.0.0 and has
# no option for the address, so the test pins it to 127.0.0.1 (nothing outside can reach the server).
SERVE = [sys.executable, "-c", "import sys, flask; run = flask.Flask.run; "
         "flask.Flask.run = lambda app, host=None, *a, **kw: run(app, '127.0.0.1', *a, **kw); "
         "from paddlehub.commands.utils import execute; sys.exit(execute())"]
START_TIMEOUT_S = 180  # bounds on a busy 2-core machine: a hang fails instead of blocking
REQUEST_TIMEOUT_S = 300
LIMIT_MB = 1
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 never goes through a proxy


class Server:
    """`hub install` then `hub serving start`, in a background thread (so it overlaps the test's own
    model conversion); the server in its own process group, its output in `log`."""

    def __init__(self, folder: Path, env: dict[str, str]):
        self.folder, self.env, self.log, self.tmpdir = folder, env, folder / "server.log", Path(env["TMPDIR"])
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._command = [*SERVE, "serving", "start", "-m", VIDEOTAG, STNET, "-p", str(port)]
        self.install: subprocess.CompletedProcess[str] | None = None
        self.proc: subprocess.Popen | None = None
        self._up = False
        self._starting = threading.Thread(target=self._start, daemon=True)
        self._starting.start()

    def _start(self) -> None:
        self.install = run_hub(["install", str(REPO / VIDEOTAG), str(REPO / STNET)], cwd=self.folder, env=self.env)
        if self.install.returncode == 0:
            with open(self.log, "wb") as out:
                self.proc = subprocess.Popen(self._command, cwd=self.folder, env=self.env, stdout=out,
                                             stderr=subprocess.STDOUT, start_new_session=True)

    def wait_until_up(self) -> None:
        """Poll `GET /` until it answers; fail with the output if a command fails or the deadline passes."""
        deadline = time.monotonic() + START_TIMEOUT_S
        self._starting.join(timeout=HUB_TIMEOUT_S)
        if self.install is None:
            pytest.fail(f"hub install still running after {HUB_TIMEOUT_S} s")
        assert self.install.returncode == 0, describe(self.install)
        while not self._up:
            if self.proc.poll() is not None:
                pytest.fail(f"hub serving exited with {self.proc.returncode}\n{self.log.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                pytest.fail(f"hub serving not up after {START_TIMEOUT_S} s\n{self.log.read_text(errors='replace')}")
            try:
                NO_PROXY.open(self.url + "/", timeout=2).close()
                self._up = True
            except OSError:
                time.sleep(0.5)

    def post(self, module: str, body: Any) -> dict:
        """POST `body` as JSON to /predict/<module>; PaddleHub's answer {status, msg, results}."""
        self.wait_until_up()
        request = urllib.request.Request(f"{self.url}/predict/{module}", data=json.dumps(body).encode("utf-8"),
                                         headers={"Content-Type": "application/json"})
        with NO_PROXY.open(request, timeout=REQUEST_TIMEOUT_S) as response:
            return json.load(response)

    def stop(self) -> None:
        """SIGTERM the server's whole process group, SIGKILL if it lingers."""
        self._starting.join(timeout=HUB_TIMEOUT_S)  # an install still running ends on its own timeout
        if self.proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=30)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue


def free_port() -> int:
    """A TCP port nothing listens on at the moment, on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def b64(path: Path) -> str:
    """The file's bytes as a base64 string, as a client sends them."""
    return base64.b64encode(path.read_bytes()).decode("ascii")


def same_entry(served: dict, expected: dict, path: str) -> bool:
    """A served entry equals an in-process one (path aside); Flask sorts JSON keys, so compare by rank."""
    def ranked(prediction: dict) -> list:
        return sorted(prediction.items(), key=lambda item: -item[1])

    got, want = ranked(served["prediction"]), ranked(expected["prediction"])
    return (served["path"] == path and "error" not in served and [k for k, _ in got] == [k for k, _ in want]
            and all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7) for (_, a), (_, b) in zip(got, want)))


@pytest.fixture(scope="module")
def server(hub_env: dict[str, str], publisher_host: PublisherHost,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Both modules installed and served with the SMALL settings; waited for on first use, always stopped."""
    folder = tmp_path_factory.mktemp("serving")
    config = folder / "small.yaml"
    config.write_text(yaml.safe_dump({m: publisher_host.config(m, **SMALL) for m in (VIDEOTAG, STNET)}))
    (folder / "tmp").mkdir()
    served = Server(folder, {**hub_env, "PADDLEHUB_VIDEO_CONFIG": str(config), MAX_UPLOAD_ENV: str(LIMIT_MB),
                             "TMPDIR": str(folder / "tmp")})
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture(scope="module")
def videotag(mirror: PublisherHost) -> Any:
    """The in-process module, with the server's settings: what the answers must equal."""
    return mirror.small_module(VIDEOTAG)


@pytest.fixture(scope="module")
def clips(make_video: MakeVideo) -> tuple[Path, Path]:
    """Two different short videos."""
    return make_video("serving_a", 40, 64, 48), make_video("serving_b", 30, 48, 64)


def test_paths_and_base64_videos_answer_as_classify(server, videotag, clips):
    a, b = clips
    expected = videotag.classify([str(a), str(b)], threshold=0.0, top_k=3)  # converts while the server starts
    answer = server.post(VIDEOTAG, {"paths": [str(a), str(b)], "threshold": 0.0, "top_k": 3,
                                    "videos": [b64(a), {"name": "my clip.mp4", "data": b64(b)}]})
    assert answer["status"] == "000", answer
    results = answer["results"]
    assert len(results) == 4, results
    for entry, want, path in zip(results, expected * 2, [str(a), str(b), "videos[0]", "my clip.mp4"]):
        assert same_entry(entry, want, path), (entry, want)
        assert len(entry["prediction"]) == 3, entry


def test_bad_items_get_their_error_and_the_others_their_results(server, videotag, clips, tmp_path):
    a, b = clips
    missing = tmp_path / "missing.mp4"
    expected = videotag.classify([str(a), str(b)])
    answer = server.post(VIDEOTAG, {"paths": [str(missing)], "videos": [
        b64(a), "this is not base64!", {"name": "junk.mp4", "data": base64.b64encode(b"not a video").decode()},
        42, {"name": "empty.mp4", "data": ""}, b64(b)]})
    assert answer["status"] == "000", answer
    missing_entry, first, not_b64, junk, number, empty, last = answer["results"]
    assert missing_entry == {"path": str(missing), "prediction": {}, "error": f"{missing}: file not found"}
    assert same_entry(first, expected[0], "videos[0]") and same_entry(last, expected[1], "videos[5]")
    assert not_b64["path"] == "videos[1]" and not_b64["error"].startswith("videos[1]: invalid base64"), not_b64
    assert junk["path"] == "junk.mp4" and junk["error"].startswith("junk.mp4: "), junk
    assert number["error"].startswith("videos[3]: expected a base64 string"), number
    assert empty["error"] == "empty.mp4: file is empty (0 bytes)", empty
    for entry in (not_b64, junk, number, empty):
        assert entry["prediction"] == {} and TEMP_PREFIX not in entry["error"], entry
    assert not [p for p in server.tmpdir.iterdir() if p.name.startswith(TEMP_PREFIX)]  # nothing left behind


def test_oversize_upload_is_one_clear_error_and_the_server_goes_on(server, clips):
    started = time.monotonic()
    answer = server.post(VIDEOTAG, {"videos": ["A" * (LIMIT_MB * 2**20 + 4)]})
    assert answer["status"] == "101" and answer["results"] == "", answer
    assert "upload too large" in answer["msg"] and MAX_UPLOAD_ENV in answer["msg"], answer
    assert time.monotonic() - started < 60
    assert server.post(VIDEOTAG, {"videos": [b64(clips[0])], "top_k": 1})["status"] == "000"


@pytest.mark.parametrize("body, message", [
    ({"video": []}, "unknown field(s) 'video'"),
    ({}, "give 'paths'"),
    ({"paths": "a.mp4"}, "paths must be a list"),
    ({"videos": "QUJD"}, "videos must be a list"),
    ({"paths": [], "top_k": 0}, "top_k"),
])
def test_request_mistakes_are_one_clear_error(server, body, message):
    answer = server.post(VIDEOTAG, body)
    assert answer["status"] == "101" and message in answer["msg"], answer


def test_stnet_serves_paths_and_base64_as_classify(server, mirror, clips):
    a, b = clips
    expected = mirror.small_module(STNET).classify([str(a), str(b)])
    answer = server.post(STNET, {"paths": [str(a)], "videos": [b64(b)]})
    assert answer["status"] == "000", answer
    first, second = answer["results"]
    assert same_entry(first, expected[0], str(a)) and same_entry(second, expected[1], "videos[0]"), answer
    assert len(first["prediction"]) == 5  # StNet's classify defaults: top 5, no threshold


# ---------------------------------------------------------------- no server, no model


def test_base64_as_browsers_and_the_base64_tool_write_it():
    assert decode_base64("data:video/mp4;base64,QUJD\nREVG\r\n") == b"ABCDEF"
    for bad in ("QUJD!", "QUJ", "ÄÖ=="):
        with pytest.raises((binascii.Error, UnicodeEncodeError)):
            decode_base64(bad)


def test_upload_limit_from_the_environment(monkeypatch):
    monkeypatch.delenv(MAX_UPLOAD_ENV, raising=False)
    assert max_upload_bytes() == 100 * 2**20
    monkeypatch.setenv(MAX_UPLOAD_ENV, "0.5")
    assert max_upload_bytes() == 2**19
    for bad in ("lots", "0", "-3"):
        monkeypatch.setenv(MAX_UPLOAD_ENV, bad)
        with pytest.raises(ValueError, match=MAX_UPLOAD_ENV):
            max_upload_bytes()


def test_temporary_files_are_gone_when_classify_fails(monkeypatch, tmp_path):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    seen: list[Path] = []

    def classify(paths: list[str], top_k: int = 1) -> list[dict]:
        seen.extend(Path(p) for p in paths)
        assert all(p.is_file() for p in seen)
        raise ValueError("top_k must be positive")

    with pytest.raises(ValueError, match="top_k"):
        classify_request(classify, None, ["QUJD", {"name": "b.mkv", "data": "REVG"}], {"top_k": 0})
    assert [p.suffix for p in seen] == [".mp4", ".mkv"]
    assert not list(tmp_path.iterdir())
