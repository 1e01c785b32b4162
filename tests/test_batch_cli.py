"""`hub run` over many videos: folders, globs, --output results files that resume, progress, exit status.

Most tests call `run_cmd` in process on the modules with the SMALL settings (their converted models
are shared with the other test files); one runs a real `hub run` in a subprocess.
"""
from __future__ import annotations

import ast
import errno
import html
import io
import json
import os
import re
import shutil
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from paddlehub_video.interfaces import results_file
from paddlehub_video.interfaces.cli import VIDEO_EXTENSIONS, build_parser, expand_input_path, input_paths
from paddlehub_video.interfaces.results_file import MAX_LINE_BYTES, ResultsFile, ResultsFileError
from tests.fixtures.files import snapshot
from tests.fixtures.hub_cli import TRACEBACK, describe, run_hub
from tests.fixtures.publisher import KINETICS_LABELS, SMALL, VIDEOTAG_LABELS, PublisherHost
from tests.fixtures.videos import MakeVideo

REPO = Path(__file__).resolve().parents[1]
VIDEOTAG, STNET = "videotag_tsn_lstm", "stnet_kinetics400"


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def clips(make_video: MakeVideo) -> list[Path]:
    """Two different tiny videos (read-only: copy them)."""
    return [make_video("batch_a", 20, 64, 48), make_video("batch_b", 16, 48, 64)]


def copy_clips(clips: list[Path], folder: Path, names: list[str]) -> list[str]:
    """Copies of the clips (alternately) under `folder` with `names`; their paths as strings."""
    paths = []
    for index, name in enumerate(names):
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(clips[index % len(clips)], target)
        paths.append(str(target))
    return paths


def spy_on_decoding(module: Any, monkeypatch: pytest.MonkeyPatch,
                    before: Callable[[str], None] = lambda path: None) -> list[str]:
    """The paths `module` decodes from now on (this test only); `before(path)` runs first."""
    decoded: list[str] = []
    read = module.preprocess

    def spy(path: str) -> Any:
        decoded.append(path)
        before(path)
        return read(path)

    monkeypatch.setattr(module, "preprocess", spy)
    return decoded


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def entries_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in lines_of(path)]


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The message of the usage error `argv` gives (exit status 2)."""
    parser = build_parser("m", "d", top_k=5, threshold=0.0)
    with pytest.raises(SystemExit) as info:
        input_paths(parser, parser.parse_args(argv))
    assert info.value.code == 2
    return capsys.readouterr().err


# ---------------------------------------------------------------- what --input_path names


def test_a_folder_gives_its_videos_recursively_sorted_any_case(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    every_extension = [f"videos/all/{i:02d}{ext.upper() if i % 2 else ext}" for i, ext in enumerate(VIDEO_EXTENSIONS)]
    expected = ["videos/A.MOV", *every_extension, "videos/b.mp4", "videos/sub/e.Ts", "videos/sub dir/c.mkv",
                "videos/sub dir/deep/d.WebM", "videos/x.mp4/g.avi"]  # a folder named like a video is searched
    others = ["videos/notes.txt", "videos/cover.jpg", "videos/README", "videos/.hidden.mp4", "videos/.cache/f.mp4",
              "videos/sub/mp4"]
    for name in expected + others:
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Path(name).write_bytes(b"")
    assert expand_input_path("videos") == expected  # paths as written: relative stays relative
    assert expand_input_path("videos/") == expected
    for extension in (".mp4", ".avi", ".mov", ".mkv", ".flv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".ts"):
        assert extension in VIDEO_EXTENSIONS


def test_a_glob_gives_its_files_recursively_sorted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ["v/b.mp4", "v/a.mp4", "v/s/c.mp4", "v/s/t/d.mp4", "v/s/e.avi", "v/.f.mp4", "v/dir.mp4/g.mp4"]:
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Path(name).write_bytes(b"")
    assert expand_input_path("v/**/*.mp4") == ["v/a.mp4", "v/b.mp4", "v/dir.mp4/g.mp4", "v/s/c.mp4", "v/s/t/d.mp4"]
    assert expand_input_path("v/s/*") == ["v/s/c.mp4", "v/s/e.avi"]  # the pattern chooses: files only


def test_folder_or_pattern_naming_no_video_is_a_usage_error_naming_it(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "notes.txt").write_text("no video here")
    err = usage_error(["--input_path", str(tmp_path / "empty")], capsys)
    assert f"no video file in the folder {tmp_path / 'empty'}" in err
    pattern = str(tmp_path / "**" / "*.mkv")
    assert f"the pattern {pattern!r} matches no file" in usage_error(["--input_path", pattern], capsys)


def test_a_file_is_taken_as_given_even_with_pattern_characters(tmp_path: Path) -> None:
    odd = tmp_path / "x*[1].mp4"
    odd.write_bytes(b"")
    (tmp_path / "x2.mp4").write_bytes(b"")
    assert expand_input_path(str(odd)) == [str(odd)]
    missing = str(tmp_path / "missing.mp4")
    assert expand_input_path(missing) == [missing]  # read later: a per-video "file not found"


# ---------------------------------------------------------------- the results file


ANSWER = b'{"path": "a.mp4", "prediction": {"x": 0.5}}\n'
FAILED = b'{"path": "b.mp4", "prediction": {}, "error": "b.mp4: file not found"}\n'
# Contents that are not a results file of hub run, each with (part of) the reason it is refused.
NOT_RESULTS = {
    "an API token, no newline": (b"ghp_0123456789abcdefABCDEF", "its last line (line 1, without a newline)"),
    "minified JSON, no newline": (b'{"name":"demo","version":1}', "its last line (line 1, without a newline)"),
    "one JSON object of another shape": (b'{\n  "path": "a.mp4",\n  "prediction": {}\n}\n', "line 1 is not"),
    "a result-like object, no newline": (b'{"path": "a.mp4", "prediction": {}}'[:-1], "its last line (line 1"),
    "binary, no newline byte": (bytes(b for b in range(256) if b != 0x0A) * 4, "its last line (line 1"),
    "JSON Lines of other records": (b'{"id": 1, "text": "a"}\n{"id": 2, "text": "b"}\n', "line 1 is not"),
    "entries with another key": (b'{"path": "a.mp4", "prediction": {}, "score": 1}\n', "line 1 is not"),
    "a probability that is no probability": (b'{"path": "a.mp4", "prediction": {"x": "high"}}\n', "line 1 is not"),
    "a failed entry with a prediction": (b'{"path": "a.mp4", "prediction": {"x": 0.5}, "error": "e"}\n',
                                         "line 1 is not"),
    "NUL bytes after an entry": (ANSWER + b"\x00" * 64 + b"\n", "line 2 is not"),
    "NUL bytes in a last line after an entry": (ANSWER + b'{"path": "\x00\x00', "its last line (line 2"),
    "invalid UTF-8": (b'{"path": "a\xff.mp4", "prediction": {}}\n', "line 1 is not"),
    "invalid UTF-8 in a last line after an entry": (ANSWER + b'{"path": "\xff\xfe', "its last line (line 2"),
    "text after an entry, no newline": (ANSWER + b"my notes", "its last line (line 2"),
    "the start of an entry, alone": (b'{"path": "a.mp4", "predic', "its last line (line 1"),
    "a blank line": (ANSWER + b"\n", "line 2 is not"),
    "Windows line ends": (ANSWER.replace(b"\n", b"\r\n"), "line 1 is not"),
    "notes": (b"my notes\nmore notes\n", "line 1 is not"),
}


def refused(path: Path, reason: str) -> None:
    """ResultsFile(path) is refused naming `reason`; nothing in the folder or about the path changed."""
    before, listing = snapshot(path), sorted(os.listdir(path.parent))
    with pytest.raises(ResultsFileError, match="refused: ") as info:
        ResultsFile(path)
    assert reason in str(info.value) and "left as it was" in str(info.value)
    assert snapshot(path) == before
    assert sorted(os.listdir(path.parent)) == listing  # no temporary file left behind


def test_results_file_keeps_answers_drops_failures_and_a_cut_last_line(tmp_path: Path) -> None:
    output = tmp_path / "r.jsonl"
    answered = '{"path": "a.mp4", "prediction": {"跑步": 0.5}}'
    complete_tail = '{"path": "d.mp4", "prediction": {}}'  # killed between the entry and its newline
    output.write_text(f'{answered}\n{{"path": "b.mp4", "prediction": {{}}, "error": "b.mp4: file not found"}}\n'
                      f'{complete_tail}', encoding="utf-8")
    output.chmod(0o640)
    with ResultsFile(output) as results:
        assert results.done == {"a.mp4", "d.mp4"}
    assert output.read_text(encoding="utf-8") == f"{answered}\n{complete_tail}\n"
    assert stat.S_IMODE(output.stat().st_mode) == 0o640  # the rewrite keeps the mode
    output.write_bytes(output.read_bytes() + '{"path": "c.mp4", "prediction": {"跑'.encode()[:-1])  # cut in a char
    with ResultsFile(output) as results:
        assert results.done == {"a.mp4", "d.mp4"}
        results.append({"path": "c.mp4", "prediction": {"跑步": 0.25}})
    assert output.read_text(encoding="utf-8") == (
        f'{answered}\n{complete_tail}\n{{"path": "c.mp4", "prediction": {{"跑步": 0.25}}}}\n')
    assert sorted(os.listdir(tmp_path)) == ["r.jsonl"]


def test_a_line_cut_at_any_byte_after_an_entry_is_dropped(tmp_path: Path) -> None:
    # What the writer emits for an answer, with escapes and multi-byte characters to cut through.
    line = json.dumps({"path": '视频 \\ "1".mp4', "prediction": {"跑步": 0.25}}, ensure_ascii=False).encode("utf-8")
    output = tmp_path / "r.jsonl"
    for cut in range(1, len(line)):
        output.write_bytes(ANSWER + line[:cut])
        with ResultsFile(output) as results:
            assert results.done == {"a.mp4"}, line[:cut]
        assert output.read_bytes() == ANSWER, line[:cut]


def test_an_empty_or_absent_file_is_a_new_results_file(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_bytes(b"")
    for name in ("empty.jsonl", "absent.jsonl"):
        with ResultsFile(tmp_path / name) as results:
            assert results.done == set()
            results.append({"path": "a.mp4", "prediction": {"x": 0.5}})
        assert (tmp_path / name).read_bytes() == ANSWER


@pytest.mark.parametrize("case", list(NOT_RESULTS))
def test_a_file_that_is_not_a_results_file_is_refused_and_left_byte_for_byte(tmp_path: Path, case: str) -> None:
    data, reason = NOT_RESULTS[case]
    output = tmp_path / "user file"
    output.write_bytes(data)
    refused(output, reason)
    assert output.read_bytes() == data


def test_a_huge_file_is_refused_after_its_first_line(tmp_path: Path) -> None:
    huge = tmp_path / "disk.img"
    with huge.open("wb") as fh:  # sparse: 1 GiB of NUL bytes that take no disk; read whole, the test would crawl
        fh.write(ANSWER)
        fh.truncate(1 << 30)
    refused(huge, f"line 2 is longer than {MAX_LINE_BYTES} bytes")


def test_a_directory_a_fifo_and_a_device_are_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    finished, outcome = threading.Event(), []

    def refuse_all() -> None:  # in a thread, so that a blocking open fails the test instead of hanging it
        try:
            refused(tmp_path, "it is a directory")
            refused(fifo, "it is a FIFO")  # opening it to write would wait for a reader forever
            if Path("/dev/null").exists():
                refused(Path("/dev/null"), "it is a character device")
            outcome.append("refused")
        except BaseException as exc:  # handed to the test's thread
            outcome.append(exc)
        finally:
            finished.set()

    threading.Thread(target=refuse_all, daemon=True).start()
    assert finished.wait(timeout=120), "opening a special file blocked"
    assert outcome == ["refused"], outcome


def test_a_read_only_results_file_is_refused_even_for_root(tmp_path: Path) -> None:
    output = tmp_path / "r.jsonl"
    output.write_bytes(ANSWER + FAILED)  # a rerun would rewrite it to drop the failed entry
    output.chmod(0o444)
    refused(output, "it is read-only")


def test_a_file_with_other_hard_links_is_refused(tmp_path: Path) -> None:
    output = tmp_path / "r.jsonl"
    output.write_bytes(ANSWER + FAILED)
    os.link(output, tmp_path / "backup.jsonl")  # a rewrite by rename would leave the backup behind
    refused(output, "it has 1 other hard link(s)")


def test_a_symlink_to_a_results_file_stays_a_symlink_and_its_target_is_rewritten(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    target = tmp_path / "runs" / "r.jsonl"
    target.write_bytes(ANSWER + FAILED)
    link = tmp_path / "latest.jsonl"
    link.symlink_to(Path("runs") / "r.jsonl")
    with ResultsFile(link) as results:
        assert results.done == {"a.mp4"}
        results.append({"path": "b.mp4", "prediction": {}})
    assert link.is_symlink() and os.readlink(link) == str(Path("runs") / "r.jsonl")
    assert target.read_bytes() == ANSWER + b'{"path": "b.mp4", "prediction": {}}\n'
    assert sorted(os.listdir(tmp_path / "runs")) == ["r.jsonl"]


def test_a_symlink_to_another_file_or_to_itself_is_refused_and_kept(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_bytes(b"secret-token")
    link = tmp_path / "out.jsonl"
    link.symlink_to(token)
    refused(link, "its last line (line 1, without a newline)")
    assert link.is_symlink() and token.read_bytes() == b"secret-token"
    loop = tmp_path / "loop.jsonl"
    loop.symlink_to(loop)
    with pytest.raises(ResultsFileError, match="cannot use it"):
        ResultsFile(loop)
    assert loop.is_symlink() and os.readlink(loop) == str(loop)


def test_a_rewrite_that_fails_leaves_the_old_file_and_no_temporary(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    output = tmp_path / "r.jsonl"
    output.write_bytes(ANSWER + FAILED)
    synced: list[int] = []
    monkeypatch.setattr(results_file.os, "fsync", synced.append)

    def crash(source: str, destination: str) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(results_file.os, "replace", crash)
    before = snapshot(output)
    with pytest.raises(ResultsFileError, match="cannot use it"):
        ResultsFile(output)
    assert synced  # the new contents were synced before the rename was tried
    assert snapshot(output) == before and sorted(os.listdir(tmp_path)) == ["r.jsonl"]


# ---------------------------------------------------------------- hub run --output (in process)


def test_output_is_written_as_each_video_finishes_and_an_interrupted_run_resumes(
    small_videotag: Any, clips: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    paths = copy_clips(clips, tmp_path / "videos", ["1.mp4", "2.avi", "sub/3.mkv", "sub/4.mp4"])
    output = tmp_path / "results.jsonl"
    written_at_decode: list[int] = []

    def before(path: str) -> None:
        written_at_decode.append(len(lines_of(output)))
        if path == paths[3]:
            raise KeyboardInterrupt  # Ctrl-C while the 4th video is read

    spy_on_decoding(small_videotag, monkeypatch, before)
    argv = ["--input_path", str(tmp_path / "videos"), "--output", str(output), "--threshold", "0", "--top_k", "3"]
    with pytest.raises(SystemExit) as info:
        small_videotag.run_cmd(argv)
    assert info.value.code == 130
    out, err = capsys.readouterr()
    assert "interrupted" in err and str(output) in err and TRACEBACK not in err
    assert out == ""
    # The pipeline reads video i+2 once video i is answered: by then its line is in the file.
    assert all(count >= index - 1 for index, count in enumerate(written_at_decode)), written_at_decode
    first_lines = lines_of(output)
    assert [entry["path"] for entry in entries_of(output)] == paths[:3]

    monkeypatch.undo()
    decoded = spy_on_decoding(small_videotag, monkeypatch)
    summary = small_videotag.run_cmd(argv)
    assert decoded == [paths[3]]  # the three answered videos were not read again
    assert summary == {"output": str(output), "videos": 4, "skipped": 3, "classified": 1, "failed": 0}
    assert lines_of(output)[:3] == first_lines
    entries = entries_of(output)
    assert [entry["path"] for entry in entries] == paths
    assert all(entry["prediction"] and set(entry["prediction"]) <= set(VIDEOTAG_LABELS) for entry in entries)
    assert "标签" in output.read_text(encoding="utf-8")  # UTF-8, not \\u escapes


def test_rerun_skips_answered_videos_retries_failed_ones_and_rewrites_a_cut_line(
    small_stnet: Any, clips: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    done, failed, cut, new = copy_clips(clips, tmp_path, ["done.mp4", "failed.mp4", "cut.mp4", "new.mp4"])
    output = tmp_path / "results.jsonl"
    done_line = json.dumps({"path": done, "prediction": {KINETICS_LABELS[7]: 0.9}}, ensure_ascii=False)
    failed_line = json.dumps({"path": failed, "prediction": {}, "error": f"{failed}: file not found"})
    output.write_text(f"{done_line}\n{failed_line}\n" + json.dumps({"path": cut, "prediction": {}})[:-9],
                      encoding="utf-8")
    Path(done).unlink()  # were it read again, it would fail
    listing = tmp_path / "list.txt"
    listing.write_text(f"{done}\n{failed}\n{cut}\n{new}\n{new}\n", encoding="utf-8")  # `new` twice: answered once
    decoded = spy_on_decoding(small_stnet, monkeypatch)

    summary = small_stnet.run_cmd(["--input_file", str(listing), "--output", str(output), "--top_k", "3"])
    assert decoded == [failed, cut, new]
    assert summary == {"output": str(output), "videos": 4, "skipped": 1, "classified": 3, "failed": 0}
    assert lines_of(output)[0] == done_line.encode("utf-8")
    entries = entries_of(output)
    assert [entry["path"] for entry in entries] == [done, failed, cut, new]
    for entry in entries[1:]:  # classify-style entries, like videotag's
        assert set(entry) == {"path", "prediction"} and len(entry["prediction"]) == 3
        assert set(entry["prediction"]) <= set(KINETICS_LABELS)


def test_exit_status_counts_the_failures_of_this_run_only(
    small_videotag: Any, clips: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    good, late = str(tmp_path / "good.mp4"), str(tmp_path / "late.mp4")
    shutil.copyfile(clips[0], good)
    listing = tmp_path / "list.txt"
    listing.write_text(f"{good}\n{late}\n", encoding="utf-8")
    output = tmp_path / "results.jsonl"
    argv = ["--input_file", str(listing), "--output", str(output)]

    with pytest.raises(SystemExit) as info:
        small_videotag.run_cmd(argv)
    assert info.value.code == 1
    out, err = capsys.readouterr()
    assert ast.literal_eval(out.strip()) == {"output": str(output), "videos": 2, "skipped": 0, "classified": 1,
                                             "failed": 1}  # a summary, not the results
    assert f"hub run {VIDEOTAG}: error: {late}: file not found" in err
    assert f"hub run {VIDEOTAG}: 1 of 2 videos failed" in err
    assert entries_of(output)[1] == {"path": late, "prediction": {}, "error": f"{late}: file not found"}

    shutil.copyfile(clips[1], late)  # the failed video is tried again, the answered one is not
    decoded = spy_on_decoding(small_videotag, monkeypatch)
    assert small_videotag.run_cmd(argv)["classified"] == 1 and decoded == [late]
    assert [set(entry) for entry in entries_of(output)] == [{"path", "prediction"}] * 2

    Path(good).unlink()  # everything answered: nothing is read, nothing fails
    summary = {"output": str(output), "videos": 2, "skipped": 2, "classified": 0, "failed": 0}
    assert small_videotag.run_cmd(argv) == summary
    assert decoded == [late]


def test_output_that_is_not_a_results_file_is_a_usage_error(small_videotag: Any, clips: list[Path], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not results\n")
    with pytest.raises(SystemExit) as info:
        small_videotag.run_cmd(["--input_path", str(clips[0]), "--output", str(notes)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: --output {notes}: refused: line 1 is not a result entry of hub run; the file was left" in err
    assert notes.read_text() == "not results\n"


@pytest.mark.parametrize("option", ["--output", "--report"])
def test_a_file_name_ending_with_a_slash_is_a_usage_error_not_a_file_without_it(
    small_videotag: Any, clips: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], option: str
) -> None:
    # `out/` means a folder (the fleet command's --output is one); it used to write a file called `out`.
    monkeypatch.chdir(tmp_path)
    decoded = spy_on_decoding(small_videotag, monkeypatch)
    for name in ("out/", "results/"):
        if name == "results/":
            Path(name).mkdir()  # an existing folder too
        with pytest.raises(SystemExit) as info:
            small_videotag.run_cmd(["--input_path", str(clips[0]), option, name])
        assert info.value.code == 2
        assert f"error: {option} {name}: refused: it names a directory (it ends with a slash); name a file in it" \
            in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["results"] and not os.listdir("results") and decoded == []


def test_output_is_never_an_input_of_the_run(small_videotag: Any, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.mp4"  # empty, it would pass for an empty results file
    empty.write_bytes(b"")
    listing = tmp_path / "list.txt"
    listing.write_text("# nothing but a comment and an empty video\n" + str(empty) + "\n", encoding="utf-8")
    before = [snapshot(empty), snapshot(listing)]
    for argv, role in ((["--input_path", str(empty), "--output", str(empty)], "an input video of this run"),
                       (["--input_file", str(listing), "--output", str(listing)], "the --input_file list")):
        with pytest.raises(SystemExit) as info:
            small_videotag.run_cmd(argv)
        assert info.value.code == 2
        assert f"refused: it is {role}; the file was left as it was" in capsys.readouterr().err
    assert [snapshot(empty), snapshot(listing)] == before


def test_a_full_disk_is_one_error_line(small_stnet: Any, clips: list[Path], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    class FullDisk(io.StringIO):
        """An --output file on a full disk: what is written cannot be flushed."""

        def flush(self) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

    # /dev/full is refused (a device), so the full disk is the file's: the module's `open` is replaced.
    monkeypatch.setattr(results_file, "open", lambda *args, **kwargs: FullDisk(), raising=False)
    output = tmp_path / "r.jsonl"
    with pytest.raises(SystemExit) as info:
        small_stnet.run_cmd(["--input_path", str(clips[0]), "--output", str(output)])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert f"hub run {STNET}: error: cannot write {output}: [Errno 28] No space left on device" in err
    assert TRACEBACK not in err


# ---------------------------------------------------------------- what is printed: the published call, the batch forms


@pytest.fixture(scope="module")
def two_videos(clips: list[Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A folder `v` holding two different videos, a.mp4 and b.mp4: (the folder, their paths)."""
    folder = tmp_path_factory.mktemp("forms") / "v"
    return folder, copy_clips(clips, folder, ["a.mp4", "b.mp4"])


def batch_forms(folder: Path, paths: list[str], listing: Path) -> dict[str, tuple[list[str], list[str]]]:
    """Every way but the published one to name videos: form -> (the argv, the videos it names in order)."""
    a, b = paths
    return {
        "a folder": (["--input_path", str(folder)], [a, b]),
        "a glob": (["--input_path", str(folder / "*.mp4")], [a, b]),
        "several paths after --input_path": (["--input_path", b, a], [b, a]),
        "--input_path repeated": (["--input_path", b, "--input_path", a], [b, a]),
        "a list file of one video": (["--input_file", str(listing)], [a]),
        "a path and a list file": (["--input_path", b, "--input_file", str(listing)], [b, a]),
        "a glob matching one file": (["--input_path", str(folder / "a.*")], [a]),
    }


@pytest.mark.parametrize("module_name", [STNET, VIDEOTAG])
def test_published_single_video_call_prints_the_published_result_every_batch_form_the_paths(
    request: pytest.FixtureRequest, module_name: str, two_videos: tuple[Path, list[str]], tmp_path: Path
) -> None:
    module = request.getfixturevalue("small_stnet" if module_name == STNET else "small_videotag")
    folder, paths = two_videos
    listing = tmp_path / "list.txt"
    listing.write_text(f"{paths[0]}\n", encoding="utf-8")
    options = ["--top_k", "3", "--threshold", "0"]
    entries = dict(zip(paths, module.classify(paths, threshold=0.0, top_k=3), strict=True))
    assert all(set(entry) == {"path", "prediction"} for entry in entries.values())

    published = module.run_cmd(["--input_path", paths[0], *options])
    if module_name == STNET:  # what video_classification returns: the predictions alone, as PaddleHub printed them
        assert published == module.video_classification({"image": [paths[0]]}, threshold=0.0, top_k=3)
        assert published == [entries[paths[0]]["prediction"]]
    else:  # classify's entries, which always carried the path
        assert published == [entries[paths[0]]]
    for form, (argv, named) in batch_forms(folder, paths, listing).items():
        printed = module.run_cmd([*argv, *options])
        assert printed == [entries[path] for path in named], form  # each result with its path, in order


def test_a_failed_video_among_several_is_printed_with_its_path_and_error(
    small_stnet: Any, two_videos: tuple[Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, (a, _) = two_videos
    missing = str(tmp_path / "missing.mp4")
    with pytest.raises(SystemExit) as info:
        small_stnet.run_cmd(["--input_path", missing, a, "--top_k", "2"])
    assert info.value.code == 1
    out, err = capsys.readouterr()
    printed = ast.literal_eval(out.strip())
    assert printed[0] == {"path": missing, "prediction": {}, "error": f"{missing}: file not found"}
    assert printed[1]["path"] == a and len(printed[1]["prediction"]) == 2
    assert f"hub run {STNET}: error: {missing}: file not found" in err and "1 of 2 videos failed" in err


@pytest.mark.parametrize("argv,message", [
    (["--input_path"], "argument --input_path: expected at least one argument"),
    (["--input_path", ""], "--input_path: an empty path names no video"),
    (["--input_path", "a.mp4", ""], "--input_path: an empty path names no video"),
])
def test_an_input_path_without_a_path_is_a_usage_error(argv: list[str], message: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser("m", "d", top_k=5, threshold=0.0)
    with pytest.raises(SystemExit) as info:
        input_paths(parser, parser.parse_args(argv))
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"hub run m: error: {message}"


def test_a_folder_without_videos_among_several_paths_stops_before_any_video_is_read(
    small_videotag: Any, two_videos: tuple[Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    _, (a, b) = two_videos
    empty = tmp_path / "empty"
    empty.mkdir()
    decoded = spy_on_decoding(small_videotag, monkeypatch)
    with pytest.raises(SystemExit) as info:
        small_videotag.run_cmd(["--input_path", a, str(empty), "--input_path", b])
    assert info.value.code == 2
    assert f"hub run {VIDEOTAG}: error: --input_path: no video file in the folder {empty}" in capsys.readouterr().err
    assert decoded == []


def test_output_and_report_take_every_input_path(small_stnet: Any, two_videos: tuple[Path, list[str]],
                                                 tmp_path: Path) -> None:
    _, (a, b) = two_videos
    output, page = tmp_path / "r.jsonl", tmp_path / "r.html"
    summary = small_stnet.run_cmd(["--input_path", a, "--input_path", b, a, "--output", str(output),
                                   "--report", str(page), "--top_k", "2"])
    assert summary == {"output": str(output), "videos": 2, "skipped": 0, "classified": 2, "failed": 0}
    assert [entry["path"] for entry in entries_of(output)] == [a, b]  # a path given twice: one line
    sections = re.findall(r'<section class="video" data-path="([^"]*)"', page.read_text(encoding="utf-8"))
    assert sections == [html.escape(a), html.escape(b)]
    summary = small_stnet.run_cmd(["--input_path", b, a, "--output", str(output), "--top_k", "2"])
    assert summary == {"output": str(output), "videos": 2, "skipped": 2, "classified": 0, "failed": 0}


# ---------------------------------------------------------------- progress, published output


def test_progress_on_stderr_only_when_asked_if_it_is_not_a_terminal(small_stnet: Any, clips: list[Path],
                                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    # Under capsys stderr is not a terminal: no bar unless --progress (a terminal: test_terminal_output.py).
    paths = copy_clips(clips, tmp_path / "two", ["a.mp4", "b.mp4"])
    results = small_stnet.run_cmd(["--input_path", str(tmp_path / "two"), "--top_k", "3"])
    out, err = capsys.readouterr()
    assert out == "" and err == ""  # the results are returned for PaddleHub to print, as before
    assert results == small_stnet.classify(paths, top_k=3)  # a folder: each result with its path

    assert small_stnet.run_cmd(["--input_path", str(tmp_path / "two"), "--top_k", "3", "--progress"]) == results
    out, err = capsys.readouterr()
    assert out == "" and f"{STNET}: 100%" in err and "2/2" in err
    assert "a.mp4 decode 0/" in err and "b.mp4 network" in err  # each video's stages in the bar's text

    monkeypatch.setenv("PADDLEHUB_VIDEO_PROGRESS", "1")  # one video gets the bar as well
    (single,) = small_stnet.run_cmd(["--input_path", paths[0], "--top_k", "3"])
    out, err = capsys.readouterr()
    assert out == "" and "1/1" in err and "a.mp4 decode 0/" in err
    assert single == results[0]["prediction"]  # one video: the published result


# ---------------------------------------------------------------- hub run (a real process)


def test_hub_run_glob_and_list_into_a_results_file(hub_env: dict[str, str], mirror: PublisherHost,
                                                   clips: list[Path], tmp_path: Path) -> None:
    small = tmp_path / "small.yaml"  # the settings of the in-process tests: their converted models
    small.write_text(yaml.safe_dump({STNET: mirror.config(STNET, **SMALL)}), encoding="utf-8")
    paths = copy_clips(clips, tmp_path / "my videos", ["a.mp4", "sub/b.mp4", "sub/skip.avi"])
    missing = str(tmp_path / "missing.mp4")
    listing = tmp_path / "list.txt"
    listing.write_text(f"{missing}\n{paths[0]}\n", encoding="utf-8")  # paths[0] again: answered once
    output = tmp_path / "out" / "actions.jsonl"
    output.parent.mkdir()
    pattern = str(tmp_path / "my videos" / "**" / "*.mp4")
    proc = run_hub(["run", STNET, "--input_path", pattern, "--input_file", str(listing), "--output", str(output)],
                   cwd=REPO, env={**hub_env, "PADDLEHUB_VIDEO_CONFIG": str(small)})
    assert proc.returncode == 1, describe(proc)
    summary = ast.literal_eval(proc.stdout.strip().splitlines()[-1])
    assert summary == {"output": str(output), "videos": 3, "skipped": 0, "classified": 2, "failed": 1}
    assert "%|" not in proc.stdout and "%|" not in proc.stderr, describe(proc)  # stderr is a pipe: no bar
    assert f"hub run {STNET}: error: {missing}: file not found" in proc.stderr, describe(proc)
    assert proc.stderr.count(missing) == 1, describe(proc)  # reported once
    assert TRACEBACK not in proc.stderr, describe(proc)
    entries = entries_of(output)
    assert [entry["path"] for entry in entries] == [*paths[:2], missing]
    assert [len(entry["prediction"]) for entry in entries] == [5, 5, 0]


def test_hub_run_never_empties_a_one_line_file_given_as_output(hub_env: dict[str, str], clips: list[Path],
                                                                tmp_path: Path) -> None:
    token = tmp_path / "tok"
    token.write_bytes(b"ghp_0123456789abcdefABCDEF")  # an API token: one line, no final newline
    before = snapshot(token)
    proc = run_hub(["run", STNET, "--input_path", str(clips[0]), "--output", str(token)], cwd=REPO, env=hub_env)
    assert proc.returncode == 2, describe(proc)
    assert f"hub run {STNET}: error: --output {token}: refused: its last line" in proc.stderr, describe(proc)
    assert TRACEBACK not in proc.stderr, describe(proc)
    assert snapshot(token) == before and token.read_bytes() == b"ghp_0123456789abcdefABCDEF"


def test_a_path_that_is_not_utf8_is_written_and_found_again(tmp_path: Path) -> None:
    output = tmp_path / "r.jsonl"
    path = os.fsdecode(b"caf\xe9.mp4")  # a Latin-1 file name, as os.walk gives it
    with ResultsFile(output) as results:
        results.append({"path": path, "prediction": {}})
        results.append({"path": "b.mp4", "prediction": {"跑步": 0.5}})
    with ResultsFile(output) as results:
        assert results.done == {path, "b.mp4"}
