"""File names that are not valid UTF-8 (GBK, Latin-1, stray bytes), in every way a path comes in.

Python gives such a name as a str with surrogate escapes; handed to OpenCV as it is, it crashed the
process (SIGSEGV). Each test builds its own files with such names next to good ones (copies of the
same videos under UTF-8 names) and checks that every file gets the answer its UTF-8
twin gets, that the process survives (a subprocess where a crash would take pytest down), and that
the results, the --output lines, the report and the answers carry the name, losslessly.
"""
from __future__ import annotations

import ast
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from paddlehub_video.interfaces.report import NO_STRIP, render_report, write_report
from paddlehub_video.interfaces.results_file import ResultsFile
from paddlehub_video.interfaces.serving import SERVING_DIRS_ENV, classify_request
from paddlehub_video.names import native_path, printable
from tests.fixtures.hub_cli import TRACEBACK, describe, run_hub
from tests.fixtures.publisher import PublisherHost
from tests.fixtures.videos import MakeVideo

REPO = Path(__file__).resolve().parents[1]
STNET = "stnet_kinetics400"
# Names as old zip archives and Windows shares leave them on Linux: bytes that are not UTF-8.
HOSTILE = [b"\xff\xfe clip", b"\xb2\xe2\xca\xd4", b"caf\xe9", b"\xd6\xd0\xce\xc4/clip"]  # the last: a GBK folder
DECODE_TIMEOUT_S = 300


def fs(name: bytes) -> str:
    """A file name as Python gives it (os.walk, sys.argv): surrogate escapes for the bytes that are not UTF-8."""
    return os.fsdecode(name)


def place(source: Path, folder: Path, name: bytes) -> str:
    """A copy of `source` at `folder`/`name` (bytes); its path as a str."""
    target = os.path.join(os.fsencode(folder), name)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copyfile(source, target)
    return fs(target)


@pytest.fixture(scope="module")
def sources(make_video: MakeVideo) -> dict[str, Path]:
    """One video per decoder: planned PyAV (MPEG-4 in .mp4) and OpenCV's sequential decoder (FFV1 in .mkv)."""
    return {".mp4": make_video("names_planned", 24, 64, 48), ".mkv": make_video("names_opencv", 20, 48, 64,
                                                                               codec="lossless")}


@pytest.fixture(scope="module")
def folder(sources: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Good names and hostile ones mixed: `good.mp4`, `good.mkv`, then each hostile stem with each extension."""
    root = tmp_path_factory.mktemp("names")
    for suffix, source in sources.items():
        place(source, root, b"good" + suffix.encode())
        for stem in HOSTILE:
            place(source, root, stem + suffix.encode())
    return root


def hostile_paths(folder: Path) -> list[str]:
    """The hostile names of `folder`, as str: each stem as .mp4 then as .mkv."""
    return [fs(os.path.join(os.fsencode(folder), stem + suffix)) for stem in HOSTILE for suffix in (b".mp4", b".mkv")]


def twin(path: str, folder: Path) -> str:
    """The UTF-8 named copy of the same video."""
    return str(folder / ("good" + os.path.splitext(path)[1]))


# ---------------------------------------------------------------- decoding: every native call


DECODE_SCRIPT = r"""
import os, sys, cv2
import numpy as np
from paddlehub_video.decode import video
from paddlehub_video.decode.limits import DecodeLimits, check_video
from paddlehub_video.interfaces.report import thumbnails

names = []
capture = cv2.VideoCapture
def recording(name, *args):
    names.append(name)
    return capture(name, *args)
cv2.VideoCapture = recording

pick = lambda n: list(range(0, n, 3))
same = lambda a, b: len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
for bad_hex, good in zip(sys.argv[1::2], sys.argv[2::2]):
    bad = os.fsdecode(bytes.fromhex(bad_hex))
    expected = video.read_sampled_frames(good, pick, lambda f: f)
    for path in (bad, os.fsencode(bad)):  # str with surrogate escapes, and bytes
        assert same(video.read_sampled_frames(path, pick, lambda f: f), expected)
    assert video.frame_times(bad) == video.frame_times(good)
    groups = [[0, 1], [2, 5]]
    for got, want in zip(video.read_sampled_groups(bad, groups, lambda f: f),
                         video.read_sampled_groups(good, groups, lambda f: f)):
        assert same(got, want)
    check_video(bad, DecodeLimits(max_frames=1000, max_pixels=10**6))
    assert thumbnails(bad) == thumbnails(good) and thumbnails(good).frames
assert names and all(name.isascii() for name in names), names
# VmHWM, not ru_maxrss: that keeps the peak of the process before exec (pytest forked, models loaded).
peak = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print("opencv opened", len(names), "peak KiB", peak)
"""
PEAK_MIB = 400  # OpenCV, PyAV and numpy themselves and the decoders of a 64x48 video: 91 MiB here


def test_every_decoder_reads_a_non_utf8_name_as_its_utf8_twin(folder: Path, tmp_path: Path) -> None:
    odd_extension = os.path.join(os.fsencode(tmp_path), b"clip.\xe9")  # no extension FFmpeg knows
    shutil.copyfile(folder / "good.mp4", odd_extension)
    pairs = [(path, twin(path, folder)) for path in hostile_paths(folder)]
    pairs.append((fs(odd_extension), str(folder / "good.mp4")))
    arguments = [arg for bad, good in pairs for arg in (os.fsencode(bad).hex(), good)]
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    proc = subprocess.run([sys.executable, "-c", DECODE_SCRIPT, *arguments], capture_output=True, text=True,
                          timeout=DECODE_TIMEOUT_S, cwd=REPO, env={**os.environ, "TMPDIR": str(temporary)})
    assert proc.returncode == 0, describe(proc)  # not -11 (SIGSEGV)
    peak_kib = int(proc.stdout.split("peak KiB")[1])
    assert peak_kib < PEAK_MIB * 1024, proc.stdout
    assert list(temporary.iterdir()) == []  # every symlink made for OpenCV removed


def test_the_name_given_to_a_native_library_is_utf8_and_gone_after(folder: Path) -> None:
    bad = hostile_paths(folder)[0]
    with native_path(bad) as name:
        assert name.isascii() and name.endswith(".mp4") and os.path.samefile(name, bad)
    assert not os.path.lexists(name) and not os.path.exists(os.path.dirname(name))
    with native_path(twin(bad, folder)) as name:
        assert name == twin(bad, folder)  # a UTF-8 name is used as it is


# ---------------------------------------------------------------- the library's entry points


def test_classify_stream_timeline_and_features_answer_a_non_utf8_name_as_its_twin(
    small_videotag: Any, folder: Path
) -> None:
    bad = hostile_paths(folder)
    paths = [twin(bad[0], folder), twin(bad[1], folder), *bad]
    entries = small_videotag.classify(paths, top_k=3)
    assert [e["path"] for e in entries] == paths and not any("error" in e for e in entries)
    for entry in entries[2:]:
        assert entry["prediction"] == entries[0 if entry["path"].endswith(".mp4") else 1]["prediction"]
    assert [e["path"] for e in small_videotag.classify_stream([os.fsencode(bad[0])])] == [bad[0]]  # bytes too
    timeline = small_videotag.classify_timeline([bad[1], paths[1]], window_seconds=0.4, top_k=2)
    assert timeline[0]["windows"] == timeline[1]["windows"] and timeline[0]["path"] == bad[1]
    features = small_videotag.extract_features([bad[2], paths[0]])
    assert (features[0]["tsn_features"] == features[1]["tsn_features"]).all()


def test_stnet_video_classification_of_non_utf8_names(small_stnet: Any, folder: Path) -> None:
    bad = hostile_paths(folder)
    predictions = small_stnet.video_classification({"image": [bad[3], Path(bad[3])]})
    assert predictions[0] == predictions[1] != {} and small_stnet.last_errors == {}


def test_an_error_names_the_file_as_it_is_given(small_stnet: Any, tmp_path: Path) -> None:
    missing = fs(os.path.join(os.fsencode(tmp_path), b"gone \xe9.mp4"))
    (entry,) = small_stnet.classify([missing])
    assert entry["path"] == missing and entry["error"] == f"{missing}: file not found"


# ---------------------------------------------------------------- hub run: --output, --report, stdout


def test_hub_run_answers_every_file_writes_its_line_and_resumes_past_it(
    hub_env: dict[str, str], folder: Path, tmp_path: Path
) -> None:
    output, report = tmp_path / "r.jsonl", tmp_path / "r.html"
    args = ["run", STNET, "--input_path", str(folder), "--output", str(output), "--report", str(report)]
    proc = run_hub(args, cwd=REPO, env=hub_env)
    assert proc.returncode == 0 and TRACEBACK not in proc.stderr, describe(proc)
    expected = sorted([str(folder / "good.mp4"), str(folder / "good.mkv"), *hostile_paths(folder)])
    lines = output.read_bytes().splitlines()
    lines[0].decode("utf-8")  # every line valid UTF-8 (surrogates as JSON's \udcXX escapes)
    entries = [json.loads(line) for line in lines]
    assert sorted(e["path"] for e in entries) == expected and not any("error" in e for e in entries)
    by_path = {e["path"]: e["prediction"] for e in entries}
    assert all(by_path[p] == by_path[twin(p, folder)] for p in hostile_paths(folder))
    page = report.read_text(encoding="utf-8")  # written, and UTF-8
    assert all(printable(p) in page for p in hostile_paths(folder)) and page.count("data:image/jpeg") >= 8

    again = run_hub(args, cwd=REPO, env=hub_env)
    assert again.returncode == 0, describe(again)
    assert "'skipped': 10" in again.stdout and "'classified': 0" in again.stdout, describe(again)


def test_hub_run_prints_and_lists_non_utf8_names(hub_env: dict[str, str], folder: Path, tmp_path: Path) -> None:
    bad = hostile_paths(folder)
    listing = tmp_path / "list.txt"  # as `find` writes it: the names' own bytes
    listing.write_bytes(b"".join(os.fsencode(p) + b"\n" for p in bad[0::2][:2]))  # two .mp4 copies
    missing = fs(os.path.join(os.fsencode(tmp_path), b"gone\xe9.mp4"))
    proc = run_hub(["run", STNET, "--input_file", str(listing), "--input_path", missing], cwd=REPO, env=hub_env)
    assert proc.returncode == 1 and TRACEBACK not in proc.stderr, describe(proc)
    printed = next(ast.literal_eval(line) for line in proc.stdout.splitlines() if line.startswith("[{"))
    assert [entry["path"] for entry in printed] == [missing, *bad[0::2][:2]]  # --input_path first, names as given
    assert printed[0]["prediction"] == {} and printed[1]["prediction"] == printed[2]["prediction"] != {}
    assert f"error: {printable(missing)}: file not found" in proc.stderr, describe(proc)


def test_hub_run_timeline_of_a_non_utf8_name(small_stnet: Any, folder: Path, tmp_path: Path) -> None:
    bad = hostile_paths(folder)[1]
    output = tmp_path / "t.jsonl"
    summary = small_stnet.run_cmd(["--input_path", bad, "--timeline", "0.4", "--output", str(output),
                                   "--report", str(tmp_path / "t.html")])
    assert summary["classified"] == 1
    (entry,) = [json.loads(line) for line in output.read_bytes().splitlines()]
    assert entry["path"] == bad and entry["windows"]
    assert small_stnet.run_cmd(["--input_path", bad, "--timeline", "0.4", "--output", str(output)])["skipped"] == 1


def test_results_file_and_report_hold_any_surrogate(tmp_path: Path) -> None:
    odd = "lone \ud800 and " + fs(b"\xe9")  # a client's JSON may send any lone surrogate
    with ResultsFile(tmp_path / "r.jsonl") as results:
        results.append({"path": odd, "prediction": {}, "error": f"{odd}: file not found"})
    page = write_report([{"path": odd, "prediction": {}, "error": f"{odd}: bad"}], tmp_path / "r.html",
                        frames=lambda path: NO_STRIP).read_text(encoding="utf-8")
    assert printable(odd) in page and "\\ud800" in page
    assert "\\udce9" in render_report([{"path": odd, "prediction": {"a": 0.5}}], frames=lambda path: NO_STRIP)


# ---------------------------------------------------------------- hub serving and Ray


def test_serving_answers_a_non_utf8_path_in_json(small_stnet: Any, folder: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import flask

    monkeypatch.setenv(SERVING_DIRS_ENV, str(folder))
    bad = hostile_paths(folder)
    app = flask.Flask("names")
    body = json.dumps({"paths": [bad[0], twin(bad[0], folder)], "top_k": 2})  # surrogates as \udcXX escapes
    with app.test_request_context(data=body, content_type="application/json"):
        request = flask.request.json
        answer = classify_request(small_stnet.classify, request.pop("paths"), None, request)
        response = app.json.response({"status": "000", "msg": "", "results": answer})
    returned = json.loads(response.get_data())["results"]
    assert [e["path"] for e in returned] == [bad[0], twin(bad[0], folder)]
    assert returned[0]["prediction"] == returned[1]["prediction"] != {}


def test_ray_stages_take_bytes_paths_and_give_utf8_rows(mirror: PublisherHost, folder: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pytest.importorskip("ray.data")
    from paddlehub_video.interfaces.ray_adapter import DecodeStage, ModelStage
    from tests.fixtures.publisher import SMALL

    bad = hostile_paths(folder)
    config = mirror.config(STNET, **SMALL)
    batch = pa.table({"path": pa.array([os.fsencode(bad[0]), os.fsencode(twin(bad[0], folder)), b"/gone\xe9.mp4"],
                                       pa.binary())})
    decoded = DecodeStage(REPO / STNET, config)(batch)
    rows = ModelStage(REPO / STNET, config)(decoded).to_pylist()
    assert [r["path"] for r in rows] == [printable(bad[0]), twin(bad[0], folder), "/gone\\udce9.mp4"]
    assert rows[0]["prediction"] == rows[1]["prediction"] != "{}" and rows[2]["error"].endswith("file not found")


def test_a_failure_is_logged_as_text_any_handler_can_write(small_stnet: Any, tmp_path: Path) -> None:
    missing = fs(os.path.join(os.fsencode(tmp_path), b"gone \xe9.mp4"))
    log = tmp_path / "log.txt"
    handler = logging.FileHandler(log, encoding="utf-8")  # strict: a surrogate would be a logging error
    logging.getLogger("paddlehub_video").addHandler(handler)
    try:
        small_stnet.classify([missing])
    finally:
        logging.getLogger("paddlehub_video").removeHandler(handler)
        handler.close()
    assert log.read_text(encoding="utf-8") == f"{printable(missing)}: file not found\n"
