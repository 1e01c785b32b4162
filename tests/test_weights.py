"""The publisher's weight files: reading, checking, and the shipped parameter manifests."""
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from paddlehub_video.errors import WeightsError
from paddlehub_video.model.weights import check_parameters, expected_parameters, load_checked_weights, load_pdparams
from paddlehub_video.testing import make_state, pdparams_bytes, write_pdparams
from tests.fixtures.weights import inflating_pickle, python2_pdparams

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "upstream_param_shapes.json"
NETWORKS = {"videotag_tsn_resnet101": 520, "videotag_attention_lstm": 15, "stnet_resnet50_kinetics400": 301}


@pytest.mark.parametrize("network,count", NETWORKS.items())
def test_manifest_sizes(network, count):
    params = expected_parameters(network)
    assert len(params) == count
    assert all(all(d > 0 for d in shape) for shape in params.values())


@pytest.mark.skipif(not REFERENCE.exists(), reason="the reference list lives outside the repository")
def test_manifests_equal_reference():
    reference = json.loads(REFERENCE.read_text(encoding="utf-8"))
    for network in NETWORKS:
        assert list(expected_parameters(network).items()) == [(n, tuple(s)) for n, s in reference[network]]


def test_known_shapes():
    tsn = expected_parameters("videotag_tsn_resnet101")
    assert tsn["res4b22_branch2c_weights"] == (1024, 256, 1, 1)
    assert tsn["bn5a_branch1_variance"] == (2048,)
    lstm = expected_parameters("videotag_attention_lstm")
    assert lstm["rgb_lstm_backward.b_0"] == (1, 3584)
    stnet = expected_parameters("stnet_resnet50_kinetics400")
    assert stnet["conv1_weights"] == (64, 15, 7, 7)
    assert stnet["batch_norm_44.w_2"] == (1024,)


@pytest.fixture(scope="module")
def lstm_state():
    return make_state("videotag_attention_lstm", seed=1)


def test_pdparams_round_trip_in_publisher_format(tmp_path, lstm_state):
    state = lstm_state
    data = pdparams_bytes(state)
    assert b"cnumpy.core.multiarray\n_reconstruct" in data  # as fluid 1.8 on numpy 1.x wrote it
    assert data[:2] == b"\x80\x02"  # pickle protocol 2
    path = tmp_path / "attention_lstm.pdparams"
    path.write_bytes(data)
    loaded = load_checked_weights(path, "videotag_attention_lstm")
    assert loaded.keys() == state.keys()
    assert all(np.array_equal(loaded[k], state[k]) for k in state)


def test_extra_keys_are_ignored(tmp_path, monkeypatch):
    expected = {"w": (2, 3)}
    monkeypatch.setattr("paddlehub_video.model.weights.expected_parameters", lambda network: expected)
    state = {"w": np.ones((2, 3), np.float32), "fc_0.w_0": np.zeros((2, 2), np.float32)}
    loaded = load_checked_weights(write_pdparams(state, tmp_path / "w.pdparams"), "small")
    assert list(loaded) == ["w"]


def test_missing_and_wrong_parameters_are_listed(lstm_state):
    state = dict(lstm_state)
    del state["fc1.w_0"]
    state["output.b_0"] = np.zeros((7,), np.float32)
    state["fc2.b_0"] = state["fc2.b_0"].astype(np.float64)
    with pytest.raises(WeightsError) as info:
        check_parameters(state, expected_parameters("videotag_attention_lstm"), "lstm.pdparams")
    message = str(info.value)
    assert message.startswith("lstm.pdparams: 3 of 15 parameters are wrong")
    assert "missing fc1.w_0" in message
    assert "output.b_0 has shape [7], expected [3396]" in message
    assert "fc2.b_0 has dtype float64" in message


def test_check_parameters_accepts_exact_state():
    expected = {"a": (2, 3)}
    check_parameters({"a": np.zeros((2, 3), np.float32)}, expected, "x")


@pytest.mark.parametrize("content", [b"", b"not a pickle at all", pickle.dumps([1, 2, 3], protocol=2)])
def test_unreadable_files(tmp_path, content):
    path = tmp_path / "w.pdparams"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=str(path)):
        load_pdparams(path)


def test_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("should never run",))

    path = tmp_path / "evil.pdparams"
    path.write_bytes(pickle.dumps({"a": Evil()}, protocol=2))
    with pytest.raises(WeightsError, match="print' is not allowed"):
        load_pdparams(path)


# --- hostile files: every one a WeightsError naming the file, within a small memory bound ------

_LOAD_PEAK_LIMIT = 32 << 20  # bytes: what reading a few hundred bytes may allocate at most, generously


class _Reduced:
    """Pickles as `reduce_value` (a tuple as `__reduce__` returns it)."""

    def __init__(self, reduce_value):
        self.reduce_value = reduce_value

    def __reduce__(self):
        return self.reduce_value


def _hostile(kind: str) -> bytes:
    from numpy._core.multiarray import _reconstruct

    if kind == "inflating _codecs.encode":
        return inflating_pickle(30)
    if kind == "huge _reconstruct shape":
        value = _Reduced((_reconstruct, (np.ndarray, (1 << 40,), b"b")))
    elif kind == "huge shape in the array state":
        value = _Reduced((_reconstruct, (np.ndarray, (0,), b"b"), (1, (1 << 20, 1 << 20), np.dtype("f4"), False, b"")))
    elif kind == "data shorter than the shape":
        value = _Reduced((_reconstruct, (np.ndarray, (0,), b"b"), (1, (64,), np.dtype("f4"), False, b"\0" * 8)))
    else:  # "object array"
        value = _Reduced((_reconstruct, (np.ndarray, (0,), b"b"), (1, (1,), np.dtype("O"), False, [1])))
    return pickle.dumps({"w": value}, protocol=2)


HOSTILE = ["inflating _codecs.encode", "huge _reconstruct shape", "huge shape in the array state",
           "data shorter than the shape", "object array"]


@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_pickles_are_a_weights_error_without_allocating(tmp_path, kind):
    import tracemalloc

    path = tmp_path / "STNET.pdparams"
    path.write_bytes(_hostile(kind))
    assert path.stat().st_size < 1000
    tracemalloc.start()
    try:
        with pytest.raises(WeightsError) as info:
            load_pdparams(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(info.value).startswith(f"{path}: not a readable .pdparams file"), info.value
    assert peak < _LOAD_PEAK_LIMIT, f"reading {kind} allocated {peak} bytes"


def test_a_huge_memo_index_allocates_nothing(tmp_path):
    # 9 bytes: PROTO 2, NONE, LONG_BINPUT 2**25, STOP. The C unpickler grows its memo array to the
    # index (512 MB here); the reader's memo is a dict.
    import struct
    import tracemalloc

    path = tmp_path / "memo.pdparams"
    path.write_bytes(b"\x80\x02Nr" + struct.pack("<I", 1 << 25) + b".")
    tracemalloc.start()
    try:
        with pytest.raises(WeightsError, match="memo.pdparams"):
            load_pdparams(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20


def test_the_inflating_pickle_does_inflate_without_the_guard():
    """The hostile file above is what it claims: a plain unpickler builds 2 ** steps times more."""
    assert len(pickle.loads(inflating_pickle(4))["w"]) == 64 * 2**4


def test_an_array_larger_than_all_parameters_is_refused_before_allocating(tmp_path, monkeypatch):
    monkeypatch.setattr("paddlehub_video.model.weights.expected_parameters", lambda network: {"w": (2, 3)})
    state = {"w": np.ones((2, 3), np.float32), "extra": np.ones(1000, np.float32)}
    path = write_pdparams(state, tmp_path / "w.pdparams")
    with pytest.raises(WeightsError, match=r"shape \[1000\] \(4000 bytes\) is larger than all parameters") as info:
        load_checked_weights(path, "small")
    assert str(path) in str(info.value)


def test_a_file_larger_than_the_network_can_be_is_refused_unread(tmp_path, monkeypatch):
    from paddlehub_video.model import weights

    monkeypatch.setattr(weights, "expected_parameters", lambda network: {"w": (2, 3)})
    limit = weights.max_file_bytes("small")
    assert limit == 2 * 24 + 1024 + (16 << 20)
    path = tmp_path / "w.pdparams"
    with path.open("wb") as f:
        f.truncate(limit + 1)  # sparse: nothing is written
    monkeypatch.setattr(weights, "load_pdparams", lambda *a, **k: pytest.fail("read"))
    with pytest.raises(WeightsError, match=f"{limit + 1} bytes, more than the {limit} bytes"):
        load_checked_weights(path, "small")


@pytest.mark.parametrize("network", NETWORKS)
def test_real_size_limits_hold_a_genuine_file(network):
    """Protocol 2 stores each data byte as 1 or 2 bytes of UTF-8: the limit allows the worst case."""
    from paddlehub_video.model.weights import max_file_bytes, parameter_bytes

    assert 2 * parameter_bytes(network) < max_file_bytes(network) < 2 * parameter_bytes(network) + (17 << 20)


def test_python2_publisher_format_loads(tmp_path):
    """fluid.save under Python 2: byte-string names and data, an OrderedDict in its Python 2 form."""
    state = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "fc_0.b_0": np.array([1.5, -2.0], np.float32)}
    path = tmp_path / "py2.pdparams"
    path.write_bytes(python2_pdparams(state))
    loaded = load_pdparams(path)
    assert loaded.keys() == state.keys()
    assert all(np.array_equal(loaded[k], state[k]) and loaded[k].dtype == np.float32 for k in state)


def test_an_ordered_dict_loads(tmp_path):
    from collections import OrderedDict

    state = OrderedDict(w=np.ones((2, 2), np.float32))
    path = tmp_path / "od.pdparams"
    path.write_bytes(pickle.dumps(state, protocol=2))
    assert np.array_equal(load_pdparams(path)["w"], state["w"])


# --- files a few MiB long made of opcodes that build many small objects (or refused ones) --------

_FLOOD_BYTES = 4 << 20
# Peak RSS growth of a process reading one (the imports' own peak included): 70 MB to 740 MB with a
# reader that counted only strings and arrays.
_FLOOD_GROWTH_LIMIT = 64 << 20


def _flood(kind: str) -> tuple[bytes, str]:
    """A hostile file of about `_FLOOD_BYTES` and the reason its error must give."""
    import struct

    n = _FLOOD_BYTES
    ordered_dict = b"ccollections\nOrderedDict\nq\x00](" + b"](K\x01K\x02e" * 1000 + b"eq\x01"
    floods = {
        "empty dicts": (b"}" * n, "more than"),
        "empty lists": (b"]" * n, "more than"),
        "empty tuples": (b")" * n, "more than"),
        "marks": (b"(" * n, "more than"),
        "memo entries": (b"}" + b"".join(b"r" + struct.pack("<I", i) for i in range(n // 5)), "more than"),
        "stack references": (b"}q\x00" + b"h\x00" * (n // 2), "more than"),
        "list items": (b"]q\x00" + b"}a" * (n // 2), "more than"),
        "dict items": (b"}q\x00" + b"h\x00K\x01K\x02s" * (n // 6), "more than"),
        # 16k of them: within the object budget, bounded by the file's size, then not a dict.
        "255-byte ints": ((b"\x8a\xff" + b"\x7f" * 255) * (n // 257), "expected a pickled dict of arrays"),
        "OrderedDict copies": (ordered_dict + b"h\x00h\x01\x85R" * (n // 6), "more than"),
        "empty sets": (b"\x8f" * n, "opcode EMPTY_SET is not in a weights file"),
        "frozensets": (b"(\x91" * (n // 2), "opcode FROZENSET"),
        "set items": (b"\x8f(" + b"K\x01" * (n // 2) + b"\x90", "opcode EMPTY_SET"),
        "DUP": (b"}" + b"2" * n, "opcode DUP"),
        "text-form ints": (b"I12345\n" * (n // 7), "opcode INT"),
        "text-form floats": (b"F1.5\n" * (n // 5), "opcode FLOAT"),
        "text-form longs": (b"L" + b"9" * n + b"L\n", "opcode LONG"),
        "MEMOIZE": (b"}\x94" * (n // 2), "opcode MEMOIZE"),
        "STACK_GLOBAL": (b"\x8c\x05numpy\x8c\x07ndarray\x93", "opcode SHORT_BINUNICODE"),
        "a frame": (b"\x95" + struct.pack("<Q", 1 << 40) + b"}" * n, "opcode FRAME"),
        "out-of-band buffers": (b"\x97" * n, "opcode NEXT_BUFFER"),
        "a bytearray": (b"\x96" + struct.pack("<Q", n) + b"\0" * n, "opcode BYTEARRAY8"),
        "a string longer than the file": (b"X" + struct.pack("<I", 2 * n) + b"a" * n,
                                          "runs past the end of the file"),
        "text beyond latin-1": (b"X" + struct.pack("<I", n) + "\U0001F600".encode() * (n // 4),
                                "text beyond latin-1"),
        "a long GLOBAL line": (b"c" + b"a" * n, "text line longer than 256 bytes"),
        "numpy.ndarray called": (b"cnumpy\nndarray\nJ\x00\x00\x00\x40\x85cnumpy\ndtype\nU\x02f4\x85R\x86R"
                                 + b"}" * n, "numpy.ndarray may be named only"),
        "a dtype of fields": (b"cnumpy\ndtype\n](U\x01aU\x02f4\x86e\x85R" + b"}" * n, "is not a number type"),
    }
    data, reason = floods[kind]
    return b"\x80\x02" + data + b".", reason


# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forked copy of the test process.
_FLOOD_CHILD = """
import json, re, sys
from paddlehub_video.errors import WeightsError
from paddlehub_video.model.weights import load_checked_weights

def status_bytes(field):
    with open("/proc/self/status") as f:
        return int(re.search(field + r":\\s+(\\d+) kB", f.read()).group(1)) * 1024

before = status_bytes("VmRSS")
try:
    load_checked_weights(sys.argv[1], "stnet_resnet50_kinetics400")
    error = None
except WeightsError as exc:
    error = str(exc)
print(json.dumps({"error": error, "growth": status_bytes("VmHWM") - before}))
"""

FLOODS = ["empty dicts", "empty lists", "empty tuples", "marks", "memo entries", "stack references",
          "list items", "dict items", "255-byte ints", "OrderedDict copies", "empty sets", "frozensets",
          "set items", "DUP", "text-form ints", "text-form floats", "text-form longs", "MEMOIZE",
          "STACK_GLOBAL", "a frame", "out-of-band buffers", "a bytearray", "a string longer than the file",
          "text beyond latin-1", "a long GLOBAL line", "numpy.ndarray called", "a dtype of fields"]


@pytest.mark.parametrize("kind", FLOODS)
def test_a_flood_of_small_objects_is_refused_within_a_memory_bound(tmp_path, kind):
    import subprocess
    import sys

    data, reason = _flood(kind)
    path = tmp_path / "STNET.pdparams"
    path.write_bytes(data)
    assert len(data) < 2 * _FLOOD_BYTES
    proc = subprocess.run([sys.executable, "-c", _FLOOD_CHILD, str(path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["error"] is not None and result["error"].startswith(f"{path}: "), result["error"]
    assert reason in result["error"], result["error"]
    assert result["growth"] < _FLOOD_GROWTH_LIMIT, f"{kind}: peak RSS grew by {result['growth']} bytes"
