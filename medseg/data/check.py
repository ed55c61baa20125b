"""Validate a dataset before anyone trains on it: ``medseg data check PATH``.

Errors (exit code 2): missing or unreadable files, image/label shape or geometry mismatches,
non-integer or out-of-range labels, NaN/Inf values, empty masks (a warning with ``allow_empty``),
label maps with several channels, and channel counts that differ between cases. The report also
gives per-class voxel fractions, spacing and shape statistics and the intensity range.

:func:`require_valid` is the same check as a gate: it raises one :class:`MedsegError` line, so a bad
mask stops a run before training instead of deep inside it. ``check_dataset(..., on_case=...)``
hands each labelled case's arrays to a caller (``medseg.planning`` measures its fingerprint from
them), so the dataset is read once for both.
"""

from __future__ import annotations

import dataclasses
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
EMPTY_FIX = "; remove the case or pass --allow-empty"
_SLAB_VOXELS = 1 << 20  # label values are counted a slab of about this many voxels at a time


@dataclass
class CheckReport:
    """What :func:`check_dataset` found. ``ok`` is True when there are no errors.

    ``empty_masks`` lists the empty-mask findings (also in ``errors``, or in ``warnings`` with
    ``allow_empty``), so a stored report can be re-judged with :func:`allowing_empty`.
    """

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
    empty_masks: list[str] = field(default_factory=list)

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
            "intensity": self.intensity, "empty_masks": self.empty_masks,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckReport:
        """The report :meth:`as_dict` wrote (JSON turned the integer keys into strings)."""
        return cls(
            Path(data["root"]), data["layout"], int(data["spatial_dims"]), int(data["num_cases"]),
            int(data["num_test"]), {int(k): str(v) for k, v in data["labels"].items()},
            {int(k): int(v) for k, v in data["channels"].items()}, list(data["errors"]), list(data["warnings"]),
            {int(k): float(v) for k, v in data["class_fractions"].items()}, dict(data["spacing"]),
            dict(data["shape"]), dict(data["intensity"]), list(data.get("empty_masks", [])),
        )

    def raise_for_errors(self) -> CheckReport:
        """Raise the first error as one :class:`MedsegError` line (with how many more); else return self."""
        if self.ok:
            return self
        more = len(self.errors) - 1
        also = f" (and {more} more error(s))" if more else ""
        raise MedsegError(f"{self.errors[0]}{also}; see them all with: medseg data check {self.root}")


@dataclass
class CaseArrays:
    """One labelled case as :func:`check_dataset` read it, for ``on_case`` callers.

    ``images``: ``(array, meta)`` per image file (``[]`` when one is missing or unreadable).
    ``label``: the class-index map (integer dtype) when it is usable (readable, one channel, whole
    values, on the first image's grid), else None. ``label_counts``: voxels per label value.
    """

    case: Case
    images: list[tuple[np.ndarray, ImageMeta]]
    label: np.ndarray | None
    label_meta: ImageMeta | None
    label_counts: dict[int, int]


CaseCallback = Callable[[CaseArrays], None]
Progress = Callable[[int, int], None]


def _geometry_problem(a: ImageMeta, b: ImageMeta) -> str | None:
    """Why two images do not share a voxel grid, or None."""
    if a.shape != b.shape:
        return f"shape {list(a.shape)} vs {list(b.shape)}"
    if not (a.has_geometry and b.has_geometry):  # a PNG's identity geometry says nothing
        return None
    sa, sb = np.asarray(a.spacing), np.asarray(b.spacing)
    if not np.allclose(sa, sb, rtol=GEOMETRY_TOLERANCE, atol=0):
        return f"spacing {np.round(sa, 4).tolist()} vs {np.round(sb, 4).tolist()}"
    if not np.allclose(a.direction, b.direction, atol=GEOMETRY_TOLERANCE):
        return "direction (orientation) differs"
    if not np.allclose(a.origin, b.origin, atol=GEOMETRY_TOLERANCE * float(sa.max())):
        return f"origin {np.round(a.origin, 3).tolist()} vs {np.round(b.origin, 3).tolist()}"
    return None


def value_counts(array: np.ndarray) -> dict[int, int]:
    """Voxels per integer value, counted a slab at a time (``np.unique`` sorts: 8x slower on a CT)."""
    if array.size == 0:
        return {}
    lo, hi = int(array.min()), int(array.max())
    if array.dtype.kind not in "biu" or hi - lo > 1 << 20:
        values, counts = np.unique(array.astype(np.int64, copy=False), return_counts=True)
        return {int(v): int(c) for v, c in zip(values, counts)}
    flat = array.reshape(array.shape[0], -1) if array.ndim > 1 else array.reshape(-1, 1)
    step = max(1, _SLAB_VOXELS // max(1, flat.shape[1]))
    counts = np.zeros(hi - lo + 1, np.int64)
    for start in range(0, flat.shape[0], step):
        slab = flat[start:start + step].astype(np.int64).ravel() - lo
        counts += np.bincount(slab, minlength=counts.size)
    return {lo + int(v): int(counts[v]) for v in np.flatnonzero(counts)}


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

    def image(self, case: Case) -> list[tuple[np.ndarray, ImageMeta]]:
        """Read and check every channel file of a case; ``[]`` when one is unreadable."""
        read: list[tuple[np.ndarray, ImageMeta]] = []
        for path in case.images:
            result = self.read(path, "image")
            if result is None:
                return []
            array, meta = result
            self._intensities(path, array)
            if not read:
                self.spacings.append(meta.spacing)
                self.shapes.append(meta.shape)
            else:
                problem = _geometry_problem(read[0][1], meta)
                if problem:
                    self.report.errors.append(f"{path}: channel grid differs from {case.images[0].name} ({problem})")
            read.append(result)
        channels = sum(meta.num_channels for _, meta in read)
        self.report.channels[channels] = self.report.channels.get(channels, 0) + 1
        return read

    def _intensities(self, path: Path, array: np.ndarray) -> None:
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            bad = int((~np.isfinite(array)).sum())
            self.report.errors.append(f"{path}: image holds {bad} NaN/Inf value(s); fix or mask them")
        elif array.size:
            finite = array[np.isfinite(array)] if np.issubdtype(array.dtype, np.floating) else array
            self.lo.append(float(finite.min()))
            self.hi.append(float(finite.max()))
            self.samples.append(np.random.default_rng(0).choice(finite.ravel(), min(finite.size, 20000)))

    def label(self, case: Case, image: ImageMeta | None) -> tuple[np.ndarray | None, ImageMeta | None, dict[int, int]]:
        """Read and check a label; return it (None when unusable), its geometry and its value counts."""
        assert case.label is not None
        result = self.read(case.label, "label")
        if result is None:
            return None, None, {}
        array, meta = result
        path = case.label
        if meta.num_channels != 1:
            self.report.errors.append(f"{path}: label has {meta.num_channels} channels; save one channel of class indices")
            return None, meta, {}
        aligned = True
        if image is not None:
            problem = _geometry_problem(image, meta)
            if problem:
                aligned = False
                self.report.errors.append(
                    f"{path}: label does not match its image {case.images[0].name} ({problem}); "
                    "save the label on its image's voxel grid"
                )
        if np.issubdtype(array.dtype, np.floating):
            if not np.isfinite(array).all():
                self.report.errors.append(f"{path}: label holds NaN/Inf values; labels must be class indices")
                return None, meta, {}
            if not np.array_equal(array, np.rint(array)):
                self.report.errors.append(f"{path}: label holds non-integer values; save whole class indices (0, 1, ...)")
                return None, meta, {}
            array = array.astype(np.int64)
        counts = value_counts(array)
        self._values(path, counts)
        return (array if aligned and image is not None else None), meta, counts

    def _values(self, path: Path, counts: dict[int, int]) -> None:
        unknown = [v for v in counts if v not in self.info.labels]
        if unknown:
            known = ", ".join(str(k) for k in self.info.labels)
            self.report.errors.append(
                f"{path}: label value(s) {unknown[:5]} out of range (declared classes: {known}); "
                "fix the mask or declare the class in dataset.json 'labels'"
            )
        for v, c in counts.items():
            self.counts[v] = self.counts.get(v, 0) + c
        if not any(v != 0 for v in counts):
            message = f"{path}: empty mask (no foreground)"
            self.report.empty_masks.append(message)
            if self.allow_empty:
                self.report.warnings.append(message)
            else:
                self.report.errors.append(message + EMPTY_FIX)

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
        self._dataset_warnings(total)

    def _dataset_warnings(self, total: int) -> None:
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


def _start(path_or_info: str | os.PathLike[str] | DatasetInfo) -> tuple[CheckReport, DatasetInfo | None]:
    """An empty report for the dataset, and its :class:`DatasetInfo` (None when discovery failed)."""
    if isinstance(path_or_info, DatasetInfo):
        info: DatasetInfo | None = path_or_info
        report = CheckReport(path_or_info.root)
    else:
        report = CheckReport(Path(path_or_info))
        try:
            info = discover(report.root)
        except MedsegError as err:
            report.errors.append(str(err))
            return report, None
    assert info is not None
    report.layout, report.spatial_dims = info.layout, info.spatial_dims
    report.num_cases, report.num_test, report.labels = len(info.cases), len(info.test_cases), dict(info.labels)
    report.errors.extend(info.problems)
    return report, info


def check_dataset(
    path: str | os.PathLike[str] | DatasetInfo,
    allow_empty: bool = False,
    *,
    on_case: CaseCallback | None = None,
    progress: Progress | None = None,
) -> CheckReport:
    """Read every case of the dataset at ``path`` and report what would break or bias training.

    ``path`` may also be a :class:`DatasetInfo` from :func:`discover`. ``allow_empty`` turns empty
    masks into warnings (for data where "no lesion" is a valid label). ``on_case`` gets each labelled
    case's arrays while they are in memory (one case at a time); ``progress(done, total)`` is called
    after each case, test cases included.
    """
    report, info = _start(path)
    if info is None:
        return report
    reported = {p.split(":")[0] for p in info.problems}
    checker = _Checker(info, report, allow_empty)
    total = len(info.cases) + len(info.test_cases)
    for done, case in enumerate(info.cases, 1):
        if not any(str(p) in reported for p in case.images) and not (case.label is not None and str(case.label) in reported):
            images = checker.image(case)
            if case.label is not None:
                label, label_meta, counts = checker.label(case, images[0][1] if images else None)
                if on_case is not None:
                    on_case(CaseArrays(case, images, label, label_meta, counts))
            del images  # one case in memory at a time
        if progress is not None:
            progress(done, total)
    for done, case in enumerate(info.test_cases, len(info.cases) + 1):
        if not any(str(p) in reported for p in case.images):
            checker.image(case)
        if progress is not None:
            progress(done, total)
    checker.finish()
    return report


def require_valid(path: str | os.PathLike[str] | DatasetInfo, allow_empty: bool = False) -> CheckReport:
    """:func:`check_dataset`, raising its first error as one :class:`MedsegError` line.

    Call it before training, so that a mask with an undeclared value or off its image's grid stops
    the run with the file, the value and the fix, not with an index error deep in the loss.
    ``medseg.planning.analyse(...).require_valid()`` is the cached form (no voxels read when nothing changed).
    """
    return check_dataset(path, allow_empty).raise_for_errors()


def allowing_empty(report: CheckReport, allow_empty: bool) -> CheckReport:
    """A strict report (``allow_empty=False``) as :func:`check_dataset` would give it with ``allow_empty``."""
    if not allow_empty or not report.empty_masks:
        return report
    strict = {m + EMPTY_FIX for m in report.empty_masks}
    others = [w for w in report.warnings if w not in set(report.empty_masks)]
    return dataclasses.replace(
        report, errors=[e for e in report.errors if e not in strict], warnings=[*report.empty_masks, *others],
    )
