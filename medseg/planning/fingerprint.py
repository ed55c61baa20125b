"""The dataset fingerprint: what a planner must know about the data, measured once and cached.

As nnU-Net's ``DatasetFingerprintExtractor`` does, it records per case the spacing, shape and the
shape after cropping to the non-zero region; per channel foreground intensity statistics from a
bounded, seeded sample of voxels under the labels; and the modality. medseg adds the orientation,
per-class voxel fractions and object sizes (connected components), because the planner sizes
patches and picks losses from them. The same single read of each case also runs
:func:`medseg.data.check.check_dataset`, and both results are cached under one key (see
:mod:`medseg.planning.cache`): the second call reads no voxels, and any file change recomputes.

>>> fp = fingerprint("data/Task09_Spleen")          # doctest: +SKIP
>>> fp.median_spacing, fp.modalities, fp.classes[0].median_object_mm
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from medseg.data.check import CheckReport, allowing_empty, check_dataset
from medseg.data.datasets import DatasetInfo, discover
from medseg.planning import cache as _cache
from medseg.planning.measure import Accumulator
from medseg.planning.records import (
    FORMAT_VERSION,
    CaseFingerprint,
    ChannelFingerprint,
    ClassFingerprint,
    Fingerprint,
    IntensityStats,
)

MAX_VOXELS_PER_CASE = 10_000  # nnU-Net's per-case default: plenty for percentiles, bounded in memory

__all__ = [
    "FORMAT_VERSION", "MAX_VOXELS_PER_CASE", "Analysis", "CaseFingerprint", "ChannelFingerprint",
    "ClassFingerprint", "Fingerprint", "IntensityStats", "analyse", "fingerprint",
]


@dataclass(frozen=True)
class Analysis:
    """The fingerprint and the check report of one dataset, from one read (or from the cache)."""

    fingerprint: Fingerprint
    check: CheckReport
    cached: bool  # True when nothing was read but the cache file

    def require_valid(self) -> Analysis:
        """Raise the check's first error as one ``MedsegError`` line; return self when there is none."""
        self.check.raise_for_errors()
        return self


def _info(info_or_root: DatasetInfo | str | os.PathLike[str]) -> DatasetInfo:
    return info_or_root if isinstance(info_or_root, DatasetInfo) else discover(Path(info_or_root))


def analyse(
    info_or_root: DatasetInfo | str | os.PathLike[str],
    *,
    allow_empty: bool = False,
    cache: bool = True,
    max_voxels_per_case: int = MAX_VOXELS_PER_CASE,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Analysis:
    """Fingerprint and check the dataset in one pass over its cases; cached (``cache=False`` recomputes).

    ``allow_empty`` is applied to the stored report when it is read, so it does not invalidate the
    cache. ``progress(done, total)`` is called after each case that is read (never on a cache hit).
    Raises ``MedsegError`` only when the dataset's layout cannot be discovered.
    """
    info = _info(info_or_root)
    key = _cache.dataset_key(info, {"max_voxels_per_case": int(max_voxels_per_case), "seed": int(seed)})
    stored = _cache.load(info.root, key) if cache else None
    if stored is not None:
        try:
            fp, report = Fingerprint.from_dict(stored["fingerprint"]), CheckReport.from_dict(stored["check"])
        except (KeyError, TypeError, ValueError):
            stored = None  # written by a different medseg: measure again
        else:
            return Analysis(fp, allowing_empty(report, allow_empty), cached=True)
    accumulator = Accumulator(info, max_voxels_per_case, seed)
    report = check_dataset(info, allow_empty=False, on_case=accumulator, progress=progress)
    fp = accumulator.result(key)
    if cache:
        _cache.store(info.root, key, {"fingerprint": fp.to_dict(), "check": report.as_dict()})
    return Analysis(fp, allowing_empty(report, allow_empty), cached=False)


def fingerprint(
    info_or_root: DatasetInfo | str | os.PathLike[str],
    *,
    cache: bool = True,
    max_voxels_per_case: int = MAX_VOXELS_PER_CASE,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Fingerprint:
    """The :class:`Fingerprint` of a dataset (a folder, or a :class:`DatasetInfo` from ``discover``).

    The first call reads every case once (test images too, for the check stored beside it); later
    calls read only ``.medseg/fingerprint.json`` while every file's size and mtime are unchanged.
    """
    return analyse(info_or_root, cache=cache, max_voxels_per_case=max_voxels_per_case, seed=seed,
                   progress=progress).fingerprint
