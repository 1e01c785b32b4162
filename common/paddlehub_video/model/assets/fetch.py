"""Where an asset's file comes from, in this order: the module directory, `$PADDLEHUB_VIDEO_ASSETS`
(local files), the cache under `$HUB_HOME/paddlehub_video`, then a download from
`$PADDLEHUB_VIDEO_MIRROR` or the publisher's URL. `$PADDLEHUB_VIDEO_ASSETS` alone means no network:
a file not there is an error; with `$PADDLEHUB_VIDEO_MIRROR` as well, files not there come from the
mirror. A cached file exists under its final name only once it is complete and verified; everything
in flight lives in a `.part` or `.tmp` file. The variables are read as one `DownloadEnvironment`
(paddlehub_video/environment.py), given by the caller (a module's settings) or read at the call.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from ... import environment
from ... import progress as progress_report
from ...errors import AssetError
from .archive import extract_member
from .cache import (
    download_path,
    ensure_dir,
    extracted_path,
    file_digest,
    forget_digest,
    locked,
    record_verified,
    sha256_file,
    verified,
)
from .download import DownloadError, download
from .spec import AssetSpec, url_file_name

ENV_ASSETS, ENV_MIRROR = environment.ASSETS, environment.MIRROR
Downloads = environment.DownloadEnvironment


def fetch_asset(spec: AssetSpec, module_dir: Path | None = None, progress: bool = True,
                timeout: float | None = None, downloads: Downloads | None = None) -> Path:
    """Local path of the asset's file (the member itself for archives), downloading it if needed."""
    return fetch_assets([spec], module_dir, progress, timeout, owner=f"asset {spec.name!r}", downloads=downloads)[0]


def fetch_assets(specs: list[AssetSpec], module_dir: Path | None = None, progress: bool = True,
                 timeout: float | None = None, owner: str = "paddlehub_video", downloads: Downloads | None = None,
                 kind: str = "model file") -> list[Path]:
    """`fetch_asset` of each spec, but every file is looked for locally first, so that when some
    cannot be had (no network, or $PADDLEHUB_VIDEO_ASSETS lacks them) one error names them all.

    `timeout`: seconds without data (default the `downloads`' timeout); `downloads`: where files come
    from (default: read from the environment now); `kind`: what the files are, for messages ("video")."""
    sources = environment.downloads() if downloads is None else downloads
    found = [_find_local(spec, module_dir, sources.assets_dir) for spec in specs]
    missing = [spec for spec, path in zip(specs, found, strict=True) if path is None]
    if missing and sources.assets_dir is not None and sources.mirror is None:
        reason = f"not in {ENV_ASSETS}={sources.assets_dir}"
        raise AssetError(_missing_message(owner, missing, reason, kind, sources.assets_dir))
    for i, spec in enumerate(specs):
        if found[i] is not None:
            continue
        try:
            found[i] = _from_cache_or_network(spec, progress, sources, timeout)
        except DownloadError as exc:
            raise DownloadError(_missing_message(owner, missing[missing.index(spec):], str(exc), kind)) from exc
    return [path for path in found if path is not None]


def _missing_message(owner: str, specs: list[AssetSpec], reason: str, kind: str,
                     local_dir: Path | None = None) -> str:
    """One message naming every missing file, its URL, and where to put it."""
    count = f"{len(specs)} {kind}" + ("s" if len(specs) > 1 else "")
    if local_dir is not None:
        where = (f"Downloads are disabled while {ENV_ASSETS} is set alone: put these files in {local_dir}, "
                 f"or also set {ENV_MIRROR}=<base url> of a server that serves them (or unset {ENV_ASSETS}):")
    else:
        where = (f"Fetch these files where there is network access, put them in one directory and set "
                 f"{ENV_ASSETS}=<that directory> (or set {ENV_MIRROR}=<base url> of a server that serves them):")
    lines = [f"{owner}: {count} missing: {reason}", where]
    for spec in specs:
        also = f" (or its member {PurePosixPath(spec.member).name}, extracted)" if spec.member else ""
        lines.append(f"  {url_file_name(spec.url)}{also}  from {spec.url}")
    return "\n".join(lines)


# --- local sources ---------------------------------------------------------------------------


def _find_local(spec: AssetSpec, module_dir: Path | None, local_dir: Path | None) -> Path | None:
    """The asset from the module directory, `local_dir` ($PADDLEHUB_VIDEO_ASSETS) or the cache; None if none has it."""
    if module_dir is not None and spec.module_file:
        candidate = Path(module_dir) / spec.module_file
        if candidate.is_file():
            return candidate
    if local_dir is not None:
        path = _from_local_dir(spec, local_dir)
        if path is not None:
            return path
    return _cached(spec)


def _from_local_dir(spec: AssetSpec, directory: Path) -> Path | None:
    """The asset from $PADDLEHUB_VIDEO_ASSETS (extracting an archive into the cache), or None."""
    if spec.member:
        for candidate in (directory / spec.member, directory / PurePosixPath(spec.member).name):
            if candidate.is_file():
                return candidate
    source = directory / url_file_name(spec.url)
    if not source.is_file():
        return None
    if spec.member and verified(extracted_path(spec), spec.sha256):
        return extracted_path(spec)
    _verify_local(source, spec.sha256)
    return extract_member(spec, source) if spec.member else source


def _verify_local(path: Path, sha256: str | None) -> None:
    """Refuse a user-supplied file whose digest differs from the manifest's."""
    if sha256 is None:
        return
    got = sha256_file(path)
    if got != sha256:
        raise AssetError(f"{path}: sha256 mismatch: expected {sha256}, got {got}; "
                         f"the file is not the one the manifest names")


def _cached(spec: AssetSpec) -> Path | None:
    """The cached file if it is there and was verified against the current digest."""
    path = extracted_path(spec) if spec.member else download_path(spec)
    return path if verified(path, spec.sha256) else None


def source_url(spec: AssetSpec, mirror: str | None) -> str:
    """The `mirror`'s URL for the asset when there is one ($PADDLEHUB_VIDEO_MIRROR), else the spec's."""
    if not mirror:
        return spec.url
    return mirror.rstrip("/") + "/" + urlsplit(spec.url).path.rsplit("/", 1)[-1]


def _from_cache_or_network(spec: AssetSpec, progress: bool, sources: Downloads, timeout: float | None) -> Path:
    """Return the cached file, downloading (and extracting) it under a cross-process lock if needed."""
    cached = _cached(spec)
    if cached is not None:
        return cached
    dest = download_path(spec)
    ensure_dir(dest.parent)
    with locked(dest, progress):
        # Another process may have finished the same download while this one waited.
        cached = _cached(spec)
        if cached is not None:
            return cached
        if not verified(dest, spec.sha256) and not _adopt_unrecorded(dest, spec.sha256):
            forget_digest(dest)
            download(source_url(spec, sources.mirror), dest, spec, progress,
                     sources.timeout_s if timeout is None else float(timeout), sources.deadline_s)
            record_verified(dest, spec.sha256)
        if not spec.member:
            return dest
        with progress_report.current().busy(f"extracting {PurePosixPath(spec.member).name} from {dest.name}"):
            return extract_member(spec, dest, downloaded=True)


def _adopt_unrecorded(dest: Path, sha256: str | None) -> bool:
    """Accept a final file the record does not know (placed by hand, or an old run) if its digest matches."""
    return sha256 is not None and dest.is_file() and file_digest(dest) == sha256
