"""Model assets (weights, label files): find them locally or download, verify and cache them.

`fetch` says where a file comes from (module directory, $PADDLEHUB_VIDEO_ASSETS, the cache, a
download); `download` does HTTP with resume, retries and limits; `archive` takes a member out of a
tar; `cache` is where files go, their locks and their one digest record; `labels` reads label files.

Whatever comes from the network is bounded: each asset has a size limit (weights: what the
network's parameters can take, from configs/params/; other files: `max_bytes`, default 1 MiB), and
each download a total deadline. A download that fails any check (digest, archive, member, or the
caller's own reading with `read_fetched`) is deleted, so the next run fetches it again.
"""
from .cache import cache_root, discard_download, file_digest, read_fetched, sha256_file
from .download import ENV_DEADLINE, ENV_TIMEOUT, DownloadError
from .fetch import ENV_ASSETS, ENV_MIRROR, fetch_asset, fetch_assets
from .labels import read_label_file, read_labels
from .spec import DEFAULT_MAX_BYTES, AssetSpec, url_file_name

__all__ = [
    "DEFAULT_MAX_BYTES", "ENV_ASSETS", "ENV_DEADLINE", "ENV_MIRROR", "ENV_TIMEOUT", "AssetSpec", "DownloadError",
    "cache_root", "discard_download", "fetch_asset", "fetch_assets", "file_digest", "read_fetched",
    "read_label_file", "read_labels", "sha256_file", "url_file_name",
]
