"""Lesion-wise (object-wise) detection scores of one class: what a count of lesions needs.

The rule, per class of a case:

- lesions are the connected components of the mask, with full connectivity (8 neighbours in 2D, 26
  in 3D: touching diagonally is touching);
- a ground-truth lesion is **detected** when at least one predicted voxel lies in it; a predicted
  component is **false** when none of its voxels lies in a ground-truth lesion;
- many-to-one matches count on each side: a ground-truth lesion that the prediction splits into two
  components is one detection (both components are true), and one predicted component spanning two
  ground-truth lesions detects both;
- lesion-wise Dice (BraTS 2023's aggregate): each ground-truth lesion's Dice with the union of the
  predicted components that touch it, a false component adding a 0, averaged over both.

Rates whose denominator is 0 are NaN (no lesion to find, or none predicted), as elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class LesionCounts:
    """Counts of one class in one case (see the module docstring for the matching rule)."""

    gt: int
    pred: int
    detected: int  # ground-truth lesions with a predicted voxel in them
    false: int  # predicted components with no ground-truth voxel in them
    dice_sum: float  # sum over ground-truth lesions of their Dice with the predictions touching them

    @property
    def missed(self) -> int:
        return self.gt - self.detected

    @property
    def sensitivity(self) -> float:
        return self.detected / self.gt if self.gt else float("nan")

    @property
    def precision(self) -> float:
        return (self.pred - self.false) / self.pred if self.pred else float("nan")

    @property
    def f1(self) -> float:
        s, p = self.sensitivity, self.precision
        if np.isnan(s) or np.isnan(p):
            return float("nan")
        return 2 * s * p / (s + p) if s + p else 0.0

    @property
    def dice(self) -> float:
        total = self.gt + self.false
        return self.dice_sum / total if total else float("nan")


def lesion_counts(pred: np.ndarray, gt: np.ndarray) -> LesionCounts:
    """Lesion-wise counts of two boolean masks of one class."""
    structure = ndimage.generate_binary_structure(gt.ndim, gt.ndim)
    gt_labels, n_gt = ndimage.label(gt, structure)
    pred_labels, n_pred = ndimage.label(pred, structure)
    both = gt & pred
    # each overlapping (gt lesion, pred component) pair once
    pairs = np.unique(np.stack([gt_labels[both], pred_labels[both]]), axis=1) if both.any() else np.zeros((2, 0), int)
    detected = len(np.unique(pairs[0]))
    false = n_pred - len(np.unique(pairs[1]))
    gt_sizes = np.bincount(gt_labels.ravel(), minlength=n_gt + 1)
    pred_sizes = np.bincount(pred_labels.ravel(), minlength=n_pred + 1)
    dice_sum = 0.0
    for lesion in np.unique(pairs[0]):
        touching = pairs[1][pairs[0] == lesion]
        inside = gt_labels == lesion
        overlap = int(np.count_nonzero(inside & np.isin(pred_labels, touching)))
        dice_sum += 2.0 * overlap / (gt_sizes[lesion] + pred_sizes[touching].sum())
    return LesionCounts(int(n_gt), int(n_pred), int(detected), int(false), float(dice_sum))
