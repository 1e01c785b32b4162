"""The asset manager against a local HTTP server: download, resume, verify, lock, local overrides."""

from __future__ import annotations

import contextlib
import gzip as gzip_module
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

from paddlehub_video import progress
from paddlehub_video.errors import AssetError, ConfigError
from paddlehub_video.model import assets
from paddlehub_video.model.assets import AssetSpec, cache_root, fetch_asset, sha256_file
from paddlehub_video.model.assets import cache as asset_cache
from paddlehub_video.model.assets import download as asset_download
from paddlehub_video.model.weights import max_file_bytes
from tests.fixtures.cache import cache_files
from tests.fixtures.http_server import FileServer
from tests.fixtures.weights import sparse_tar_member


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Cache in tmp_path, no inherited overrides or proxies, no sleeping between retries."""
    monkeypatch.setenv("HUB_HOME", str(tmp_path / "hub"))
    for var in (assets.ENV_ASSETS, assets.ENV_MIRROR, assets.ENV_TIMEOUT):
        monkeypatch.delenv(var, raising=False)
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(asset_download, "RETRY_DELAY_S", 0.0)


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
    assert sorted(p.name for p in _downloads().iterdir() if not p.name.endswith(".lock")) == ["STNET.pdparams"]
    assert fetch_asset(spec, progress=False) == path
    assert len(http_server.requests_for("STNET.pdparams")) == 1  # the second call used the cache


def test_one_digest_record_serves_the_download_check_and_the_conversion_key(http_server: FileServer,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _, spec = _serve(http_server, "STNET.pdparams")
    path = fetch_asset(spec, progress=False)
    with monkeypatch.context() as patch:
        patch.setattr(asset_cache, "sha256_file", lambda p: pytest.fail(f"{p} hashed again"))
        assert assets.file_digest(path) == spec.sha256
        assert fetch_asset(spec, progress=False) == path
    os.utime(path, ns=(1, 1))  # a changed file is no longer the one the record verified
    assert fetch_asset(spec, progress=False) == path
    assert assets.file_digest(path) == spec.sha256


def test_module_file_wins(http_server: FileServer, tmp_path: Path) -> None:
    _, spec = _serve(http_server, "w.pdparams")
    spec = AssetSpec(spec.name, spec.url, spec.sha256, module_file="weights/w.pdparams")
    module_dir = tmp_path / "module"
    (module_dir / "weights").mkdir(parents=True)
    (module_dir / "weights" / "w.pdparams").write_bytes(b"local")
    assert fetch_asset(spec, module_dir=module_dir) == module_dir / "weights" / "w.pdparams"
    assert http_server.requests == []


def test_a_local_directory_and_a_mirror_together_take_each_file_from_where_it_is(
        http_server: FileServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Files in $PADDLEHUB_VIDEO_ASSETS are used as they are; the others come from $PADDLEHUB_VIDEO_MIRROR."""
    local, served = b"label in the folder\n", b"label from the mirror\n"
    (tmp_path / "here.txt").write_bytes(local)
    http_server.put("there.txt", served)
    monkeypatch.setenv(assets.ENV_ASSETS, str(tmp_path))
    monkeypatch.setenv(assets.ENV_MIRROR, http_server.base_url)
    specs = [AssetSpec("here", "https://publisher.invalid/x/here.txt", sha256=hashlib.sha256(local).hexdigest()),
             AssetSpec("there", "https://publisher.invalid/x/there.txt", sha256=hashlib.sha256(served).hexdigest())]
    here, there = assets.fetch_assets(specs, progress=False)
    assert here == tmp_path / "here.txt" and there.read_bytes() == served
    assert http_server.requests and {request.path for request in http_server.requests} == {"there.txt"}
    assert (tmp_path / "here.txt").read_bytes() == local  # the user's file is left as it was


def test_a_mirror_that_is_not_a_url_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(assets.ENV_MIRROR, "files.example.com/mirror")
    with pytest.raises(ConfigError, match=f"{assets.ENV_MIRROR}='files.example.com/mirror': expected an http"):
        assets.fetch_asset(AssetSpec("labels", "http://h/l.txt"), progress=False)


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
    monkeypatch.setattr(asset_download, "RETRIES", 1)
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

    class InterruptingReporter(progress.Progress):
        """Presses Ctrl-C after the second chunk of a download."""

        @contextlib.contextmanager
        def downloading(self, name: str, total: int | None, done: int):
            chunks = []

            def advance(count: int) -> None:
                chunks.append(count)
                if len(chunks) == 2:
                    raise KeyboardInterrupt

            yield advance

    with progress.reporting(InterruptingReporter()), pytest.raises(KeyboardInterrupt):
        fetch_asset(spec, progress=True)
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
        import contextlib, sys
        from paddlehub_video import progress
        from paddlehub_video.model.assets import AssetSpec, fetch_asset

        class Say(progress.Progress):  # what a reporter hears, one line each
            @contextlib.contextmanager
            def busy(self, what):
                print(what, file=sys.stderr, flush=True)
                yield

        with progress.reporting(Say()):
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


# --- hostile archives and mirrors: a clear error, and nothing left that the next run would trust -----


def _cache_bytes() -> int:
    """Disk blocks the cache uses (a sparse file counts what is really written)."""
    return sum(p.stat().st_blocks * 512 for p in cache_root().rglob("*") if p.is_file())


TSN = "video_tag_tsn/tsn.pdparams"


@pytest.mark.parametrize("damage", ["sparse member", "member larger than the asset", "no such member"])
def test_a_bad_archive_is_refused_and_deleted_and_fetched_again(http_server: FileServer, damage: str) -> None:
    if damage == "sparse member":
        archive = gzip_module.compress(sparse_tar_member(TSN, 1 << 30))  # ~110 bytes for 1 GiB
    elif damage == "member larger than the asset":
        archive = _targz({TSN: _payload(20_000)})
    else:
        archive = _targz({"video_tag_tsn/tsn.pdopt": b"opt", "video_tag_tsn/README": b"r"})
    http_server.put("video_tag_tsn.tar", archive)
    spec = AssetSpec("tsn", http_server.url_for("video_tag_tsn.tar"), member=TSN, max_bytes=10_000)

    with pytest.raises(AssetError) as err:
        fetch_asset(spec, progress=False)

    expected = {"sparse member": f"member '{TSN}' is a sparse file",
                "member larger than the asset": f"member '{TSN}' is 20000 bytes, more than the 10000 bytes",
                "no such member": f"no member '{TSN}' in the archive; it holds: video_tag_tsn/tsn.pdopt, "
                                  f"video_tag_tsn/README"}[damage]
    message = str(err.value)
    assert str(_downloads() / "video_tag_tsn.tar") in message and expected in message, message
    assert message.endswith("the download was deleted, the next run fetches it again")
    assert cache_files() == [] and _cache_bytes() < 1 << 20
    good = _payload(5_000)
    http_server.put("video_tag_tsn.tar", _targz({TSN: good}))  # the mirror is fixed
    assert fetch_asset(spec, progress=False).read_bytes() == good
    assert len(http_server.requests_for("video_tag_tsn.tar")) == 2


@pytest.mark.parametrize("gzip", [True, False])
def test_the_only_file_of_the_members_name_is_found_under_another_folder(http_server: FileServer, gzip: bool) -> None:
    weights = _payload(5_000)
    http_server.put("video_tag_tsn.tar", _targz({"release/v1/tsn.pdparams": weights, "release/v1/tsn.pdopt": b""},
                                                gzip))
    spec = AssetSpec("tsn", http_server.url_for("video_tag_tsn.tar"), member=TSN)
    assert fetch_asset(spec, progress=False).read_bytes() == weights
    http_server.put("video_tag_lstm.tar", _targz({"a/tsn.pdparams": weights, "b/tsn.pdparams": weights}, gzip))
    spec = AssetSpec("tsn", http_server.url_for("video_tag_lstm.tar"), member=TSN)
    with pytest.raises(AssetError, match=f"no member '{TSN}' in the archive and 2 files named 'tsn.pdparams' "
                                         f"elsewhere; it holds: a/tsn.pdparams, b/tsn.pdparams"):
        fetch_asset(spec, progress=False)


@pytest.mark.parametrize("body", ["endless", "announced too large"])
def test_a_body_larger_than_the_asset_is_cut_off(http_server: FileServer, body: str) -> None:
    http_server.put("label_3396.txt", b"label\n" * 1000)
    if body == "endless":
        http_server.set_fault("label_3396.txt", endless=True)
    else:
        http_server.set_fault("label_3396.txt", announce=50 << 20)
    spec = AssetSpec("labels", http_server.url_for("label_3396.txt"))
    with pytest.raises(assets.DownloadError) as err:
        fetch_asset(spec, progress=False)
    what = "sent more than" if body == "endless" else f"announces {50 << 20} bytes"
    assert f"{spec.url}: {what}" in str(err.value), err.value
    assert f"more than the {assets.DEFAULT_MAX_BYTES} bytes this file can be" in str(err.value)
    assert cache_files() == []
    assert len(http_server.requests_for("label_3396.txt")) == 1  # not retried


def test_a_dripping_mirror_meets_the_deadline(http_server: FileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    http_server.put("label_3396.txt", b"label\n" * 1000)
    http_server.set_fault("label_3396.txt", drip_s=0.05)  # never silent for the 3 s read timeout
    monkeypatch.setenv(assets.ENV_TIMEOUT, "3")
    monkeypatch.setenv(assets.ENV_DEADLINE, "1")
    spec = AssetSpec("labels", http_server.url_for("label_3396.txt"))
    started = time.monotonic()
    with pytest.raises(assets.DownloadError, match=f"not complete after 1 s, the deadline of one download "
                                                   f"\\(raise {assets.ENV_DEADLINE} on a slow connection\\)"):
        fetch_asset(spec, progress=False)
    assert time.monotonic() - started < 60  # the drip alone would take 300 s
    assert not (_downloads() / "label_3396.txt").exists()
    assert 0 < (_downloads() / "label_3396.txt.part").stat().st_size < 6000  # resumable


def test_the_default_deadline_follows_the_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    assert asset_download.deadline(AssetSpec("labels", "http://h/l.txt")) == 60 + (1 << 20) / 100_000
    assert asset_download.deadline(AssetSpec("labels", "http://h/l.txt"), 5.0) == 5.0
    monkeypatch.setenv(assets.ENV_DEADLINE, "soon")
    with pytest.raises(ConfigError, match=f"{assets.ENV_DEADLINE}='soon': expected a positive number of seconds"):
        assets.fetch_asset(AssetSpec("labels", "http://h/l.txt"), progress=False)


def test_a_download_that_fails_the_callers_check_is_deleted(http_server: FileServer, tmp_path: Path) -> None:
    http_server.put("kinetics_labels.json", b"<html>captive portal</html>")
    path = fetch_asset(AssetSpec("labels", http_server.url_for("kinetics_labels.json")), progress=False)

    def refuse(p: Path) -> None:
        raise AssetError(f"{p}: not a label file")

    with pytest.raises(AssetError, match="not a label file; the download was deleted, the next run fetches it again"):
        assets.read_fetched(path, refuse)
    assert cache_files() == []
    mine = tmp_path / "labels.json"
    mine.write_text("[]")
    with pytest.raises(AssetError, match="not a label file$"):
        assets.read_fetched(mine, refuse)
    assert mine.read_text() == "[]"  # a user's file is never deleted


# --- offline: one message names every missing file ------------------------------------------------


def _module_specs(base_url: str) -> list[AssetSpec]:
    """videotag's three assets, served from `base_url`."""
    lstm = "attention_lstm/attention_lstm.pdparams"
    return [AssetSpec("tsn_weights", f"{base_url}/video_tag_tsn.tar", member=TSN),
            AssetSpec("lstm_weights", f"{base_url}/video_tag_lstm.tar", member=lstm),
            AssetSpec("labels", f"{base_url}/label_3396.txt")]


def test_a_local_directory_lacking_files_names_them_all(http_server: FileServer, monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    (tmp_path / "label_3396.txt").write_text("a\n")
    monkeypatch.setenv(assets.ENV_ASSETS, str(tmp_path))
    with pytest.raises(AssetError) as err:
        assets.fetch_assets(_module_specs(http_server.base_url), owner="videotag_tsn_lstm")
    assert str(err.value).splitlines() == [
        f"videotag_tsn_lstm: 2 model files missing: not in {assets.ENV_ASSETS}={tmp_path}",
        f"Downloads are disabled while {assets.ENV_ASSETS} is set alone: put these files in {tmp_path}, or also "
        f"set {assets.ENV_MIRROR}=<base url> of a server that serves them (or unset {assets.ENV_ASSETS}):",
        f"  video_tag_tsn.tar (or its member tsn.pdparams, extracted)  from {http_server.url_for('video_tag_tsn.tar')}",
        f"  video_tag_lstm.tar (or its member attention_lstm.pdparams, extracted)  from "
        f"{http_server.url_for('video_tag_lstm.tar')}"]
    assert http_server.requests == []


def test_without_network_every_missing_file_is_named_at_once() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there
    with pytest.raises(assets.DownloadError) as err:
        assets.fetch_assets(_module_specs(f"http://127.0.0.1:{port}"), progress=False, owner="videotag_tsn_lstm")
    lines = str(err.value).splitlines()
    assert lines[0].startswith(f"videotag_tsn_lstm: 3 model files missing: could not download "
                               f"http://127.0.0.1:{port}/video_tag_tsn.tar: "), lines
    assert f"set {assets.ENV_ASSETS}=<that directory> (or set {assets.ENV_MIRROR}=<base url>" in lines[1]
    assert [line.split()[0] for line in lines[2:]] == ["video_tag_tsn.tar", "video_tag_lstm.tar", "label_3396.txt"]


# --- the digest record: bounded, regular files only, vouching only for the file it was made for ---


_FETCH_CHILD = textwrap.dedent("""
    import json, re, sys
    from paddlehub_video.model.assets import AssetSpec, fetch_asset

    def status_bytes(field):
        with open("/proc/self/status") as f:
            return int(re.search(field + r":\\s+(\\d+) kB", f.read()).group(1)) * 1024

    before = status_bytes("VmRSS")
    path = fetch_asset(AssetSpec("blob", sys.argv[1], sha256=sys.argv[2]), progress=False)
    print(json.dumps({"path": str(path), "growth": status_bytes("VmHWM") - before}))
""")


def _fetch_in_child(spec: AssetSpec) -> tuple[dict[str, object], str]:
    """fetch_asset in a fresh process (VmHWM: its own peak), bounded in time."""
    import json

    proc = subprocess.run([sys.executable, "-c", _FETCH_CHILD, spec.url, spec.sha256 or ""],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout), proc.stderr


def _record() -> Path:
    return cache_root() / "digests.json"


def test_an_oversized_record_is_ignored_and_written_anew(http_server: FileServer) -> None:
    data, spec = _serve(http_server, "STNET.pdparams")
    _record().parent.mkdir(parents=True)
    with _record().open("w") as fh:  # 60 MB of entries: reading it whole took a 1 GB peak
        fh.write("{" + ",".join(f'"/x/{i}":{{"sha256":"{i:064x}"}}' for i in range(670_000)) + "}")
    assert _record().stat().st_size > 60_000_000
    result, stderr = _fetch_in_child(spec)
    assert result["path"] == str(_downloads() / "STNET.pdparams")
    assert f"{_record()}: ignored, files are hashed again and the record written anew" in stderr
    assert "more than the 1048576 bytes it can be" in stderr
    assert result["growth"] < 64 << 20, result
    assert _record().stat().st_size < 1000 and str(Path(result["path"]).resolve()) in _record().read_text()


def test_a_fifo_in_place_of_the_record_holds_nothing(http_server: FileServer) -> None:
    _, spec = _serve(http_server, "STNET.pdparams")
    _record().parent.mkdir(parents=True)
    os.mkfifo(_record())
    result, stderr = _fetch_in_child(spec)  # subprocess.run's timeout bounds it; it used to wait forever
    assert result["path"] == str(_downloads() / "STNET.pdparams")
    assert "is not a regular file" in stderr
    assert _record().is_file() and not _record().is_symlink()


@pytest.mark.parametrize("how", ["rewritten in place", "replaced by another file"])
def test_a_replaced_download_with_its_old_size_and_time_is_hashed_and_fetched_again(
        http_server: FileServer, how: str) -> None:
    data, spec = _serve(http_server, "STNET.pdparams")
    path = fetch_asset(spec, progress=False)
    info = path.stat()
    forged = bytes(len(data))
    if how == "rewritten in place":
        with path.open("r+b") as fh:
            fh.write(forged)
    else:
        other = path.with_name("other")
        other.write_bytes(forged)
        os.replace(other, path)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))  # the size and time the record knows
    assert fetch_asset(spec, progress=False) == path
    assert path.read_bytes() == data
    assert len(http_server.requests_for("STNET.pdparams")) == 2


def test_a_forged_record_entry_does_not_vouch_for_a_file(http_server: FileServer) -> None:
    data, spec = _serve(http_server, "STNET.pdparams")
    path = _downloads() / "STNET.pdparams"
    path.parent.mkdir(parents=True)
    path.write_bytes(bytes(len(data)))
    info = path.stat()
    old_key = f"{path.resolve()}|{info.st_size}|{info.st_mtime_ns}"  # the key the record used to trust
    _record().write_text(f'{{"{old_key}": {{"sha256": "{spec.sha256}"}}, '
                         f'"{path.resolve()}": {{"sha256": "{spec.sha256}", "identity": [0, 0, {info.st_size}, '
                         f'{info.st_mtime_ns}, 0]}}}}')
    assert fetch_asset(spec, progress=False) == path
    assert path.read_bytes() == data
    assert len(http_server.requests_for("STNET.pdparams")) == 1


def test_a_replaced_archive_member_is_extracted_again(http_server: FileServer) -> None:
    member = _payload(50_000, seed=3)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("video_tag_tsn/tsn.pdparams")
        info.size = len(member)
        tar.addfile(info, io.BytesIO(member))
    http_server.put("video_tag_tsn.tar", buf.getvalue())
    spec = AssetSpec("tsn", http_server.url_for("video_tag_tsn.tar"), sha256=_sha(buf.getvalue()),
                     member="video_tag_tsn/tsn.pdparams")
    path = fetch_asset(spec, progress=False)
    stat_before = path.stat()
    with path.open("r+b") as fh:
        fh.write(bytes(len(member)))
    os.utime(path, ns=(stat_before.st_atime_ns, stat_before.st_mtime_ns))
    assert fetch_asset(spec, progress=False) == path
    assert path.read_bytes() == member
    assert len(http_server.requests_for("video_tag_tsn.tar")) == 1  # the archive was still the verified one
