"""What a packet's own bytes say about its picture: may decoding start here, is it a reference, a B picture?

Containers flag "keyframes" by their own rules: an MP4 sync sample or a Matroska keyframe may be an
H.264 P frame carrying a recovery-point SEI (x264 `intra-refresh=1`), from which a decoder shows
half-refreshed pictures. `packet_plan` therefore reads the headers itself (never the slice data):

- H.264 (AVCC length-prefixed NAL units, length size from the avcC extradata; or Annex-B start
  codes): decoding may start at an IDR picture, or at a picture made only of I slices that carries
  a recovery point with `recovery_frame_cnt` 0, `exact_match_flag` 1 and no broken link (x264's
  open-GOP keyframe): the standard then guarantees every picture from it on in output order is
  exactly the one of a decode from the start. Field pictures (PAFF) are refused: a packet could
  hold one field, not one frame; MBAFF and progressive frames are planned.
- HEVC (hvcC or Annex-B): IDR and CRA pictures. The RASL pictures after a CRA refer to pictures
  before it; a decoder started at the CRA drops them, which `packet_plan` allows for. BLA pictures
  (their RASL pictures are never shown), end-of-sequence NAL units (the next CRA then drops its
  RASL pictures), `pic_output_flag`, `no_output_of_prior_pics_flag` and layered streams change
  which pictures are shown, and are refused.
- MPEG-4 Part 2: I-VOPs. A packet must hold one coded VOP: packed B-frames (two VOPs in a packet)
  and not-coded VOPs (no picture comes out of the decoder) would break "one packet, one frame".

`Unsupported` names what was refused; the caller then decodes every frame from the start.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

# A packet's bytes: a memoryview of the packet avoids copying megabytes of picture data.
Buffer = bytes | memoryview


class Unsupported(Exception):
    """The stream holds something the planned decoding was not shown to be exact on."""


@dataclass(frozen=True)
class Picture:
    """What one packet holds, from its headers."""

    random_access: bool  # decoding from here gives exactly the pictures shown from here on
    reference: bool  # other pictures may refer to it (False: "skip non-reference frames" skips it)
    bidirectional: bool  # a B picture: the codec reorders, decode order is not display order


class PictureReader:
    """Reads the `Picture` of each packet of one video stream (packets in decode order)."""

    def __init__(self, codec: str, extradata: bytes):
        readers = {"h264": _H264, "hevc": _Hevc, "mpeg4": _Mpeg4}
        if codec not in readers:
            raise Unsupported(f"codec {codec}")
        self._reader = readers[codec](extradata)

    def picture(self, data: Buffer) -> Picture:
        """The picture in the packet `data`; Unsupported if it is not one whole picture planning allows."""
        return self._reader.picture(data)


class _Bits:
    """Big-endian bit reader over an RBSP (emulation prevention bytes removed)."""

    def __init__(self, data: bytes):
        self._value = int.from_bytes(data, "big")
        self._left = len(data) * 8

    def u(self, count: int) -> int:
        if count > self._left:
            raise Unsupported("a header runs past the end of its NAL unit")
        self._left -= count
        return (self._value >> self._left) & ((1 << count) - 1)

    def ue(self) -> int:
        """Exp-Golomb code, unsigned."""
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise Unsupported("an Exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        """Exp-Golomb code, signed."""
        code = self.ue()
        return (code + 1) // 2 if code % 2 else -(code // 2)

    def more_data(self) -> bool:
        """Is there more than the RBSP trailing bits (a 1, then zeros)?"""
        return self._left > 0 and self._value & ((1 << self._left) - 1) != 1 << (self._left - 1)


def _rbsp(nal: Buffer, limit: int | None = None) -> bytes:
    """The first `limit` bytes of a NAL unit (all by default), emulation prevention bytes removed."""
    return re.sub(b"\x00\x00\x03", b"\x00\x00", bytes(nal[:limit]))


def _nal_units(data: Buffer, length_size: int) -> list[Buffer]:
    """The NAL units of a packet: length-prefixed (`length_size` bytes, not copied), or Annex-B when 0."""
    if length_size == 0:
        units = [unit.rstrip(b"\x00") for unit in bytes(data).split(b"\x00\x00\x01")[1:]]
        if not units or not all(units):
            raise Unsupported("a packet without Annex-B NAL units")
        return units
    units, pos = [], 0
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if size == 0 or pos + size > len(data):
            raise Unsupported("NAL unit lengths that do not add up to the packet")
        units.append(data[pos : pos + size])
        pos += size
    return units


def _is_annex_b(extradata: bytes) -> bool:
    return extradata[:3] == b"\x00\x00\x01" or extradata[:4] == b"\x00\x00\x00\x01"


def _length_prefixed_records(data: bytes, pos: int, count: int) -> tuple[list[bytes], int]:
    """`count` records of a 16-bit length and that many bytes, from `pos`; and the position after."""
    records = []
    for _ in range(count):
        size = int.from_bytes(data[pos : pos + 2], "big")
        records.append(data[pos + 2 : pos + 2 + size])
        pos += 2 + size
    if pos > len(data):
        raise Unsupported("codec extradata shorter than it says")
    return records, pos


# --- H.264 ---------------------------------------------------------------------------------------

_H264_SLICE, _H264_IDR, _H264_SEI, _H264_SPS, _H264_PPS = 1, 5, 6, 7, 8
_H264_PARTITIONS = {2, 3, 4}  # data partitioning (Extended profile): FFmpeg does not decode it
_H264_I_SLICES = {2, 4}  # I and SI, slice_type % 5
_H264_B_SLICE = 1
_SEI_RECOVERY_POINT = 6
# profile_idc values whose SPS carries chroma format, bit depths and scaling matrices.
_H264_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}


@dataclass(frozen=True)
class _H264Sequence:
    """What a slice header's layout needs from its sequence parameter set."""

    separate_colour_planes: bool
    frame_num_bits: int
    frame_mbs_only: bool  # False: pictures may be fields (PAFF) or frames of field pairs (MBAFF)


def _parameter_set_units(
    extradata: bytes, codec: str, record: str, read_record: Callable[[bytes], tuple[int, list[Buffer]]]
) -> tuple[int, list[Buffer]]:
    """(NAL length size, parameter-set NAL units) of a codec's extradata: its configuration record
    (`read_record`, which starts with version 1), or Annex-B units (length size 0)."""
    if extradata[:1] == b"\x01":
        return read_record(extradata)
    if not extradata or _is_annex_b(extradata):
        return 0, list(_nal_units(extradata, 0)) if extradata else []
    raise Unsupported(f"{codec} extradata neither {record} nor Annex-B")


def _avcc_records(extradata: bytes) -> tuple[int, list[Buffer]]:
    """An avcC record's NAL length size and its SPS and PPS units."""
    if len(extradata) < 7:
        raise Unsupported("an avcC record too short")
    sps, pos = _length_prefixed_records(extradata, 6, extradata[5] & 0x1F)
    pps, _ = _length_prefixed_records(extradata, pos + 1, extradata[pos] if pos < len(extradata) else 0)
    return (extradata[4] & 3) + 1, sps + pps


def _hvcc_records(extradata: bytes) -> tuple[int, list[Buffer]]:
    """An hvcC record's NAL length size and the units of its parameter-set arrays."""
    if len(extradata) < 23:
        raise Unsupported("an hvcC record too short")
    units: list[Buffer] = []
    pos = 23
    for _ in range(extradata[22]):
        count = int.from_bytes(extradata[pos + 1 : pos + 3], "big")
        nals, pos = _length_prefixed_records(extradata, pos + 3, count)
        units.extend(nals)
    return (extradata[21] & 3) + 1, units


class _H264:
    def __init__(self, extradata: bytes):
        self.sequences: dict[int, _H264Sequence] = {}
        self.sequence_of_pps: dict[int, int] = {}
        self.length_size, parameter_sets = _parameter_set_units(extradata, "H.264", "avcC", _avcc_records)
        for nal in parameter_sets:
            self._parameter_set(nal)

    def _parameter_set(self, nal: Buffer) -> None:
        kind = nal[0] & 0x1F
        if kind == _H264_SPS:
            sps_id, sequence = _h264_sequence(nal)
            self.sequences[sps_id] = sequence
        elif kind == _H264_PPS:
            bits = _Bits(_rbsp(nal[1:], 16))
            pps_id = bits.ue()
            self.sequence_of_pps[pps_id] = bits.ue()

    def picture(self, data: Buffer) -> Picture:
        idr = recovers = reference = bidirectional = False
        intra_only, slices = True, 0
        for nal in _nal_units(data, self.length_size):
            kind, ref_idc = nal[0] & 0x1F, nal[0] >> 5 & 3
            if nal[0] & 0x80 or kind in _H264_PARTITIONS:
                raise Unsupported(f"H.264 NAL unit of type {kind} (forbidden bit or data partitioning)")
            if kind == _H264_SEI:
                recovers = recovers or _h264_exact_recovery_now(nal)
            elif kind in (_H264_SLICE, _H264_IDR):
                slice_type = self._slice_type(nal)
                slices += 1
                idr = idr or kind == _H264_IDR
                reference = reference or ref_idc != 0
                intra_only = intra_only and slice_type in _H264_I_SLICES
                bidirectional = bidirectional or slice_type == _H264_B_SLICE
            else:
                self._parameter_set(nal)
        if slices == 0:
            raise Unsupported("an H.264 packet without a picture")
        return Picture(idr or (intra_only and recovers), reference, bidirectional)

    def _slice_type(self, nal: Buffer) -> int:
        """slice_type % 5 of a slice; Unsupported for a field (a packet would hold half a frame)."""
        bits = _Bits(_rbsp(nal[1:], 24))
        bits.ue()  # first_mb_in_slice
        slice_type = bits.ue() % 5
        sequence = self.sequences.get(self.sequence_of_pps.get(bits.ue(), -1))
        if sequence is None:
            raise Unsupported("an H.264 slice before its parameter sets")
        if not sequence.frame_mbs_only:
            bits.u(2 * sequence.separate_colour_planes + sequence.frame_num_bits)  # colour_plane_id, frame_num
            if bits.u(1):
                raise Unsupported("interlaced H.264 coded as fields (PAFF): a packet may hold one field")
        return slice_type


def _h264_exact_recovery_now(nal: Buffer) -> bool:
    """Does this SEI NAL unit hold a recovery point that is exact from this very picture on?"""
    payload = _rbsp(nal[1:])
    pos = 0
    while pos < len(payload) and payload[pos:] != b"\x80":
        kind, pos = _sei_number(payload, pos)
        size, pos = _sei_number(payload, pos)
        if kind == _SEI_RECOVERY_POINT:
            bits = _Bits(payload[pos : pos + size])
            frames, exact, broken = bits.ue(), bits.u(1), bits.u(1)
            return frames == 0 and exact == 1 and broken == 0
        pos += size
    return False


def _sei_number(payload: bytes, pos: int) -> tuple[int, int]:
    """An SEI payload type or size: 0xFF bytes each adding 255, then the last byte."""
    value = 0
    while pos < len(payload) and payload[pos] == 0xFF:
        value += 255
        pos += 1
    if pos >= len(payload):
        raise Unsupported("a truncated SEI message")
    return value + payload[pos], pos + 1


def _h264_sequence(nal: Buffer) -> tuple[int, _H264Sequence]:
    """The id of a sequence parameter set, and what slice headers need from it."""
    bits = _Bits(_rbsp(nal[1:]))
    profile = bits.u(8)
    bits.u(16)  # constraint flags, level
    sps_id = bits.ue()
    separate_colour_planes = False
    if profile in _H264_HIGH_PROFILES:
        chroma_format = bits.ue()
        if chroma_format == 3:
            separate_colour_planes = bool(bits.u(1))
        bits.ue(), bits.ue(), bits.u(1)  # bit depths, qpprime_y_zero_transform_bypass_flag
        if bits.u(1):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format != 3 else 12):
                if bits.u(1):
                    _skip_scaling_list(bits, 16 if i < 6 else 64)
    frame_num_bits = bits.ue() + 4
    poc_type = bits.ue()
    if poc_type == 0:
        bits.ue()
    elif poc_type == 1:
        bits.u(1), bits.se(), bits.se()
        for _ in range(bits.ue()):
            bits.se()
    bits.ue(), bits.u(1), bits.ue(), bits.ue()  # max_num_ref_frames, gaps, width, height
    return sps_id, _H264Sequence(separate_colour_planes, frame_num_bits, bool(bits.u(1)))


def _skip_scaling_list(bits: _Bits, size: int) -> None:
    last = following = 8
    for _ in range(size):
        if following:
            following = (last + bits.se() + 256) % 256
        last = following or last


# --- HEVC ----------------------------------------------------------------------------------------

_HEVC_BLA = {16, 17, 18}
_HEVC_IDR = {19, 20}
_HEVC_CRA = 21
_HEVC_IRAP = range(16, 24)
_HEVC_VCL = set(range(0, 10)) | _HEVC_BLA | _HEVC_IDR | {_HEVC_CRA}
_HEVC_PPS = 34
_HEVC_END_OF_SEQUENCE = {36, 37}
_HEVC_B_SLICE = 0


class _Hevc:
    def __init__(self, extradata: bytes):
        self.extra_slice_bits: dict[int, int] = {}  # of each PPS
        self.length_size, parameter_sets = _parameter_set_units(extradata, "HEVC", "hvcC", _hvcc_records)
        for nal in parameter_sets:
            self._parameter_set(nal)

    def _parameter_set(self, nal: Buffer) -> None:
        if len(nal) < 3 or (nal[0] >> 1) & 0x3F != _HEVC_PPS:
            return
        bits = _Bits(_rbsp(nal[2:], 16))
        pps_id = bits.ue()
        bits.ue(), bits.u(1)  # seq_parameter_set_id, dependent_slice_segments_enabled_flag
        if bits.u(1):
            raise Unsupported("HEVC pic_output_flag (pictures that are never shown)")
        self.extra_slice_bits[pps_id] = bits.u(3)

    def picture(self, data: Buffer) -> Picture:
        first_kind = None
        bidirectional = False
        for nal in _nal_units(data, self.length_size):
            if len(nal) < 3 or nal[0] & 0x80:
                raise Unsupported("a malformed HEVC NAL unit")
            kind, layer = (nal[0] >> 1) & 0x3F, (nal[0] & 1) << 5 | nal[1] >> 3
            if layer:
                raise Unsupported("layered HEVC (multi-view or scalable)")
            if kind in _HEVC_END_OF_SEQUENCE:
                raise Unsupported("an HEVC end of sequence inside the stream")
            if kind == _HEVC_PPS:
                self._parameter_set(nal)
            elif kind < 32:
                if kind not in _HEVC_VCL or kind in _HEVC_BLA:
                    raise Unsupported(f"HEVC picture of NAL type {kind} (BLA or reserved)")
                slice_type = self._slice_type(nal, kind, first=first_kind is None)
                first_kind = kind if first_kind is None else first_kind
                bidirectional = bidirectional or slice_type == _HEVC_B_SLICE
        if first_kind is None:
            raise Unsupported("an HEVC packet without a picture")
        return Picture(first_kind in _HEVC_IDR or first_kind == _HEVC_CRA, True, bidirectional)

    def _slice_type(self, nal: Buffer, kind: int, first: bool) -> int | None:
        """slice_type of the packet's first slice segment (which must start a picture), else None."""
        if not first:
            return None
        bits = _Bits(_rbsp(nal[2:], 16))
        if not bits.u(1):
            raise Unsupported("an HEVC packet that does not start with a picture")
        if kind in _HEVC_IRAP and bits.u(1):
            raise Unsupported("HEVC no_output_of_prior_pics_flag (pictures dropped unshown)")
        pps_id = bits.ue()
        if pps_id not in self.extra_slice_bits:
            raise Unsupported("an HEVC slice before its picture parameter set")
        bits.u(self.extra_slice_bits[pps_id])
        return bits.ue()


# --- MPEG-4 Part 2 -------------------------------------------------------------------------------

_VOP_START = b"\x00\x00\x01\xb6"
_VOL_START = re.compile(b"\x00\x00\x01[\x20-\x2f]")
# User data of DivX and Xvid saying B-frames are packed with the P frame before (FFmpeg's test).
_PACKED_MARK = re.compile(rb"DivX\d+(?:Build|b)\d+p")
_HEAD = 4096  # bytes of a packet where its headers must lie (the rest is picture data, not read)
_I_VOP, _B_VOP = 0, 2
_ASPECT_EXTENDED = 15
_GRAY_SHAPE = 3


class _Mpeg4:
    def __init__(self, extradata: bytes):
        self.time_increment_bits: int | None = None
        self._read_headers(extradata)

    def _read_headers(self, data: bytes) -> None:
        """vop_time_increment's width, from a video object layer header in `data` (if any)."""
        if _PACKED_MARK.search(data):
            raise Unsupported("packed MPEG-4 B-frames (two frames in one packet, then an empty one)")
        found = _VOL_START.search(data)
        if not found:
            return
        bits = _Bits(data[found.end() : found.end() + 32])
        bits.u(9)  # random_accessible_vol, video_object_type_indication
        version = 1
        if bits.u(1):  # is_object_layer_identifier
            version = bits.u(4)
            bits.u(3)
        if bits.u(4) == _ASPECT_EXTENDED:
            bits.u(16)
        if bits.u(1):  # vol_control_parameters
            bits.u(3)  # chroma_format, low_delay
            if bits.u(1):  # vbv_parameters
                bits.u(79)
        if bits.u(2) == _GRAY_SHAPE and version != 1:
            bits.u(4)
        bits.u(1)  # marker
        resolution = bits.u(16)
        self.time_increment_bits = max(1, (resolution - 1).bit_length())

    def picture(self, data: Buffer) -> Picture:
        """The VOP of a packet, from its header. Packed B-frames are caught by their DivX/Xvid mark
        and by the not-coded VOP that follows each packed pair; a second VOP header is looked for in
        the packet's first _HEAD bytes only (reading all of it costs 0.3 s a minute of 720p)."""
        head = bytes(data[:_HEAD])
        start = head.find(_VOP_START)
        if start < 0 or head.find(_VOP_START, start + 1) >= 0:
            raise Unsupported("an MPEG-4 packet without exactly one VOP header at its start")
        self._read_headers(head[:start])
        if self.time_increment_bits is None:
            raise Unsupported("an MPEG-4 VOP before its video object layer header")
        bits = _Bits(head[start + len(_VOP_START) : start + 20])
        coding_type = bits.u(2)
        while bits.u(1):  # modulo_time_base
            pass
        bits.u(1 + self.time_increment_bits + 1)  # marker, vop_time_increment, marker
        if not bits.u(1):
            raise Unsupported("a not-coded MPEG-4 VOP (the decoder shows no picture for it)")
        return Picture(coding_type == _I_VOP, coding_type != _B_VOP, coding_type == _B_VOP)
