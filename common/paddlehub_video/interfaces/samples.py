"""The publisher's sample videos (its README and unit test use them), fetched through the asset layer.

Same rules as the weights: the cache under `$HUB_HOME/paddlehub_video`, `$PADDLEHUB_VIDEO_MIRROR`,
`$PADDLEHUB_VIDEO_ASSETS` (no network), sha256 checked; offline, one error names both files.

    python3 -m paddlehub_video.interfaces.samples [--list FILE]   # their local paths, one per line (into FILE)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import PaddleHubVideoError
from ..model.assets import AssetSpec, fetch_assets

BASE_URL = "https://paddlehub.bj.bcebos.com/model/video/video_classifcation"  # sic: the publisher's spelling
MAX_BYTES = 32 << 20  # each is well under 1 MB; a bound for what a server may send
SAMPLE_VIDEOS = (
    AssetSpec("sample_video_1", f"{BASE_URL}/1.mp4",
              sha256="444b52fbd80eb97a2bc010114aa766ca5882773d7342af2847906980f2304c31", max_bytes=MAX_BYTES),
    AssetSpec("sample_video_2", f"{BASE_URL}/2.mp4",
              sha256="07173b41df3b8cddad08dd867ac6a36900bb7b63b1c43f4daf1c03ac1d027cca", max_bytes=MAX_BYTES),
)
OWNER = "the publisher's sample videos"


def sample_videos(progress: bool = True) -> list[Path]:
    """Local paths of `1.mp4` and `2.mp4`, fetched on first use (AssetError / DownloadError when they cannot be)."""
    return fetch_assets(list(SAMPLE_VIDEOS), progress=progress, owner=OWNER)


def main(argv: list[str] | None = None) -> int:
    """Print (or write to --list) the sample videos' paths; exit status 1 with the reason when they cannot be had."""
    parser = argparse.ArgumentParser(
        prog="python3 -m paddlehub_video.interfaces.samples", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--list", type=Path, help="write the paths to this file, one per line")
    args = parser.parse_args(argv)
    try:
        paths = sample_videos(progress=sys.stderr.isatty())
    except PaddleHubVideoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    text = "".join(f"{path}\n" for path in paths)
    if args.list:
        args.list.parent.mkdir(parents=True, exist_ok=True)
        args.list.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
