"""The asset manager against a local HTTP server: download, resume, verify, lock, local overrides."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from paddlehub_video import assets
from paddlehub_video.assets import AssetSpec, cache_root, fetch_asset, sha256_file
from paddlehub_video.errors import AssetError
from paddlehub_video.weights import max_file_bytes
from tests.fixtures.http_server import FileServer


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Cache in tmp_path, no inherited overrides or proxies, no sleeping between retries."""
    monkeypatch.setenv("HUB_HOME", str(tmp_path / "hub"))
    for var in (assets.ENV_ASSETS, assets.ENV_MIRROR, assets.ENV_TIMEOUT):
        monkeypatch.delenv(var, raising=False)
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(assets, "RETRY_DELAY_S", 0.0)


def _payload(size: int, seed: int = 0) -> bytes:
    """Deterministic incompressible-ish bytes."""
    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _serve(server: FileServer, name: str, size: int = 300_000) -> tuple[bytes, AssetSpec]:
    data = _payload(size)
    server.put(name, data)
    return data, AssetSpec("blob", server.url_for(name), sha256=_sha(data))


def _targz(members: dict[str, bytes], gzip: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gzip else "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _downloads() -> Path:
    return cache_root() / "downloads"


# --- spec and paths --------------------------------------------------------------------------


def test_cache_root_reads_hub_home_at_call_time(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HUB_HOME", str(tmp_path / "elsewhere"))
    assert cache_root() == tmp_path / "elsewhere" / "paddlehub_video"
    monkeypatch.delenv("HUB_HOME")
    assert cache_root() == Path("~/.paddlehub/paddlehub_video").expanduser()


def test_spec_from_dict_ignores_other_keys_and_validates() -> None:
    spec = AssetSpec.from_dict("tsn_weights", {
        "url": "https://videotag.bj.bcebos.com/video_tag_tsn.tar", "member": "video_tag_tsn/tsn.pdparams",
        "module_file": "weights/tsn.pdparams", "network": "videotag_tsn_resnet101"})
    assert spec == AssetSpec("tsn_weights", "https://videotag.bj.bcebos.com/video_tag_tsn.tar", None,
                             "video_tag_tsn/tsn.pdparams", "weights/tsn.pdparams",
                             max_bytes=max_file_bytes("videotag_tsn_resnet101"))
    assert AssetSpec.from_dict("labels", {"url": "http://h/l.txt"}).max_bytes == assets.DEFAULT_MAX_BYTES
    assert AssetSpec.from_dict("labels", {"url": "http://h/l.txt", "max_bytes": 5}).max_bytes == 5
    assert AssetSpec("x", "http://h/f", sha256="AB" * 32).sha256 == "ab" * 32
    with pytest.raises(AssetError, match="url"):
        AssetSpec.from_dict("labels", {"sha256": "0" * 64})
    with pytest.raises(AssetError, match="64 hex"):
        AssetSpec("x", "http://h/f", sha256="abc")
    for bad in ("../evil", "/etc/passwd", "a/../../b"):
        with pytest.raises(AssetError, match="unsafe"):
            AssetSpec("x", "http://h/f.tar", member=bad)


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(_payload(3_000_000))
    assert sha256_file(path) == _sha(path.read_bytes())


# --- downloads -------------------------------------------------------------------------------


def test_plain_download_verified_and_cached(http_server: FileServer) -> None:
    data, spec = _serve(http_server, "STNET.pdparams")
    path = fetch_asset(spec, progress=False)
    assert path == _downloads() / "STNET.pdparams"
    assert path.read_bytes() == data
    assert sorted(p.name for p in _downloads().iterdir() if not p.name.endswith(".lock")) == [
        "STNET.pdparams", "STNET.pdparams.sha256"]
    assert fetch_asset(spec, progress=False) == path
    assert len(http_server.requests_for("STNET.pdparams")) == 1  # the second call used the cache


def test_module_file_wins(http_server: FileServer, tmp_path: Path) -> None:
    _, spec = _serve(http_server, "w.pdparams")
    spec = AssetSpec(spec.name, spec.url, spec.sha256, module_file="weights/w.pdparams")
    module_dir = tmp_path / "module"
    (module_dir / "weights").mkdir(parents=True)
    (module_dir / "weights" / "w.pdparams").write_bytes(b"local")
    assert fetch_asset(spec, module_dir=module_dir) == module_dir / "weights" / "w.pdparams"
    assert http_server.requests == []


def test_cut_transfer_resumes_with_range(http_server: FileServer) -> None:
    data, spec = _serve(http_server, "big.bin")
    http_server.set_fault("big.bin", cut_after=100_000, times=1)
    assert fetch_asset(spec, progress=False).read_bytes() == data
    first, second = http_server.requests_for("big.bin")
    assert first.range is None
    assert second.range is not None and second.range.startswith("bytes=")
    assert 0 < int(second.range[len("bytes="):].rstrip("-")) <= 100_000


def test_server_ignoring_range_restarts(http_server: FileServer) -> None:
    data, spec = _serve(http_server, "big.bin")
    http_server.set_fault("big.bin", cut_after=100_000, cut_once=True, ignore_range=True)
    assert fetch_asset(spec, progress=False).read_bytes() == data
    reqs = http_server.requests_for("big.bin")
    assert len(reqs) == 2 and reqs[1].range is not None  # asked to resume, got the whole file


def test_server_error_is_retried(http_server: FileServer) -> None:
    data, spec = _serve(http_server, "f.bin", 10_000)
    http_server.set_fault("f.bin", status=503, times=1)
    assert fetch_asset(spec, progress=False).read_bytes() == data
    assert len(http_server.requests_for("f.bin")) == 2


def test_complete_part_is_finished_after_416(http_server: FileServer) -> None:
    data, spec = _serve(http_server, "f.bin", 10_000)
    _downloads().mkdir(parents=True)
    (_downloads() / "f.bin.part").write_bytes(data)  # a run killed just before the rename
    assert fetch_asset(spec, progress=False).read_bytes() == data
    assert [r.range for r in http_server.requests_for("f.bin")] == ["bytes=10000-"]


def test_corrupted_transfer_leaves_nothing(http_server: FileServer) -> None:
    data, spec = _serve(http_server, "bad.bin")
    http_server.set_fault("bad.bin", corrupt_at=1234)
    with pytest.raises(AssetError) as err:
        fetch_asset(spec, progress=False)
    msg = str(err.value)
    assert "sha256 mismatch" in msg and spec.url in msg
    assert _sha(data) in msg and _sha(data[:1234] + bytes([data[1234] ^ 0xFF]) + data[1235:]) in msg
    assert not (_downloads() / "bad.bin").exists()
    assert not (_downloads() / "bad.bin.part").exists()


def test_size_checked_without_sha(http_server: FileServer) -> None:
    http_server.put("labels.txt", b"a\nb\n" * 1000)
    http_server.set_fault("labels.txt", cut_after=100)  # every attempt is cut
    spec = AssetSpec("labels", http_server.url_for("labels.txt"))
    with pytest.raises(AssetError, match="connection closed after"):
        fetch_asset(spec, progress=False)
    assert not (_downloads() / "labels.txt").exists()


def test_404_names_url(http_server: FileServer) -> None:
    spec = AssetSpec("missing", http_server.url_for("nope.pdparams"))
    with pytest.raises(AssetError, match="404") as err:
        fetch_asset(spec, progress=False)
    assert spec.url in str(err.value)
    assert len(http_server.requests_for("nope.pdparams")) == 1  # a 404 is not retried


def test_stalled_server_times_out(http_server: FileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    _, spec = _serve(http_server, "slow.bin")
    http_server.set_fault("slow.bin", stall_after=20_000, stall_s=30)
    monkeypatch.setattr(assets, "RETRIES", 1)
    monkeypatch.setenv(assets.ENV_TIMEOUT, "0.3")
    start = time.monotonic()
    with pytest.raises(AssetError, match="timed out") as err:
        fetch_asset(spec, progress=False)
    assert time.monotonic() - start < 60  # 2 attempts of 0.3 s; only a hang is this slow
    assert spec.url in str(err.value) and assets.ENV_TIMEOUT in str(err.value)
    assert not (_downloads() / "slow.bin").exists()


def test_unreachable_host_explains_local_options() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/video_tag_tsn.tar"
    with pytest.raises(AssetError) as err:
        fetch_asset(AssetSpec("tsn", url, member="video_tag_tsn/tsn.pdparams"), progress=False)
    msg = str(err.value)
    assert url in msg and "video_tag_tsn.tar" in msg
    assert f"{assets.ENV_ASSETS}=" in msg and f"{assets.ENV_MIRROR}=" in msg


def test_keyboard_interrupt_leaves_only_part(http_server: FileServer,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    data, spec = _serve(http_server, "big.bin")

    class InterruptingBar:
        """Stands in for tqdm and presses Ctrl-C after the second chunk."""

        def __init__(self, **_: object) -> None:
            self.chunks = 0

        def __enter__(self) -> InterruptingBar:
            return self

        def __exit__(self, *_: object) -> None:
            return None

        def update(self, _n: int) -> None:
            self.chunks += 1
            if self.chunks == 2:
                raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(assets, "tqdm", InterruptingBar)
        with pytest.raises(KeyboardInterrupt):
            fetch_asset(spec, progress=False)
    assert not (_downloads() / "big.bin").exists()
    assert 0 < (_downloads() / "big.bin.part").stat().st_size < len(data)
    assert fetch_asset(spec, progress=False).read_bytes() == data  # and the next run resumes
    assert http_server.requests_for("big.bin")[-1].range is not None


# --- archives --------------------------------------------------------------------------------


@pytest.mark.parametrize("gzip", [True, False])
def test_archive_member_extracted(http_server: FileServer, gzip: bool) -> None:
    weights = _payload(50_000, seed=1)
    archive = _targz({"video_tag_tsn/tsn.pdmodel": b"model", "./video_tag_tsn/tsn.pdparams": weights}, gzip)
    http_server.put("video_tag_tsn.tar", archive)
    spec = AssetSpec("tsn", http_server.url_for("video_tag_tsn.tar"), sha256=_sha(archive),
                     member="video_tag_tsn/tsn.pdparams")
    path = fetch_asset(spec, progress=False)
    assert path == cache_root() / "extracted" / "video_tag_tsn" / "video_tag_tsn" / "tsn.pdparams"
    assert path.read_bytes() == weights
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert fetch_asset(spec, progress=False) == path
    assert len(http_server.requests_for("video_tag_tsn.tar")) == 1


def test_archive_missing_member_lists_contents(http_server: FileServer) -> None:
    archive = _targz({"attention_lstm/attention_lstm.pdmodel": b"m", "attention_lstm/other.pdparams": b"p"})
    http_server.put("video_tag_lstm.tar", archive)
    spec = AssetSpec("lstm", http_server.url_for("video_tag_lstm.tar"), member="attention_lstm/x.pdparams")
    with pytest.raises(AssetError, match="attention_lstm/x.pdparams") as err:
        fetch_asset(spec, progress=False)
    assert "attention_lstm/other.pdparams" in str(err.value)


# --- concurrency -----------------------------------------------------------------------------


def test_two_processes_download_once(http_server: FileServer) -> None:
    """The server holds the first request until the other process says it waits for the lock: an
    event, not a guess of how long starting a process takes."""
    data, spec = _serve(http_server, "shared.bin", 200_000)
    gate = threading.Event()
    http_server.set_fault("shared.bin", hold=gate)
    code = textwrap.dedent("""
        import sys
        from paddlehub_video.assets import AssetSpec, fetch_asset
        print(fetch_asset(AssetSpec("blob", sys.argv[1], sha256=sys.argv[2]), progress=True))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, spec.url, spec.sha256 or ""],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errs: list[list[str]] = [[], []]

    def watch(i: int) -> None:
        assert procs[i].stderr is not None
        for line in procs[i].stderr:
            errs[i].append(line)
            if "waiting for another process" in line:
                gate.set()

    watchers = [threading.Thread(target=watch, args=(i,), daemon=True) for i in range(2)]
    for watcher in watchers:
        watcher.start()
    try:
        outs = [p.stdout.read() if p.stdout else "" for p in procs]
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        gate.set()
        for p in procs:
            p.kill()
    for watcher in watchers:
        watcher.join(timeout=60)
    assert codes == [0, 0], errs
    assert {out.strip() for out in outs} == {str(_downloads() / "shared.bin")}
    assert len(http_server.requests_for("shared.bin")) == 1
    assert (_downloads() / "shared.bin").read_bytes() == data


# --- local overrides -------------------------------------------------------------------------


def test_assets_dir_plain_file(http_server: FileServer, monkeypatch: pytest.MonkeyPatch,
                               tmp_path: Path) -> None:
    data, spec = _serve(http_server, "STNET.pdparams")
    local = tmp_path / "offline"
    local.mkdir()
    (local / "STNET.pdparams").write_bytes(data)
    monkeypatch.setenv(assets.ENV_ASSETS, str(local))
    assert fetch_asset(spec) == local / "STNET.pdparams"
    (local / "STNET.pdparams").write_bytes(b"something else")
    with pytest.raises(AssetError, match="sha256 mismatch"):
        fetch_asset(spec)
    assert http_server.requests == []


def test_assets_dir_archive_and_member(http_server: FileServer, monkeypatch: pytest.MonkeyPatch,
                                       tmp_path: Path) -> None:
    archive = _targz({"video_tag_tsn/tsn.pdparams": b"weights"})
    spec = AssetSpec("tsn", http_server.url_for("video_tag_tsn.tar"), sha256=_sha(archive),
                     member="video_tag_tsn/tsn.pdparams")
    local = tmp_path / "offline"
    local.mkdir()
    monkeypatch.setenv(assets.ENV_ASSETS, str(local))
    (local / "video_tag_tsn.tar").write_bytes(archive)
    extracted = fetch_asset(spec)
    assert extracted.is_relative_to(cache_root()) and extracted.read_bytes() == b"weights"
    (local / "tsn.pdparams").write_bytes(b"already extracted")
    assert fetch_asset(spec) == local / "tsn.pdparams"
    assert http_server.requests == []


def test_assets_dir_missing_file_no_network(http_server: FileServer, monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    _, spec = _serve(http_server, "STNET.pdparams")
    monkeypatch.setenv(assets.ENV_ASSETS, str(tmp_path))
    with pytest.raises(AssetError) as err:
        fetch_asset(spec)
    assert str(tmp_path) in str(err.value) and "STNET.pdparams" in str(err.value)
    assert http_server.requests == []


def test_mirror_base_url(http_server: FileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _payload(20_000)
    http_server.put("mirror/STNET.pdparams", data)
    spec = AssetSpec("w", "https://paddlemodels.bj.bcebos.com/video_classification/STNET.pdparams",
                     sha256=_sha(data))
    monkeypatch.setenv(assets.ENV_MIRROR, http_server.base_url + "/mirror/")
    assert fetch_asset(spec, progress=False).read_bytes() == data
    assert [r.path for r in http_server.requests] == ["mirror/STNET.pdparams"]


# --- unusable cache --------------------------------------------------------------------------


def test_cache_dir_blocked_by_a_file(http_server: FileServer, monkeypatch: pytest.MonkeyPatch,
                                     tmp_path: Path) -> None:
    _, spec = _serve(http_server, "f.bin", 1000)
    (tmp_path / "hubfile").write_text("not a directory")
    monkeypatch.setenv("HUB_HOME", str(tmp_path / "hubfile"))
    with pytest.raises(AssetError, match="cache directory") as err:
        fetch_asset(spec, progress=False)
    assert str(tmp_path / "hubfile") in str(err.value)


def test_read_only_cache_dir(http_server: FileServer, tmp_path: Path) -> None:
    _, spec = _serve(http_server, "f.bin", 1000)
    hub = tmp_path / "hub"
    hub.mkdir()
    hub.chmod(0o555)
    try:
        if os.access(hub, os.W_OK):
            pytest.skip("running as root: chmod does not make a directory read-only")
        with pytest.raises(AssetError, match="cache directory") as err:
            fetch_asset(spec, progress=False)
        assert str(hub) in str(err.value)
    finally:
        hub.chmod(0o755)


def test_changed_digest_in_manifest_downloads_again(http_server: FileServer) -> None:
    old, spec = _serve(http_server, "labels.json", 5_000)
    assert fetch_asset(spec, progress=False).read_bytes() == old
    new = b"[" + b'"x",' * 1000 + b"]"
    http_server.put("labels.json", new)
    path = fetch_asset(AssetSpec(spec.name, spec.url, sha256=_sha(new)), progress=False)
    assert path.read_bytes() == new
    assert len(http_server.requests_for("labels.json")) == 2
