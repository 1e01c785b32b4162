"""The publisher's sample videos (its README and unit test use them), fetched through the asset layer.

Same rules as the weights: the cache under `$HUB_HOME/paddlehub_video`, `$PADDLEHUB_VIDEO_ASSETS`
(files found there are used), `$PADDLEHUB_VIDEO_MIRROR`, sha256 checked; offline, one error names both videos.

    python3 -m paddlehub_video.interfaces.samples [--list FILE]   # their local paths, one per line (into FILE)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import PaddleHubVideoError
from ..model.assets import AssetSpec, fetch_assets
from ..progress import reporting
from .output_files import Refused, write_checked
from .terminal import TerminalProgress

BASE_URL = "https://paddlehub.bj.bcebos.com/model/video/video_classifcation"  # sic: the publisher's spelling
MAX_BYTES = 32 << 20  # each is well under 1 MB; a bound for what a server may send
SAMPLE_VIDEOS = (
    AssetSpec("sample_video_1", f"{BASE_URL}/1.mp4",
              sha256="444b52fbd80eb97a2bc010114aa766ca5882773d7342af2847906980f2304c31", max_bytes=MAX_BYTES),
    AssetSpec("sample_video_2", f"{BASE_URL}/2.mp4",
              sha256="07173b41df3b8cddad08dd867ac6a36900bb7b63b1c43f4daf1c03ac1d027cca", max_bytes=MAX_BYTES),
)
OWNER = "the publisher's sample videos"
# The first line of a --list file (a comment, which --input_file skips): what marks one this module wrote.
LIST_HEAD = "# the publisher's sample videos (python3 -m paddlehub_video.interfaces.samples --list)\n"


def sample_videos(progress: bool = True) -> list[Path]:
    """Local paths of `1.mp4` and `2.mp4`, fetched on first use (AssetError / DownloadError when they cannot be)."""
    return fetch_assets(list(SAMPLE_VIDEOS), progress=progress, owner=OWNER, kind="video")


def main(argv: list[str] | None = None) -> int:
    """Print (or write to --list) the sample videos' paths; exit status 1 with the reason when they cannot be had."""
    parser = argparse.ArgumentParser(
        prog="python3 -m paddlehub_video.interfaces.samples", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--list", type=Path, help="write the paths to this file, one per line")
    args = parser.parse_args(argv)
    try:
        with reporting(TerminalProgress(sys.stderr, "samples", show=sys.stderr.isatty())):
            paths = sample_videos()
    except PaddleHubVideoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    text = "".join(f"{path}\n" for path in paths)
    if not args.list:
        sys.stdout.write(text)
        return 0
    try:
        args.list.parent.mkdir(parents=True, exist_ok=True)
        write_checked(args.list, (LIST_HEAD + text).encode("utf-8"), lambda head: _is_list(head, text), "a list "
                      "written by this command", [("one of the sample videos", [str(path) for path in paths])])
    except (OSError, Refused) as exc:
        print(f"error: --list {args.list}: {exc}; the file was left as it was", file=sys.stderr)
        return 1
    return 0


def _is_list(head: bytes, text: str) -> bool:
    """A --list file written before: with LIST_HEAD, or (older ones) exactly the paths of this run."""
    return head.startswith(LIST_HEAD.encode("utf-8")) or head == text.encode("utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
