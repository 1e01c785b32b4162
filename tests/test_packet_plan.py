"""Planned decoding (paddlehub_video.decode.packet_plan): the sequential decoder's frames from fewer packets."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest

from paddlehub_video.decode import video
from paddlehub_video.decode.bitstream import Picture, PictureReader, Unsupported
from paddlehub_video.decode.packet_plan import (
    PacketIndex,
    decode_frames,
    decoder_spans,
    packets_to_decode,
    read_packet_index,
)
from paddlehub_video.decode.sampling import sample_stnet_indices, sample_tsn_indices
from paddlehub_video.decode.video import read_sampled_frames
from tests.fixtures import hard_videos as hv
from tests.fixtures.decode_matrix import pyav_every_frame
from tests.fixtures.videos import frame_index_of, read_every_frame, write_encoded_video, write_video

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
    for position, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert a.shape == b.shape and np.array_equal(a, b), f"sampled frame {position} differs"


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("name", ENCODED)
def test_planned_frames_are_the_sequential_frames(
    encoded: dict[str, Path], name: str, sampler: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert assert_planned_as_sequential(encoded[name], SAMPLERS[sampler], monkeypatch).frame_count == 400


def assert_planned_as_sequential(path: Path, sampler, monkeypatch: pytest.MonkeyPatch, first: int = 0) -> PacketIndex:
    """`path` is planned, gives the sequential decoder's frames, and they are the right ones (the
    source's frame `first + i` for index i)."""
    index = read_packet_index(str(path))
    assert index is not None
    planned = read_sampled_frames(path, sampler, np.copy)
    assert_same_frames(planned, sequential(path, sampler, monkeypatch))
    assert [frame_index_of(f) for f in planned] == [first + i for i in sampler(index.frame_count)]
    return index


# Closed GOPs only: with open GOPs (h264_open_gop, and x265's default) a sampled leading picture
# needs the group before it, and with a window every 16 frames that is every group.
@pytest.mark.parametrize("name", ["h264_bframes", "mpeg4_bframes"])
def test_stnet_plan_leaves_groups_of_pictures_out(encoded: dict[str, Path], name: str) -> None:
    index = read_packet_index(str(encoded[name]))
    wanted = {index.frame_pts[i] for i in stnet_25x5(index.frame_count)}
    needed = packets_to_decode(index, wanted)
    assert sum(needed) < 0.8 * len(needed)
    keyframes_needed = sum(n and k for n, k in zip(needed, index.keyframe, strict=True))
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
    assert decoder_spans(index, needed, set(), 1) == [(0, 0, 40)]
    assert decoder_spans(index, needed, set(), 2) == [(0, 0, 20), (20, 20, 40)]
    assert decoder_spans(index, needed, set(), 4) == [(0, 0, 10), (10, 10, 20), (20, 20, 30), (30, 30, 40)]
    assert decoder_spans(index, needed, set(), 8) == [(0, 0, 10), (10, 10, 20), (20, 20, 30), (30, 30, 40)]


def test_spans_drop_ranges_with_nothing_to_decode() -> None:
    index = make_index(list(range(40)), {0, 10, 20, 30})
    needed = [pos < 10 or pos >= 30 for pos in range(40)]
    assert decoder_spans(index, needed, set(), 2) == [(0, 0, 10), (10, 10, 40)]  # 10 packets each
    assert decoder_spans(index, needed, set(), 4) == [(0, 0, 10), (20, 20, 40)]  # (10, 20): nothing needed


# I0 P4 B2 B1 B3 P8 B6 B5 B7 | I11 B9 B10 P14 B12 B13 | I17 B15 B16 P20 B18 B19: B9, B10, B15 and B16
# are shown before the I frame of their group.
OPEN = make_index([0, 4, 2, 1, 3, 8, 6, 5, 7, 11, 9, 10, 14, 12, 13, 17, 15, 16, 20, 18, 19], {0, 11, 17})


def test_a_span_at_a_wanted_leading_picture_decodes_the_group_before_first() -> None:
    needed = packets_to_decode(OPEN, {1, 16})
    assert needed == [True] * 4 + [False] * 5 + [True] * 9 + [False] * 3  # group 2 whole, for B16
    assert decoder_spans(OPEN, needed, {1, 16}, 2) == [(0, 0, 15), (9, 15, 21)]
    assert decoder_spans(OPEN, [True] * 21, {12}, 2) == [(0, 0, 15), (15, 15, 21)]  # no leading picture wanted


def test_no_span_is_only_the_group_the_next_one_decodes_first() -> None:
    needed = packets_to_decode(OPEN, {10})
    assert needed == [True] * 12 + [False] * 9
    assert decoder_spans(OPEN, needed, {10}, 2) == [(0, 0, 15)]  # not (0, 0, 9), (0, 9, 21)


@pytest.mark.parametrize("name", ["open_gop_mkv", "hevc_mkv"])
def test_open_gops_are_shared_among_decoders(hard: dict[str, Path], name: str) -> None:
    source = str(hard[name])
    index = read_packet_index(source)
    wanted = set(tsn_300(index.frame_count))  # every frame, leading pictures included
    needed = packets_to_decode(index, {index.frame_pts[i] for i in wanted})
    spans = decoder_spans(index, needed, {index.frame_pts[i] for i in wanted}, 4)
    assert len(spans) >= 2 and any(span.decode_from < span.start for span in spans)
    alone = decode_frames(source, index, wanted, np.copy, decoders=1)
    side_by_side = decode_frames(source, index, wanted, np.copy, decoders=4)
    assert alone.keys() == side_by_side.keys() == wanted
    assert all(np.array_equal(alone[i], side_by_side[i]) for i in wanted)


def test_forked_child_decodes_with_threads_of_its_own(encoded: dict[str, Path]) -> None:
    import multiprocessing

    source = str(encoded["h264_bframes"])
    index = read_packet_index(source)
    wanted = set(tsn_300(index.frame_count))
    in_parent = decode_frames(source, index, wanted, np.copy, decoders=2)  # the pool exists now
    with multiprocessing.get_context("fork").Pool(1) as pool:
        in_child = pool.apply_async(decode_frames, (source, index, wanted, np.copy, 2)).get(timeout=60)
    assert all(np.array_equal(in_parent[i], in_child[i]) for i in wanted)


# --- hard files: true random-access points, display order, determinism -------------------------

GOP_30 = "keyint=30:min-keyint=30:scenecut=0"
# name: (encoder, suffix, encoder options, frames). 160x96, small enough to write in a second.
HARD_SOURCES = {
    "intra_refresh": ("libx264", ".mp4", {"x264-params": "intra-refresh=1:keyint=30:scenecut=0"}, 300),
    "bframes": ("libx264", ".mp4", {"x264-params": f"{GOP_30}:bframes=3"}, 300),
    "open_gop_mp4": ("libx264", ".mp4", {"x264-params": f"{GOP_30}:bframes=3:open-gop=1"}, 300),
    "open_gop_mkv": ("libx264", ".mkv", {"x264-params": f"{GOP_30}:bframes=3:open-gop=1"}, 300),
    "long_gop_16_bframes": ("libx264", ".mp4", {"x264-params": "keyint=250:bframes=16:b-pyramid=normal"}, 300),
    "hevc_mkv": ("libx265", ".mkv", {"x265-params": f"{GOP_30}:log-level=error"}, 120),
    "interlaced": ("libx264", ".mp4", {"x264-params": f"{GOP_30}:interlaced=1"}, 20),
    "no_bframes": ("libx264", ".mp4", {"x264-params": "keyint=10:min-keyint=10:scenecut=0:bframes=0"}, 100),
}
# name: (source, what makes the remux edit, muxer options). The edit-list cut keeps decode positions
# 60 on (an IDR) and hides the 5 frames before frame 65 (512 ticks per frame at 25 fps in MP4).
HARD_REMUXES = {
    "fragmented": ("bframes", None, {"movflags": "frag_keyframe+empty_moov"}),
    "edit_list_cut": ("bframes", partial(hv.shifted_from, 60, 65 * 512), None),
    "pts_as_dts_mp4": ("bframes", hv.pts_as_dts, None),
    "pts_as_dts_mkv": ("bframes", hv.pts_as_dts, None),
    "starts_on_p_frame": ("bframes", partial(hv.from_packet, 4), None),
    "starts_on_recovery_point": ("intra_refresh", partial(hv.from_packet, 29), None),
    "corrupt": ("no_bframes", partial(hv.slice_data_garbled, 55), None),
}
# Planned files, and the index of their first frame.
PLANNED = {"intra_refresh": 0, "open_gop_mp4": 0, "open_gop_mkv": 0, "long_gop_16_bframes": 0, "hevc_mkv": 0}
PLANNED |= {"fragmented": 0, "edit_list_cut": 65}
# Refused files, and the reason logged.
REFUSED = {
    "pts_as_dts_mp4": "timestamps in decode order",
    "pts_as_dts_mkv": "timestamps in decode order",
    "starts_on_p_frame": "first packet is not a random-access point",
    "starts_on_recovery_point": "first packet is not a random-access point",
}


@pytest.fixture(scope="session")
def hard(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each HARD_SOURCES and HARD_REMUXES video, written once per session."""
    directory = tmp_path_factory.mktemp("hard")
    made = {
        name: write_encoded_video(directory / f"{name}{suffix}", frames, 160, 96, codec, options)
        for name, (codec, suffix, options, frames) in HARD_SOURCES.items()
    }
    for name, (source, make_edit, options) in HARD_REMUXES.items():
        suffix = ".mkv" if name.endswith("mkv") else ".mp4"
        edit = make_edit() if make_edit else None
        made[name] = hv.remux(made[source], directory / f"{name}{suffix}", edit, options)
    return made


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("name", PLANNED)
def test_hard_files_planned_give_the_sequential_frames(
    hard: dict[str, Path], name: str, sampler: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert_planned_as_sequential(hard[name], SAMPLERS[sampler], monkeypatch, first=PLANNED[name])


@pytest.mark.parametrize("name", REFUSED)
def test_hard_files_refused_are_decoded_sequentially(
    hard: dict[str, Path], name: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = hard[name]
    with caplog.at_level("DEBUG", logger="paddlehub_video"):
        assert read_packet_index(str(path)) is None
    assert REFUSED[name] in caplog.text
    spy = []
    monkeypatch.setattr(video, "decode_frames", lambda *args, **kwargs: spy.append(args))
    read_sampled_frames(path, tsn_300, np.copy)
    assert not spy  # never planned


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_interlaced_h264_is_not_planned_and_gives_its_woven_frames(
    hard: dict[str, Path], sampler: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MBAFF: one frame of two woven fields per packet. (The pinned OpenCV gives it black.) The planned
    # decoder's conversion would interpolate each field's chroma apart, not as stored: video.py sends
    # interlaced files to the PyAV sequential decoder instead.
    path = hard["interlaced"]
    assert read_packet_index(str(path)).frame_count == 20
    spy = []
    monkeypatch.setattr(video, "decode_frames", lambda *args, **kwargs: spy.append(args))
    got = read_sampled_frames(path, SAMPLERS[sampler], np.copy)
    indices = SAMPLERS[sampler](20)
    every = pyav_every_frame(path)
    assert not spy
    assert_same_frames(got, [every[i] for i in indices])
    assert [frame_index_of(f) for f in got] == indices


@pytest.mark.parametrize("name", ["pts_as_dts_mp4", "pts_as_dts_mkv"])
def test_pts_as_dts_frames_are_in_display_order(hard: dict[str, Path], name: str) -> None:
    got = read_sampled_frames(hard[name], stnet_25x5, np.copy)
    assert [frame_index_of(f) for f in got] == stnet_25x5(300)


def test_recovery_points_flagged_keyframes_do_not_start_groups(hard: dict[str, Path]) -> None:
    flagged = container_index(hard["intra_refresh"]).keyframe
    assert sum(flagged) >= 10 and sum(read_packet_index(str(hard["intra_refresh"])).keyframe) == 1  # the IDR
    assert container_index(hard["starts_on_recovery_point"]).keyframe[0]  # refused all the same


def container_index(path: Path) -> PacketIndex:
    """A PacketIndex from the container's own flags and timestamps, none of read_packet_index's checks."""
    import av

    with av.open(str(path)) as container:
        packets = [p for p in container.demux(container.streams.video[0]) if p.size]
        pts, keys = [p.pts for p in packets], [p.is_keyframe for p in packets]
    return PacketIndex("h264", pts, keys, sorted(pts), [False] * len(pts))


@pytest.mark.parametrize("decoders", [1, 2])
def test_decoders_out_of_timestamp_order_are_caught_at_decode_time(hard: dict[str, Path], decoders: int) -> None:
    path = str(hard["pts_as_dts_mp4"])
    index = container_index(Path(path))
    assert decode_frames(path, index, set(tsn_300(300)), np.copy, decoders=decoders) is None


def test_decoders_started_at_recovery_points_are_caught_at_decode_time(hard: dict[str, Path]) -> None:
    # The container's keyframes: decoders would start at P frames with a recovery point.
    path = str(hard["intra_refresh"])
    assert decode_frames(path, container_index(Path(path)), set(stnet_25x5(300)), np.copy, decoders=4) is None


@pytest.mark.parametrize("decoders", [1, 2, 4])
def test_a_corrupt_packet_the_frames_need_is_left_to_the_sequential_decoder(
    hard: dict[str, Path], decoders: int
) -> None:
    path = str(hard["corrupt"])
    index = read_packet_index(path)
    assert index is not None  # the headers are intact
    assert decode_frames(path, index, {57, 80}, np.copy, decoders=decoders) is None


def test_a_corrupt_packet_the_frames_do_not_need_changes_nothing(hard: dict[str, Path]) -> None:
    # Frame 55 (no B-frames: decode order is display order) is garbled; its group is 50-59.
    path = str(hard["corrupt"])
    index = read_packet_index(path)
    wanted = set(range(100)) - set(range(50, 60))
    runs = [decode_frames(path, index, wanted, np.copy, decoders=d) for d in (1, 2, 4, 1)]
    assert all(run is not None and run.keys() == wanted for run in runs)
    reference = read_every_frame(hard["corrupt"])
    assert all(np.array_equal(run[i], reference[i]) for run in runs for i in wanted)


def annex_b(packet: bytes, length_size: int = 4) -> bytes:
    """The NAL units of a length-prefixed packet behind start codes instead."""
    units, pos = [], 0
    while pos < len(packet):
        size = int.from_bytes(packet[pos : pos + length_size], "big")
        units.append(b"\x00\x00\x00\x01" + packet[pos + length_size : pos + length_size + size])
        pos += length_size + size
    return b"".join(units)


@pytest.mark.parametrize("name", ["open_gop_mp4", "intra_refresh", "hevc_mkv"])
def test_annex_b_packets_read_as_length_prefixed_ones(hard: dict[str, Path], name: str) -> None:
    import av

    with av.open(str(hard[name])) as container:
        context = container.streams.video[0].codec_context
        prefixed = PictureReader(context.name, bytes(context.extradata))
        packets = [bytes(p) for p in container.demux(container.streams.video[0]) if p.size]
        started = PictureReader(context.name, annex_b(parameter_sets(context.name, bytes(context.extradata)), 2))
    assert [prefixed.picture(p) for p in packets] == [started.picture(annex_b(p)) for p in packets]


def parameter_sets(codec: str, extradata: bytes) -> bytes:
    """The parameter sets of an avcC or hvcC record, each behind a 2-byte length."""
    if codec == "h264":
        sps_end = 6 + sum(2 + size for size in record_sizes(extradata, 6, extradata[5] & 0x1F))
        pps_end = sps_end + 1 + sum(2 + size for size in record_sizes(extradata, sps_end + 1, extradata[sps_end]))
        return extradata[6:sps_end] + extradata[sps_end + 1 : pps_end]
    out, pos = [], 23
    for _ in range(extradata[22]):
        count = int.from_bytes(extradata[pos + 1 : pos + 3], "big")
        sizes = record_sizes(extradata, pos + 3, count)
        out.append(extradata[pos + 3 : pos + 3 + sum(2 + size for size in sizes)])
        pos += 3 + sum(2 + size for size in sizes)
    return b"".join(out)


def record_sizes(data: bytes, pos: int, count: int) -> list[int]:
    """Sizes of `count` records of a 2-byte length and that many bytes, from `pos`."""
    sizes = []
    for _ in range(count):
        sizes.append(int.from_bytes(data[pos : pos + 2], "big"))
        pos += 2 + sizes[-1]
    return sizes


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (b"\x00\x00\x00\x09\x65\x88", "lengths that do not add up"),
        (b"\x00\x00\x00\x02\x09\xf0", "without a picture"),  # an access unit delimiter only
        (b"\x00\x00\x00\x02\xe5\x88", "forbidden bit"),
    ],
)
def test_malformed_h264_packets_are_refused(packet: bytes, reason: str) -> None:
    avcc = bytes([1, 100, 0, 10, 0xFF, 0xE0, 0])  # 4-byte lengths, no parameter sets
    with pytest.raises(Unsupported, match=reason):
        PictureReader("h264", avcc).picture(packet)


def from_bits(bits: str) -> bytes:
    """Bytes from a string of 0s and 1s (spaces ignored), zero-padded to whole bytes."""
    bits = bits.replace(" ", "")
    return int(bits + "0" * (-len(bits) % 8), 2).to_bytes((len(bits) + 7) // 8, "big")


def hevc_nal(kind: int, payload: bytes = b"\x80", layer: int = 0) -> bytes:
    return b"\x00\x00\x01" + bytes([kind << 1 | layer >> 5, (layer & 31) << 3 | 1]) + payload


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (hevc_nal(16), "BLA"),  # its RASL pictures are never shown
        (hevc_nal(36), "end of sequence"),  # the next CRA would drop its RASL pictures
        (hevc_nal(1, layer=1), "layered"),
        (hevc_nal(34, from_bits("1 1 0 1 000 1")), "pic_output_flag"),  # PPS 0, SPS 0, output flag 1
        (hevc_nal(19, from_bits("1 1")), "no_output_of_prior_pics_flag"),  # IDR dropping pictures unshown
    ],
)
def test_hevc_streams_that_hide_pictures_are_refused(packet: bytes, reason: str) -> None:
    with pytest.raises(Unsupported, match=reason):
        PictureReader("hevc", b"").picture(packet)


# A video object layer (vop_time_increment_resolution 25: 5 bits), and VOPs of each kind.
VOL = b"\x00\x00\x01\x20" + from_bits("0 00000001 0 0001 0 00 1 0000000000011001 1 1 0")


def vop(coding_type: str, coded: str = "1") -> bytes:
    return b"\x00\x00\x01\xb6" + from_bits(f"{coding_type} 0 1 00000 1 {coded}")


def test_mpeg4_vops_are_read_from_their_headers() -> None:
    reader = PictureReader("mpeg4", VOL)
    assert reader.picture(vop("00")).random_access
    assert reader.picture(vop("01")) == Picture(random_access=False, reference=True, bidirectional=False)
    assert reader.picture(vop("10")) == Picture(random_access=False, reference=False, bidirectional=True)
    with pytest.raises(Unsupported, match="not-coded"):
        reader.picture(vop("01", coded="0"))  # the decoder shows no picture for it
    with pytest.raises(Unsupported, match="exactly one VOP"):
        reader.picture(vop("01") + vop("10"))  # packed B-frames
    with pytest.raises(Unsupported, match="packed"):
        reader.picture(b"\x00\x00\x01\xb2DivX503b1393p" + vop("00"))  # the DivX mark of packed B-frames
    with pytest.raises(Unsupported, match="before its video object layer"):
        PictureReader("mpeg4", b"").picture(vop("00"))
