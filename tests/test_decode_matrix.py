"""Differential decode matrix (issue 12): every kind of file gives its true pictures or a named error.

For each generated file (tests/fixtures/decode_matrix.py) and both samplers, the product's sampled
frames must equal the same indices of an independent decode of every frame: OpenCV's read() loop
where OpenCV is the reference, the test's own single-threaded PyAV decode for interlaced video and
AV1. A sampled frame is never blank where the reference is not.
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from paddlehub_video.decode import video
from paddlehub_video.decode.sampling import sample_stnet_indices, sample_tsn_indices
from paddlehub_video.decode.video import read_sampled_frames
from tests.fixtures.decode_matrix import KINDS, Kind, corrupt_middle_packet, reference_frames, x264
from tests.fixtures.videos import read_every_frame

SAMPLERS = {
    "tsn300": partial(sample_tsn_indices, seg_num=300),
    "stnet25x5": partial(sample_stnet_indices, seg_num=25, seglen=5),
}


def identity(frame: np.ndarray) -> np.ndarray:
    return frame


def blank(frame: np.ndarray) -> bool:
    """One value everywhere: what a decoder handing out no picture gives (black, or a flat buffer)."""
    return bool(frame.min() == frame.max())


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory):
    """Writes (once, on first use) the file of a Kind and its reference frames."""
    directory = tmp_path_factory.mktemp("decode_matrix")
    made: dict[str, tuple[Path, list[np.ndarray]]] = {}

    def make(kind: Kind) -> tuple[Path, list[np.ndarray]]:
        if kind.name not in made:
            path = directory / kind.name
            kind.write(path)
            made[kind.name] = (path, reference_frames(path, kind.reference))
        return made[kind.name]

    return make


def _param(kind: Kind, sampler: str):
    return pytest.param(kind, sampler, id=f"{kind.name}-{sampler}")


@pytest.mark.parametrize("kind, sampler", [_param(kind, sampler) for kind in KINDS for sampler in SAMPLERS])
def test_sampled_frames_equal_an_independent_decode(matrix, kind: Kind, sampler: str) -> None:
    path, everything = matrix(kind)
    assert len(everything) >= 1, f"{kind.name}: the reference decoded nothing"
    indices = SAMPLERS[sampler](len(everything))
    got = read_sampled_frames(path, SAMPLERS[sampler], identity)
    assert len(got) == len(indices)
    blanked = [i for i, frame in zip(indices, got, strict=True) if blank(frame) and not blank(everything[i])]
    assert not blanked, f"{kind.name}: frames {blanked[:5]} are blank, the source's are not"
    wrong = [i for i, frame in zip(indices, got, strict=True) if not np.array_equal(frame, everything[i])]
    assert not wrong, f"{kind.name}: {len(wrong)} of {len(indices)} sampled frames differ, e.g. {wrong[:5]}"


@pytest.mark.parametrize("kind", [k for k in KINDS if k.reference == "opencv"], ids=lambda k: k.name)
def test_pyav_fallback_gives_opencvs_pixels(matrix, kind: Kind, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where OpenCV is the reference, PyAV's sequential decoder (the fallback) gives the same frames."""
    path, everything = matrix(kind)
    monkeypatch.setattr(video, "read_packet_index", lambda source: None)
    monkeypatch.setattr(video, "_sequential_decoders", lambda found: (video._pyav_frames,))
    indices = SAMPLERS["tsn300"](len(everything))
    got = read_sampled_frames(path, SAMPLERS["tsn300"], identity)
    wrong = [i for i, frame in zip(indices, got, strict=True) if not np.array_equal(frame, everything[i])]
    assert not wrong, f"{kind.name}: {len(wrong)} of {len(indices)} frames differ from OpenCV's, e.g. {wrong[:5]}"


def test_interlaced_frames_are_not_opencvs_failed_conversion(matrix) -> None:
    """The case the matrix exists for: OpenCV reports success with no picture; the product does not."""
    kind = next(k for k in KINDS if k.name == "mpeg2_interlaced.mpg")
    path, everything = matrix(kind)
    opencv = read_every_frame(path)
    assert len(opencv) == len(everything)
    if all(np.array_equal(a, b) for a, b in zip(opencv, everything, strict=True)):
        pytest.skip("this OpenCV converts interlaced frames: nothing to catch")
    got = read_sampled_frames(path, SAMPLERS["tsn300"], identity)
    assert all(np.array_equal(a, everything[i]) for a, i in zip(got, SAMPLERS["tsn300"](len(everything)), strict=True))


# --- a damaged packet: the same frames on every machine and from both sequential decoders ---

_CHILD = """
import os, sys, hashlib
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # before the decoders count the CPUs
from functools import partial
from paddlehub_video.decode.sampling import sample_tsn_indices
from paddlehub_video.decode.video import read_sampled_frames
frames = read_sampled_frames(sys.argv[1], partial(sample_tsn_indices, seg_num=300), lambda f: f)
print(hashlib.sha256(b"".join(f.tobytes() for f in frames)).hexdigest())
"""


@pytest.fixture(scope="module")
def damaged_ts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """H.264 in MPEG-TS (decoded sequentially) with one packet past the middle overwritten by noise.

    With frame threads, how FFmpeg conceals this packet depends on the number of threads (checked:
    1, 2, 3, 4 and 8 threads give five different videos).
    """
    directory = tmp_path_factory.mktemp("damaged")
    clean = directory / "clean.ts"
    x264(120, "keyint=60")(clean)
    damaged = directory / "damaged.ts"
    corrupt_middle_packet(clean, damaged)
    return damaged


def _digest(frames: list[np.ndarray]) -> str:
    import hashlib

    return hashlib.sha256(b"".join(f.tobytes() for f in frames)).hexdigest()


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_damaged_packet_gives_the_same_frames_on_one_cpu_and_on_all(damaged_ts: Path) -> None:
    here = _digest(read_sampled_frames(damaged_ts, SAMPLERS["tsn300"], identity))
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(damaged_ts)], capture_output=True, text=True, timeout=300,
        env=os.environ.copy(),
    )
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.strip().splitlines()[-1] == here


def test_damaged_packet_same_frames_from_opencv_and_pyav(damaged_ts: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = {}
    for name in ("_opencv_frames", "_pyav_frames"):
        monkeypatch.setattr(video, "_sequential_decoders", lambda found, name=name: (getattr(video, name),))
        results[name] = _digest(read_sampled_frames(damaged_ts, SAMPLERS["tsn300"], identity))
    assert results["_opencv_frames"] == results["_pyav_frames"]
