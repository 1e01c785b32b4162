"""The publisher's sample videos (`paddlehub_video.interfaces.samples`): fetched through the asset layer, with its
cache, mirror, offline-directory and sha256 rules. Stand-in videos generated here are served from
127.0.0.1; the real files are never downloaded nor committed."""
from __future__ import annotations

import hashlib
import socket
from dataclasses import replace
from pathlib import Path

import pytest

from paddlehub_video.errors import AssetError
from paddlehub_video.interfaces import samples
from paddlehub_video.interfaces.cli import read_path_list
from paddlehub_video.model.assets import ENV_ASSETS, ENV_MIRROR
from tests.fixtures.files import snapshot
from tests.fixtures.http_server import FileServer
from tests.fixtures.videos import MakeVideo

NAMES = ["1.mp4", "2.mp4"]


@pytest.fixture
def stand_ins(make_video: MakeVideo, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, bytes]:
    """Two generated videos standing in for 1.mp4 and 2.mp4, pinned by their own sha256; a fresh cache."""
    monkeypatch.setenv("HUB_HOME", str(tmp_path / "hub"))
    monkeypatch.delenv(ENV_ASSETS, raising=False)
    monkeypatch.delenv(ENV_MIRROR, raising=False)
    data = {"1.mp4": make_video("sample_1", 30, 64, 48).read_bytes(),
            "2.mp4": make_video("sample_2", 24, 48, 64).read_bytes()}
    pinned = tuple(replace(spec, sha256=hashlib.sha256(data[name]).hexdigest())
                   for spec, name in zip(samples.SAMPLE_VIDEOS, NAMES, strict=True))
    monkeypatch.setattr(samples, "SAMPLE_VIDEOS", pinned)
    return data


def test_the_publisher_urls_and_digests_are_pinned():
    assert [(spec.url, spec.sha256) for spec in samples.SAMPLE_VIDEOS] == [
        ("https://paddlehub.bj.bcebos.com/model/video/video_classifcation/1.mp4",
         "444b52fbd80eb97a2bc010114aa766ca5882773d7342af2847906980f2304c31"),
        ("https://paddlehub.bj.bcebos.com/model/video/video_classifcation/2.mp4",
         "07173b41df3b8cddad08dd867ac6a36900bb7b63b1c43f4daf1c03ac1d027cca"),
    ]


def test_fetched_from_the_mirror_once_then_from_the_cache(stand_ins, http_server: FileServer, monkeypatch):
    for name, data in stand_ins.items():
        http_server.put(name, data)
    monkeypatch.setenv(ENV_MIRROR, http_server.base_url)
    first = samples.sample_videos(progress=False)
    assert [path.read_bytes() for path in first] == [stand_ins[name] for name in NAMES]
    assert samples.sample_videos(progress=False) == first
    assert [len(http_server.requests_for(name)) for name in NAMES] == [1, 1]


def test_a_file_that_is_not_the_publishers_is_refused_and_deleted(http_server: FileServer, monkeypatch, tmp_path,
                                                                  make_video: MakeVideo):
    monkeypatch.setenv("HUB_HOME", str(tmp_path / "hub"))
    monkeypatch.delenv(ENV_ASSETS, raising=False)
    for name in NAMES:  # served under the publisher's names, checked against the real digests
        http_server.put(name, make_video("impostor", 20, 64, 48).read_bytes())
    monkeypatch.setenv(ENV_MIRROR, http_server.base_url)
    with pytest.raises(AssetError, match="sha256"):
        samples.sample_videos(progress=False)
    assert not list((tmp_path / "hub").rglob("1.mp4"))


def test_a_local_directory_is_used_without_network(stand_ins, http_server: FileServer, monkeypatch, tmp_path):
    local = tmp_path / "assets"
    local.mkdir()
    for name, data in stand_ins.items():
        (local / name).write_bytes(data)
    monkeypatch.setenv(ENV_ASSETS, str(local))
    monkeypatch.setenv(ENV_MIRROR, http_server.base_url)
    assert samples.sample_videos(progress=False) == [local / name for name in NAMES]
    assert http_server.requests == []


def test_a_local_directory_and_a_mirror_together(stand_ins, http_server: FileServer, monkeypatch, tmp_path):
    """The demo with videos of one's own and a mirror for the rest (the weights, here 2.mp4)."""
    local = tmp_path / "assets"
    local.mkdir()
    (local / "1.mp4").write_bytes(stand_ins["1.mp4"])
    http_server.put("2.mp4", stand_ins["2.mp4"])
    monkeypatch.setenv(ENV_ASSETS, str(local))
    monkeypatch.setenv(ENV_MIRROR, http_server.base_url)
    first, second = samples.sample_videos(progress=False)
    assert first == local / "1.mp4" and second.read_bytes() == stand_ins["2.mp4"]
    assert [len(http_server.requests_for(name)) for name in NAMES] == [0, 1]


def test_a_local_directory_alone_lacking_a_video_names_it_as_a_video(stand_ins, monkeypatch, tmp_path):
    local = tmp_path / "assets"
    local.mkdir()
    (local / "1.mp4").write_bytes(stand_ins["1.mp4"])
    monkeypatch.setenv(ENV_ASSETS, str(local))
    with pytest.raises(AssetError) as error:
        samples.sample_videos(progress=False)
    lines = str(error.value).splitlines()
    assert lines[0] == f"the publisher's sample videos: 1 video missing: not in {ENV_ASSETS}={local}"
    assert "model file" not in str(error.value) and lines[2].startswith("  2.mp4  from https://")


def test_offline_one_message_names_both_files_and_what_to_do(stand_ins, monkeypatch, capsys, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there
    monkeypatch.setenv(ENV_MIRROR, f"http://127.0.0.1:{port}")
    assert samples.main(["--list", str(tmp_path / "list.txt")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the publisher's sample videos: 2 videos missing: could not download")
    assert f"set {ENV_ASSETS}=<that directory>" in err
    assert "  1.mp4  from https://paddlehub.bj.bcebos.com/model/video/video_classifcation/1.mp4" in err
    assert "  2.mp4  from https://paddlehub.bj.bcebos.com/model/video/video_classifcation/2.mp4" in err
    assert not (tmp_path / "list.txt").exists()


def test_main_writes_the_list_the_demo_classifies(stand_ins, http_server: FileServer, monkeypatch, tmp_path):
    for name, data in stand_ins.items():
        http_server.put(name, data)
    monkeypatch.setenv(ENV_MIRROR, http_server.base_url)
    listing = tmp_path / "samples" / "publisher.txt"
    assert samples.main(["--list", str(listing)]) == 0
    paths = read_path_list(listing)  # as hub run --input_file reads it
    assert [Path(path).read_bytes() for path in paths] == [stand_ins[name] for name in NAMES]
    listing.write_text("".join(f"{path}\n" for path in paths), encoding="utf-8")  # as older versions wrote it
    assert samples.main(["--list", str(listing)]) == 0 and read_path_list(listing) == paths
    listing.write_text("my notes\n", encoding="utf-8")
    before = snapshot(listing)
    assert samples.main(["--list", str(listing)]) == 1
    assert snapshot(listing) == before
