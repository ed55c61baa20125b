"""Per-structure statistics of a predicted label map: what a clinician reads first.

For each foreground structure of one case: the voxel count and the volume (from the voxel count and
the file's spacing), the input's intensity under the mask (mean, std, min, max; per channel when
there are several), the connected components (how many, the largest one's share), the bounding
box (voxel indices and its size in mm), the centroid in scanner coordinates (LPS, as DICOM and
ITK state them, and RAS, as NIfTI and 3D Slicer show them) and whether the structure touches the
image border (it is then likely cut off by the field of view; its volume is still reported).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medseg.data.io import ImageMeta
from medseg.run import split_name
from medseg.utils import atomic_write_text

#: The CSV columns, in order (intensity columns follow, per channel when there are several).
COLUMNS = ("case", "label", "structure", "voxels", "volume", "volume_unit", "components", "largest_share",
           "touches_border", "bbox_start", "bbox_stop", "bbox_size_mm", "centroid_lps", "centroid_ras")


def structure_statistics(
    labels: np.ndarray, meta: ImageMeta, names: Mapping[int, str], image: np.ndarray | None = None, case: str = "",
) -> list[dict[str, Any]]:
    """One row per foreground structure in ``names`` (present or not) of a label map in the input's grid.

    ``image`` is the input as read, channels first when there are several, for the intensity columns.
    """
    dims = labels.ndim
    voxel = float(np.prod(meta.spacing))
    unit = "mL" if dims == 3 else "mm2"
    channels = _channels(image, dims)
    boxes = ndimage.find_objects(labels.astype(np.int32, copy=False), max_label=max(names, default=0))
    rows = []
    for label in sorted(k for k in names if k != 0):
        row: dict[str, Any] = {"case": case, "label": label, "structure": names[label], "volume_unit": unit}
        box = boxes[label - 1] if label - 1 < len(boxes) else None
        mask = labels[box] == label if box is not None else None
        count = int(np.count_nonzero(mask)) if mask is not None else 0
        row.update(voxels=count, volume=count * voxel / (1000.0 if dims == 3 else 1.0))
        if count == 0:
            row.update(components=0, largest_share=float("nan"), touches_border=False, bbox_start=None,
                       bbox_stop=None, bbox_size_mm=None, centroid_lps=None, centroid_ras=None)
            row.update(_intensity(None, channels))
            rows.append(row)
            continue
        assert box is not None and mask is not None
        row.update(_shape(mask, box, meta))
        row.update(_intensity([c[box][mask] for c in channels] if channels else None, channels))
        rows.append(row)
    return rows


def _channels(image: np.ndarray | None, dims: int) -> list[np.ndarray]:
    if image is None:
        return []
    array = np.asarray(image)
    return [array] if array.ndim == dims else list(array)


def _shape(mask: np.ndarray, box: tuple[slice, ...], meta: ImageMeta) -> dict[str, Any]:
    """Components, border contact, bounding box and centroid of one structure's mask inside ``box``."""
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    components, n = ndimage.label(mask, structure)
    sizes = np.bincount(components.ravel())[1:]
    start = [int(s.start) for s in box]
    stop = [int(s.stop) for s in box]
    touches = any(a == 0 or b == size for a, b, size in zip(start, stop, meta.shape, strict=True))
    index = np.asarray(ndimage.center_of_mass(mask), dtype=np.float64) + np.asarray(start, dtype=np.float64)
    lps = np.asarray(meta.origin) + np.asarray(meta.direction) @ (index * np.asarray(meta.spacing))
    ras = lps * np.asarray([-1.0, -1.0, *[1.0] * (len(lps) - 2)])
    return {
        "components": int(n), "largest_share": float(sizes.max() / sizes.sum()), "touches_border": bool(touches),
        "bbox_start": start, "bbox_stop": stop,
        "bbox_size_mm": [round((b - a) * s, 3) for a, b, s in zip(start, stop, meta.spacing, strict=True)],
        "centroid_lps": [round(float(v), 3) for v in lps], "centroid_ras": [round(float(v), 3) for v in ras],
    }


def _intensity(values: list[np.ndarray] | None, channels: list[np.ndarray]) -> dict[str, float]:
    """mean/std/min/max of the input under the mask; ``_ch<k>`` suffixes when there are several channels."""
    out: dict[str, float] = {}
    for k in range(len(channels)):
        suffix = f"_ch{k}" if len(channels) > 1 else ""
        v = values[k].astype(np.float64) if values is not None else None
        for name, fn in (("mean", np.mean), ("std", np.std), ("min", np.min), ("max", np.max)):
            out[f"intensity_{name}{suffix}"] = float(fn(v)) if v is not None and v.size else float("nan")
    return out


def statistics_path(mask: Path) -> Path:
    """``scan_seg.nii.gz`` -> ``scan_seg_stats.json`` beside it."""
    return mask.with_name(f"{split_name(mask)[0]}_stats.json")


def write_statistics_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Every case's structures in one table (lists as ``a x b x c``), written atomically."""
    extra = sorted({k for r in rows for k in r} - set(COLUMNS))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*COLUMNS, *extra], restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: " x ".join(map(str, v)) if isinstance(v, list) else ("" if v is None else v)
                         for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())
    return path
