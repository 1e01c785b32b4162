"""What an asset is: where it comes from (URL, archive member, module file), its digest, its size limit."""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from ...errors import AssetError
from ..weights import max_file_bytes

DEFAULT_MAX_BYTES = 1 << 20  # label files are tens of kB
# An archive may hold, besides the member, files about as large (the publisher's: .pdopt, .pdmodel).
_ARCHIVE_MARGIN_BYTES = 16 << 20
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class AssetSpec:
    """Where one asset comes from and how to recognise it."""

    name: str
    url: str
    sha256: str | None = None
    member: str | None = None
    module_file: str | None = None
    max_bytes: int = DEFAULT_MAX_BYTES  # of the file itself, the member for an archive

    def __post_init__(self) -> None:
        """Normalise the digest and refuse unsafe archive member paths."""
        if self.sha256 is not None:
            digest = self.sha256.strip().lower()
            if not _SHA256_RE.match(digest):
                raise AssetError(f"asset {self.name!r}: sha256 {self.sha256!r} is not 64 hex digits")
            object.__setattr__(self, "sha256", digest)
        if self.member is not None:
            check_member_path(self.name, self.member)
        url_file_name(self.url)

    @classmethod
    def from_dict(cls, name: str, d: Mapping[str, Any]) -> AssetSpec:
        """Build a spec from a YAML manifest entry; a `network` sets the size limit from its parameters."""
        if not isinstance(d, Mapping) or not d.get("url"):
            raise AssetError(f"asset {name!r}: the manifest entry needs a 'url' (got {d!r})")

        def opt(key: str) -> str | None:
            value = d.get(key)
            return None if value is None else str(value)

        if d.get("network"):
            max_bytes = max_file_bytes(str(d["network"]))
        else:
            max_bytes = int(d.get("max_bytes") or DEFAULT_MAX_BYTES)
        return cls(name=name, url=str(d["url"]), sha256=opt("sha256"), member=opt("member"),
                   module_file=opt("module_file"), max_bytes=max_bytes)

    @property
    def download_bytes(self) -> int:
        """Size limit of the downloaded file: the asset's, or room for it and its companions in an archive."""
        return 2 * self.max_bytes + _ARCHIVE_MARGIN_BYTES if self.member else self.max_bytes


def url_file_name(url: str) -> str:
    """The file name an URL points at (last path segment, percent-decoded)."""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    if not name or name in (".", ".."):
        raise AssetError(f"{url}: the URL does not end in a file name")
    return name


def check_member_path(name: str, member: str) -> None:
    """Refuse member paths that could escape the extraction directory."""
    parts = PurePosixPath(member).parts
    if not member or member.startswith(("/", "\\")) or ".." in parts or "\\" in member or ":" in member:
        raise AssetError(f"asset {name!r}: unsafe archive member path {member!r} "
                         f"(absolute, '..' or a drive/backslash)")
