"""Where a fingerprint is stored, and the key that says whether it is still true.

The key hashes every case file's path, size and ``mtime_ns`` (the files inside a DICOM folder
too), ``dataset.json``'s, the dataset root, the sampling parameters and :data:`FORMAT_VERSION`:
any edit, addition or removal recomputes, and checking costs one ``stat`` per file. The file goes
to ``<dataset>/.medseg/fingerprint.json``; where the dataset folder is read-only, to
``$MEDSEG_CACHE_DIR`` (default ``$XDG_CACHE_HOME/medseg`` or ``~/.cache/medseg``)
``/fingerprints/<hash of the root>.json``. A cache that cannot be read or written is skipped:
it only saves time.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from medseg.data.datasets import DatasetInfo
from medseg.planning.records import FORMAT_VERSION
from medseg.utils import atomic_write_json

CACHE_NAME = "fingerprint.json"


def user_cache_dir() -> Path:
    """medseg's per-user cache folder (``MEDSEG_CACHE_DIR`` overrides it)."""
    if os.environ.get("MEDSEG_CACHE_DIR"):
        return Path(os.environ["MEDSEG_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "medseg"


def dataset_files(info: DatasetInfo) -> list[Path]:
    """Every file the fingerprint and the check read: images, labels, test images, dataset.json."""
    files = [p for case in info.cases for p in [*case.images, *([case.label] if case.label else [])]]
    files += [p for case in info.test_cases for p in case.images]
    return [*files, info.root / "dataset.json"]


def _stat_rows(path: Path, root: Path) -> list[list[Any]]:
    """``[name, size, mtime_ns]`` of a file (of each file inside a DICOM folder); size -1 when missing."""
    paths = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    rows: list[list[Any]] = []
    for p in paths:
        try:
            name = str(p.relative_to(root))
        except ValueError:
            name = str(p)
        try:
            st = p.stat()
            rows.append([name, st.st_size, st.st_mtime_ns])
        except OSError:
            rows.append([name, -1, -1])
    return rows


def dataset_key(info: DatasetInfo, params: dict[str, Any]) -> str:
    """The hash that changes when any file of the dataset, the parameters or the format change."""
    rows = [row for path in dataset_files(info) for row in _stat_rows(path, info.root)]
    blob = json.dumps([FORMAT_VERSION, str(Path(info.root).resolve()), info.layout, params, rows])
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def locations(root: Path) -> list[Path]:
    """The cache files to try, in order: in the dataset folder, then in the user cache."""
    digest = hashlib.sha256(str(Path(root).resolve()).encode("utf-8")).hexdigest()[:16]
    return [Path(root) / ".medseg" / CACHE_NAME, user_cache_dir() / "fingerprints" / f"{digest}.json"]


def load(root: Path, key: str) -> dict[str, Any] | None:
    """The stored payload whose key is ``key``, or None."""
    for path in locations(root):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("format") == FORMAT_VERSION and data.get("key") == key:
            return data
    return None


def store(root: Path, key: str, payload: dict[str, Any]) -> Path | None:
    """Write ``payload`` under ``key`` to the first writable location; None when none is."""
    for path in locations(root):
        try:
            atomic_write_json(path, {"format": FORMAT_VERSION, "key": key, **payload})
        except OSError:
            continue
        return path
    return None
