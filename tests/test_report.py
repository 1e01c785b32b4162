"""The HTML report (`paddlehub_video.interfaces.report`, `hub run --report`), opened in a real headless Chromium.

Chromium and a CJK font come from the system packages, installed by `scripts/test.sh` where they
are missing (apt-get, as root); without them the browser tests are skipped. Each browser test keeps a screenshot
in tests/artifacts/ (gitignored), to look at after the run.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest

from paddlehub_video.interfaces.output_files import Refused
from paddlehub_video.interfaces.report import (
    MAX_LANES,
    REPORT_HEAD,
    THUMB_HEIGHT,
    THUMBNAILS,
    RunInfo,
    clock,
    confidence,
    render_report,
    thumbnails,
    tick_times,
    write_report,
)
from paddlehub_video.segments import segments_of
from paddlehub_video.timeline import timeline_entry
from tests.fixtures.files import snapshot
from tests.fixtures.videos import MakeVideo

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
BROWSER_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def chromium() -> str:
    """The Chromium executable (scripts/test.sh installs it from the system packages)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("no Chromium: scripts/test.sh installs it (apt-get, as root)")
    return found


def browse(chromium: str, page: Path, screenshot: Path, width: int = 1000) -> str:
    """The DOM Chromium builds from `page` (no network: file://), after writing its screenshot."""
    ARTIFACTS.mkdir(exist_ok=True)
    common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={width},1200"]
    shot = subprocess.run([*common, f"--screenshot={screenshot}", page.as_uri()],
                          capture_output=True, timeout=BROWSER_TIMEOUT_S, check=False)
    assert screenshot.is_file() and screenshot.stat().st_size > 0, shot.stderr[-2000:]
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         encoding="utf-8", timeout=BROWSER_TIMEOUT_S, check=True)
    return dom.stdout


class Marks(HTMLParser):
    """A page's `data-*` marks (`data-path`, `data-label`, `data-tick`, `data-legend`, `data-segment`,
    `data-stretch`, `data-summary`: their values in order), the text of each marked element, and
    every external reference."""

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, list[str]] = {}
        self.texts: dict[str, list[str]] = {}
        self.external: list[str] = []
        self._open: list[tuple[str, str, int]] = []  # (mark, tag, depth) of the marked elements around
        self._depth = 0

    @property
    def paths(self) -> list[str]:
        return self.data.get("path", [])

    @property
    def labels(self) -> list[str]:
        return self.data.get("label", [])

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self._depth += 1
        for key, value in found.items():
            if key.startswith("data-"):
                self.data.setdefault(key[5:], []).append(value or "")
                self.texts.setdefault(key[5:], []).append("")
                self._open.append((key[5:], tag, self._depth))
        for key in ("src", "href"):
            value = found.get(key) or ""
            if value and not value.startswith("data:"):
                self.external.append(value)
        if tag in ("img", "br", "meta"):  # void elements: no end tag
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        while self._open and self._open[-1][2] >= self._depth:
            self._open.pop()
        self._depth -= 1

    def handle_data(self, data: str) -> None:
        for mark, _, _ in self._open:
            self.texts[mark][-1] += data


def marks(html: str) -> Marks:
    parser = Marks()
    parser.feed(html)
    return parser


@pytest.fixture(scope="module")
def entries(make_video: MakeVideo) -> list[dict]:
    """A classify entry, a timeline entry (Chinese labels, one with markup in it) and a failed video."""
    first, second = make_video("report_a", 40, 64, 48), make_video("report_b", 50, 48, 64)
    return [
        {"path": str(first), "prediction": {"训练": 0.9771, "蹲": 0.939, "<b>杠铃</b>": 0.8554}},
        {"path": str(second), "duration": 2.0, "windows": [
            {"start": 0.0, "end": 1.0, "prediction": {"舞蹈": 0.8504, "健身房": 0.2}},
            {"start": 1.0, "end": 2.0, "prediction": {"舞蹈": 0.4}}]},
        {"path": "missing.mp4", "prediction": {}, "error": "missing.mp4: file not found"},
    ]


def test_the_browser_shows_every_video_and_tag_and_needs_no_network(chromium, entries, tmp_path):
    page = write_report(entries, tmp_path / "report.html")
    dom = browse(chromium, page, ARTIFACTS / "report.png")
    found = marks(dom)
    assert found.paths == [entries[0]["path"], entries[1]["path"], "missing.mp4"]
    assert found.labels == ["训练", "蹲", "<b>杠铃</b>", "舞蹈", "健身房"]  # the markup shown as text
    assert "<b>杠铃</b>" not in dom  # escaped, never markup
    assert found.external == []
    assert "missing.mp4: file not found" in dom
    assert dom.count("data:image/jpeg;base64,") >= 4  # each video's strip of frames
    # An entry without segments (a file written before them): its segments made from its windows.
    assert found.data["segment"] == ["舞蹈 00:00–00:02 (0.63)", "健身房 00:00–00:01 (0.20)"]
    assert dict(zip(found.data["summary"], found.texts["summary"], strict=True))["Videos"] == "2 answered, 1 failed"


# A two-minute timeline: a dance, a gym for a while, then basketball; a crowd now and then.
LONG_WINDOWS = [
    {"start": 0.0, "end": 30.0, "prediction": {"舞蹈": 0.95, "人群": 0.3}},
    {"start": 15.0, "end": 45.0, "prediction": {"舞蹈": 0.91, "健身房": 0.6}},
    {"start": 30.0, "end": 60.0, "prediction": {"舞蹈": 0.87, "健身房": 0.7}},
    {"start": 45.0, "end": 75.0, "prediction": {"健身房": 0.8}},
    {"start": 60.0, "end": 90.0, "prediction": {"篮球": 0.9, "人群": 0.4}},
    {"start": 75.0, "end": 105.0, "prediction": {"篮球": 0.96}},
    {"start": 90.0, "end": 120.0, "prediction": {"篮球": 0.85}},
    {"start": 105.0, "end": 125.0, "prediction": {"篮球": 0.86, "人群": 0.5}},
]


@pytest.fixture(scope="module")
def long_timeline(make_video: MakeVideo) -> dict:
    """A timeline entry of a 125 s video (1 fps, 320x180), its segments made as classify_timeline makes them."""
    return timeline_entry(str(make_video("report_long", 125, 320, 180, fps=1)), 125.0, LONG_WINDOWS)


def test_the_timeline_is_drawn_from_its_segments(chromium, long_timeline, tmp_path):
    about = RunInfo(module="videotag_tsn_lstm", threshold=0.5, top_k=10, window=30, stride=15,
                    date="2026-12-06 04:00 UTC")
    failed = {"path": "gone.mp4", "duration": None, "windows": [], "segments": [], "error": "gone.mp4: not found"}
    page = write_report([long_timeline, failed], tmp_path / "long.html", title="videotag_tsn_lstm", about=about)
    dom = browse(chromium, page, ARTIFACTS / "report_timeline.png")
    browse(chromium, printed_copy(page), ARTIFACTS / "report_timeline_print.png", width=1030)
    found = marks(dom)
    assert dict(zip(found.data["summary"], found.texts["summary"], strict=True)) == {
        "Module": "videotag_tsn_lstm", "Date": "2026-12-06 04:00 UTC", "Threshold": "0.5", "top_k": "10",
        "Windows": "30 s every 15 s", "Videos": "1 answered, 1 failed", "Total duration": "02:05"}
    ticks = ["00:00", "00:15", "00:30", "00:45", "01:00", "01:15", "01:30", "01:45", "02:00"]
    assert found.data["tick"] == ticks * 2 and found.texts["tick"] == ticks * 2  # above and below the lanes
    lanes = ["舞蹈", "人群", "健身房", "篮球"]  # one per tag, in order of appearance
    assert found.labels == lanes and found.data["legend"] == lanes
    assert found.data["segment"] == [
        "舞蹈 00:00–00:52.5 (0.91)", "人群 00:00–00:22.5 (0.30)", "人群 01:07.5–01:22.5 (0.40)",
        "人群 01:50–02:05 (0.50)", "健身房 00:22.5–01:07.5 (0.70)", "篮球 01:07.5–02:05 (0.89)"]
    assert found.texts["segment"] == ["0.91", "0.30", "0.40", "0.50", "0.70", "0.89"]  # written on the bars
    legend = dict(zip(found.data["legend"], found.texts["legend"], strict=True))
    assert legend["人群"] == "人群" + "00:52.5" + "00:00–00:22.5 (0.30); 01:07.5–01:22.5 (0.40); 01:50–02:05 (0.50)"
    assert found.texts["stretch"] == ["00:00–00:52.5舞蹈 0.91, 健身房 0.70", "00:52.5–01:07.5健身房 0.70",
                                      "01:07.5–02:05篮球 0.89, 人群 0.45"]
    assert "@media print" in page.read_text(encoding="utf-8")
    assert found.external == []


def test_axis_ticks_are_round_times_in_mm_ss():
    assert tick_times(2.0) == [0, 0.5, 1.0, 1.5, 2.0] and tick_times(0.4) == [0, 0.1, 0.2, 0.3, 0.4]
    assert tick_times(125.0) == [15.0 * k for k in range(9)]
    assert tick_times(3 * 3600 + 5) == [1800.0 * k for k in range(7)]
    assert [clock(t) for t in (0, 0.5, 59.96, 75, 3600, 3 * 3600 + 62.5)] == [
        "00:00", "00:00.5", "01:00", "01:15", "1:00:00", "3:01:02.5"]
    assert [confidence(c) for c in (0.9125, 0.0634, 1.0)] == ["0.91", "0.063", "1.00"]


def test_thumbnails_are_large_and_tell_their_time(long_timeline):
    strip = thumbnails(long_timeline["path"])
    assert strip.duration == 125.0 and len(strip.frames) == THUMBNAILS
    assert [t.time for t in strip.frames] == [12.0, 37.0, 62.0, 87.0, 112.0]  # frames 12, 37, ... at 1 fps
    for thumb in strip.frames:
        image = cv2.imdecode(np.frombuffer(thumb.jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape[:2] == (THUMB_HEIGHT, 256) and THUMB_HEIGHT >= 120


# The most a timeline can be: timeline.max_windows (1000) overlapping windows, top_k 10 tags each, drawn at
# random from videotag's 3,396 labels (so every tag flickers): ~9,900 segments, ~3,400 tags.
WORST_SCRIPT = r"""
import random, sys
from paddlehub_video.interfaces.report import NO_STRIP, render_report
from paddlehub_video.segments import segments_of
from paddlehub_video.timeline import timeline_entry
random.seed(0)
labels = [f"标签{i}" for i in range(3396)]
windows = [{"start": k * 0.5, "end": k * 0.5 + 1.0,
            "prediction": {l: random.random() for l in random.sample(labels, 10)}} for k in range(1000)]
entry = timeline_entry("v.mp4", 500.5, windows)
page = render_report([entry], frames=lambda path: NO_STRIP)
peak = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(len(entry["segments"]), page.count('class="lane" data-label'), len(page.encode()), peak)
"""
WORST_TIMEOUT_S = 120  # ~1 s on an idle core


def test_the_largest_timeline_is_segmented_and_drawn_within_bounds():
    done = subprocess.run([sys.executable, "-c", WORST_SCRIPT], capture_output=True, text=True,
                          timeout=WORST_TIMEOUT_S, check=True)
    segments, lanes, size, peak_kib = map(int, done.stdout.split())
    assert segments > 9000 and lanes == MAX_LANES  # the other tags in the legend only
    assert size < 2 * 2**20 and peak_kib < 400 * 1024, (size, peak_kib)


def printed_copy(page: Path) -> Path:
    """A copy of `page` that applies its print stylesheet on screen (headless Chromium shoots screens only)."""
    copy = page.with_name(page.stem + "_print.html")
    copy.write_text(page.read_text(encoding="utf-8").replace("@media print", "@media all"), encoding="utf-8")
    return copy


def test_chinese_labels_have_a_font_to_render_with(chromium):
    fonts = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True, check=False).stdout
    assert fonts.strip(), "no CJK font: the Chinese labels would render as boxes"


def test_hub_run_writes_the_report_of_a_timeline_run(chromium, small_stnet, make_video: MakeVideo, tmp_path):
    video = make_video("report_c", 60, 64, 48)
    page, output = tmp_path / "run.html", tmp_path / "t.jsonl"
    small_stnet.run_cmd(["--input_path", str(video), "--timeline", "1", "--output", str(output),
                         "--report", str(page), "--top_k", "2"])
    (entry,) = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    found = marks(browse(chromium, page, ARTIFACTS / "hub_run_report.png"))
    assert found.paths == [str(video)]
    assert entry["segments"] == segments_of(entry["windows"]) and len(entry["windows"]) == 3
    assert found.labels == list(dict.fromkeys(s["label"] for s in entry["segments"]))
    assert len(found.data["segment"]) == len(entry["segments"])
    summary = dict(zip(found.data["summary"], found.texts["summary"], strict=True))
    assert summary["Module"] == "stnet_kinetics400" and summary["top_k"] == "2" and summary["Threshold"] == "0"
    assert summary["Windows"] == "1 s every 1 s" and summary["Videos"] == "1 answered, 0 failed"


def test_an_unreadable_video_gets_no_thumbnails_but_its_tags(tmp_path):
    html = render_report([{"path": str(tmp_path / "gone.mp4"), "prediction": {"a": 0.5}}])
    assert "data:image/jpeg" not in html and 'data-label="a"' in html


# ---------------------------------------------------------------- where --report may write (no browser)

REPORT_WAIT_S = 120  # a run refused at once; one that blocks on a FIFO would never end


def run_refused(module, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """`hub run` with `argv` is a usage error (exit status 2) before any video is classified: its message."""
    with pytest.raises(SystemExit) as stopped:
        module.run_cmd(argv)
    assert stopped.value.code == 2
    return capsys.readouterr().err


@pytest.fixture()
def clip(make_video: MakeVideo, tmp_path: Path) -> Path:
    """A copy of a short video in this test's folder."""
    copy = tmp_path / "clip.mp4"
    copy.write_bytes(make_video("report_d", 20, 64, 48).read_bytes())
    return copy


def test_the_report_is_never_an_input_or_the_results_file(small_stnet, clip, tmp_path, capsys):
    results = tmp_path / "r.jsonl"
    results.write_text(json.dumps({"path": "old.mp4", "prediction": {"a": 0.5}}) + "\n", encoding="utf-8")
    listing = tmp_path / "list.txt"
    listing.write_text(f"{clip}\n", encoding="utf-8")
    link = tmp_path / "link.html"
    link.symlink_to(clip)
    notes = tmp_path / "notes.html"
    notes.write_text("<html>my own page</html>", encoding="utf-8")
    files = [clip, results, listing, link, notes]
    before = [snapshot(f) for f in files]
    cases = [
        (["--input_path", str(clip), "--report", str(clip)], "it is an input video of this run"),
        (["--input_file", str(listing), "--report", str(listing)], "it is the --input_file list"),
        (["--input_path", str(clip), "--output", str(results), "--report", str(results)],
         "it is the --output results file"),
        (["--input_path", str(clip), "--report", str(link)], "it is an input video of this run"),
        (["--input_path", str(tmp_path / "other.mp4"), "--report", str(link)],
         "it is not a report written by paddlehub_video"),
        (["--input_path", str(clip), "--report", str(notes)], "it is not a report written by paddlehub_video"),
        (["--input_path", str(clip), "--report", "/dev/null"], "it is a character device"),
        (["--input_path", str(clip), "--output", str(tmp_path / "new.jsonl"), "--report", str(tmp_path / "new.jsonl")],
         "it is the --output results file"),
    ]
    for argv, reason in cases:
        assert f"refused: {reason}" in run_refused(small_stnet, argv, capsys), argv
    assert [snapshot(f) for f in files] == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "link.html", "list.txt", "notes.html",
                                                          "r.jsonl"]  # nothing created, no temporary left


def test_a_fifo_as_the_report_is_refused_without_blocking(small_stnet, clip, tmp_path, capsys):
    fifo = tmp_path / "report.html"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            small_stnet.run_cmd(["--input_path", str(clip), "--report", str(fifo)])
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            outcome.append(exc)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    if not done.wait(REPORT_WAIT_S):
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # let a blocked writer go
        pytest.fail("--report on a FIFO blocked the run")
    (stopped,) = outcome
    assert isinstance(stopped, SystemExit) and stopped.code == 2
    assert "refused: it is a FIFO (named pipe)" in capsys.readouterr().err
    assert stat.S_ISFIFO(fifo.stat().st_mode) and sorted(os.listdir(tmp_path)) == ["clip.mp4", "report.html"]


def test_a_report_of_ours_is_replaced_atomically_through_a_symlink(small_stnet, clip, tmp_path):
    target = tmp_path / "reports" / "run.html"
    target.parent.mkdir()
    link = tmp_path / "latest.html"
    link.symlink_to(target)
    small_stnet.run_cmd(["--input_path", str(clip), "--report", str(link), "--top_k", "1"])
    first = target.stat()
    assert target.read_text(encoding="utf-8").startswith(REPORT_HEAD)
    os.chmod(target, 0o640)
    small_stnet.run_cmd(["--input_path", str(clip), "--report", str(link), "--top_k", "1"])
    assert link.is_symlink() and target.stat().st_ino != first.st_ino  # a new file renamed over the old one
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # with the old one's mode
    assert sorted(os.listdir(target.parent)) == ["run.html"]


def test_write_report_refuses_a_file_that_is_not_one(tmp_path):
    page = tmp_path / "page.html"
    page.write_text("<html>hand written</html>", encoding="utf-8")
    with pytest.raises(Refused, match="it is not a report written by paddlehub_video"):
        write_report([], page)
    assert page.read_text(encoding="utf-8") == "<html>hand written</html>"
    written = write_report([], tmp_path / "new.html")
    assert write_report([{"path": "x.mp4", "prediction": {}, "error": "x.mp4: gone"}], written) == written
    assert "x.mp4: gone" in written.read_text(encoding="utf-8")
