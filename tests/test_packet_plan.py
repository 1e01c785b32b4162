"""Planned decoding (paddlehub_video.packet_plan): the sequential decoder's frames from fewer packets."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest

from paddlehub_video import video
from paddlehub_video.packet_plan import PacketIndex, decode_frames, decoder_spans, packets_to_decode, read_packet_index
from paddlehub_video.video import read_sampled_frames, sample_stnet_indices, sample_tsn_indices
from tests.fixtures.videos import frame_index_of, write_encoded_video, write_video

tsn_300 = partial(sample_tsn_indices, seg_num=300)
stnet_25x5 = partial(sample_stnet_indices, seg_num=25, seglen=5)
SAMPLERS = {"tsn": tsn_300, "stnet": stnet_25x5}

GOP_10 = "keyint=10:min-keyint=10:scenecut=0"
BT709 = "colorprim=bt709:transfer=bt709:colormatrix=bt709"
# name: (encoder, file suffix, encoder options, pixel format). All 400 frames of 96x64 with a
# keyframe every 10, so that StNet's 25 windows (one every 16 frames) leave some groups out.
ENCODED = {
    "h264_bframes": ("libx264", ".mp4", {"x264-params": f"{GOP_10}:bframes=3:b-pyramid=normal"}, "yuv420p"),
    "h264_open_gop": ("libx264", ".mkv", {"x264-params": f"{GOP_10}:bframes=3:open-gop=1"}, "yuv420p"),
    "h264_bt709_tagged": ("libx264", ".mp4", {"x264-params": f"{GOP_10}:{BT709}"}, "yuv420p"),
    "h264_full_range": ("libx264", ".mp4", {"x264-params": GOP_10}, "yuvj420p"),
    "h264_444": ("libx264", ".mp4", {"x264-params": GOP_10}, "yuv444p"),
    "hevc": ("libx265", ".mp4", {"x265-params": f"{GOP_10}:log-level=error"}, "yuv420p"),
    "mpeg4_bframes": ("mpeg4", ".mp4", {"bf": "2", "g": "10"}, "yuv420p"),
}


@pytest.fixture(scope="session")
def encoded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each ENCODED video, written once per session."""
    directory = tmp_path_factory.mktemp("encoded")
    return {
        name: write_encoded_video(directory / f"{name}{suffix}", 400, 96, 64, codec, options, pix_fmt)
        for name, (codec, suffix, options, pix_fmt) in ENCODED.items()
    }


def sequential(path: Path, sampler, monkeypatch: pytest.MonkeyPatch) -> list[np.ndarray]:
    """The frames of the sequential decoder (OpenCV, every frame decoded)."""
    with monkeypatch.context() as patch:
        patch.setattr(video, "read_packet_index", lambda source: None)
        return read_sampled_frames(path, sampler, np.copy)


def assert_same_frames(got: list[np.ndarray], expected: list[np.ndarray]) -> None:
    assert len(got) == len(expected)
    for position, (a, b) in enumerate(zip(got, expected)):
        assert a.shape == b.shape and np.array_equal(a, b), f"sampled frame {position} differs"


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("name", ENCODED)
def test_planned_frames_are_the_sequential_frames(
    encoded: dict[str, Path], name: str, sampler: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = encoded[name]
    index = read_packet_index(str(path))
    assert index is not None and index.frame_count == 400
    planned = read_sampled_frames(path, SAMPLERS[sampler], np.copy)
    assert_same_frames(planned, sequential(path, SAMPLERS[sampler], monkeypatch))
    assert [frame_index_of(f) for f in planned] == SAMPLERS[sampler](400)  # and they are the right frames


# Closed GOPs only: with open GOPs (h264_open_gop, and x265's default) a sampled leading picture
# needs the group before it, and with a window every 16 frames that is every group.
@pytest.mark.parametrize("name", ["h264_bframes", "mpeg4_bframes"])
def test_stnet_plan_leaves_groups_of_pictures_out(encoded: dict[str, Path], name: str) -> None:
    index = read_packet_index(str(encoded[name]))
    wanted = {index.frame_pts[i] for i in stnet_25x5(index.frame_count)}
    needed = packets_to_decode(index, wanted)
    assert sum(needed) < 0.8 * len(needed)
    keyframes_needed = sum(n and k for n, k in zip(needed, index.keyframe))
    assert keyframes_needed < sum(index.keyframe)


@pytest.mark.parametrize("name", ENCODED)
def test_decoders_side_by_side_give_one_decoders_frames(encoded: dict[str, Path], name: str) -> None:
    source = str(encoded[name])
    index = read_packet_index(source)
    wanted = set(tsn_300(index.frame_count))
    alone = decode_frames(source, index, wanted, np.copy, decoders=1)
    side_by_side = decode_frames(source, index, wanted, np.copy, decoders=3)
    assert alone.keys() == side_by_side.keys() == wanted
    assert all(np.array_equal(alone[i], side_by_side[i]) for i in wanted)


def test_mp4v_from_opencv_is_planned(long_video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index = read_packet_index(str(long_video))
    assert index is not None and index.codec == "mpeg4" and index.frame_count == 1000
    planned = read_sampled_frames(long_video, stnet_25x5, np.copy)
    assert_same_frames(planned, sequential(long_video, stnet_25x5, monkeypatch))


def test_repeated_indices_are_decoded_once(tmp_path: Path) -> None:
    path = write_encoded_video(tmp_path / "short.mp4", 100, 96, 64, "libx264", {"preset": "veryfast"})
    calls = []

    def transform(frame: np.ndarray) -> np.ndarray:
        calls.append(frame)
        return frame

    got = read_sampled_frames(path, tsn_300, transform)  # 100 frames: each sampled three times
    assert len(got) == 300 and len(calls) == 100
    assert got[0] is got[100] is got[200]


# --- what is left to sequential decoding ---------------------------------------------------------


def test_ten_bit_video_is_not_planned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_encoded_video(tmp_path / "ten.mkv", 60, 96, 64, "libx264", {"preset": "veryfast"}, "yuv420p10le")
    assert read_packet_index(str(path)) is None
    assert len(read_sampled_frames(path, tsn_300, np.copy)) == 300


def test_avi_and_lossless_are_not_planned(lossless_video: Path, tmp_path: Path) -> None:
    avi = write_video(tmp_path / "clip.avi", 30, 64, 48, 25, "MJPG")
    assert read_packet_index(str(avi)) is None
    assert read_packet_index(str(lossless_video)) is None  # FFV1


def test_not_a_video_is_not_planned(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x01not a video" * 100)
    assert read_packet_index(str(garbage)) is None


def test_truncated_matroska_gives_the_sequential_frames(
    encoded: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = encoded["h264_open_gop"].read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) * 6 // 10])
    assert_same_frames(read_sampled_frames(cut, tsn_300, np.copy), sequential(cut, tsn_300, monkeypatch))


# --- the plan itself, on hand-made packet lists --------------------------------------------------


def make_index(pts: list[int], keyframe_pts: set[int]) -> PacketIndex:
    return PacketIndex("h264", pts, [p in keyframe_pts for p in pts], sorted(pts), [False] * len(pts))


# Decode order of two closed groups with B-frames: I0 P3 B1 B2 P6 B4 B5 | I7 P10 B8 B9.
CLOSED = make_index([0, 3, 1, 2, 6, 4, 5, 7, 10, 8, 9], {0, 7})


def test_plan_stops_at_the_last_wanted_packet_of_a_group() -> None:
    # B1 needs I0 and P3 (decoded before it), nothing later; the second group is not needed.
    assert packets_to_decode(CLOSED, {1}) == [True, True, True] + [False] * 8


def test_plan_skips_groups_without_a_wanted_frame() -> None:
    assert packets_to_decode(CLOSED, {8}) == [False] * 7 + [True, True, True, False]


def test_plan_decodes_the_previous_group_for_a_leading_picture() -> None:
    # Open GOP: B5 and B6 are shown before I7 but decoded after it, and may refer to P4.
    index = make_index([0, 4, 2, 1, 3, 7, 5, 6, 10, 8, 9], {0, 7})
    assert packets_to_decode(index, {6}) == [True] * 8 + [False] * 3
    assert packets_to_decode(index, {10}) == [False] * 5 + [True] * 4 + [False] * 2


def test_packets_before_the_first_keyframe_form_their_own_group() -> None:
    index = make_index([0, 1, 2, 3, 4], {2})
    assert packets_to_decode(index, {3}) == [False, False, True, True, False]


def test_spans_split_the_work_at_keyframes() -> None:
    index = make_index(list(range(40)), {0, 10, 20, 30})
    needed = [True] * 40
    assert decoder_spans(index, needed, set(), 1) == [(0, 40)]
    assert decoder_spans(index, needed, set(), 2) == [(0, 20), (20, 40)]
    assert decoder_spans(index, needed, set(), 4) == [(0, 10), (10, 20), (20, 30), (30, 40)]
    assert decoder_spans(index, needed, set(), 8) == [(0, 10), (10, 20), (20, 30), (30, 40)]


def test_spans_drop_ranges_with_nothing_to_decode() -> None:
    index = make_index(list(range(40)), {0, 10, 20, 30})
    needed = [pos < 10 or pos >= 30 for pos in range(40)]
    assert decoder_spans(index, needed, set(), 2) == [(0, 10), (10, 40)]  # 10 packets each
    assert decoder_spans(index, needed, set(), 4) == [(0, 10), (20, 40)]  # (10, 20): nothing needed


def test_spans_never_cut_before_a_wanted_leading_picture() -> None:
    # I0 P4 B2 B1 B3 P8 B6 B5 B7 | I11 B9 B10 P14 B12 B13: B9 and B10 are shown before I11.
    index = make_index([0, 4, 2, 1, 3, 8, 6, 5, 7, 11, 9, 10, 14, 12, 13], {0, 11})
    assert decoder_spans(index, [True] * 15, {12}, 2) == [(0, 9), (9, 15)]
    needed = packets_to_decode(index, {10})
    assert needed == [True] * 12 + [False] * 3
    assert decoder_spans(index, needed, {10}, 2) == [(0, 15)]


def test_forked_child_decodes_with_threads_of_its_own(encoded: dict[str, Path]) -> None:
    import multiprocessing

    source = str(encoded["h264_bframes"])
    index = read_packet_index(source)
    wanted = set(tsn_300(index.frame_count))
    in_parent = decode_frames(source, index, wanted, np.copy, decoders=2)  # the pool exists now
    with multiprocessing.get_context("fork").Pool(1) as pool:
        in_child = pool.apply_async(decode_frames, (source, index, wanted, np.copy, 2)).get(timeout=60)
    assert all(np.array_equal(in_parent[i], in_child[i]) for i in wanted)
