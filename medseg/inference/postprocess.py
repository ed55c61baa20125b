"""Post-processing of label maps: the largest component only, small components removed.

``medseg cv`` chooses, per class, whichever of these raised the cross-validated Dice and writes the
choice as ``postprocessing.json`` in the cross-validation's run directory; :func:`read_postprocessing`
reads it and :func:`apply_postprocessing` applies it (``medseg predict`` does so by default).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medseg.errors import MedsegError

#: ``postprocessing.json`` in a cross-validation's run directory.
POSTPROCESSING_FILE = "postprocessing.json"
OPERATIONS = ("none", "largest_component", "remove_small")


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected components (full connectivity) and their sizes (index 0: background, size 0)."""
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    components, _ = ndimage.label(mask, structure=structure, output=np.int32)
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components, sizes


def keep_largest_components(labels: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Keep only the largest connected component (full connectivity) of each class, in place."""
    for k in classes:
        mask = labels == k
        components, sizes = _components(mask)
        if len(sizes) > 2:
            labels[mask & (components != int(sizes.argmax()))] = 0
    return labels


def remove_small_components(labels: np.ndarray, label: int, min_voxels: float) -> np.ndarray:
    """Set the components of ``label`` smaller than ``min_voxels`` to background, in place."""
    mask = labels == label
    components, sizes = _components(mask)
    small = np.flatnonzero((sizes > 0) & (sizes < min_voxels))
    if small.size:
        labels[np.isin(components, small)] = 0
    return labels


def apply_postprocessing(labels: np.ndarray, spec: Mapping[int, Mapping[str, Any]], voxel_size: float) -> np.ndarray:
    """Each class's operation from ``spec`` (label -> ``{"operation", "min_size"}``), in place.

    ``min_size`` is in mm³ (mm² in 2D), so a threshold learned at one resolution holds at another;
    ``voxel_size`` is one voxel's volume (area) in those units.
    """
    for label, rule in spec.items():
        operation = rule.get("operation", "none")
        if operation == "largest_component":
            keep_largest_components(labels, [int(label)])
        elif operation == "remove_small":
            remove_small_components(labels, int(label), float(rule["min_size"]) / max(voxel_size, 1e-12))
    return labels


def read_postprocessing(run_dir: Path) -> dict[int, dict[str, Any]]:
    """The per-class rules of ``run_dir/postprocessing.json`` (none when the file is absent)."""
    path = Path(run_dir) / POSTPROCESSING_FILE
    if not path.is_file():
        return {}
    try:
        classes = json.loads(path.read_text(encoding="utf-8"))["classes"]
        rules = {int(k): dict(v) for k, v in classes.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise MedsegError(f"{path}: not a medseg post-processing file ({err}); run medseg cv again or delete it") from None
    for label, rule in rules.items():
        if rule.get("operation") not in OPERATIONS:
            raise MedsegError(f"{path}: class {label} has operation {rule.get('operation')!r}; use one of {', '.join(OPERATIONS)}")
        if rule["operation"] == "remove_small":
            try:
                rule["min_size"] = float(rule["min_size"])
            except (KeyError, TypeError, ValueError):
                raise MedsegError(f"{path}: class {label} removes small components but its 'min_size' is "
                                  f"{rule.get('min_size')!r}; give a size in mm³ (mm² in 2D)") from None
    return rules
