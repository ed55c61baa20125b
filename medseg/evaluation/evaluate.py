"""``medseg evaluate``'s library side: match prediction and ground-truth files, measure, aggregate, write.

``evaluate(pred, gt, out_dir)`` takes two files or two folders. Folder entries are matched by case
name: known image suffixes are stripped (``.nii.gz``, ``.nrrd``, ``.png`` ...), then a ``_seg``
suffix on predictions (what ``medseg predict`` appends), then, if that still finds nothing, an
nnU-Net channel suffix ``_0000``. A case whose files cannot be read or disagree in shape or geometry
is recorded as an error naming both files; the others go on. ``metrics.csv`` (one row per case
and foreground class) and ``summary.json`` are written atomically.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg import run as run_format
from medseg.data.io import IMAGE_SUFFIXES, ImageMeta, read_image
from medseg.errors import MedsegError
from medseg.evaluation.metrics import (
    METRICS,
    STATUSES,
    SUMMARY_METRICS,
    Row,
    both_empty_row,
    evaluate_pair,
)
from medseg.utils import atomic_write_json, atomic_write_text

#: Bootstrap settings of the confidence intervals in ``summary.json`` (fixed seed: reproducible).
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95

#: Relative tolerance on spacing, absolute tolerances on origin (mm) and direction cosines.
SPACING_RTOL, ORIGIN_ATOL_MM, DIRECTION_ATOL = 1e-4, 1e-3, 1e-4

FILE_COLUMNS = ("pred_file", "gt_file")


@dataclass
class CaseError:
    """A case that could not be evaluated, and why (the message names both files)."""

    case: str
    pred: Path | None
    gt: Path | None
    message: str


@dataclass
class EvaluationResult:
    """Per-case rows, their summary, the failed cases and the files written (if any)."""

    rows: list[Row]
    summary: dict[str, Any]
    errors: list[CaseError] = field(default_factory=list)
    unmatched_gt: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every prediction was evaluated."""
        return not self.errors


# -- pairing ------------------------------------------------------------------------------------------
def case_name(path: Path, prediction: bool = False) -> str:
    """``liver_3_seg.nii.gz`` -> ``liver_3`` (the run format's ``_seg`` suffix only for predictions)."""
    return run_format.case_name(path.name, prediction)


def _image_files(folder: Path, role: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or not path.name.lower().endswith(IMAGE_SUFFIXES):
            continue
        key = case_name(path, prediction=role == "PRED")
        if key in found:
            raise MedsegError(f"{role} folder {folder}: {found[key].name} and {path.name} are both case {key!r}; "
                              "keep one file per case")
        found[key] = path
    if not found:
        raise MedsegError(f"{role} folder {folder} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    return found


def match_cases(pred: Path, gt: Path) -> tuple[list[tuple[str, Path, Path | None]], list[str]]:
    """``[(case, pred_file, gt_file or None)]`` and the ground-truth cases no prediction matched."""
    pred, gt = Path(pred), Path(gt)
    for role, path in (("PRED", pred), ("GT", gt)):
        if not path.exists():
            raise MedsegError(f"{role} {path} does not exist; give a label file or a folder of them")
    if pred.is_dir() != gt.is_dir():
        raise MedsegError(f"PRED {pred} and GT {gt} must both be files or both be folders")
    if not pred.is_dir():
        return [(case_name(gt), pred, gt)], []
    preds, gts = _image_files(pred, "PRED"), _image_files(gt, "GT")
    pairs: list[tuple[str, Path, Path | None]] = []
    used: set[str] = set()
    for key, path in sorted(preds.items()):
        match = key if key in gts else re.sub(r"_\d{4}$", "", key)
        pairs.append((match if match in gts else key, path, gts.get(match)))
        if match in gts:
            used.add(match)
    return pairs, sorted(set(gts) - used)


# -- reading and checking ---------------------------------------------------------------------------
def _label_array(array: np.ndarray, meta: ImageMeta, path: Path) -> np.ndarray:
    if array.ndim > meta.spatial_dims:
        if meta.num_channels != 1:
            raise MedsegError(f"{path}: has {meta.num_channels} channels; a label map has one (an RGB mask "
                              "must be converted to label values first)")
        array = array.reshape(meta.shape)
    return array


def check_geometry(pred: ImageMeta, gt: ImageMeta) -> None:
    """Raise a one-line error naming both files when shape, spacing, origin or direction differ."""
    problem = None
    if tuple(pred.shape) != tuple(gt.shape):
        problem = f"shape {tuple(pred.shape)} vs {tuple(gt.shape)}"
    elif not (pred.has_geometry and gt.has_geometry):  # a PNG's identity geometry says nothing
        problem = None
    elif not np.allclose(pred.spacing, gt.spacing, rtol=SPACING_RTOL, atol=0):
        problem = f"spacing {_fmt(pred.spacing)} vs {_fmt(gt.spacing)} mm"
    elif not np.allclose(pred.origin, gt.origin, rtol=1e-6, atol=ORIGIN_ATOL_MM):
        problem = f"origin {_fmt(pred.origin)} vs {_fmt(gt.origin)} mm"
    elif not np.allclose(np.asarray(pred.direction), np.asarray(gt.direction), atol=DIRECTION_ATOL):
        problem = "direction cosines"
    if problem:
        raise MedsegError(f"prediction {pred.path} and ground truth {gt.path} differ in {problem}; "
                          "predict on the ground truth's grid (medseg predict writes the input's geometry)")


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _evaluate_files(
    case: str, pred: Path, gt: Path, labels: Mapping[int, str] | None, tolerance_mm: float
) -> tuple[list[Row], int, int]:
    """Rows of one case, and its voxel count and dimensionality (for rows of absent classes)."""
    gt_array, gt_meta = read_image(gt)
    pred_array, pred_meta = read_image(pred)
    check_geometry(pred_meta, gt_meta)
    gt_array = _label_array(gt_array, gt_meta, gt)
    pred_array = _label_array(pred_array, pred_meta, pred)
    try:
        rows = evaluate_arrays(pred_array, gt_array, gt_meta.spacing, labels, tolerance_mm, case)
    except MedsegError as err:
        raise MedsegError(f"prediction {pred} / ground truth {gt}: {err}") from None
    for row in rows:
        row.update(pred_file=str(pred), gt_file=str(gt))
    return rows, int(gt_array.size), gt_meta.spatial_dims


# -- public API -------------------------------------------------------------------------------------
def evaluate_arrays(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float] | None = None,
    labels: Mapping[int, str] | None = None,
    tolerance_mm: float = 1.0,
    case: str = "case",
) -> list[Row]:
    """Rows (``case`` first) for one prediction/ground-truth pair of label maps already in memory."""
    return [{"case": case, **row} for row in evaluate_pair(pred, gt, spacing, labels, tolerance_mm)]


def evaluate(
    pred: Path,
    gt: Path,
    out_dir: Path | None = None,
    labels: Mapping[int, str] | None = None,
    tolerance_mm: float = 1.0,
    progress: Callable[[int, int, str], None] | None = None,
) -> EvaluationResult:
    """Evaluate a prediction file or folder against ground truth; write ``metrics.csv`` and ``summary.json``.

    With two files, any failure raises :class:`MedsegError`. With two folders, a failing case is
    recorded in ``errors`` (and in ``summary.json``) and the rest go on. ``progress(done, total,
    case)`` is called after each case.
    """
    if tolerance_mm < 0 or not np.isfinite(tolerance_mm):
        raise MedsegError(f"--tolerance {tolerance_mm}: give a finite, non-negative tolerance in mm")
    labels = {int(k): str(v) for k, v in labels.items()} if labels else None
    pred, gt = Path(pred), Path(gt)
    pairs, unmatched = match_cases(pred, gt)
    folder_mode = pred.is_dir()
    rows: list[Row] = []
    cases: list[tuple[str, int, int]] = []  # case, voxels, ndim
    errors: list[CaseError] = []
    for done, (case, pred_file, gt_file) in enumerate(pairs, 1):
        try:
            if gt_file is None:
                raise MedsegError(f"prediction {pred_file}: no ground truth named {case}.* in {gt}; "
                                  "name them alike (a _seg suffix on predictions is allowed)")
            case_rows, voxels, ndim = _evaluate_files(case, pred_file, gt_file, labels, tolerance_mm)
        except MedsegError as err:
            if not folder_mode:
                raise
            errors.append(CaseError(case, pred_file, gt_file, str(err)))
        else:
            cases.append((case, voxels, ndim))
            rows.extend(case_rows)
        if progress is not None:
            progress(done, len(pairs), case)
    if labels is None:
        rows = _fill_absent_classes(rows, cases, tolerance_mm)
    summary = {
        "medseg_evaluation": 1, "pred": str(pred), "gt": str(gt), "tolerance_mm": float(tolerance_mm),
        "labels": {str(k): v for k, v in labels.items()} if labels else None,
        **summarise(rows),
        "n_cases": len(cases), "n_errors": len(errors),
        "errors": [{"case": e.case, "pred": e.pred, "gt": e.gt, "message": e.message} for e in errors],
        "unmatched_gt": unmatched,
    }
    result = EvaluationResult(rows, summary, errors, unmatched)
    if out_dir is not None:
        result.files = write_results(result, Path(out_dir))
    return result


def _fill_absent_classes(rows: list[Row], cases: list[tuple[str, int, int]], tol: float) -> list[Row]:
    """Without ``labels``, a class seen in any case gets a ``both_empty`` row in the cases without it."""
    classes = sorted({(int(r["label"]), str(r["class"])) for r in rows})
    if not classes:
        return rows
    by_case: dict[str, list[Row]] = {}
    for r in rows:
        by_case.setdefault(str(r["case"]), []).append(r)
    out: list[Row] = []
    for case, voxels, ndim in cases:
        have = {int(r["label"]): r for r in by_case.get(case, [])}
        files = {k: v for k, v in (by_case.get(case) or [{}])[0].items() if k in FILE_COLUMNS}
        for label, name in classes:
            out.append(have.get(label) or {"case": case, **both_empty_row(label, name, voxels, ndim, tol), **files})
    return out


def _stats(values: np.ndarray, seed: int, n_resamples: int, confidence: float) -> dict[str, Any]:
    finite = values[np.isfinite(values)]
    n = int(finite.size)
    out: dict[str, Any] = {"mean": None, "std": None, "median": None, "ci95": None, "n": n,
                           "n_nan": int(np.isnan(values).sum()), "n_inf": int(np.isinf(values).sum())}
    if n == 0:
        return out
    rng = np.random.default_rng(seed)
    means = finite[rng.integers(0, n, size=(n_resamples, n))].mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    out.update(mean=float(finite.mean()), std=float(finite.std(ddof=1)) if n > 1 else 0.0,
               median=float(np.median(finite)),
               ci95=[float(v) for v in np.percentile(means, [tail, 100 - tail])])
    return out


def summarise(
    rows: Sequence[Mapping[str, Any]],
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> dict[str, Any]:
    """Per metric and class: mean, std (n-1), median, bootstrap CI of the mean, n; empty-case counts.

    Statistics use the finite values only; ``n_nan`` and ``n_inf`` say how many were left out, and
    ``counts`` gives, per class, how many cases were ``ok``, ``both_empty``, ``pred_empty`` (missed)
    and ``gt_empty`` (spurious). ``overall`` pools every case and class.
    """
    classes = sorted({(int(r["label"]), str(r["class"])) for r in rows})
    metrics = [m for m in SUMMARY_METRICS if any(m in r for r in rows)]
    metrics += [m for m in METRICS if m not in metrics and m not in ("volume_pred", "volume_gt")
                and any(m in r for r in rows)]
    summary: dict[str, Any] = {
        "medseg_evaluation": 1,
        "n_cases": len({str(r["case"]) for r in rows}),
        "classes": {str(label): name for label, name in classes},
        "metrics": {},
        "counts": {},
        "overall": {},
        "bootstrap": {"n_resamples": n_resamples, "seed": seed, "confidence": confidence,
                      "statistic": "mean of the finite values, cases resampled with replacement"},
    }
    for metric in metrics:
        values = np.asarray([float(r[metric]) for r in rows], dtype=np.float64)
        summary["overall"][metric] = _stats(values, seed, n_resamples, confidence)
        summary["metrics"][metric] = {
            name: _stats(np.asarray([float(r[metric]) for r in rows if int(r["label"]) == label]),
                         seed, n_resamples, confidence)
            for label, name in classes
        }
    for label, name in classes:
        statuses = [r.get("status") for r in rows if int(r["label"]) == label]
        summary["counts"][name] = {s: statuses.count(s) for s in STATUSES}
    return summary


def write_results(result: EvaluationResult, out_dir: Path) -> dict[str, Path]:
    """Write ``metrics.csv`` and ``summary.json`` into ``out_dir`` atomically; return their paths."""
    files = {"csv": out_dir / "metrics.csv", "json": out_dir / "summary.json"}
    columns = ["case", "label", "class", "status", *METRICS, "volume_unit", "tp", "fp", "fn", "tn", *FILE_COLUMNS]
    columns += sorted({k for r in result.rows for k in r} - set(columns))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(result.rows)
    atomic_write_text(files["csv"], buffer.getvalue())
    atomic_write_json(files["json"], result.summary)
    return files


def read_metrics_csv(path: Path) -> list[Row]:
    """Rows of a ``metrics.csv`` with numbers parsed back (``nan``/``inf`` included)."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for key in ("label", "tp", "fp", "fn", "tn"):
            if row.get(key, "") != "":
                row[key] = int(row[key])
        for key in METRICS:
            if row.get(key, "") != "":
                row[key] = float(row[key])
    return rows
