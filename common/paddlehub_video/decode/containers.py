"""What a file may make FFmpeg build when it opens it, checked before FFmpeg (PyAV or OpenCV) opens it.

A demuxer builds its index of every sample when it opens a file, at ~36-70 bytes a sample, and an
index can announce samples that are not there: an MP4 `stsz` box of 20 bytes with a constant
sample size announces up to 4 billion of them (10 million: 1.7 KB of file, 730 MB opened). So
every file is checked here, limits or not, and refused (a VideoDecodeError naming the file and the
reason) unless what it may make FFmpeg allocate is bounded by its size:

- Only the container formats below are opened, recognised by their first bytes (FFmpeg would
  open hundreds of others, some with indexes of their own, and lists of other files).
- MP4/MOV/3GP: the boxes are walked as FFmpeg walks them (every top-level box, the movie header
  wherever it is, every track whatever its handler, every movie fragment), and the index entries
  they announce are added up: each track's sample count (`stsz`/`stz2`; for the uncompressed audio
  FFmpeg indexes by chunk, its chunks), times its edit-list entries (FFmpeg copies the index once
  per edit), every fragment's `trun` and `senc` sample counts, and HEIF item counts. A sample
  takes at least a byte of the file, so more entries than the file has bytes is refused. A
  compressed movie header (`cmov`), which could announce anything once inflated, is refused.
- Matroska/WebM, AVI, FLV, ASF/WMV, MPEG-PS/TS, Ogg and the image formats FFmpeg reads as
  one-frame or animated video: their indexes (Cues, idx1 and OpenDML indx, onMetaData keyframes,
  the ASF simple index) are read entry by entry from the file, so the memory FFmpeg takes on them
  grows with the file's size (tests/test_containers.py measures hostile ones).
"""
from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from ..errors import VideoDecodeError

# Text files that FFmpeg's demuxers recognise by their first bytes and follow to other files or to
# the network: a "video" that is one of these would be read from elsewhere (a file the caller never
# named, a live playlist that never ends).
_REFERENCE_SIGNATURES = (
    (b"#EXTM3U", "an HLS playlist"),
    (b"ffconcat", "an FFmpeg concat list"),
    (b"v=0", "an SDP session description"),
)
_READ_FORMATS = "MP4/MOV, Matroska/WebM, AVI, FLV, ASF/WMV, MPEG-PS/TS, Ogg"
# Top-level boxes an MP4/MOV file starts with (FFmpeg's mov demuxer takes the file by them).
_MP4_FIRST_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"uuid", b"styp", b"sidx",
                              b"moof", b"pnot"})
_IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")
_SIGNATURES = (
    (b"\x1a\x45\xdf\xa3", "matroska"),
    (b"FLV\x01", "flv"),
    (bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c"), "asf"),
    (b"\x00\x00\x01\xba", "mpeg-ps"),
    (b"OggS", "ogg"),
) + tuple((magic, "image") for magic in _IMAGE_SIGNATURES)
_TS_PACKETS = ((188, 0), (192, 4))  # packet size, offset of the sync byte: MPEG-TS and M2TS
_HEAD = 1024

# Boxes holding other boxes that FFmpeg reads index entries from.
_MP4_CONTAINERS = frozenset({b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"moof", b"traf", b"mfra"})
# The `uuid` of a PIFF sample encryption box (`senc` before it was standardised): FFmpeg reads it too.
_PIFF_SENC = bytes.fromhex("a2394f525a9b4f14a2446c427c648df4")
# Boxes walked, at most (~2.5 s on the bench machine). A fragmented 40 minutes at 60 fps, one fragment a
# frame (7 boxes), has ~1 million; fragments are usually a second or more long.
MAX_MP4_BOXES = 1_000_000
# FFmpeg indexes uncompressed audio by chunk, in pieces of at least this many samples (mov_build_index).
_PCM_PIECE = 160


def check_container(source: str, size: int) -> Mp4Index | None:
    """Raise VideoDecodeError if FFmpeg must not open `source` (`size` bytes): see the module docstring.

    Returns what an MP4's boxes announce (None for other formats).
    """
    try:
        with open(source, "rb") as f:
            head = f.read(_HEAD)
            _refuse_reference(source, head)
            kind = container_kind(head)
            if kind is None:
                raise VideoDecodeError(source, f"cannot open the container (not a video, corrupt, or unsupported: "
                                               f"none of the formats read, {_READ_FORMATS})")
            return _checked_mp4(source, f, size) if kind == "mp4" else None
    except OSError as exc:
        raise VideoDecodeError(source, f"cannot read the file ({exc.strerror})") from None


def _refuse_reference(source: str, head: bytes) -> None:
    kind = next((name for magic, name in _REFERENCE_SIGNATURES if head.startswith(magic)), None)
    if kind:
        raise VideoDecodeError(source, f"is {kind}, not a video (it would make the decoder read other files)")


def container_kind(head: bytes) -> str | None:
    """The container format the first bytes of a file announce, among those read; None for any other."""
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image"
    if head[4:8] in _MP4_FIRST_BOXES:
        return "mp4"
    kind = next((name for magic, name in _SIGNATURES if head.startswith(magic)), None)
    if kind is None and any(_synced(head, *packet) for packet in _TS_PACKETS):
        return "mpeg-ts"
    return kind


def _synced(head: bytes, packet: int, offset: int) -> bool:
    """Whether `head` holds MPEG-TS packets of `packet` bytes (a sync byte at each, at least one)."""
    positions = range(offset, len(head), packet)
    return len(head) > offset and all(head[i] == 0x47 for i in positions)


@dataclass
class Mp4Index:
    """What an MP4's boxes announce: index entries in all, and the sample count of each video track."""

    entries: int = 0
    video_samples: list[int] = field(default_factory=list)


def _checked_mp4(source: str, f: BinaryIO, size: int) -> Mp4Index:
    """What the boxes of `f` (`size` bytes) announce; VideoDecodeError if more than the file can hold."""
    walk = _Mp4Walk(source, f)
    walk.boxes_in(0, size)
    if walk.found.entries > size:
        raise VideoDecodeError(source, f"its MP4 index announces {walk.found.entries} samples, more than its "
                                       f"{size} bytes can hold (refused before FFmpeg builds an index of them)")
    return walk.found


_Spans = dict[bytes, list[tuple[int, int]]]


class _Mp4Walk:
    """One walk over an MP4's boxes, as FFmpeg reads them, adding up the index entries they announce."""

    def __init__(self, source: str, f: BinaryIO) -> None:
        self.source, self.f, self.found, self.count = source, f, Mp4Index(), 0

    def boxes_in(self, start: int, end: int) -> None:
        for kind, payload, box_end in self.boxes(start, end):
            if kind == b"cmov":
                raise VideoDecodeError(self.source, "a compressed MP4 movie header (cmov) is not read")
            if kind == b"trak":
                self.add_track(self.leaves(payload, box_end))
            elif kind == b"meta":  # an ISO full box (4 bytes first) or a QuickTime atom: read both ways
                self.boxes_in(payload, box_end)
                self.boxes_in(payload + 4, box_end)
            elif kind in _MP4_CONTAINERS:
                self.boxes_in(payload, box_end)
            elif kind in (b"trun", b"senc") or (kind == b"uuid" and _read_at(self.f, payload, 16) == _PIFF_SENC):
                at = payload + (16 if kind == b"uuid" else 0)
                self.found.entries += _u32(self.f, at + 4)  # version/flags, sample_count
            elif kind in (b"iinf", b"iloc"):
                self.found.entries += _item_count(self.f, kind, payload)

    def add_track(self, boxes: _Spans) -> None:
        """Add a track's index entries (its samples, once per edit that shows media)."""
        f = self.f
        handlers = {_read_at(f, start + 8, 4) for start, _ in boxes.get(b"hdlr", [])}
        samples = max((_u32(f, start + 8) for start, _ in boxes.get(b"stsz", []) + boxes.get(b"stz2", [])),
                      default=0)
        stts = boxes.get(b"stts", [])
        by_chunk = handlers == {b"soun"} and stts and all(_one_unit_duration(f, start) for start, _ in stts)
        entries = _chunk_pieces(f, boxes) if by_chunk else samples
        edits = max((_media_edits(f, *span) for span in boxes.get(b"elst", [])), default=0)
        self.found.entries += entries * max(1, edits)
        if b"vide" in handlers:
            self.found.video_samples.append(samples)

    def leaves(self, start: int, end: int) -> _Spans:
        """(payload start, end) of every box of each type in a track, all levels down."""
        found: _Spans = {}
        for kind, payload, box_end in self.boxes(start, end):
            found.setdefault(kind, []).append((payload, box_end))
            if kind in _MP4_CONTAINERS:
                for inner, spans in self.leaves(payload, box_end).items():
                    found.setdefault(inner, []).extend(spans)
        return found

    def boxes(self, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
        for box in _boxes(self.f, start, end):
            self.count += 1
            if self.count > MAX_MP4_BOXES:
                raise VideoDecodeError(self.source, f"more than {MAX_MP4_BOXES} MP4 boxes (refused: too many to check)")
            yield box


def _one_unit_duration(f: BinaryIO, stts: int) -> bool:
    """FFmpeg's test for indexing audio by chunk, not by sample: one `stts` entry, of duration 1."""
    return _u32(f, stts + 4) == 1 and _u32(f, stts + 12) == 1


def _chunk_pieces(f: BinaryIO, boxes: _Spans) -> int:
    """Index entries of audio indexed by chunk: each chunk, in pieces of at least _PCM_PIECE samples."""
    chunks = max((_u32(f, start + 4) for start, _ in boxes.get(b"stco", []) + boxes.get(b"co64", [])), default=0)
    return chunks + max((_chunk_samples(f, *span, chunks) for span in boxes.get(b"stsc", [])), default=0) // _PCM_PIECE


def _chunk_samples(f: BinaryIO, start: int, end: int, chunks: int) -> int:
    """Samples in `chunks` chunks by an `stsc` table: runs of (first chunk, samples per chunk, description)."""
    table = _read_at(f, start + 8, min(_u32(f, start + 4), max(0, end - start - 8) // 12) * 12)
    runs = [(first, per_chunk) for first, per_chunk, _ in struct.iter_unpack(">III", table)]
    return sum(max(0, min(following, chunks + 1) - first) * per_chunk
               for (first, per_chunk), (following, _) in zip(runs, runs[1:] + [(chunks + 1, 0)], strict=True))


def _media_edits(f: BinaryIO, start: int, end: int) -> int:
    """Edit-list entries that show media (FFmpeg copies the track's index for each); empty edits excluded."""
    wide = _read_at(f, start, 1) == b"\x01"
    entry, time_at, fmt = (20, 8, ">q") if wide else (12, 4, ">i")
    table = _read_at(f, start + 8, min(_u32(f, start + 4), max(0, end - start - 8) // entry) * entry)
    return sum(1 for i in range(0, len(table), entry) if struct.unpack_from(fmt, table, i + time_at)[0] != -1)


def _item_count(f: BinaryIO, kind: bytes, payload: int) -> int:
    """HEIF items announced by `iinf` (16-bit count, 32-bit from version 1) or `iloc` (32-bit from version 2)."""
    version = _read_at(f, payload, 1)
    if kind == b"iinf":
        return _u32(f, payload + 4) if version != b"\x00" else _u16(f, payload + 4)
    return _u32(f, payload + 6) if version == b"\x02" else _u16(f, payload + 6)


def _boxes(f: BinaryIO, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, end) of each box in [start, end).

    A box that claims to run past `end` is cut at `end`, as FFmpeg reads it (it reads what is
    there); a box too short for its own header ends the level, as it ends FFmpeg's.
    """
    position = start
    while position + 8 <= end:
        header = _read_at(f, position, 16)
        if len(header) < 8:
            return
        size, kind = struct.unpack(">I4s", header[:8])
        payload = position + 8
        if size == 1:  # a 64-bit size follows
            if len(header) < 16:
                return
            size, payload = struct.unpack(">Q", header[8:])[0], position + 16
        elif size == 0:  # the box runs to the end
            size = end - position
        if size < payload - position:
            return
        box_end = min(position + size, end)
        yield kind, payload, box_end
        position = box_end


def _u32(f: BinaryIO, offset: int) -> int:
    data = _read_at(f, offset, 4)
    return struct.unpack(">I", data)[0] if len(data) == 4 else 0


def _u16(f: BinaryIO, offset: int) -> int:
    data = _read_at(f, offset, 2)
    return struct.unpack(">H", data)[0] if len(data) == 2 else 0


def _read_at(f: BinaryIO, offset: int, length: int) -> bytes:
    f.seek(offset)
    return f.read(length)
