"""Post-processing of label maps: what ``--largest-component`` does."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def keep_largest_components(labels: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Keep only the largest connected component (full connectivity) of each class, in place."""
    structure = ndimage.generate_binary_structure(labels.ndim, labels.ndim)
    for k in classes:
        mask = labels == k
        components, n = ndimage.label(mask, structure=structure, output=np.int32)
        if n > 1:
            sizes = np.bincount(components.ravel())
            sizes[0] = 0
            labels[mask & (components != int(sizes.argmax()))] = 0
        del mask, components
    return labels
