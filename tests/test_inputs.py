"""What `paths` may hold besides local files: URLs, encoded bytes and file objects, decoded frames.

Every kind gives the file's own results, bit for bit; every failure is an error entry naming the
item (the URL without its secrets, `<bytes #i>`, ...), never a temporary file, and nothing stays on
disk. URLs are read from HTTP servers run here on 127.0.0.1 (tests/fixtures/http_server.py).
"""
from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import av
import numpy as np
import pytest

from paddlehub_video import environment, inputs
from paddlehub_video.decode.video import read_sampled_frames
from paddlehub_video.inputs import EncodedInput, Frames, InputLimits, local_video
from paddlehub_video.interfaces import serving
from tests.fixtures.http_server import FileServer

SECRET = "s3cr3t"


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary directory of this test's own, so that 'nothing left on disk' is checked exactly."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def served(http_server: FileServer, short_video: Path) -> FileServer:
    """The short test video served as clip.mp4."""
    shutil.copyfile(short_video, http_server.root / "clip.mp4")
    return http_server


def fresh_stnet(publisher_host, monkeypatch: pytest.MonkeyPatch, **config: object):
    """StNet with the SMALL settings and `config`, made now (its downloads' timeouts read from the environment now)."""
    monkeypatch.setenv("PADDLEHUB_VIDEO_MIRROR", publisher_host.server.base_url)
    settings = {"sampling": {"seg_num": 4}, "preprocess": {"short_size": 128, "crop_size": 128}, **config}
    return publisher_host.small_module("stnet_kinetics400").__class__(
        config=publisher_host.config("stnet_kinetics400", **settings))


def all_frames(path: Path) -> np.ndarray:
    """Every frame of `path` as the decoders give them: `[T, H, W, 3]` uint8 RGB."""
    return np.stack(read_sampled_frames(path, lambda count: list(range(count)), np.copy))


def left_behind(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# ------------------------------------------------------------ frames, bytes and file objects


def test_frames_bytes_and_file_objects_give_the_files_results_bit_for_bit(small_videotag, short_video, private_tmp):
    frames = all_frames(short_video)
    data = short_video.read_bytes()
    items = [str(short_video), Frames(frames, 25.0), frames, data, bytearray(data), memoryview(data), io.BytesIO(data)]
    results = small_videotag.classify(items, top_k=5)
    expected = results[0]["prediction"]
    assert expected and "error" not in results[0]
    assert [r["path"] for r in results[1:]] == ["<frames #1>", "<frames #2>", "<bytes #3>", "<bytes #4>",
                                                 "<bytes #5>", "<file #6>"]
    for entry in results[1:]:
        assert list(entry["prediction"].items()) == list(expected.items()), entry  # order, exact floats
    features = small_videotag.extract_features([str(short_video), Frames(frames, 25.0), io.BytesIO(data)])
    for entry in features[1:]:
        for key in ("tsn_features", "pooled_feature"):
            assert np.array_equal(entry[key], features[0][key]), entry["path"]
    assert left_behind(private_tmp) == []


def test_frames_have_a_timeline_when_their_rate_is_given(small_videotag, short_video):
    frames = all_frames(short_video)
    with_rate, without = small_videotag.classify_timeline([Frames(frames, 25.0), frames], window_seconds=2.0)
    file_timeline = small_videotag.classify_timeline([str(short_video)], window_seconds=2.0)[0]
    assert with_rate["path"] == "<frames #0>" and with_rate["duration"] == pytest.approx(file_timeline["duration"])
    assert [w["prediction"] for w in with_rate["windows"]] == [w["prediction"] for w in file_timeline["windows"]]
    assert without["error"] == "<frames #1>: frames without a frame rate have no timeline: give Frames(array, fps)"


@pytest.mark.parametrize("item, message", [
    (None, "got NoneType"),
    (5, "got int"),
    (np.zeros((4, 8, 8), np.uint8), "an array of shape [4, 8, 8] and dtype uint8 is not a video's frames"),
    (np.full((2, 8, 8, 3), 7.5, np.float32), "an array of shape [2, 8, 8, 3] and dtype float32 is not"),
    (Frames(np.zeros((2, 8, 8, 3), np.uint8), -1), "Frames.fps must be a positive number"),
    (Frames([[1]], 25), "Frames.array must be a numpy array, got list"),
])
def test_an_item_that_is_no_video_is_a_value_error_naming_its_index(small_stnet, short_video, item, message):
    with pytest.raises(ValueError) as caught:
        small_stnet.classify([str(short_video), item])
    text = str(caught.value)
    assert text.startswith("paths[1]: ") and message in text, text
    assert "7.5" not in text and "[[1]]" not in text  # never the item's contents


def test_a_lone_item_is_a_value_error_asking_for_a_list(small_stnet, short_video):
    for lone in (Frames(np.zeros((2, 8, 8, 3), np.uint8), 25.0), short_video.read_bytes()):
        with pytest.raises(ValueError, match="paths must be a list of videos, got a single .*: put it in a list"):
            small_stnet.classify(lone)


def test_bytes_are_a_file_name_unless_they_hold_a_nul_byte(small_stnet, tmp_path):
    name = os.fsencode(tmp_path / "gone.mp4")
    (entry,) = small_stnet.classify([name])
    assert entry["path"] == os.fsdecode(name) and entry["error"].endswith("file not found")
    (entry,) = small_stnet.classify([b"\0not a video" * 10])
    assert entry["path"] == "<bytes #0>" and entry["error"].startswith("<bytes #0>: cannot open the container")


def test_in_memory_inputs_over_the_size_limit_and_text_files_get_clear_errors(publisher_host, short_video,
                                                                              monkeypatch, private_tmp):
    small = fresh_stnet(publisher_host, monkeypatch, limits={"max_input_bytes": 1000})
    data = short_video.read_bytes()
    results = small.classify([data, io.BytesIO(data), io.StringIO("text")])
    assert [r["error"] for r in results] == [
        f"<bytes #0>: {len(data)} bytes, over the limit of 1000 bytes (limits.max_input_bytes)",
        "<file #1>: over the limit of 1000 bytes (limits.max_input_bytes)",
        "<file #2>: the file object gave str, not bytes: open it in binary mode ('rb')",
    ]
    assert left_behind(private_tmp) == []


def test_the_temporary_file_goes_even_on_ctrl_c(private_tmp):
    class Interrupted(io.RawIOBase):
        calls = 0

        def read(self, size: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 2:
                raise KeyboardInterrupt
            return b"\0" * 1000

    with pytest.raises(KeyboardInterrupt):
        with local_video(EncodedInput("<file #0>", Interrupted()), InputLimits(1 << 20)):
            pass
    assert left_behind(private_tmp) == []


def test_a_container_without_a_video_stream_says_so(small_stnet, tmp_path):
    path = tmp_path / "voice.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=8000, layout="mono")
        for index in range(20):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 8000, index * 1024
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    (entry,) = small_stnet.classify([str(path)])
    assert entry["error"] == f"{path}: the container holds no video stream (only audio)"
    (timeline,) = small_stnet.classify_timeline([str(path)])
    assert timeline["error"] == f"{path}: the container holds no video stream (only audio)"


# ------------------------------------------------------------ URLs


def test_a_url_gives_the_files_results_and_is_named_without_its_secrets(small_videotag, served, short_video,
                                                                         private_tmp):
    host = served.base_url.split("//", 1)[1]
    url = f"http://user:{SECRET}@{host}/clip.mp4?token={SECRET}#t=1"
    served.set_fault("clip.mp4", ignore_range=True, times=1)  # the second answer honours ranges
    results = small_videotag.classify([str(short_video), url, served.url_for("clip.mp4")])
    assert results[1]["path"] == f"http://{host}/clip.mp4?…"
    assert results[2]["path"] == served.url_for("clip.mp4")
    for entry in results[1:]:
        assert list(entry["prediction"].items()) == list(results[0]["prediction"].items())
    timeline = small_videotag.classify_timeline([url], window_seconds=2.0)[0]
    assert timeline["path"] == f"http://{host}/clip.mp4?…" and timeline["windows"]
    assert len(small_videotag.preprocess(served.url_for("clip.mp4"))) == 4  # what the Ray decode stage calls
    assert left_behind(private_tmp) == []


def test_stnets_published_api_reads_urls(small_stnet, served, short_video):
    from_url = small_stnet.video_classification({"image": [served.url_for("clip.mp4")]})
    assert from_url == small_stnet.video_classification({"image": [str(short_video)]})


def test_a_redirect_chain_is_followed_to_http_and_https_only(small_stnet, served, short_video, private_tmp):
    served.set_fault("a.mp4", location="/b.mp4")
    served.set_fault("b.mp4", location=served.url_for("clip.mp4"))
    served.set_fault("ftp.mp4", location="ftp://127.0.0.1/clip.mp4")
    served.set_fault("loop.mp4", location="/loop.mp4")
    chained, to_ftp, looping = small_stnet.classify([served.url_for(n) for n in ("a.mp4", "ftp.mp4", "loop.mp4")])
    assert chained["prediction"] == small_stnet.classify([str(short_video)])[0]["prediction"]
    assert to_ftp["error"] == (f"{served.url_for('ftp.mp4')}: refused: redirected to a ftp: URL; only http and "
                               f"https are followed")
    assert looping["error"] == f"{served.url_for('loop.mp4')}: refused: more than 10 redirects"
    assert left_behind(private_tmp) == []


def test_url_failures_are_error_entries_naming_the_url(publisher_host, served, monkeypatch, private_tmp):
    monkeypatch.setenv("PADDLEHUB_VIDEO_TIMEOUT", "0.5")
    monkeypatch.setenv("PADDLEHUB_VIDEO_DEADLINE", "2")
    small_stnet = fresh_stnet(publisher_host, monkeypatch)
    shutil.copyfile(served.root / "clip.mp4", served.root / "drip.mp4")
    served.set_fault("drip.mp4", drip_s=0.05)  # never silent for 0.5 s, never done in 2 s
    served.put("empty.mp4", b"")
    release = threading.Event()
    served.set_fault("slow.mp4", hold=release)
    shutil.copyfile(served.root / "clip.mp4", served.root / "liar.mp4")
    served.set_fault("liar.mp4", announce=(served.root / "clip.mp4").stat().st_size + 1000)
    size = (served.root / "clip.mp4").stat().st_size
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{closed.getsockname()[1]}/clip.mp4"
    urls = [served.url_for("missing.mp4"), served.url_for("slow.mp4"), served.url_for("liar.mp4"),
            "rtsp://127.0.0.1/live", "ftp://127.0.0.1/clip.mp4", nobody, served.url_for("drip.mp4"),
            served.url_for("empty.mp4"), "http:///clip.mp4"]
    try:
        errors = [entry["error"] for entry in small_stnet.classify(urls)]
    finally:
        release.set()
    assert errors[0] == f"{urls[0]}: could not download: HTTP 404 Not Found"
    assert errors[1].startswith(f"{urls[1]}: could not download: timed out: no data for 0.5 s")
    assert errors[2] == (f"{urls[2]}: could not download: the connection closed after {size} of the "
                         f"{size + 1000} bytes announced")
    assert errors[3] == ("rtsp://127.0.0.1/live: live streams are not supported (rtsp://); record a clip to a file "
                         "or give an http(s) URL of a video file")
    assert errors[4] == "ftp://127.0.0.1/clip.mp4: unsupported URL scheme ftp:// (http and https are read)"
    assert errors[5].startswith(f"{nobody}: could not download: ConnectionRefusedError")
    assert errors[6] == (f"{urls[6]}: could not download: not complete after 2 s (raise PADDLEHUB_VIDEO_DEADLINE "
                         f"on a slow connection)")
    assert errors[7] == f"{urls[7]}: could not download: the server sent no bytes"
    assert errors[8] == "http:///clip.mp4: refused: the URL names no host"
    assert left_behind(private_tmp) == []


def test_an_endless_body_stops_at_the_size_limit(publisher_host, served, monkeypatch, private_tmp):
    module = fresh_stnet(publisher_host, monkeypatch, limits={"max_input_bytes": 1 << 20})
    served.set_fault("live.mp4", endless=True)
    (entry,) = module.classify([served.url_for("live.mp4")])
    assert entry["error"] == (f"{served.url_for('live.mp4')}: over the limit of {1 << 20} bytes "
                              f"(limits.max_input_bytes) before its end (an endless stream? live streams are not "
                              f"supported)")
    big = served.put("big.mp4", b"\0" * ((1 << 20) + 1))
    assert big.exists()
    (entry,) = module.classify([served.url_for("big.mp4")])
    assert entry["error"] == (f"{served.url_for('big.mp4')}: the server announces {(1 << 20) + 1} bytes, over the "
                              f"limit of {1 << 20} bytes (limits.max_input_bytes)")
    assert [r.path for r in served.requests_for("big.mp4")] == ["big.mp4"]  # refused before its body was read
    assert left_behind(private_tmp) == []


def test_hub_run_reads_a_url(hub_env, served):
    from tests.fixtures.hub_cli import printed_result, run_hub

    url = served.url_for("clip.mp4") + "?a=1&b=*"  # a URL's `?` and `*` are not a glob pattern
    repo = Path(__file__).resolve().parents[1]
    proc = run_hub(["run", "stnet_kinetics400", "--input_path", url, "--top_k", "2"], cwd=repo, env=hub_env)
    (result,) = printed_result(proc)
    assert len(result) == 2


# ------------------------------------------------------------ under hub serving


def serve(module, paths: list[str]) -> list[dict]:
    return serving.classify_request(module.classify, paths, None, {"top_k": 2})


def test_serving_refuses_urls_unless_their_host_is_listed(small_stnet, served, monkeypatch, private_tmp):
    url = served.url_for("clip.mp4")
    monkeypatch.delenv(serving.SERVING_URL_HOSTS_ENV, raising=False)
    (entry,) = serve(small_stnet, [url])
    assert entry["error"] == f"{url}: {serving.URL_REFUSED}"
    monkeypatch.setenv(serving.SERVING_URL_HOSTS_ENV, "videos.example.com")
    assert serve(small_stnet, [url])[0]["error"] == (
        f"{url}: refused: the host 127.0.0.1 is not in {serving.SERVING_URL_HOSTS_ENV}")
    monkeypatch.setenv(serving.SERVING_URL_HOSTS_ENV, "localhost")  # the name, but not its loopback address
    localhost = url.replace("127.0.0.1", "localhost")
    assert serve(small_stnet, [localhost])[0]["error"] == (
        f"{localhost}: refused: localhost resolves to 127.0.0.1, a loopback address, used only when "
        f"{serving.SERVING_URL_HOSTS_ENV} names it (or a network holding it)")
    monkeypatch.setenv(serving.SERVING_URL_HOSTS_ENV, "localhost, 127.0.0.1")
    assert serve(small_stnet, [url, localhost])[0]["prediction"]
    assert served.requests_for("clip.mp4")  # only now did the server hear of it
    assert left_behind(private_tmp) == []


def test_serving_checks_every_redirect_and_the_address_connected_to(small_stnet, served, monkeypatch):
    monkeypatch.setenv(serving.SERVING_URL_HOSTS_ENV, "127.0.0.1")
    port = served.base_url.rsplit(":", 1)[1]
    served.set_fault("elsewhere.mp4", location=f"http://127.0.0.2:{port}/clip.mp4")
    served.set_fault("by-name.mp4", location=f"http://localhost:{port}/clip.mp4")
    errors = [e["error"] for e in serve(small_stnet, [served.url_for("elsewhere.mp4"), served.url_for("by-name.mp4")])]
    assert errors == [f"{served.url_for('elsewhere.mp4')}: refused: the host 127.0.0.2 is not in "
                      f"{serving.SERVING_URL_HOSTS_ENV}",
                      f"{served.url_for('by-name.mp4')}: refused: the host localhost is not in "
                      f"{serving.SERVING_URL_HOSTS_ENV}"]
    assert not served.requests_for("clip.mp4")

    # Any name, public addresses only: a name whose DNS answer is loopback is never connected to.
    monkeypatch.setenv(serving.SERVING_URL_HOSTS_ENV, "*")
    real = socket.getaddrinfo
    rebound = lambda host, *args, **kwargs: real("127.0.0.1" if host == "videos.example.com" else host, *args, **kwargs)  # noqa: E731
    monkeypatch.setattr(socket, "getaddrinfo", rebound)
    url = f"http://videos.example.com:{port}/clip.mp4"
    assert serve(small_stnet, [url])[0]["error"] == (
        f"{url}: refused: videos.example.com resolves to 127.0.0.1, a loopback address, used only when "
        f"{serving.SERVING_URL_HOSTS_ENV} names it (or a network holding it)")
    assert not served.requests_for("clip.mp4")


def test_serving_bounds_a_url_by_the_upload_limit(small_stnet, served, monkeypatch):
    monkeypatch.setenv(serving.SERVING_URL_HOSTS_ENV, "127.0.0.1")
    monkeypatch.setenv(serving.MAX_UPLOAD_ENV, "0.001")
    url = served.url_for("clip.mp4")
    size = (served.root / "clip.mp4").stat().st_size
    assert serve(small_stnet, [url])[0]["error"] == (
        f"{url}: the server announces {size} bytes, over the limit of {int(0.001 * 2**20)} bytes "
        f"({serving.MAX_UPLOAD_ENV})")


def test_a_bad_host_list_is_the_operators_error(monkeypatch):
    monkeypatch.setenv(serving.SERVING_URL_HOSTS_ENV, "good.example.com, bad/host")
    with pytest.raises(serving.ConfigError, match="'bad/host' is not a host name, an address or a network"):
        serving.serving_url_policy()
    monkeypatch.setenv(serving.SERVING_URL_HOSTS_ENV, "Videos.Example.com., [::1] 10.0.0.0/8,*")
    assert environment.serving().url_hosts == ("videos.example.com", "::1", "10.0.0.0/8", "*")


def test_url_names_keep_no_secret():
    assert inputs.url_name(f"https://me:{SECRET}@[::1]:8443/a/b.mp4?sig={SECRET}") == "https://[::1]:8443/a/b.mp4?…"
    assert inputs.url_name("http://h:notaport/x") == "http://<invalid URL>"


def test_an_endless_body_costs_disk_up_to_the_limit_and_no_memory(served, tmp_path):
    """In a child process: 256 MiB of an endless body streamed to the temporary file, cut at the limit,
    the file deleted; the child's peak RSS grows by the chunks in flight, not by the body."""
    served.set_fault("live.mp4", endless=True)
    script = (
        "import resource, sys, tempfile\n"
        "tempfile.tempdir = sys.argv[2]\n"
        "from paddlehub_video.inputs import InputLimits, as_input, local_video\n"
        "from paddlehub_video.errors import VideoDecodeError\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    with local_video(as_input(sys.argv[1]), InputLimits(256 << 20)):\n"
        "        pass\n"
        "except VideoDecodeError as exc:\n"
        "    print(exc)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"
    )
    folder = tmp_path / "child-tmp"
    folder.mkdir()
    done = subprocess.run([sys.executable, "-c", script, served.url_for("live.mp4"), str(folder)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    error, grown_mib = done.stdout.strip().splitlines()
    assert error.endswith(f"over the limit of {256 << 20} bytes (limits.max_input_bytes) before its end (an "
                          f"endless stream? live streams are not supported)")
    assert int(grown_mib) < 32, grown_mib
    assert os.listdir(folder) == []
