"""Validate a dataset before anyone trains on it: ``medseg data check PATH``.

Errors (exit code 2): missing or unreadable files, image/label shape or geometry mismatches,
non-integer or out-of-range labels, NaN/Inf values, empty masks (a warning with ``allow_empty``),
label maps with several channels, and channel counts that differ between cases. The report also
gives per-class voxel fractions, spacing and shape statistics and the intensity range.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.datasets import Case, DatasetInfo, discover
from medseg.data.io import ImageMeta, read_image
from medseg.errors import MedsegError

GEOMETRY_TOLERANCE = 1e-3  # relative spacing / absolute direction; origin: this many mm per mm of spacing


@dataclass
class CheckReport:
    """What :func:`check_dataset` found. ``ok`` is True when there are no errors."""

    root: Path
    layout: str = "unknown"
    spatial_dims: int = 0
    num_cases: int = 0
    num_test: int = 0
    labels: dict[int, str] = field(default_factory=dict)
    channels: dict[int, int] = field(default_factory=dict)  # channel count -> number of cases
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    class_fractions: dict[int, float] = field(default_factory=dict)
    spacing: dict[str, list[float]] = field(default_factory=dict)  # min / median / max per axis
    shape: dict[str, list[int]] = field(default_factory=dict)  # min / median / max per axis
    intensity: dict[str, float] = field(default_factory=dict)  # min, p01, p99, max over all images

    @property
    def ok(self) -> bool:
        """True when nothing stops training (warnings allowed)."""
        return not self.errors

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "root": str(self.root), "layout": self.layout, "spatial_dims": self.spatial_dims,
            "num_cases": self.num_cases, "num_test": self.num_test, "labels": self.labels,
            "channels": self.channels, "errors": self.errors, "warnings": self.warnings,
            "class_fractions": self.class_fractions, "spacing": self.spacing, "shape": self.shape,
            "intensity": self.intensity,
        }


def _geometry_problem(a: ImageMeta, b: ImageMeta) -> str | None:
    """Why two images do not share a voxel grid, or None."""
    if a.shape != b.shape:
        return f"shape {list(a.shape)} vs {list(b.shape)}"
    sa, sb = np.asarray(a.spacing), np.asarray(b.spacing)
    if not np.allclose(sa, sb, rtol=GEOMETRY_TOLERANCE, atol=0):
        return f"spacing {np.round(sa, 4).tolist()} vs {np.round(sb, 4).tolist()}"
    if not np.allclose(a.direction, b.direction, atol=GEOMETRY_TOLERANCE):
        return "direction (orientation) differs"
    if not np.allclose(a.origin, b.origin, atol=GEOMETRY_TOLERANCE * float(sa.max())):
        return f"origin {np.round(a.origin, 3).tolist()} vs {np.round(b.origin, 3).tolist()}"
    return None


class _Checker:
    """Accumulates per-case findings into a :class:`CheckReport`."""

    def __init__(self, info: DatasetInfo, report: CheckReport, allow_empty: bool) -> None:
        self.info, self.report, self.allow_empty = info, report, allow_empty
        self.counts: dict[int, int] = {}
        self.spacings: list[tuple[float, ...]] = []
        self.shapes: list[tuple[int, ...]] = []
        self.lo: list[float] = []
        self.hi: list[float] = []
        self.samples: list[np.ndarray] = []

    def read(self, path: Path, what: str) -> tuple[np.ndarray, ImageMeta] | None:
        if not path.exists():
            self.report.errors.append(f"{path}: {what} file missing")
            return None
        try:
            return read_image(path)
        except MedsegError as err:
            self.report.errors.append(f"{path}: {what} unreadable ({err})")
        except Exception as err:  # a corrupt file can fail anywhere inside a reader
            self.report.errors.append(f"{path}: {what} unreadable ({type(err).__name__}: {err})")
        return None

    def image(self, case: Case, test: bool) -> ImageMeta | None:
        """Read every channel file of a case; return the first one's geometry (None if unreadable)."""
        first: ImageMeta | None = None
        channels = 0
        for path in case.images:
            result = self.read(path, "image")
            if result is None:
                return None
            array, meta = result
            channels += meta.num_channels
            if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
                bad = int((~np.isfinite(array)).sum())
                self.report.errors.append(f"{path}: image holds {bad} NaN/Inf value(s); fix or mask them")
            elif array.size:
                finite = array[np.isfinite(array)] if np.issubdtype(array.dtype, np.floating) else array
                self.lo.append(float(finite.min()))
                self.hi.append(float(finite.max()))
                self.samples.append(np.random.default_rng(0).choice(finite.ravel(), min(finite.size, 20000)))
            if first is None:
                first = meta
                self.spacings.append(meta.spacing)
                self.shapes.append(meta.shape)
            else:
                problem = _geometry_problem(first, meta)
                if problem:
                    self.report.errors.append(f"{path}: channel grid differs from {case.images[0].name} ({problem})")
        self.report.channels[channels] = self.report.channels.get(channels, 0) + 1
        return first

    def label(self, case: Case, image: ImageMeta | None) -> None:
        assert case.label is not None
        result = self.read(case.label, "label")
        if result is None:
            return
        array, meta = result
        path = case.label
        if meta.num_channels != 1:
            self.report.errors.append(f"{path}: label has {meta.num_channels} channels; save one channel of class indices")
            return
        if image is not None:
            problem = _geometry_problem(image, meta)
            if problem:
                self.report.errors.append(f"{path}: label does not match its image {case.images[0].name} ({problem})")
        if np.issubdtype(array.dtype, np.floating):
            if not np.isfinite(array).all():
                self.report.errors.append(f"{path}: label holds NaN/Inf values; labels must be class indices")
                return
            if not np.array_equal(array, np.rint(array)):
                self.report.errors.append(f"{path}: label holds non-integer values; save whole class indices (0, 1, ...)")
                return
        values, counts = np.unique(array.astype(np.int64), return_counts=True)
        unknown = [int(v) for v in values if int(v) not in self.info.labels]
        if unknown:
            known = ", ".join(str(k) for k in self.info.labels)
            self.report.errors.append(
                f"{path}: label value(s) {unknown[:5]} out of range (declared classes: {known}); fix the mask or the labels"
            )
        for v, c in zip(values, counts):
            self.counts[int(v)] = self.counts.get(int(v), 0) + int(c)
        if not (values != 0).any():
            message = f"{path}: empty mask (no foreground)"
            if self.allow_empty:
                self.report.warnings.append(message)
            else:
                self.report.errors.append(message + "; remove the case or pass --allow-empty")

    def finish(self) -> None:
        total = sum(self.counts.values())
        self.report.class_fractions = {k: self.counts.get(k, 0) / total for k in self.info.labels} if total else {}
        for name, rows in (("spacing", self.spacings), ("shape", self.shapes)):
            arr = np.asarray(rows, dtype=np.float64) if rows else None
            if arr is not None and arr.ndim == 2:
                stats = {"min": arr.min(0), "median": np.median(arr, 0), "max": arr.max(0)}
                cast: Callable[[float], float | int] = float if name == "spacing" else int
                getattr(self.report, name).update({k: [cast(round(x, 4)) for x in v] for k, v in stats.items()})
        if self.lo:
            pooled = np.concatenate(self.samples) if self.samples else np.zeros(1)
            self.report.intensity = {
                "min": min(self.lo), "p01": float(np.percentile(pooled, 1)),
                "p99": float(np.percentile(pooled, 99)), "max": max(self.hi),
            }
        if len(self.report.channels) > 1:
            found = ", ".join(f"{n} channel(s) in {c} case(s)" for n, c in sorted(self.report.channels.items()))
            self.report.errors.append(f"{self.info.root}: channel counts differ between cases ({found}); give every case the same channels")
        if self.report.channels and self.info.num_channels not in self.report.channels:
            self.report.warnings.append(
                f"{self.info.root}: dataset.json declares {self.info.num_channels} channel(s) but the images hold "
                f"{', '.join(str(c) for c in self.report.channels)}"
            )
        present = {k for k, c in self.counts.items() if c}
        for k, name in self.info.labels.items():
            if k and k not in present and total:
                self.report.warnings.append(f"{self.info.root}: class {k} ({name}) appears in no label")


def check_dataset(path: str | os.PathLike[str], allow_empty: bool = False) -> CheckReport:
    """Read every case of the dataset at ``path`` and report what would break or bias training.

    ``allow_empty`` turns empty masks into warnings (for data where "no lesion" is a valid label).
    """
    root = Path(path)
    report = CheckReport(root)
    try:
        info = discover(root)
    except MedsegError as err:
        report.errors.append(str(err))
        return report
    report.layout, report.spatial_dims = info.layout, info.spatial_dims
    report.num_cases, report.num_test, report.labels = len(info.cases), len(info.test_cases), dict(info.labels)
    report.errors.extend(info.problems)
    reported = {p.split(":")[0] for p in info.problems}
    checker = _Checker(info, report, allow_empty)
    for case in info.cases:
        if any(str(p) in reported for p in case.images) or (case.label is not None and str(case.label) in reported):
            continue  # already reported as missing
        meta = checker.image(case, test=False)
        if case.label is not None:
            checker.label(case, meta)
    for case in info.test_cases:
        if not any(str(p) in reported for p in case.images):
            checker.image(case, test=True)
    checker.finish()
    return report
