"""Model files under faults, through the modules: each fault is one clear error, and nothing that
looks complete is left in `$HUB_HOME/paddlehub_video`, so the next run starts clean.

Every test starts from an empty HUB_HOME and a local server (`http_server`) holding the simulated
publisher's files, into which it puts its fault. The asset manager's own tests (resume after a cut,
a server ignoring Range, 5xx retries, 416, one download for two processes, ...) are in
test_assets.py; two modules starting cold in two processes at once are in test_concurrency.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import filelock
import numpy as np
import pytest
import yaml

from paddlehub_video.errors import AssetError, WeightsError
from paddlehub_video.model import assets, inference_model
from paddlehub_video.model.assets import AssetSpec, cache_root, fetch_asset
from paddlehub_video.model.assets import download as asset_download
from paddlehub_video.model.weights import expected_parameters
from paddlehub_video.testing import pdparams_bytes, write_weights_tar
from tests.fixtures.cache import cache_files
from tests.fixtures.http_server import FileServer
from tests.fixtures.publisher import PROXY_VARS, SMALL, PublisherHost
from tests.fixtures.weights import inflating_pickle

REPO = Path(__file__).resolve().parents[1]
VIDEOTAG, STNET = "videotag_tsn_lstm", "stnet_kinetics400"
TSN_MEMBER = "video_tag_tsn/tsn.pdparams"
HANG_S = 300  # seconds after which a wait is a hang, not a slow machine


def _wait_for(condition: Callable[[], bool]) -> None:
    """Poll `condition` until it holds; fail only if it never does (a hang)."""
    deadline = time.monotonic() + HANG_S
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


@pytest.fixture
def host(http_server: FileServer, publisher_host: PublisherHost, monkeypatch: pytest.MonkeyPatch,
         tmp_path: Path) -> FileServer:
    """A fresh HUB_HOME, and every download going to `http_server`, which serves the publisher's files."""
    for source in publisher_host.server.root.iterdir():
        os.link(source, http_server.root / source.name)
    monkeypatch.setenv("HUB_HOME", str(tmp_path / "hub home"))
    monkeypatch.setenv(assets.ENV_MIRROR, http_server.base_url)
    for var in (assets.ENV_ASSETS, assets.ENV_TIMEOUT, *PROXY_VARS):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(asset_download, "RETRY_DELAY_S", 0.0)
    return http_server


def replace_served(server: FileServer, name: str, data: bytes) -> None:
    """Serve `data` as `name` (unlinked first: the file is a hard link to the publisher's copy)."""
    (server.root / name).unlink()
    server.put(name, data)


# ---------------------------------------------------------------- damaged downloads


@pytest.mark.parametrize("damage", ["truncated", "one byte changed in transit"])
def test_a_damaged_archive_is_a_clear_error_and_is_fetched_again_next_time(
    host: FileServer, publisher_host: PublisherHost, short_video: Path, damage: str
) -> None:
    # A small stand-in archive (the file is not read as weights here): random bytes, which gzip
    # stores as they are, so a changed byte decompresses fine and only the gzip CRC can tell.
    member = np.random.default_rng(5).bytes(300_000)
    (host.root / "video_tag_tsn.tar").unlink()
    write_weights_tar(host.root / "video_tag_tsn.tar", {TSN_MEMBER: member, "video_tag_tsn/tsn.pdopt": b""})
    good = (host.root / "video_tag_tsn.tar").read_bytes()
    if damage == "truncated":  # a complete response, Content-Length and all, of a cut archive
        replace_served(host, "video_tag_tsn.tar", good[: len(good) * 3 // 4])
    else:
        host.set_fault("video_tag_tsn.tar", corrupt_at=len(good) // 2, times=1)
    videotag = publisher_host.small_module(VIDEOTAG)

    with pytest.raises(AssetError) as error:
        videotag.classify([str(short_video)])

    message = str(error.value)
    assert "video_tag_tsn.tar: cannot read the archive" in message, message
    assert "the download was deleted, the next run fetches it again" in message
    assert cache_files() == []  # no archive, no extracted member, no .part or .tmp
    assert videotag._bundle is None
    if damage == "truncated":
        replace_served(host, "video_tag_tsn.tar", good)
    assert videotag.asset("tsn_weights").read_bytes() == member  # the next attempt downloads again
    assert len(host.requests_for("video_tag_tsn.tar")) == 2


def test_weights_missing_or_misshaped_parameters_are_a_weights_error_naming_them(
    host: FileServer, publisher_host: PublisherHost, short_video: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = expected_parameters("videotag_tsn_resnet101")
    state = {name: np.zeros(shape, np.float32) for name, shape in expected.items()}  # zeros: a small archive
    missing, misshaped = "res5c_branch2c_weights", "conv1_weights"
    del state[missing]
    state[misshaped] = np.zeros((64, 3, 3, 3), np.float32)
    (host.root / "video_tag_tsn.tar").unlink()
    write_weights_tar(host.root / "video_tag_tsn.tar", {TSN_MEMBER: pdparams_bytes(state)})
    videotag = publisher_host.small_module(VIDEOTAG)

    with pytest.raises(WeightsError) as error:
        videotag.classify([str(short_video)])

    message = str(error.value)
    assert f"{TSN_MEMBER.split('/')[-1]} (videotag_tsn_resnet101): 2 of {len(expected)} parameters are wrong" in message
    assert f"missing {missing}" in message
    assert f"{misshaped} has shape [64, 3, 3, 3], expected {list(expected[misshaped])}" in message
    assert not [p for p in (cache_root() / "inference").iterdir() if p.suffix != ".lock"]  # no model, no temp
    with pytest.raises(SystemExit) as exit_info:  # `hub run`: the same reason on one line, status 1
        videotag.run_cmd(["--input_path", str(short_video)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert f"hub run {VIDEOTAG}: error: " in err and f"missing {missing}" in err and "Traceback" not in err


def test_a_label_file_with_the_wrong_checksum_is_refused_before_any_conversion(
    host: FileServer, publisher_host: PublisherHost, short_video: Path
) -> None:
    labels = (host.root / "kinetics_labels.json").read_bytes()
    replace_served(host, "kinetics_labels.json", labels.replace(b"action_007", b"action_seven"))
    stnet = publisher_host.small_module(STNET)

    with pytest.raises(AssetError) as error:
        stnet.video_classification(data={"image": [str(short_video)]})

    message = str(error.value)
    assert f"{host.url_for('kinetics_labels.json')}: sha256 mismatch: expected " in message, message
    assert publisher_host.label_sha256[STNET] in message and "the download was deleted" in message
    assert cache_files() == ["downloads/STNET.pdparams"]  # the weights are complete; no label file
    assert not (cache_root() / "inference").exists()  # refused before the (slow) conversion


def test_a_missing_file_on_the_server_names_the_url_and_is_not_retried(
    host: FileServer, publisher_host: PublisherHost, short_video: Path
) -> None:
    (host.root / "STNET.pdparams").unlink()
    with pytest.raises(AssetError) as error:
        publisher_host.small_module(STNET).classify([str(short_video)])
    message = str(error.value)
    assert f"could not download {host.url_for('STNET.pdparams')}: HTTP 404" in message, message
    assert assets.ENV_ASSETS in message and assets.ENV_MIRROR in message  # ... and how to do without
    assert len(host.requests_for("STNET.pdparams")) == 1
    assert cache_files() == []


def test_a_stalled_server_times_out_with_a_clear_message(
    host: FileServer, publisher_host: PublisherHost, short_video: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host.set_fault("STNET.pdparams", stall_after=256 * 1024, stall_s=60)
    monkeypatch.setenv(assets.ENV_TIMEOUT, "0.5")
    monkeypatch.setattr(asset_download, "RETRIES", 1)
    started = time.monotonic()
    with pytest.raises(AssetError) as error:
        publisher_host.small_module(STNET).classify([str(short_video)])
    elapsed = time.monotonic() - started
    message = str(error.value)
    assert "timed out: no data for 0.5 s" in message and f"raise {assets.ENV_TIMEOUT}" in message, message
    assert "after 2 attempts" in message and host.url_for("STNET.pdparams") in message
    assert elapsed < 120  # 2 attempts of 0.5 s; only a hang is this slow
    assert not (cache_root() / "downloads" / "STNET.pdparams").exists()  # only a resumable .part


def test_a_cut_transfer_resumes_where_it_stopped(host: FileServer, publisher_host: PublisherHost) -> None:
    host.set_fault("STNET.pdparams", cut_after=1 << 20, cut_once=True)
    path = publisher_host.small_module(STNET).asset("weights")
    assert path.read_bytes() == (host.root / "STNET.pdparams").read_bytes()
    assert [r.range for r in host.requests_for("STNET.pdparams")] == [None, f"bytes={1 << 20}-"]


# ---------------------------------------------------------------- hostile or broken files from a mirror


BAD_WEIGHTS = {
    "captive portal page": b"<!DOCTYPE html><html><body>Sign in to the Wi-Fi</body></html>\n",
    "zeros": bytes(4 << 20),
    "inflating pickle": inflating_pickle(30),
}


@pytest.mark.parametrize("served", BAD_WEIGHTS)
def test_bad_weights_from_a_mirror_are_a_weights_error_and_fetched_again_once_fixed(
    host: FileServer, publisher_host: PublisherHost, served: str
) -> None:
    replace_served(host, "STNET.pdparams", BAD_WEIGHTS[served])  # no sha256 is pinned for the weights
    stnet = publisher_host.small_module(STNET)

    with pytest.raises(WeightsError) as error:
        stnet.bundle()

    message = str(error.value)
    assert message.startswith(str(cache_root() / "downloads" / "STNET.pdparams")), message
    assert message.endswith("; the download was deleted, the next run fetches it again")
    assert not [name for name in cache_files() if "STNET" in name or name.startswith("inference/")]
    replace_served(host, "STNET.pdparams", b"the fixed file")  # small: what counts is that it is fetched
    assert stnet.asset("weights").read_bytes() == b"the fixed file"
    assert len(host.requests_for("STNET.pdparams")) == 2


def test_an_archive_without_the_member_is_deleted_and_fetched_again(
    host: FileServer, publisher_host: PublisherHost
) -> None:
    good = (host.root / "video_tag_tsn.tar").read_bytes()
    (host.root / "video_tag_tsn.tar").unlink()
    write_weights_tar(host.root / "video_tag_tsn.tar", {"video_tag_tsn/tsn.pdopt": b"", "video_tag_tsn/x": b"x"})
    videotag = publisher_host.small_module(VIDEOTAG)
    with pytest.raises(AssetError, match=f"no member '{TSN_MEMBER}' in the archive; it holds: "
                                         f"video_tag_tsn/tsn.pdopt, video_tag_tsn/x; the download was deleted"):
        videotag.bundle()
    assert not [name for name in cache_files() if "video_tag_tsn" in name]
    replace_served(host, "video_tag_tsn.tar", good)
    assert videotag.asset("tsn_weights").stat().st_size > 0
    assert len(host.requests_for("video_tag_tsn.tar")) == 2


def test_a_label_file_with_the_wrong_count_is_deleted_when_it_came_unpinned(
    host: FileServer, publisher_host: PublisherHost
) -> None:
    import paddlehub as hub

    labels = json.loads((host.root / "kinetics_labels.json").read_text())
    replace_served(host, "kinetics_labels.json", json.dumps(labels[:399]).encode())
    config = {**SMALL, "assets": {"labels": {"sha256": None}}}  # as a user's override without a digest
    stnet = hub.Module(directory=str(REPO / STNET), config=config)
    with pytest.raises(AssetError, match="expected 400 labels, found 399; the download was deleted, "
                                         "the next run fetches it again"):
        stnet.bundle()
    assert "downloads/kinetics_labels.json" not in cache_files()
    assert not (cache_root() / "inference").exists()  # refused before the conversion


def test_offline_the_error_names_every_missing_file_of_the_module(
    host: FileServer, publisher_host: PublisherHost, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    local = tmp_path / "offline"
    local.mkdir()
    shutil.copy(host.root / "label_3396.txt", local)
    monkeypatch.setenv(assets.ENV_ASSETS, str(local))
    monkeypatch.delenv(assets.ENV_MIRROR)  # the folder alone: no network (with a mirror: test_assets)
    with pytest.raises(AssetError) as error:
        publisher_host.small_module(VIDEOTAG).bundle()
    lines = str(error.value).splitlines()
    assert lines[0] == f"{VIDEOTAG}: 2 model files missing: not in {assets.ENV_ASSETS}={local}", lines
    assert [line.split()[0] for line in lines[2:]] == ["video_tag_tsn.tar", "video_tag_lstm.tar"]
    assert host.requests == []


# ---------------------------------------------------------------- an unusable cache


def test_a_full_disk_is_an_error_naming_the_directory(host: FileServer, publisher_host: PublisherHost) -> None:
    downloads = cache_root() / "downloads"
    downloads.mkdir(parents=True)
    # Writes to /dev/full fail with ENOSPC, as on a full disk (root ignores permissions, not this).
    (downloads / "STNET.pdparams.part").symlink_to("/dev/full")
    with pytest.raises(AssetError) as error:
        publisher_host.small_module(STNET).asset("weights")
    assert f"cannot write in {downloads}: No space left on device" in str(error.value)
    assert not (downloads / "STNET.pdparams").exists()


READ_ONLY_SCRIPT = textwrap.dedent("""
    import os, sys
    import paddlehub as hub
    from paddlehub_video.errors import AssetError
    directory, config, video, empty_home, filled_home = sys.argv[1:]
    os.environ["HUB_HOME"] = empty_home  # its paddlehub_video/ is an empty read-only file system
    try:
        hub.Module(directory=directory, config=config).classify([video])
    except AssetError as exc:
        print("EMPTY:", exc)
    os.environ["HUB_HOME"] = filled_home  # its paddlehub_video/ holds everything, read-only
    print("FILLED:", hub.Module(directory=directory, config=config).classify([video], top_k=2))
""")


def test_a_read_only_cache_is_an_error_naming_the_directory_unless_it_holds_everything(
    mirror: PublisherHost, short_video: Path, tmp_path: Path
) -> None:
    """Root writes through file permissions, so the cache is put on a read-only mount, in a private
    mount namespace of a child process (`unshare --mount`, where this machine allows it)."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "--mount", "true"]).returncode != 0:
        pytest.skip("needs `unshare --mount` (mount namespaces) for a read-only file system")
    config = tmp_path / "stnet.yaml"
    config.write_text(yaml.safe_dump(mirror.config(STNET, **SMALL)))
    mirror.small_module(STNET).bundle()  # fill this run's cache, which the child sees read-only
    filled = Path(os.environ["HUB_HOME"])
    empty = tmp_path / "empty home"
    (empty / "paddlehub_video").mkdir(parents=True)
    shutil.copytree(filled / "conf", empty / "conf")
    mounts = (f'mount -t tmpfs -o ro tmpfs "{empty}/paddlehub_video" && '
              f'mount --bind "{filled}/paddlehub_video" "{filled}/paddlehub_video" && '
              f'mount -o remount,bind,ro "{filled}/paddlehub_video" && exec "$0" "$@"')
    proc = subprocess.run(["unshare", "--mount", "sh", "-c", mounts, sys.executable, "-c", READ_ONLY_SCRIPT,
                           str(REPO / STNET), str(config), str(short_video), str(empty), str(filled)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "HUB_HOME": str(filled)})
    assert proc.returncode == 0, proc.stderr
    lines = {line.split(":", 1)[0]: line for line in proc.stdout.splitlines() if line.startswith(("EMPTY", "FILLED"))}
    expected = (f"cache directory {empty}/paddlehub_video/downloads cannot be created (Read-only file system); "
                f"point HUB_HOME at a writable directory")
    assert lines.get("EMPTY") == f"EMPTY: {expected}", proc.stdout + proc.stderr
    assert f"'path': '{short_video}', 'prediction': {{" in lines.get("FILLED", ""), proc.stdout + proc.stderr


# ---------------------------------------------------------------- Ctrl-C


def test_ctrl_c_during_a_download_leaves_only_a_resumable_part(host: FileServer, tmp_path: Path) -> None:
    """A real SIGINT to a process blocked on the network, then a clean resume in another. Every wait
    is on an event (the server going silent, the bytes reaching the file, the child exiting), with
    bounds that only catch a hang, so a busy machine makes it slower, not red."""
    data = np.random.default_rng(3).bytes(3 << 20)
    host.put("big.bin", data)
    stall_at = len(data) // 3
    host.set_fault("big.bin", stall_after=stall_at, stall_s=600, times=1)
    spec = AssetSpec("weights", host.url_for("big.bin"), max_bytes=1 << 30)
    code = ("import sys; from paddlehub_video.model.assets import AssetSpec, fetch_asset; "
            "fetch_asset(AssetSpec('weights', sys.argv[1], max_bytes=1 << 30), progress=False)")
    child = subprocess.Popen([sys.executable, "-c", code, host.url_for("big.bin")], stderr=subprocess.PIPE,
                             text=True, env={**os.environ, assets.ENV_TIMEOUT: "600"})
    try:
        assert host.stalled.wait(HANG_S), "the download did not start"
        part = cache_root() / "downloads" / "big.bin.part"
        # What the child read before the silence is in its file but for its write buffer (8 KiB).
        _wait_for(lambda: part.is_file() and part.stat().st_size >= stall_at - (8 << 10) or child.poll() is not None)
        assert child.poll() is None, child.communicate()[1]
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=HANG_S)
    finally:
        child.kill()
    assert child.returncode != 0 and "KeyboardInterrupt" in err, err
    assert not (cache_root() / "downloads" / "big.bin").exists()  # nothing that looks complete
    assert part.read_bytes() == data[:stall_at]  # what arrived, flushed on the way out
    filelock.FileLock(str(part.with_suffix(".lock"))).acquire(timeout=0)  # the lock went with the process
    assert fetch_asset(spec, progress=False).read_bytes() == data
    assert host.requests_for("big.bin")[-1].range == f"bytes={stall_at}-"


def test_ctrl_c_during_the_conversion_leaves_no_model_behind(
    host: FileServer, publisher_host: PublisherHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(inference_model, "save_inference_model", interrupted)
    stnet = publisher_host.small_module(STNET)
    with pytest.raises(KeyboardInterrupt):
        stnet.bundle()
    assert not [p for p in (cache_root() / "inference").iterdir() if p.suffix != ".lock"]  # no entry, no temp
    assert stnet._bundle is None  # the next call starts over
