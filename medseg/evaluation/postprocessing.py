"""Post-processing chosen from validation, as ``nnUNetv2_determine_postprocessing`` does, and a step further.

For each class, on the out-of-fold predictions of a cross-validation, three choices are compared by
the class's mean Dice over the cases: nothing, the largest connected component only, and removing
components smaller than a size threshold. The threshold is learned: every size at which a predicted
component of that class could be cut is tried, and the best one kept. An operation is kept only
when it raises the class's mean Dice (by more than :data:`MIN_GAIN`); it only ever turns voxels of
its own class into background, so it lowers no other class's Dice. Sizes are in mm³ (mm² in 2D),
so a threshold holds at another resolution. :func:`medseg.inference.postprocess.apply_postprocessing`
applies the result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

#: Mean-Dice gain an operation must bring to be kept (smaller gains are noise at these sample sizes).
MIN_GAIN = 1e-4
#: Most thresholds tried per class (quantiles of the predicted components' sizes beyond that).
MAX_THRESHOLDS = 64


@dataclass
class Components:
    """One class of one case: its predicted components' sizes and overlaps with the ground truth."""

    sizes: np.ndarray  # voxels per predicted component
    hits: np.ndarray  # of them, voxels inside the ground truth
    truth: int  # ground-truth voxels
    voxel_size: float  # mm³ (mm²) of one voxel

    def dice(self, keep: np.ndarray | None = None) -> float:
        """Dice with only the components ``keep`` (all of them by default); both empty gives 1."""
        sizes, hits = (self.sizes, self.hits) if keep is None else (self.sizes[keep], self.hits[keep])
        denominator = int(sizes.sum()) + self.truth
        return 1.0 if denominator == 0 else 2.0 * float(hits.sum()) / denominator


def components_of(pred: np.ndarray, gt: np.ndarray, label: int, voxel_size: float) -> Components:
    """The predicted components (full connectivity) of ``label`` in one case, measured against ``gt``."""
    mask, truth = pred == label, gt == label
    structure = ndimage.generate_binary_structure(pred.ndim, pred.ndim)
    components, n = ndimage.label(mask, structure=structure, output=np.int32)
    sizes = np.bincount(components.ravel(), minlength=n + 1)[1:]
    hits = np.bincount(components[truth], minlength=n + 1)[1:]
    return Components(sizes, hits, int(np.count_nonzero(truth)), float(voxel_size))


def _mean_dice(cases: Sequence[Components], keep: Any) -> float:
    return float(np.mean([c.dice(keep(c)) for c in cases]))


def _largest(c: Components) -> np.ndarray | None:
    if c.sizes.size < 2:
        return None
    keep = np.zeros(c.sizes.size, dtype=bool)
    keep[int(c.sizes.argmax())] = True
    return keep


def _thresholds(cases: Sequence[Components]) -> list[float]:
    """Candidate minimum sizes (mm³): just above each predicted component's size."""
    sizes = np.unique(np.concatenate([c.sizes * c.voxel_size for c in cases if c.sizes.size] or [np.zeros(0)]))
    if sizes.size > MAX_THRESHOLDS:
        sizes = np.unique(np.quantile(sizes, np.linspace(0, 1, MAX_THRESHOLDS)))
    return [float(s) * (1 + 1e-6) + 1e-9 for s in sizes[:-1]]  # never every component of every case


def choose_for_class(cases: Sequence[Components]) -> dict[str, Any]:
    """The best of none / largest component / small-component removal for one class."""
    before = _mean_dice(cases, lambda c: None)
    best: dict[str, Any] = {"operation": "none", "dice_before": before, "dice_after": before}
    largest = _mean_dice(cases, _largest)
    if largest > best["dice_after"] + MIN_GAIN:
        best.update(operation="largest_component", dice_after=largest)
    for threshold in _thresholds(cases):
        dice = _mean_dice(cases, lambda c, t=threshold: c.sizes * c.voxel_size >= t)
        if dice > best["dice_after"] + MIN_GAIN:
            best.update(operation="remove_small", min_size=threshold, dice_after=dice)
    return best


def choose_postprocessing(
    pairs: Sequence[tuple[np.ndarray, np.ndarray, float]], labels: Mapping[int, str]
) -> dict[str, Any]:
    """Per foreground class, the operation that raises the mean Dice over ``(pred, gt, voxel size)`` pairs.

    Returns ``{"classes": {"1": {"name", "operation", "min_size"?, "dice_before", "dice_after"}}, "cases": n}``,
    what ``postprocessing.json`` holds.
    """
    classes: dict[str, Any] = {}
    for label in sorted(k for k in labels if k != 0):
        cases = [components_of(pred, gt, label, voxel) for pred, gt, voxel in pairs]
        classes[str(label)] = {"name": labels[label], **choose_for_class(cases)}
    return {"medseg_postprocessing": 1, "cases": len(pairs), "metric": "mean Dice over the out-of-fold cases",
            "size_unit": "mm3" if pairs and pairs[0][0].ndim == 3 else "mm2", "classes": classes}
