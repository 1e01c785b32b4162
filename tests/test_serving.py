"""`hub serving start` with both modules, answering real HTTP requests on 127.0.0.1.

One server serves both modules (`-m videotag_tsn_lstm stnet_kinetics400`), installed first with
`hub install`, with this run's HUB_HOME, the simulated publisher host, the SMALL settings through
$PADDLEHUB_VIDEO_CONFIG, a 1 MB upload limit, a 50-frame limit and one served directory (the
default item and pixel limits). Its answers are checked against `classify` of the same module
settings in this process; hostile requests (too many items, frames or pixels, probing paths, bad
bodies) against their one clear error, with the server still answering and no temporary file left.
The unit tests at the end need no server and no model.
"""
from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from paddlehub_video.interfaces.serving import (
    DEFAULT_MAX_ITEMS,
    IDLE_TIMEOUT_ENV,
    MAX_FRAMES_ENV,
    MAX_ITEMS_ENV,
    MAX_PIXELS_ENV,
    MAX_UPLOAD_ENV,
    PATH_REFUSED,
    SERVING_DIRS_ENV,
    TEMP_PREFIX,
    bound_request_bodies,
    classify_request,
    decode_base64,
    max_items,
    max_upload_bytes,
    serving_dirs,
    serving_limits,
)
from tests.fixtures.hub_cli import HUB_TIMEOUT_S, describe, run_hub, stop_process_group
from tests.fixtures.huge_video import write_huge_video
from tests.fixtures.publisher import SMALL, PublisherHost
from tests.fixtures.videos import MakeVideo

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
IDLE_TIMEOUT_S = 10  # the server drops a client silent this long
MAX_FRAMES = 50
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 never goes through a proxy
# Bodies that are not a JSON object, and the start of their answer's message.
MALFORMED_BODIES = [
    (b"[1, 2]", "the body must be a JSON object of fields (paths, videos, options), got an array"),
    (b'"paths"', "the body must be a JSON object of fields (paths, videos, options), got a string"),
    (b"42", "the body must be a JSON object of fields (paths, videos, options), got a number"),
    (b"null", "the body must be a JSON object of fields (paths, videos, options), got null"),
    (b"[" * 5000 + b"]" * 5000, "the JSON body is nested too deep"),
    (b'{"videos": [', "the body is not valid JSON (Expecting value: line 1 column 13 (char 12))"),
]


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
        status, answer = self.post_bytes(module, json.dumps(body).encode("utf-8"))
        assert status == 200, (status, answer[:2000])
        return json.loads(answer)

    def post_bytes(self, module: str, body: bytes, content_type: str = "application/json") -> tuple[int, bytes]:
        """POST `body` as it is, typed as JSON; the HTTP status and the answer's bytes."""
        self.wait_until_up()
        request = urllib.request.Request(f"{self.url}/predict/{module}", data=body,
                                         headers={"Content-Type": content_type})
        try:
            with NO_PROXY.open(request, timeout=REQUEST_TIMEOUT_S) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def temp_files(self) -> list[Path]:
        """What requests left in the server's temporary folder."""
        return [p for p in self.tmpdir.iterdir() if p.name.startswith(TEMP_PREFIX)]

    def stop(self) -> None:
        """SIGTERM the server's whole process group, SIGKILL if it lingers."""
        self._starting.join(timeout=HUB_TIMEOUT_S)  # an install still running ends on its own timeout
        if self.proc is not None:
            stop_process_group(self.proc)


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
            and all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7) for (_, a), (_, b) in zip(got, want, strict=True)))


@pytest.fixture(scope="module")
def served_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one directory the server may read `paths` from."""
    return tmp_path_factory.mktemp("served")


@pytest.fixture(scope="module")
def server(hub_env: dict[str, str], publisher_host: PublisherHost, served_dir: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Both modules installed and served with the SMALL settings; waited for on first use, always stopped."""
    folder = tmp_path_factory.mktemp("serving")
    config = folder / "small.yaml"
    config.write_text(yaml.safe_dump({m: publisher_host.config(m, **SMALL) for m in (VIDEOTAG, STNET)}))
    (folder / "tmp").mkdir()
    served = Server(folder, {**hub_env, "PADDLEHUB_VIDEO_CONFIG": str(config), MAX_UPLOAD_ENV: str(LIMIT_MB),
                             MAX_FRAMES_ENV: str(MAX_FRAMES), SERVING_DIRS_ENV: str(served_dir),
                             IDLE_TIMEOUT_ENV: str(IDLE_TIMEOUT_S),
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
def clips(make_video: MakeVideo, served_dir: Path) -> tuple[Path, Path]:
    """Two different short videos, in the served directory."""
    copies = []
    for made in (make_video("serving_a", 40, 64, 48), make_video("serving_b", 30, 48, 64)):
        copies.append(served_dir / made.name)
        shutil.copyfile(made, copies[-1])
    return copies[0], copies[1]


def assert_still_serving(server: Server, clip: Path) -> None:
    """The server answers a normal request, and no request left a temporary file behind."""
    answer = server.post(VIDEOTAG, {"videos": [b64(clip)], "top_k": 1})
    assert answer["status"] == "000" and "error" not in answer["results"][0], answer
    assert server.temp_files() == []


def test_paths_and_base64_videos_answer_as_classify(server, videotag, clips):
    a, b = clips
    expected = videotag.classify([str(a), str(b)], threshold=0.0, top_k=3)  # converts while the server starts
    answer = server.post(VIDEOTAG, {"paths": [str(a), str(b)], "threshold": 0.0, "top_k": 3,
                                    "videos": [b64(a), {"name": "my clip.mp4", "data": b64(b)}]})
    assert answer["status"] == "000", answer
    results = answer["results"]
    assert len(results) == 4, results
    for entry, want, path in zip(results, expected * 2, [str(a), str(b), "videos[0]", "my clip.mp4"], strict=True):
        assert same_entry(entry, want, path), (entry, want)
        assert len(entry["prediction"]) == 3, entry


def test_bad_items_get_their_error_and_the_others_their_results(server, videotag, clips, served_dir):
    a, b = clips
    missing = served_dir / "missing.mp4"  # in the served directory: its error may be detailed
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
    assert server.temp_files() == []  # nothing left behind


def test_oversize_upload_is_one_clear_error_and_the_server_goes_on(server, clips):
    started = time.monotonic()
    status, raw = server.post_bytes(VIDEOTAG, json.dumps({"videos": ["A" * (LIMIT_MB * 2**20 + 4)]}).encode())
    answer = json.loads(raw)
    assert status == 413 and answer["status"] == "101" and answer["results"] == "", answer
    assert "upload too large" in answer["msg"] and MAX_UPLOAD_ENV in answer["msg"], answer
    assert time.monotonic() - started < 60
    assert server.post(VIDEOTAG, {"videos": [b64(clips[0])], "top_k": 1})["status"] == "000"


def raw_request(server: Server, head: str, body: Iterable[bytes] = ()) -> tuple[bytes, int]:
    """Send a request head, then `body`'s pieces while the server takes them; (what it answered, body
    bytes it took). A server that stops reading shows as a refused or reset send, or one that waits;
    the bound on a send only turns a hang into an answer."""
    server.wait_until_up()
    host, port = server.url.removeprefix("http://").split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=REQUEST_TIMEOUT_S) as connection:
        connection.sendall(head.encode("ascii"))
        connection.settimeout(30)
        try:
            for piece in body:
                connection.sendall(piece)
                sent += len(piece)
        except OSError:  # BrokenPipe, ConnectionReset, timeout: the server stopped reading
            pass
        connection.settimeout(REQUEST_TIMEOUT_S)
        answer = b""
        try:
            while chunk := connection.recv(65536):
                answer += chunk
                if b"\r\n\r\n" in answer:
                    break
        except OSError:
            pass
    return answer, sent


def status_of(answer: bytes) -> bytes:
    """The status code of a raw HTTP answer (`HTTP/1.0 413 ...` -> b"413")."""
    return answer.split(b" ", 2)[1] if answer.startswith(b"HTTP/") else b""


def test_a_body_over_the_request_limit_is_refused_unread(server, clips):
    """PaddleHub reads and parses a whole body before the module sees it: a body larger than the
    upload limit allows is refused by its Content-Length (HTTP 413), and a chunked one is cut at the
    limit (the server's memory does not grow by its size)."""
    head = f"POST /predict/{VIDEOTAG} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    answer, _ = raw_request(server, head + f"Content-Length: {10 * 2**30}\r\n\r\n")  # 10 GiB announced
    assert status_of(answer) == b"413", answer[:300]
    body_mib = 1024  # over any earlier peak of the server, were it read (its limit here: about 2 MiB)

    def chunks() -> Iterator[bytes]:
        piece = b'{"videos": ["' + b"A" * (2**20 - 13)
        yield b"%x\r\n%s\r\n" % (len(piece), piece)
        for _ in range(body_mib - 1):
            yield b"%x\r\n%s\r\n" % (2**20, b"A" * 2**20)
        yield b'3\r\n"]}\r\n0\r\n\r\n'

    before = peak_rss_mib(server.proc.pid)
    answer, _ = raw_request(server, head + "Transfer-Encoding: chunked\r\n\r\n", chunks())
    assert answer == b"" or status_of(answer) in (b"413", b"400"), answer[:300]
    assert peak_rss_mib(server.proc.pid) - before < 256  # read whole, the peak would grow by about body_mib
    assert_still_serving(server, clips[0])


def test_a_client_that_sends_nothing_does_not_hold_the_server(server, clips):
    """The server answers one request at a time: a connection opened and left silent would hold it for
    ever. It is dropped after IDLE_TIMEOUT_S, and the request behind it is answered."""
    server.wait_until_up()
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=REQUEST_TIMEOUT_S) as silent:
        silent.sendall(b"POST /predict/" + VIDEOTAG.encode() + b" HTTP/1.1\r\n")  # and nothing more
        assert_still_serving(server, clips[0])  # without the bound: waits until REQUEST_TIMEOUT_S
        assert silent.recv(65536) == b""  # the server closed it


def peak_rss_mib(pid: int) -> float:
    """A process's peak resident memory (VmHWM), MiB."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024


@pytest.mark.parametrize("body, message", [
    ({"video": []}, "unknown field(s) 'video'; accepted: paths, videos, use_gpu, threshold, top_k, timeline, stride, "
                    "timeline_context"),
    ({}, "give 'paths'"),
    ({"paths": "a.mp4"}, "paths must be a list"),
    ({"videos": "QUJD"}, "videos must be a list"),
    ({"paths": [], "top_k": 0}, "top_k"),
    ({"videos": [], "timeline": 60, "stride": 1e-6}, "stride_seconds must be a number of seconds of at least 0.001"),
    ({"videos": [], "timeline": 60, "timeline_context": "video"}, "context='video' is for StNet; videotag_tsn_lstm"),
])
def test_request_mistakes_are_one_clear_client_error(server, body, message):
    status, raw = server.post_bytes(VIDEOTAG, json.dumps(body).encode())
    answer = json.loads(raw)
    assert status == 400 and answer["status"] == "101" and message in answer["msg"], (status, answer)


def test_stnet_serves_paths_and_base64_as_classify(server, mirror, clips):
    a, b = clips
    expected = mirror.small_module(STNET).classify([str(a), str(b)])
    answer = server.post(STNET, {"paths": [str(a)], "videos": [b64(b)]})
    assert answer["status"] == "000", answer
    first, second = answer["results"]
    assert same_entry(first, expected[0], str(a)) and same_entry(second, expected[1], "videos[0]"), answer
    assert len(first["prediction"]) == 5  # StNet's classify defaults: top 5, no threshold


def test_answers_are_utf8_with_the_predictions_in_descending_order(server, clips):
    status, raw = server.post_bytes(VIDEOTAG, json.dumps({"videos": [b64(clips[0])], "top_k": 10}).encode())
    assert status == 200 and "标签".encode() in raw and b"\\u" not in raw, raw[:500]
    prediction = json.loads(raw)["results"][0]["prediction"]  # json keeps the order of the answer
    values = list(prediction.values())
    assert len(values) == 10 and values == sorted(values, reverse=True), prediction


def test_too_many_items_are_one_clear_error_before_any_is_written(server, clips):
    status, raw = server.post_bytes(VIDEOTAG, json.dumps({"videos": ["AAAA"] * 20_000}).encode())  # 156 KB
    assert status == 400 and json.loads(raw) == {"status": "101", "results": "", "msg": (
        f"too many videos: 20000 in one request, over the limit of {DEFAULT_MAX_ITEMS} "
        f"(set {MAX_ITEMS_ENV} on the server to change it)")}
    assert_still_serving(server, clips[0])


def test_a_video_over_the_frame_limit_gets_its_error_and_the_others_their_results(
        server, videotag, clips, make_video, served_dir):
    made = make_video("serving_long", MAX_FRAMES + 10, 64, 48)
    long = served_dir / made.name
    shutil.copyfile(made, long)
    expected = videotag.classify([str(clips[0])])[0]
    answer = server.post(VIDEOTAG, {"paths": [str(long)], "videos": [{"name": "long.mp4", "data": b64(long)},
                                                                     b64(clips[0])]})
    assert answer["status"] == "000", answer
    as_path, as_upload, fine = answer["results"]
    reason = f"holds more than {MAX_FRAMES} frames, the limit per video ({MAX_FRAMES_ENV})"
    assert as_path == {"path": str(long), "prediction": {}, "error": f"{long}: {reason}"}
    assert as_upload == {"path": "long.mp4", "prediction": {}, "error": f"long.mp4: {reason}"}
    assert same_entry(fine, expected, "videos[1]"), fine
    assert_still_serving(server, clips[0])


@pytest.mark.slow
def test_a_frame_over_the_pixel_limit_is_refused_unread(server, clips, tmp_path):
    huge = write_huge_video(tmp_path / "huge.mp4")  # two 8192x8192 frames, 200 KB; the default limit is 4K UHD
    answer = server.post(STNET, {"videos": [{"name": "huge.mp4", "data": b64(huge)}]})
    assert answer["status"] == "000", answer
    assert answer["results"] == [{"path": "huge.mp4", "prediction": {}, "error": (
        f"huge.mp4: 8192x8192 frames (67108864 pixels) are over the limit of {3840 * 2160} pixels per frame "
        f"({MAX_PIXELS_ENV})")}]
    assert_still_serving(server, clips[0])


def test_paths_outside_the_served_directory_get_one_answer_whatever_is_there(server, clips, served_dir, tmp_path):
    outside = tmp_path / "outside.mp4"
    shutil.copyfile(clips[0], outside)  # a real video, refused all the same
    (served_dir / "link_out.mp4").symlink_to(outside)
    (served_dir / "passwd.mp4").symlink_to("/etc/passwd")
    probes = ["/etc/does-not-exist", "/etc", "/proc/self/environ", "/etc/passwd", str(outside),
              str(served_dir / "link_out.mp4"), str(served_dir / "passwd.mp4"),
              str(served_dir / ".." / tmp_path.name / "outside.mp4")]
    answer = server.post(VIDEOTAG, {"paths": probes})
    assert answer["status"] == "000", answer
    assert answer["results"] == [{"path": p, "prediction": {}, "error": f"{p}: {PATH_REFUSED}"} for p in probes]
    (served_dir / "link_in.mp4").symlink_to(clips[0])  # a link that stays inside is followed
    (inside,) = server.post(VIDEOTAG, {"paths": [str(served_dir / "link_in.mp4")]})["results"]
    assert inside["path"] == str(served_dir / "link_in.mp4") and inside["prediction"], inside
    assert_still_serving(server, clips[0])


def test_a_served_file_whose_name_is_not_utf8_is_answered_and_named_back(server, videotag, clips, served_dir):
    # A Latin-1 and GBK name: the client writes its bytes as JSON's \udcXX escapes (Python's surrogate
    # escapes); the server crashed (SIGSEGV in OpenCV) on it, or could not encode its answer.
    name = os.fsdecode(os.fsencode(served_dir) + b"/caf\xe9 \xb2\xe2.mp4")
    shutil.copyfile(clips[0], os.fsencode(name))
    expected = videotag.classify([str(clips[0])], top_k=2)[0]
    answer = server.post(VIDEOTAG, {"paths": [name, str(clips[0])], "top_k": 2})
    assert answer["status"] == "000", answer
    entry, twin = answer["results"]
    assert same_entry(entry, expected, name) and same_entry(twin, expected, str(clips[0])), answer
    assert_still_serving(server, clips[0])


def test_malformed_bodies_are_client_errors_in_paddlehubs_format_without_a_traceback(server, clips):
    # PaddleHub's view failed on these before it called the module: HTTP 500, an HTML page, a traceback.
    logged = server.log.stat().st_size
    for body, message in MALFORMED_BODIES:
        status, raw = server.post_bytes(VIDEOTAG, body)
        assert status == 400 and json.loads(raw)["msg"].startswith(message), (body[:50], status, raw[:300])
    status, raw = server.post_bytes(VIDEOTAG, b'{"videos": []}', content_type="text/plain")
    assert status == 415 and json.loads(raw)["status"] == "112", raw[:300]
    assert_still_serving(server, clips[0])
    with open(server.log, "rb") as log:
        log.seek(logged)
        assert b"Traceback" not in log.read()


def test_hostile_values_in_a_body_get_clear_errors(server, clips):
    deep = functools.reduce(lambda inner, _: [inner], range(500), [])
    answer = server.post(VIDEOTAG, {"paths": [deep, 5, ""], "videos": [deep, {"name": deep, "data": deep}]})
    assert answer["status"] == "000", answer
    errors = [entry["error"] for entry in answer["results"]]
    assert errors == ["paths[0]: expected a path string of 1 to 4096 characters, got list",
                      "paths[1]: expected a path string of 1 to 4096 characters, got int",
                      "paths[2]: expected a path string of 1 to 4096 characters, got a path of 0 characters",
                      "videos[0]: expected a base64 string or {'data': ..., 'name': ...}, got list",
                      "videos[1]: 'data' must be a base64 string, got list"], answer
    status, raw = server.post_bytes(VIDEOTAG, json.dumps({"videos": [], "top_k": deep}).encode())
    answer = json.loads(raw)
    assert status == 400 and answer["msg"].startswith("top_k must be a positive integer"), answer
    assert_still_serving(server, clips[0])


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
        assert all(Path(p).is_file() for p in paths)
        if paths and paths[0].endswith(".mkv"):
            raise RuntimeError("the model failed")
        return [{"path": p, "prediction": {"a": 1.0}} for p in paths]

    with pytest.raises(RuntimeError, match="the model failed"):
        classify_request(classify, None, ["QUJD", {"name": "b.mkv", "data": "REVG"}], {"top_k": 1})
    assert [p.suffix for p in seen] == [".mp4", ".mkv"]
    assert not list(tmp_path.iterdir())


def test_uploads_are_written_one_at_a_time_and_removed_when_done(monkeypatch, tmp_path):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    on_disk: list[list[str]] = []

    def classify(paths: list[str]) -> list[dict]:
        on_disk.append(sorted(p.name for p in tmp_path.rglob("*") if p.is_file()))
        return [{"path": p, "prediction": {}, "error": f"{p}: not a video"} for p in paths]

    results = classify_request(classify, None, ["QUJD", "bad base64!", {"name": "c.mkv", "data": "REVG"}], {})
    assert on_disk == [[], ["video_0.mp4"], ["video_2.mkv"]]  # the option check, then one file per upload
    assert [r["error"] for r in results] == [
        "videos[0]: not a video", "videos[1]: invalid base64 (Only base64 data is allowed)", "c.mkv: not a video"]
    assert not list(tmp_path.iterdir())


def test_option_mistakes_are_refused_before_any_file_is_written(monkeypatch, tmp_path):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))

    def classify(paths: list[str], top_k: int = 1) -> list[dict]:
        assert not list(tmp_path.iterdir())
        raise ValueError("top_k must be positive")

    with pytest.raises(ValueError, match="top_k"):
        classify_request(classify, None, ["QUJD"], {"top_k": 0})


def test_server_paths_are_off_unless_directories_are_named(monkeypatch, tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    asked: list[list[str]] = []

    def classify(paths: list[str]) -> list[dict]:
        asked.append(paths)
        return [{"path": p, "prediction": {"a": 1.0}} for p in paths]

    monkeypatch.delenv(SERVING_DIRS_ENV, raising=False)
    (entry,) = classify_request(classify, [str(video)], None, {})
    assert entry == {"path": str(video), "prediction": {}, "error": f"{video}: {PATH_REFUSED}"} and asked == [[]]
    monkeypatch.setenv(SERVING_DIRS_ENV, f"/nonexistent{os.pathsep}{tmp_path}")
    assert classify_request(classify, [str(video)], None, {}) == [{"path": str(video), "prediction": {"a": 1.0}}]
    assert asked[-1] == [os.path.realpath(video)]  # opened by the resolved name
    monkeypatch.setenv(SERVING_DIRS_ENV, "relative/dir")
    with pytest.raises(ValueError, match=f"{SERVING_DIRS_ENV}: 'relative/dir' is not an absolute path"):
        serving_dirs()


def test_request_limits_from_the_environment(monkeypatch):
    for name in (MAX_ITEMS_ENV, MAX_FRAMES_ENV, MAX_PIXELS_ENV):
        monkeypatch.delenv(name, raising=False)
    assert max_items() == DEFAULT_MAX_ITEMS
    limits = serving_limits()
    assert (limits.max_frames, limits.max_pixels) == (18_000, 3840 * 2160)
    monkeypatch.setenv(MAX_ITEMS_ENV, "3")
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    assert max_items() == 3 and serving_limits().max_pixels == 1000
    for name in (MAX_ITEMS_ENV, MAX_FRAMES_ENV, MAX_PIXELS_ENV):
        for bad in ("many", "0", "-3", "2.5"):
            monkeypatch.setenv(name, bad)
            with pytest.raises(ValueError, match=f"{name}={bad!r}: expected a positive whole number"):
                max_items() if name == MAX_ITEMS_ENV else serving_limits()
        monkeypatch.delenv(name)


def test_an_upload_keeps_only_a_video_extension(monkeypatch, tmp_path):
    # A name ending in .m3u8 would make FFmpeg read the upload as a playlist of other files.
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    seen: list[str] = []

    def classify(paths: list[str], top_k: int = 1) -> list[dict]:
        seen.extend(Path(p).suffix for p in paths)
        return [{"path": p, "prediction": {}} for p in paths]

    names = ["x.m3u8", "y.MKV", "z.ffconcat", "w.ts"]
    classify_request(classify, None, [{"name": n, "data": "QUJD"} for n in names], {"top_k": 1})
    assert seen == [".mp4", ".mkv", ".mp4", ".ts"]


@pytest.fixture()
def served_app(small_stnet: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[dict]]:
    """PaddleHub's serving app as `hub serving` makes it, serving the SMALL StNet, in this process (Flask's test
    client); and the calls its serving method got (a refused request gets none)."""
    from paddlehub.serving import app_compat
    from paddlehub.serving.model_service.base_model_service import V2ModuleInfo

    monkeypatch.setattr(app_compat, "Flask", app_compat.Flask)  # undone after the test
    served = V2ModuleInfo()
    served.add_module(STNET, {STNET: {"module": small_stnet, "method_name": "serving_method", "predict_args": {},
                                      "version": "test", "category": "VIDEO"}})
    monkeypatch.setattr(app_compat, "v2_module_info", served)
    calls: list[dict] = []
    serve = small_stnet.serving_method
    monkeypatch.setattr(small_stnet, "serving_method", lambda **body: calls.append(body) or serve(**body))
    bound_request_bodies()
    return app_compat.create_app(init_flag=True).test_client(), calls


@pytest.mark.parametrize("body, message", [
    *MALFORMED_BODIES,
    (b"true", "the body must be a JSON object of fields (paths, videos, options), got a boolean"),
    (b"", "the body is not valid JSON (Expecting value: line 1 column 1 (char 0))"),
    (b"\xff\xfe{}", "the body is not valid JSON ("),
    (b"{}", "give 'paths'"),
    (b'{"self": 1}', "unknown field(s) 'self'; accepted: paths, videos, use_gpu, threshold, top_k, timeline, stride, "
                    "timeline_context"),
    (b'{"videos": [], "stride": 2}', "'stride' needs 'timeline'"),
    (b'{"videos": [], "timeline_context": "video"}', "'timeline_context' needs 'timeline'"),
    (b'{"videos": [], "timeline": 60, "timeline_context": "clip"}', "context must be one of 'window', 'video'"),
    (b'{"videos": [], "top_k": "5"}', "top_k must be a positive integer"),
    (b'{"videos": [], "threshold": [0.5]}', "threshold"),
    (b'{"videos": [], "timeline": "60"}', "window_seconds must be a number of seconds"),
    (b'{"videos": [], "timeline": 60, "stride": 0.000001}', "stride_seconds must be a number of seconds of at least"),
    (b'{"videos": [], "timeline": 0.0001}', "window_seconds must be a number of seconds of at least 0.001"),
    (b'{"paths": {"a": 1}}', "paths must be a list of video paths, got dict"),
    (b'{"videos": 5}', "videos must be a list of base64 strings, got int"),
])
def test_any_malformed_request_is_a_4xx_in_paddlehubs_format_before_the_module_runs(served_app, body, message):
    client, calls = served_app
    response = client.post(f"/predict/{STNET}", data=body, content_type="application/json")
    assert response.status_code == 400 and response.mimetype == "application/json", response.data[:300]
    answer = response.get_json()
    assert answer["status"] == "101" and answer["results"] == "" and answer["msg"].startswith(message), answer
    assert calls == []


def test_other_http_errors_are_in_paddlehubs_format_too_and_good_requests_pass(served_app):
    client, calls = served_app
    not_json = client.post(f"/predict/{STNET}", data=b'{"videos": []}', content_type="text/plain")
    assert not_json.status_code == 415 and not_json.get_json()["status"] == "112"
    wrong_method = client.get(f"/predict/{STNET}")
    assert wrong_method.status_code == 405 and wrong_method.get_json()["msg"].startswith("Method Not Allowed")
    fine = client.post(f"/predict/{STNET}", json={"videos": [], "timeline": 2})
    assert fine.status_code == 200 and fine.get_json() == {"status": "000", "msg": "", "results": []}
    assert calls == [{"videos": [], "timeline": 2}]
