"""How far a prediction can be trusted: entropy maps and the scores a reader can sort cases by.

Every network pass (each fold of an ensemble, each mirrored copy with TTA) gives class probabilities
``p_i``; the prediction is their mean ``p̄``. Two voxel maps come from them, both divided by
``log(classes)`` so that they lie in [0, 1] whatever the number of classes:

- ``entropy``: the predictive entropy ``H(p̄)``, high where the averaged prediction is unsure;
- ``disagreement`` (several passes only): ``H(p̄) − mean_i H(p_i)``, the mutual information between
  the prediction and the pass, high where the passes disagree although each one is sure.

Per structure, :func:`structure_uncertainty` gives the mean entropy inside the predicted structure,
on its border (the voxels within one voxel of its surface, inside or out) and the share of its voxels
above :data:`UNCERTAIN`; :func:`case_score` gives one number per case: the mean entropy on the
borders of the predicted structures, where a good segmentation's errors are. (Inside a structure
the network is sure whatever the case, and those voxels only dilute the score: on the 2D demo and
the 3D CT-like cross-validations of docs/benchmarks.md, the border alone ranked cases by Dice with
Spearman ρ −0.41 and −0.55, foreground and border together −0.22 and −0.41.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from scipy import ndimage

#: Normalised entropy above which a voxel counts as uncertain (for two classes: p between 0.11 and 0.89).
UNCERTAIN = 0.5


def entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """Entropy over axis 0 (classes) in nats."""
    return -(probabilities * probabilities.clamp_min(1e-12).log()).sum(0)


class Accumulator:
    """The running mean of the passes' probabilities (and of their entropies), never their stack."""

    def __init__(self, track_entropy: bool) -> None:
        self.track_entropy = track_entropy
        self.passes = 0
        self.mean: torch.Tensor | None = None
        self.entropy_sum: torch.Tensor | None = None

    def add(self, logits: torch.Tensor) -> None:
        """One pass's ``(classes, *spatial)`` logits."""
        p = torch.softmax(logits, 0)
        if self.track_entropy:
            h = entropy(p)
            self.entropy_sum = h if self.entropy_sum is None else self.entropy_sum.add_(h)
        self.mean = p if self.mean is None else self.mean.add_(p)
        self.passes += 1

    def log_mean(self) -> torch.Tensor:
        """``log(p̄)``: scores with the averaged prediction's argmax and softmax (the logits' stand-in)."""
        assert self.mean is not None, "no pass was added"
        return (self.mean / self.passes).clamp_min_(1e-12).log_()

    def maps(self) -> torch.Tensor:
        """``(1 or 2, *spatial)``: normalised entropy, and disagreement when there were several passes."""
        assert self.mean is not None and self.entropy_sum is not None, "built with track_entropy=False"
        scale = 1.0 / math.log(max(2, self.mean.shape[0]))
        total = entropy(self.mean / self.passes)
        if self.passes == 1:
            return (total * scale)[None]
        disagreement = (total - self.entropy_sum / self.passes).clamp_min_(0)
        return torch.stack([total * scale, disagreement * scale])


def _border(mask: np.ndarray) -> np.ndarray:
    """Voxels within one voxel of the mask's surface, inside or outside."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return ndimage.binary_dilation(mask, structure) & ~ndimage.binary_erosion(mask, structure)


def structure_uncertainty(labels: np.ndarray, entropy_map: np.ndarray, names: Mapping[int, str]) -> dict[int, dict[str, Any]]:
    """Per foreground label: ``entropy_mean`` inside, ``entropy_border``, ``uncertain_fraction`` (NaN when absent)."""
    out: dict[int, dict[str, Any]] = {}
    for label in sorted(k for k in names if k != 0):
        mask = labels == label
        if not mask.any():
            out[label] = {"entropy_mean": float("nan"), "entropy_border": float("nan"), "uncertain_fraction": float("nan")}
            continue
        inside = entropy_map[mask]
        out[label] = {"entropy_mean": float(inside.mean()), "entropy_border": float(entropy_map[_border(mask)].mean()),
                      "uncertain_fraction": float(np.mean(inside > UNCERTAIN))}
    return out


def case_score(labels: np.ndarray, entropy_map: np.ndarray) -> float:
    """Mean normalised entropy on the predicted foreground's border (one voxel inside and outside its
    surface); over the whole image when nothing was predicted."""
    foreground = labels > 0
    if not foreground.any():
        return float(entropy_map.mean())
    return float(entropy_map[_border(foreground)].mean())
