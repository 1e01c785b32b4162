"""What `hub run` shows on stderr: progress on a terminal (a pseudo-terminal here), nothing on a
pipe unless asked, no native libraries' lines, each failure once; stdout holds the result only."""
from __future__ import annotations

import ast
import fcntl
import io
import logging
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from paddlehub_video import progress
from paddlehub_video.interfaces import quiet, terminal
from tests.fixtures.hub_cli import HUB, HUB_TIMEOUT_S, TRACEBACK, hub_home_config
from tests.fixtures.publisher import REPO

VIDEOTAG = "videotag_tsn_lstm"
# Printed by `import paddle`, which PaddleHub's `hub` runs before it loads a module (README, "Output").
IMPORT_WARNINGS = ("UserWarning: No ccache found", "UserWarning: Setuptools is replacing distutils",
                   "  warnings.warn(")
README_WARNINGS_FILTER = "ignore:No ccache found:UserWarning,ignore:Setuptools is replacing distutils:UserWarning"
# Native libraries' own lines: glog (`W1129 17:07:24.049494 17154 eager_utils.cc:...]`), OpenCV, FFmpeg.
NATIVE_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d|\[ ?(WARN|INFO|ERROR):|@ 0x[0-9a-f]+\]|moov atom|Executor|PIR")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Run:
    """A finished command: exit status, stdout (a pipe), and stderr as written (a terminal or a pipe)."""

    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr

    def segments(self) -> list[str]:
        """Every piece of stderr between line ends and carriage returns (each drawing of a bar), stripped."""
        text = ANSI.sub("", self.stderr)
        return [piece.strip() for piece in re.split(r"[\r\n]", text) if piece.strip()]

    def __str__(self) -> str:
        return f"exit status {self.returncode}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"


def run_on_terminal(args: list[str], env: dict[str, str], cwd: Path = REPO) -> Run:
    """`hub ARGS` with stderr on a pseudo-terminal (120 columns) and stdout on a pipe."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen([*HUB, *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=slave)
    os.close(slave)
    written = bytearray()
    deadline = time.monotonic() + HUB_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal has closed it (the command ended)
                break
            if not chunk:
                break
            written += chunk
        stdout, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return Run(proc.returncode, stdout.decode("utf-8", "replace"), written.decode("utf-8", "replace"))


def run_on_pipes(args: list[str], env: dict[str, str], cwd: Path = REPO) -> Run:
    """`hub ARGS` with stdout and stderr on pipes."""
    proc = subprocess.run([*HUB, *args], cwd=cwd, env=env, capture_output=True, timeout=HUB_TIMEOUT_S)
    return Run(proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"))


def printed_list(run: Run) -> list:
    """stdout is exactly one line, the result list PaddleHub prints (a Python literal)."""
    lines = run.stdout.splitlines()
    assert len(lines) == 1, run
    value = ast.literal_eval(lines[0])
    assert isinstance(value, list), run
    return value


def foreign(run: Run) -> list[str]:
    """The stderr pieces that are neither ours (bars, lines, errors) nor paddle's import-time warnings."""
    ours = (f"{VIDEOTAG}:", f"hub run {VIDEOTAG}:", "video_tag_tsn.tar:", "video_tag_lstm.tar:", "label_3396.txt:")
    return [piece for piece in run.segments()
            if not piece.startswith(ours) and not any(warning.strip() in piece for warning in IMPORT_WARNINGS)]


@pytest.fixture(scope="module")
def bad_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MP4 header and nothing playable: FFmpeg says `moov atom not found`, OpenCV warns it cannot open it."""
    path = tmp_path_factory.mktemp("terminal") / "bad.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"not a movie" * 64)
    return path


@pytest.fixture(scope="module")
def clip(make_video) -> Path:
    return make_video("terminal_clip", 40, 64, 48)


def test_first_run_on_a_terminal_shows_each_step_and_no_native_lines(hub_env, clip, tmp_path):
    hub_home = tmp_path / "fresh home"  # nothing downloaded or converted: the first run of a new user
    hub_home_config(hub_home)
    run = run_on_terminal(["run", VIDEOTAG, "--input_path", str(clip)], {**hub_env, "HUB_HOME": str(hub_home)})
    assert run.returncode == 0, run
    (entry,) = printed_list(run)
    assert entry["path"] == str(clip) and entry["prediction"], run
    pieces = run.segments()
    for step in (f"{VIDEOTAG}: extracting tsn.pdparams from video_tag_tsn.tar",
                 f"{VIDEOTAG}: converting videotag_tsn from tsn.pdparams (once)",
                 f"{VIDEOTAG}: converting videotag_attention_lstm from attention_lstm.pdparams (once): done in",
                 f"{VIDEOTAG}: loading videotag_tsn: done in"):
        assert any(piece.startswith(step) for piece in pieces), run
    # The bar of videos, with the stages and their frame counts (8 TSN segments in hub_env).
    text = "\n".join(pieces)
    assert f"{VIDEOTAG}: 100%" in text and "1/1" in text, run
    assert re.search(rf"{clip.name} decode \d/8 frames", text), run
    assert f"{clip.name} network 8/8 frames" in text, run
    assert foreign(run) == [], run  # no glog, no warnings: only paddle's import-time two (README)
    assert not any(NATIVE_LINE.search(piece) for piece in pieces), run


def test_a_bad_file_is_one_error_line_on_a_terminal_and_on_a_pipe(hub_env, clip, bad_video):
    args = ["run", VIDEOTAG, "--input_path", str(bad_video)]
    expected = f"hub run {VIDEOTAG}: error: {bad_video}: cannot open the container"
    on_terminal = run_on_terminal(args, hub_env)
    on_pipe = run_on_pipes(args, {**hub_env, "PYTHONWARNINGS": README_WARNINGS_FILTER})
    for run in (on_terminal, on_pipe):
        assert run.returncode == 1, run
        (entry,) = printed_list(run)
        assert entry["path"] == str(bad_video) and entry["prediction"] == {} and "error" in entry, run
        errors = [piece for piece in run.segments() if str(bad_video) in piece]
        assert len(errors) == 1 and errors[0].startswith(expected), run
        assert not any(NATIVE_LINE.search(piece) for piece in run.segments()), run
        assert TRACEBACK not in run.stderr and "WARNING" not in run.stderr, run
    # On a pipe, with the README's filter for paddle's import-time warnings: the error and the count only.
    assert on_pipe.stderr.splitlines() == [f"{expected} (not a video, corrupt, or unsupported)",
                                           f"hub run {VIDEOTAG}: 1 of 1 videos failed"], on_pipe


def test_on_a_pipe_no_progress_unless_asked_and_stdout_is_the_result_only(hub_env, clip, tmp_path):
    second = tmp_path / "second clip.mp4"
    shutil.copyfile(clip, second)
    listing = tmp_path / "list.txt"
    listing.write_text(f"{second}\n", encoding="utf-8")
    args = ["run", VIDEOTAG, "--input_path", str(clip), "--input_file", str(listing)]  # two videos
    env = {**hub_env, "PYTHONWARNINGS": README_WARNINGS_FILTER}
    quiet_run = run_on_pipes(args, env)
    assert quiet_run.returncode == 0, quiet_run
    assert quiet_run.stderr == "", quiet_run  # not even the bar of videos
    entries = printed_list(quiet_run)
    assert [entry["path"] for entry in entries] == [str(clip), str(second)], quiet_run
    asked = run_on_pipes([*args, "--progress"], env)
    assert printed_list(asked) == entries, asked  # the same result, stdout as clean
    assert f"{VIDEOTAG}: 100%" in asked.stderr and "2/2" in asked.stderr, asked
    assert f"{clip.name} network 8/8 frames" in asked.stderr and f"{second.name} decode" in asked.stderr, asked


def test_verbose_brings_back_the_failure_log_and_the_decoders_lines(hub_env, bad_video):
    run = run_on_pipes(["run", VIDEOTAG, "--input_path", str(bad_video), "-v"], hub_env)
    assert run.returncode == 1, run
    assert "moov atom not found" in run.stderr, run  # FFmpeg's own line, as the library prints it
    assert f"hub run {VIDEOTAG}: warning: {bad_video}: cannot open the container" in run.stderr, run
    by_env = run_on_pipes(["run", VIDEOTAG, "--input_path", str(bad_video)],
                          {**hub_env, "PADDLEHUB_VIDEO_VERBOSE": "1"})
    assert f"hub run {VIDEOTAG}: warning: {bad_video}" in by_env.stderr, by_env


def test_native_output_during_a_conversion_goes_to_the_log(caplog, capfd):
    with caplog.at_level(logging.DEBUG, logger="paddlehub_video"), quiet.native_output_logged():
        os.write(2, b"W1129 12:00:00.000000 1 eager_utils.cc:1] a glog line\n")
    assert capfd.readouterr().err == ""
    assert [r.getMessage() for r in caplog.records] == ["W1129 12:00:00.000000 1 eager_utils.cc:1] a glog line"]
    os.write(2, b"after\n")  # fd 2 is back
    assert capfd.readouterr().err == "after\n"


def test_python_callers_get_no_progress_even_on_a_terminal(small_stnet, clip, monkeypatch, capsys):
    small_stnet.classify([str(clip)])  # downloads (their bars, as PaddleHub's) and conversion first
    capsys.readouterr()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert type(progress.current()) is progress.Progress  # the do-nothing reporter
    (result,) = small_stnet.classify([str(clip)], top_k=2)
    assert "error" not in result and len(result["prediction"]) == 2
    assert capsys.readouterr() == ("", "")


def test_the_bar_text_holds_each_running_videos_stage_and_nothing_when_hidden():
    stream = io.StringIO()
    display = terminal.TerminalProgress(stream, "m", show=True)
    with display.videos(2):
        display.stage("/v/a.mp4", "network", 0)
        assert display.describe() == "a.mp4 network"  # StNet: one run, no frame count
        display.network(4, 8)  # TSN's batches, for the video in the network stage
        display.stage("/v/" + "b" * 40 + ".mp4", "decode", 8)  # the next video decodes meanwhile
        display.advance("/v/" + "b" * 40 + ".mp4", "decode", 3)
        assert display.describe() == f"a.mp4 network 4/8 frames | {'b' * 14}...{'b' * 10}.mp4 decode 3/8 frames"
        display.finished("/v/a.mp4")
        assert display.describe().endswith("decode 3/8 frames") and "a.mp4" not in display.describe()
    assert "a.mp4 network 4/8 frames" in stream.getvalue()

    hidden = io.StringIO()
    silent = terminal.TerminalProgress(hidden, "m", show=False)
    with silent.busy("converting x (once)"):
        silent.stage("/v/a.mp4", "decode", 8)
    assert hidden.getvalue() == ""
