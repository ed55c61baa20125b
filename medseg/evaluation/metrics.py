"""Segmentation metrics per case and foreground class, in physical units (mm), on integer label maps.

One pass finds every class's bounding box (``scipy.ndimage.find_objects``); each class is then
measured inside the box that holds both its prediction and its ground truth, so no full-volume
copy per class is made. Surface edges and distances come from MONAI (``get_mask_edges`` and
``get_surface_distance``, a KD-tree over the edge voxels scaled by the spacing), the same functions
behind ``HausdorffDistanceMetric``, ``SurfaceDistanceMetric`` and ``compute_surface_dice``; the
values therefore equal MONAI's (tested), while the distances are computed once and shared by HD95,
ASSD and NSD.

Empty-mask policy (``status`` of a row):

=============  =====  =====  ==================  ============  =========================
status         Dice   IoU    HD95 / ASSD (mm)    NSD           sens. / prec. / rel. vol.
=============  =====  =====  ==================  ============  =========================
both_empty     1      1      NaN                 1             NaN / NaN / NaN
pred_empty     0      0      inf                 0             0 / NaN / -1
gt_empty       0      0      inf                 0             NaN / 0 / NaN
=============  =====  =====  ==================  ============  =========================

``inf`` follows MONAI (a missing surface is infinitely far). NSD of two empty masks is 1, like
Dice, where MONAI's ``compute_surface_dice`` returns NaN. ASSD is MONAI's symmetric definition: the
mean over the union of both directed distance sets, not the mean of the two directed means.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from monai.metrics.utils import get_mask_edges, get_surface_distance
from scipy import ndimage

from medseg.errors import MedsegError
from medseg.evaluation.lesions import LesionCounts, lesion_counts

#: A row of the per-case table: one case and one foreground class.
Row = dict[str, Any]


@dataclass
class ClassStats:
    """What every metric of one class needs: confusion counts, voxel volume, surface distances."""

    tp: int
    fp: int
    fn: int
    tn: int
    voxel_volume: float  # mL for 3D, mm^2 for 2D
    tolerance_mm: float
    pred_to_gt: np.ndarray = field(default_factory=lambda: np.zeros(0))  # mm, one per prediction edge voxel
    gt_to_pred: np.ndarray = field(default_factory=lambda: np.zeros(0))  # mm, one per ground-truth edge voxel
    lesions: LesionCounts = field(default_factory=lambda: LesionCounts(0, 0, 0, 0, 0.0))

    @property
    def pred_empty(self) -> bool:
        return self.tp + self.fp == 0

    @property
    def gt_empty(self) -> bool:
        return self.tp + self.fn == 0

    @property
    def status(self) -> str:
        """``ok``, ``both_empty``, ``pred_empty`` (missed structure) or ``gt_empty`` (spurious one)."""
        if self.pred_empty and self.gt_empty:
            return "both_empty"
        return "pred_empty" if self.pred_empty else "gt_empty" if self.gt_empty else "ok"


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else float("nan")


def _overlap(score: Callable[[ClassStats], float]) -> Callable[[ClassStats], float]:
    """Overlap scores: 1 when both masks are empty (nothing to find, nothing found)."""
    return lambda s: 1.0 if s.status == "both_empty" else score(s)


def _distance(score: Callable[[ClassStats], float]) -> Callable[[ClassStats], float]:
    """Surface distances: NaN when both masks are empty, inf when only one is."""
    empty = {"both_empty": float("nan"), "pred_empty": float("inf"), "gt_empty": float("inf")}
    return lambda s: empty[s.status] if s.status in empty else score(s)


def _hd95(s: ClassStats) -> float:
    # MONAI: the larger of the two directed 95th percentiles (linear interpolation, as torch.quantile).
    return float(max(np.percentile(s.pred_to_gt, 95), np.percentile(s.gt_to_pred, 95)))


def _assd(s: ClassStats) -> float:
    return float((s.pred_to_gt.sum() + s.gt_to_pred.sum()) / (s.pred_to_gt.size + s.gt_to_pred.size))


def _nsd(s: ClassStats) -> float:
    tau = s.tolerance_mm
    close = np.count_nonzero(s.pred_to_gt <= tau) + np.count_nonzero(s.gt_to_pred <= tau)
    return float(close / (s.pred_to_gt.size + s.gt_to_pred.size))


def _volume(count: int, s: ClassStats) -> float:
    return float(count * s.voxel_volume)


#: Metric registry: name -> function of one class's statistics. Order is the CSV column order.
METRICS: dict[str, Callable[[ClassStats], float]] = {
    "dice": _overlap(lambda s: _ratio(2 * s.tp, 2 * s.tp + s.fp + s.fn)),
    "iou": _overlap(lambda s: _ratio(s.tp, s.tp + s.fp + s.fn)),
    "hd95": _distance(_hd95),
    "assd": _distance(_assd),
    "nsd": _overlap(lambda s: 0.0 if s.pred_empty or s.gt_empty else _nsd(s)),
    "sensitivity": lambda s: _ratio(s.tp, s.tp + s.fn),
    "specificity": lambda s: _ratio(s.tn, s.tn + s.fp),
    "precision": lambda s: _ratio(s.tp, s.tp + s.fp),
    "volume_pred": lambda s: _volume(s.tp + s.fp, s),
    "volume_gt": lambda s: _volume(s.tp + s.fn, s),
    "volume_diff": lambda s: _volume(s.fp - s.fn, s),
    "volume_diff_rel": lambda s: _ratio(s.fp - s.fn, s.tp + s.fn),
    # lesion-wise (connected components, see medseg.evaluation.lesions for the matching rule)
    "lesions_gt": lambda s: float(s.lesions.gt),
    "lesions_pred": lambda s: float(s.lesions.pred),
    "lesions_missed": lambda s: float(s.lesions.missed),
    "lesions_false": lambda s: float(s.lesions.false),
    "lesion_sensitivity": lambda s: s.lesions.sensitivity,
    "lesion_precision": lambda s: s.lesions.precision,
    "lesion_f1": lambda s: s.lesions.f1,
    "lesion_dice": lambda s: s.lesions.dice,
}

#: Metrics that ``summary.json`` and the CLI table aggregate (volumes are per-case facts, not scores).
SUMMARY_METRICS = ("dice", "iou", "hd95", "assd", "nsd", "sensitivity", "specificity", "precision",
                   "volume_diff", "volume_diff_rel", "lesion_sensitivity", "lesion_precision", "lesion_f1",
                   "lesion_dice")

#: Where each empty-mask status is counted in the summary.
STATUSES = ("ok", "both_empty", "pred_empty", "gt_empty")


def register_metric(name: str, fn: Callable[[ClassStats], float]) -> None:
    """Add a metric computed from :class:`ClassStats`; it appears in every row from then on."""
    if name in METRICS:
        raise ValueError(f"metric {name!r} is already registered")
    METRICS[name] = fn


def as_label_map(array: np.ndarray, name: str = "array") -> np.ndarray:
    """Return ``array`` as a non-negative integer label map (float maps must hold whole numbers)."""
    array = np.asarray(array)
    if array.dtype == bool:
        return array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.issubdtype(array.dtype, np.floating) or not np.array_equal(array, np.round(array)):
            raise MedsegError(f"{name}: expected an integer label map, got {array.dtype} values that are not "
                              "whole numbers; threshold or argmax the prediction first")
        array = array.astype(np.int64)
    if array.size and array.min() < 0:
        raise MedsegError(f"{name}: label maps must be non-negative, found {array.min()}")
    return array


def surface_distances(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Directed distances in mm from each prediction edge voxel to the ground-truth edge, and back.

    ``pred`` and ``gt`` are boolean masks, both non-empty. Edges and distances are MONAI's
    (scipy binary erosion, a KD-tree over edge coordinates scaled by ``spacing``).
    """
    edges_pred, edges_gt = get_mask_edges(pred, gt, crop=False)
    sp = None if spacing is None else [float(v) for v in spacing]
    d_pg = np.asarray(get_surface_distance(edges_pred, edges_gt, "euclidean", sp), dtype=np.float64)
    d_gp = np.asarray(get_surface_distance(edges_gt, edges_pred, "euclidean", sp), dtype=np.float64)
    return d_pg, d_gp


def _boxes(label_map: np.ndarray, max_label: int) -> list[tuple[slice, ...] | None]:
    return ndimage.find_objects(label_map, max_label=max_label) if max_label > 0 else []


def _union(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    if a is None or b is None:
        return a or b
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def class_stats(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float] | None = None,
    classes: Sequence[int] | None = None,
    tolerance_mm: float = 1.0,
) -> dict[int, ClassStats]:
    """Confusion counts and surface distances for each foreground class of two label maps.

    ``classes`` defaults to every non-zero label present in either map. Work per class is confined
    to the bounding box of its prediction and ground truth.
    """
    pred = as_label_map(pred, "prediction")
    gt = as_label_map(gt, "ground truth")
    if pred.shape != gt.shape:
        raise MedsegError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    spacing = tuple(float(v) for v in spacing) if spacing is not None else (1.0,) * gt.ndim
    if len(spacing) != gt.ndim:
        raise MedsegError(f"spacing {spacing} has {len(spacing)} values for a {gt.ndim}D label map")
    if classes is None:
        classes = sorted(int(v) for v in np.union1d(np.unique(pred), np.unique(gt)) if v != 0)
    classes = [int(c) for c in classes if int(c) != 0]
    top = max(classes, default=0)
    box_pred, box_gt = _boxes(pred, top), _boxes(gt, top)
    voxel = float(np.prod(spacing)) / (1000.0 if gt.ndim == 3 else 1.0)
    out: dict[int, ClassStats] = {}
    for c in classes:
        box = _union(box_pred[c - 1] if c <= len(box_pred) else None, box_gt[c - 1] if c <= len(box_gt) else None)
        if box is None:
            out[c] = ClassStats(0, 0, 0, int(gt.size), voxel, tolerance_mm)
            continue
        p, g = pred[box] == c, gt[box] == c
        tp = int(np.count_nonzero(p & g))
        n_p, n_g = int(np.count_nonzero(p)), int(np.count_nonzero(g))
        stats = ClassStats(tp, n_p - tp, n_g - tp, int(gt.size) - n_p - n_g + tp, voxel, tolerance_mm)
        if n_p and n_g:
            stats.pred_to_gt, stats.gt_to_pred = surface_distances(p, g, spacing)
        stats.lesions = lesion_counts(p, g)  # the box holds every voxel of both masks
        out[c] = stats
    return out


def evaluate_pair(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float] | None = None,
    labels: Mapping[int, str] | None = None,
    tolerance_mm: float = 1.0,
) -> list[Row]:
    """One row per foreground class: ``label``, ``class``, ``status``, every metric in :data:`METRICS`.

    ``labels`` maps label values to names (0, background, is skipped); without it every non-zero
    value found in either map is a class named by its number. Distances and volumes use ``spacing``
    (mm per array axis); volumes are in mL for 3D and mm^2 for 2D (``volume_unit``).
    """
    classes = None if labels is None else sorted(int(k) for k in labels if int(k) != 0)
    stats = class_stats(pred, gt, spacing, classes, tolerance_mm)
    unit = "mL" if np.ndim(gt) == 3 else "mm2"
    rows = []
    for c, s in stats.items():
        row: Row = {"label": c, "class": (labels or {}).get(c, str(c)), "status": s.status}
        row.update({name: fn(s) for name, fn in METRICS.items()})
        row.update(volume_unit=unit, tp=s.tp, fp=s.fp, fn=s.fn, tn=s.tn)
        rows.append(row)
    return rows


def both_empty_row(label: int, name: str, n_voxels: int, ndim: int, tolerance_mm: float = 1.0) -> Row:
    """The row of a class absent from both maps (used when a class appears only in other cases)."""
    s = ClassStats(0, 0, 0, int(n_voxels), 0.0, tolerance_mm)
    row: Row = {"label": int(label), "class": name, "status": s.status}
    row.update({k: fn(s) for k, fn in METRICS.items()})
    row.update(volume_unit="mL" if ndim == 3 else "mm2", tp=0, fp=0, fn=0, tn=int(n_voxels))
    return row
