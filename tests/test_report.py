"""The HTML report (`paddlehub_video.interfaces.report`, `hub run --report`), opened in a real headless Chromium.

Chromium and a CJK font come from the system packages, installed by `scripts/test.sh` where they
are missing (apt-get, as root); without them the browser tests are skipped. Each browser test keeps a screenshot
in tests/artifacts/ (gitignored), to look at after the run.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from paddlehub_video.interfaces.report import render_report, write_report
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


def browse(chromium: str, page: Path, screenshot: Path) -> str:
    """The DOM Chromium builds from `page` (no network: file://), after writing its screenshot."""
    ARTIFACTS.mkdir(exist_ok=True)
    common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1000,1200"]
    shot = subprocess.run([*common, f"--screenshot={screenshot}", page.as_uri()],
                          capture_output=True, timeout=BROWSER_TIMEOUT_S, check=False)
    assert screenshot.is_file() and screenshot.stat().st_size > 0, shot.stderr[-2000:]
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         encoding="utf-8", timeout=BROWSER_TIMEOUT_S, check=True)
    return dom.stdout


class Marks(HTMLParser):
    """The `data-path` and `data-label` attributes of a page, and every external reference."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []
        self.labels: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("data-path") is not None:
            self.paths.append(found["data-path"] or "")
        if found.get("data-label") is not None:
            self.labels.append(found["data-label"] or "")
        for key in ("src", "href"):
            value = found.get(key) or ""
            if value and not value.startswith("data:"):
                self.external.append(value)


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
    expected = list(dict.fromkeys(label for w in entry["windows"] for label in w["prediction"]))
    assert found.labels == expected and len(entry["windows"]) == 3


def test_an_unreadable_video_gets_no_thumbnails_but_its_tags(tmp_path):
    html = render_report([{"path": str(tmp_path / "gone.mp4"), "prediction": {"a": 0.5}}])
    assert "data:image/jpeg" not in html and 'data-label="a"' in html
