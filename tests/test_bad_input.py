"""Bad and unusual inputs to both modules, through the Python API and `hub run`.

Every item gets its own answer: a result, or an error naming the file and the reason; the other
items of the same call are still answered, in input order, and the process goes on. `hub run`
prints the results, sends one line per failed video to stderr and exits with status 1.

Every file is generated here (OpenCV's writer, byte surgery on its mp4 files, `wave`,
`cv2.imwrite`); nothing is committed. The wrong-frame-count case of the decoder itself (a spy on
the container's count) is in test_video.py; here a real file whose edit list ends early does it.
"""

from __future__ import annotations

import ast
import os
import shutil
import tracemalloc
import wave
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

from paddlehub_video.decode.preprocess import scale_and_crop
from paddlehub_video.decode.sampling import sample_tsn_indices
from paddlehub_video.decode.video import read_sampled_frames
from paddlehub_video.errors import VideoDecodeError
from tests.fixtures import mp4
from tests.fixtures.hub_cli import TRACEBACK, describe, printed_result, run_hub
from tests.fixtures.publisher import KINETICS_LABELS, SMALL, VIDEOTAG_LABELS, PublisherHost
from tests.fixtures.videos import MakeVideo, read_every_frame, write_encoded_video

REPO = Path(__file__).resolve().parents[1]
VIDEOTAG, STNET = "videotag_tsn_lstm", "stnet_kinetics400"
# Names a shell, FFmpeg or a list file could misread; each is a copy of the base video.
ODD_NAMES = [
    "my clip with spaces.mp4",
    "视频 ünïcödé.mp4",
    "it's \"quoted\".mp4",
    "$HOME;rm -rf & x*.mp4",
    "100%d percent.mp4",
    "clip:1.mp4",  # relative, in the current directory: FFmpeg alone would read `clip:` as a protocol
]
CANNOT_OPEN = "cannot open the container"


@dataclass(frozen=True)
class Case:
    """One input item and what it must give: `error` (a part of the reason), or the result of `same_as`."""

    label: str
    path: Any
    error: str | None = None
    same_as: Path | None = None


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def base(make_video: MakeVideo) -> Path:
    """60 frames 64x48 mp4v: the video the edited copies below are made from."""
    return make_video("bad_input_base", 60, 64, 48)


@pytest.fixture(scope="module")
def inputs(make_video: MakeVideo, base: Path, one_frame_video: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> tuple[Path, list[Case]]:
    """(the folder holding them, every case): broken files, odd but valid videos, odd names."""
    folder = tmp_path_factory.mktemp("bad inputs")
    data = base.read_bytes()

    def put(name: str, content: bytes) -> Path:
        (folder / name).write_bytes(content)
        return folder / name

    cases = [Case("missing file", folder / "no such video.mp4", error="file not found")]
    (folder / "a folder.mp4").mkdir()
    cases.append(Case("a directory", folder / "a folder.mp4", error="is a directory, not a video file"))
    cases.append(Case("zero bytes", put("empty.mp4", b""), error="file is empty (0 bytes)"))
    for where, offset in mp4.cut_points(data).items():
        cases.append(Case(f"cut {where}", put(f"cut at {offset}.mp4", data[:offset]), error=CANNOT_OPEN))
    # The last box of the file is optional metadata (udta): every frame is still there.
    cases.append(Case("cut inside the trailing metadata", put("cut at the end.mp4", data[:-8]), same_as=base))
    cases.append(Case("text renamed .mp4", put("notes.mp4", b"not a video\n" * 200), error=CANNOT_OPEN))
    image = np.asarray(read_every_frame(base)[0])
    for kind, suffix in (("PNG", ".png"), ("JPEG", ".jpg")):
        ok, encoded = cv2.imencode(suffix, image)
        assert ok
        cases.append(Case(f"{kind} renamed .mp4", put(f"photo {kind}.mp4", encoded.tobytes()),
                          error=f"is a {kind} image, not a video"))
    with wave.open(str(folder / "speech.wav"), "wb") as audio:  # one second of 8 kHz mono silence
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(8000)
        audio.writeframes(b"\0\0" * 8000)
    cases.append(Case("audio only (.wav)", folder / "speech.wav", error=CANNOT_OPEN))
    cases.append(Case("audio only renamed .mp4", put("speech.mp4", (folder / "speech.wav").read_bytes()),
                      error=CANNOT_OPEN))
    # None (or a number, an array of the wrong shape) in the list is a ValueError naming paths[i]: test_inputs.py

    cases.append(Case("1 frame", one_frame_video))
    cases.append(Case("2x2 pixels", make_video("two_by_two", 12, 2, 2)))  # mp4v writes 2x2 (not 1x1)
    cases.append(Case("4K, 3 frames", make_video("four_k", 3, 3840, 2160)))
    cases.append(Case("10 minutes at 25 fps", make_video("ten_minutes", 15000, 64, 48)))
    # Container says 60 frames; the edit list ends after 30, so 30 decode: the first 30 frames of base,
    # which is what a 30-frame encoding decodes to as well (mp4v without B-frames).
    cases.append(Case("container over-reports its frame count",
                      put("edit list ends early.mp4", mp4.shorten_edit_list(data, 0.5)),
                      same_as=make_video("bad_input_base30", 30, 64, 48)))
    durations = [768 if i % 2 else 256 for i in range(60)]  # 60 ms, 20 ms, ... (was 40 ms each)
    cases.append(Case("variable frame rate", put("vfr.mp4", mp4.set_frame_durations(data, durations)), same_as=base))
    cases.append(Case("rotated 90 (portrait tag)", put("rotated.mp4", mp4.set_rotation(data, 90)), same_as=base))
    for name in ODD_NAMES:
        shutil.copyfile(base, folder / name)
        cases.append(Case(f"name {name!r}", name if ":" in name else folder / name, same_as=base))
    cases.append(Case("the same path twice (1)", base, same_as=base))
    cases.append(Case("the same path twice (2)", base, same_as=base))
    return folder, cases


def as_input(path: Any) -> Any:
    return str(path) if isinstance(path, Path) else path


# ---------------------------------------------------------------- the files are what they claim


def test_the_generated_files_have_the_property_they_stand_for(inputs: tuple[Path, list[Case]], base: Path) -> None:
    folder, cases = inputs
    by_label = {case.label: Path(case.path) for case in cases if case.path is not None}

    def capture_of(label: str) -> cv2.VideoCapture:
        return cv2.VideoCapture(str(by_label[label]), cv2.CAP_FFMPEG)

    rotated = capture_of("rotated 90 (portrait tag)")
    assert rotated.get(cv2.CAP_PROP_ORIENTATION_META) == 90
    rotated.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)  # what OpenCV 5 does unless told otherwise
    assert rotated.read()[1].shape == (64, 48, 3)
    rotated.release()

    vfr = capture_of("variable frame rate")
    stamps = []
    while vfr.grab():
        stamps.append(vfr.get(cv2.CAP_PROP_POS_MSEC))
    vfr.release()
    assert len(stamps) == 60 and set(np.round(np.diff(stamps))) == {20.0, 60.0}

    over = capture_of("container over-reports its frame count")
    assert over.get(cv2.CAP_PROP_FRAME_COUNT) == 60
    over.release()
    assert len(read_every_frame(by_label["container over-reports its frame count"])) == 30
    assert by_label["2x2 pixels"].stat().st_size > 0


def test_ten_minute_video_is_decoded_in_bounded_memory(inputs: tuple[Path, list[Case]]) -> None:
    _, cases = inputs
    (ten_minutes,) = (Path(c.path) for c in cases if c.label == "10 minutes at 25 fps")
    transformed = []

    def transform(frame: np.ndarray) -> np.ndarray:
        transformed.append(frame.shape)
        return scale_and_crop(frame, 256, 224)

    tracemalloc.start()
    try:
        frames = read_sampled_frames(ten_minutes, partial(sample_tsn_indices, seg_num=300), transform)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(frames) == 300 and len(transformed) == 300  # 15000 frames grabbed, 300 kept
    print(f"\n10-minute video, 300 of 15000 frames sampled: peak traced memory {peak / 2**20:.1f} MiB")
    assert peak < 300 * 224 * 224 * 3 * 1.5 + 8 * 2**20  # the 300 crops and some slack, not 15000 frames


# ---------------------------------------------------------------- Python API


def check_entries(results: list[dict], cases: list[Case], reference: dict[Path, dict]) -> None:
    """classify() results: one entry per case in order, errors naming file and reason."""
    assert [entry["path"] for entry in results] == [str(as_input(c.path)) for c in cases]
    for entry, case in zip(results, cases, strict=True):
        if case.error is not None:
            assert set(entry) == {"path", "prediction", "error"} and entry["prediction"] == {}, case.label
            assert entry["error"].startswith(f"{as_input(case.path)}: "), (case.label, entry["error"])
            assert case.error in entry["error"], (case.label, entry["error"])
        else:
            assert set(entry) == {"path", "prediction"} and entry["prediction"], (case.label, entry)
            if case.same_as is not None:
                assert entry["prediction"] == reference[case.same_as], case.label


def reference_predictions(classify: Any, cases: list[Case]) -> dict[Path, dict]:
    sources = sorted({c.same_as for c in cases if c.same_as is not None})
    return {path: entry["prediction"] for path, entry in zip(sources, classify([str(p) for p in sources]), strict=True)}


@pytest.mark.parametrize("module_name", [VIDEOTAG, STNET])
def test_classify_answers_every_item_in_order(request: pytest.FixtureRequest, module_name: str,
                                              inputs: tuple[Path, list[Case]], monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    module = request.getfixturevalue("small_videotag" if module_name == VIDEOTAG else "small_stnet")
    folder, cases = inputs
    monkeypatch.chdir(folder)
    classify = partial(module.classify, top_k=5, threshold=0.0)
    reference = reference_predictions(classify, cases)
    results = classify([as_input(c.path) for c in cases])
    check_entries(results, cases, reference)
    labels = VIDEOTAG_LABELS if module_name == VIDEOTAG else KINETICS_LABELS
    assert all(set(entry["prediction"]) <= set(labels) for entry in results)


def test_stnet_video_classification_answers_every_item_in_order(small_stnet: Any, inputs: tuple[Path, list[Case]],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    folder, cases = inputs
    monkeypatch.chdir(folder)
    reference = reference_predictions(partial(small_stnet.classify, top_k=5), cases)
    results = small_stnet.video_classification(data={"image": [as_input(c.path) for c in cases]})
    errors = small_stnet.last_errors
    assert len(results) == len(cases)
    assert sorted(errors) == [i for i, c in enumerate(cases) if c.error is not None]
    for index, (result, case) in enumerate(zip(results, cases, strict=True)):
        if case.error is not None:
            assert result == {}, case.label
            assert errors[index].startswith(f"{as_input(case.path)}: ") and case.error in errors[index], errors[index]
        else:
            assert len(result) == 5, case.label
            if case.same_as is not None:
                assert result == reference[case.same_as], case.label


@pytest.mark.parametrize("module_name", [VIDEOTAG, STNET])
@pytest.mark.parametrize(("paths", "message"), [
    ("clip.mp4", r"single path 'clip.mp4': use \['clip.mp4'\]"),
    (None, "list of video paths, got NoneType"),
    (Path("clip.mp4"), "single path"),
])
def test_paths_that_are_not_a_list_are_a_value_error(request: pytest.FixtureRequest, module_name: str, paths: Any,
                                                     message: str) -> None:
    module = request.getfixturevalue("small_videotag" if module_name == VIDEOTAG else "small_stnet")
    with pytest.raises(ValueError, match=message):
        module.classify(paths)
    if module_name == STNET:
        with pytest.raises(ValueError, match=message):
            module.video_classification(data={"image": paths})


def test_an_empty_list(small_videotag: Any, small_stnet: Any) -> None:
    assert small_videotag.classify([]) == [] and small_stnet.classify([]) == []
    with pytest.raises(ValueError, match="empty"):  # the published call needs at least one video
        small_stnet.video_classification(data={"image": []})


# ---------------------------------------------------------------- hub run (in process)


def cli_cases(cases: list[Case]) -> list[Case]:
    """A mix for the command line: answered and failed videos, odd names (no None on a command line)."""
    wanted = {"missing file", "a directory", "PNG renamed .mp4", "cut inside the ftyp header", "1 frame",
              "rotated 90 (portrait tag)"} | {f"name {name!r}" for name in ODD_NAMES}
    return [c for c in cases if c.label in wanted]


@pytest.mark.parametrize("module_name", [VIDEOTAG, STNET])
def test_run_cmd_prints_results_reports_failures_on_stderr_and_exits_1(
    request: pytest.FixtureRequest, module_name: str, inputs: tuple[Path, list[Case]], base: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    module = request.getfixturevalue("small_videotag" if module_name == VIDEOTAG else "small_stnet")
    folder, cases = inputs
    monkeypatch.chdir(folder)
    cases = cli_cases(cases)
    listing = tmp_path / "videos.txt"
    listing.write_text("".join(f"{as_input(c.path)}\n" for c in cases[1:]), encoding="utf-8")

    (answered,) = module.run_cmd(["--input_path", str(base), "--top_k", "3"])  # all answered: returned ...
    assert capsys.readouterr().out == ""  # ... for PaddleHub to print, as before
    base_prediction = answered["prediction"] if module_name == VIDEOTAG else answered

    with pytest.raises(SystemExit) as exit_info:
        module.run_cmd(["--input_path", str(as_input(cases[0].path)), "--input_file", str(listing), "--top_k", "3"])
    assert exit_info.value.code == 1
    out, err = capsys.readouterr()
    printed = ast.literal_eval(out.strip())  # the one line printed: the results, as PaddleHub prints them
    assert len(printed) == len(cases)
    for result, case in zip(printed, cases, strict=True):  # several videos: each result with its path, for both modules
        assert result["path"] == str(as_input(case.path))
        result = result["prediction"]
        if case.error is not None:
            assert result == {}, case.label
        else:
            assert result and (case.same_as is None or result == base_prediction), case.label
    failed = [c for c in cases if c.error is not None]
    error_lines = [line for line in err.splitlines() if line.startswith(f"hub run {module_name}: error: ")]
    assert len(error_lines) == len(failed), err
    for line, case in zip(error_lines, failed, strict=True):
        assert line.startswith(f"hub run {module_name}: error: {as_input(case.path)}: ") and case.error in line, line
    assert f"hub run {module_name}: {len(failed)} of {len(cases)} videos failed" in err
    assert TRACEBACK not in err


# ---------------------------------------------------------------- hub run (a real process)


def test_hub_run_exits_1_with_the_results_and_one_error_line_per_failed_video(
    hub_env: dict[str, str], mirror: PublisherHost, inputs: tuple[Path, list[Case]], tmp_path: Path
) -> None:
    folder, cases = inputs
    small = tmp_path / "small.yaml"  # the settings of the in-process tests: their converted models
    small.write_text(yaml.safe_dump({VIDEOTAG: mirror.config(VIDEOTAG, **SMALL)}), encoding="utf-8")
    odd = [c for c in cases if c.label.startswith("name ")]
    listing = tmp_path / "list.txt"
    listing.write_text(f"{folder / 'no such video.mp4'}\n{folder / 'photo PNG.mp4'}\n{odd[1].path}\n",
                       encoding="utf-8")
    proc = run_hub(["run", VIDEOTAG, "--input_path", str(odd[3].path), "--input_file", str(listing),
                    "--threshold", "0", "--top_k", "3"],
                   cwd=REPO, env={**hub_env, "PADDLEHUB_VIDEO_CONFIG": str(small)})
    printed = printed_result(proc, status=1)
    assert [entry["path"] for entry in printed] == [
        str(odd[3].path), str(folder / "no such video.mp4"), str(folder / "photo PNG.mp4"), str(odd[1].path)]
    assert printed[0]["prediction"] and printed[0]["prediction"] == printed[3]["prediction"]
    assert [entry["prediction"] for entry in printed[1:3]] == [{}, {}]
    assert f"hub run {VIDEOTAG}: error: {folder / 'no such video.mp4'}: file not found" in proc.stderr
    assert f"hub run {VIDEOTAG}: error: {folder / 'photo PNG.mp4'}: is a PNG image, not a video" in proc.stderr
    assert f"hub run {VIDEOTAG}: 2 of 4 videos failed" in proc.stderr
    assert "[{" not in proc.stderr and TRACEBACK not in proc.stderr, describe(proc)
    assert os.path.basename(str(odd[3].path)) in proc.stdout


@pytest.mark.parametrize("name, text, kind", [
    ("list.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{video}\n", "an HLS playlist"),
    ("live.mp4", "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{video}\n", "an HLS playlist"),
    ("list.ffconcat", "ffconcat version 1.0\nfile '{video}'\n", "an FFmpeg concat list"),
])
def test_a_playlist_naming_another_video_is_refused(tmp_path: Path, make_video: MakeVideo, name: str, text: str,
                                                    kind: str) -> None:
    # FFmpeg would follow it to a file the caller never named (or, live, reload it for ever).
    elsewhere = make_video("elsewhere", 30, 64, 48)
    playlist = tmp_path / name
    playlist.write_text(text.format(video=elsewhere))
    with pytest.raises(VideoDecodeError, match=f"is {kind}, not a video"):
        read_sampled_frames(playlist, partial(sample_tsn_indices, seg_num=8), np.copy)


def test_a_video_stream_without_a_decoder_is_a_named_error(tmp_path: Path) -> None:
    h264 = write_encoded_video(tmp_path / "h264.mp4", 30, 64, 48, "libx264", {"preset": "ultrafast"})
    data = h264.read_bytes()
    assert data.count(b"avc1") >= 1  # the sample entry (and the brand): FFmpeg then knows no codec for the track
    unknown = tmp_path / "unknown_codec.mp4"
    unknown.write_bytes(data.replace(b"avc1", b"zzzz"))
    with pytest.raises(VideoDecodeError, match="unknown_codec.mp4: "):
        read_sampled_frames(unknown, partial(sample_tsn_indices, seg_num=8), np.copy)
