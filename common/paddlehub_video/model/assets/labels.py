"""Label files: class names in class-id order, read from a fetched file and checked against the class count."""
from __future__ import annotations

import json
from functools import partial
from pathlib import Path

from ...errors import AssetError
from .cache import read_fetched


def read_labels(path: str | Path, expected_count: int | None = None) -> list[str]:
    """Class names in class-id order: a JSON array (.json) or one name per line (0-based line number)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        labels = json.loads(text) if path.suffix == ".json" else text.split("\n")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AssetError(f"{path}: cannot read the label file ({exc})") from exc
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise AssetError(f"{path}: a JSON label file must hold an array of strings")
    if path.suffix != ".json" and labels and labels[-1] == "":
        labels.pop()
    if expected_count is not None and len(labels) != expected_count:
        raise AssetError(f"{path}: expected {expected_count} labels, found {len(labels)}")
    return labels


def read_label_file(path: Path, expected_count: int) -> list[str]:
    """`read_labels` of a fetched label file; a downloaded one that fails the check is deleted (`read_fetched`)."""
    return read_fetched(path, partial(read_labels, expected_count=expected_count))
