"""The planner's rules, each a pure function of the fingerprint: spacing, normalisation, sampling, patch.

Every rule returns its choice and a one-line reason, so ``medseg plan`` can say why. The numbers
follow nnU-Net's default planner where it has one (target spacing, CT normalisation, crop-to-nonzero
masks for z-scoring) and say so; the rest are medseg's, for a budget of minutes instead of days.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from medseg.planning.records import Fingerprint

#: An axis counts as the thick one when its spacing exceeds this times every other axis's (nnU-Net).
ANISOTROPY = 3.0
#: The smallest typical object must stay at least this many voxels across after resampling.
MIN_OBJECT_VOXELS_ACROSS = 4.0


def _fmt(values: Sequence[float], digits: int = 2) -> str:
    return "×".join(f"{v:.{digits}f}".rstrip("0").rstrip(".") for v in values)


def target_spacing(fp: Fingerprint) -> tuple[tuple[float, ...] | None, str]:
    """nnU-Net's rule: the median spacing; a thick axis takes its 10th percentile. 2D keeps its pixels."""
    if fp.spatial_dims == 2:
        return None, "2D images are not resampled"
    median = np.asarray(fp.median_spacing, dtype=np.float64)
    thick = int(np.argmax(median))
    others = [i for i in range(3) if i != thick]
    shape = np.asarray(fp.median_shape, dtype=np.float64)
    aniso_spacing = median[thick] > ANISOTROPY * max(median[others])
    aniso_voxels = shape[thick] * ANISOTROPY < min(shape[others])
    if aniso_spacing and aniso_voxels:
        median[thick] = max(float(fp.spacing_p10[thick]), float(max(median[others])))
        return tuple(float(v) for v in median), (
            f"median spacing, axis {thick} (thick: > {ANISOTROPY:g}× the others) at its 10th percentile (nnU-Net)")
    return tuple(float(v) for v in median), f"median spacing {_fmt(fp.median_spacing)} mm (nnU-Net)"


def resampled_shape(fp: Fingerprint, spacing: Sequence[float] | None) -> tuple[float, ...]:
    """The median shape after cropping to the non-zero region and resampling to ``spacing``."""
    if spacing is None:
        return tuple(float(v) for v in fp.median_cropped_shape)
    sizes = [np.asarray(c.cropped_shape) * np.asarray(c.spacing) / np.asarray(spacing) for c in fp.cases]
    return tuple(float(v) for v in np.median(np.asarray(sizes), axis=0))


def smallest_typical_object_mm(fp: Fingerprint) -> float | None:
    """The equivalent diameter (mm) of the median object of the class with the smallest objects."""
    sizes = [c.median_object_mm for c in fp.classes if c.median_object_mm]
    if not sizes:
        return None
    size = min(sizes)
    if fp.spatial_dims == 2:
        return 2.0 * math.sqrt(size / math.pi)
    return (6.0 * size / math.pi) ** (1.0 / 3.0)


def coarsen_for_budget(
    fp: Fingerprint, spacing: tuple[float, ...], max_voxels: float
) -> tuple[tuple[float, ...], str | None]:
    """Coarsen the finer axes (never past the thickest) until the median image has at most
    ``max_voxels``, as long as the smallest typical object stays :data:`MIN_OBJECT_VOXELS_ACROSS`
    voxels across.

    A budget of minutes affords patches of a few hundred thousand voxels: a full-resolution image many
    times larger would be seen a sliver at a time. nnU-Net answers with a low-resolution stage; this is
    that stage alone, chosen only when the objects survive it.
    """
    volume = float(np.prod(resampled_shape(fp, spacing)))
    base = np.asarray(spacing, dtype=np.float64)
    fine = base < base.max() - 1e-6
    if not fine.any():
        fine = np.ones_like(fine)
    if volume <= max_voxels:
        return spacing, None
    factor = (volume / max_voxels) ** (1.0 / int(fine.sum()))
    ceiling = base.max() if not fine.all() else float("inf")
    diameter = smallest_typical_object_mm(fp)
    if diameter:
        ceiling = min(ceiling, diameter / MIN_OBJECT_VOXELS_ACROSS)
    coarse = np.where(fine, np.maximum(base, np.minimum(base * factor, ceiling)), base)
    if np.allclose(coarse, base):
        return spacing, None
    why = f"finer axes coarsened from {_fmt(base)} mm so the median image nears a {max_voxels / 1e6:.1f} M-voxel budget"
    if diameter:
        why += f"; the smallest typical object ({diameter:.1f} mm) stays ≥ {MIN_OBJECT_VOXELS_ACROSS:g} voxels across"
    return tuple(float(v) for v in coarse), why


def normalisation(fp: Fingerprint) -> tuple[str, dict[str, list[float]] | None, str]:
    """(preset, intensity statistics, reason) by modality, as nnU-Net's normalisation schemes.

    CT: clip to the foreground's 0.5/99.5 percentiles and z-score with its mean and std (one scheme
    for every scan, so HU keep their meaning). Other volumes: z-score per image, inside the non-zero
    mask when cropping to it keeps under ¾ of the image (MRI's air is not tissue). 2D: z-score per image.
    """
    modalities = [m.lower() for m in fp.modalities]
    if fp.spatial_dims == 3 and modalities and all(m == "ct" for m in modalities):
        stats = [c.foreground for c in fp.channels]
        if all(s is not None for s in stats):
            intensity = {
                "clip": [v for s in stats for v in (s.p00_5, s.p99_5)],  # type: ignore[union-attr]
                "mean": [s.mean for s in stats],  # type: ignore[union-attr]
                "std": [max(s.std, 1e-3) for s in stats],  # type: ignore[union-attr]
            }
            lo, hi = intensity["clip"][0], intensity["clip"][1]
            return "ct", intensity, (f"CT: clip to the foreground's 0.5-99.5 % ({lo:.0f} to {hi:.0f} HU), "
                                     f"z-score with its mean {intensity['mean'][0]:.0f} and std {intensity['std'][0]:.0f} (nnU-Net)")
    if fp.spatial_dims == 3 and fp.median_crop_ratio < 0.75:
        return "mri", None, (f"{'/'.join(fp.modalities) or 'MRI'}: z-score per image inside the non-zero region "
                             f"(cropping keeps {fp.median_crop_ratio:.0%} of the image, nnU-Net)")
    kind = "/".join(fp.modalities) or ("image" if fp.spatial_dims == 2 else "MRI")
    return "zscore", None, f"{kind}: z-score per image and channel (nnU-Net's default scheme)"


def class_ratios(fp: Fingerprint) -> tuple[list[float], str]:
    """Equal shares of patch centres per class, background included: the rarest class is in 1/C of them."""
    n = len(fp.labels)
    rarest = min(fp.classes, key=lambda c: c.fraction, default=None)
    why = f"each of the {n} classes centres 1/{n} of the patches"
    if rarest is not None:
        why += f", so '{rarest.name}' ({rarest.fraction:.2%} of voxels) is in most batches"
    return [1.0] * n, why


def round_patch(values: Sequence[float], shape: Sequence[float], multiple: int) -> tuple[int, ...]:
    """Each axis rounded down to ``multiple`` (at least one multiple), and not beyond the image rounded up."""
    out = []
    for v, s in zip(values, shape, strict=True):
        cap = multiple * math.ceil(s / multiple)
        out.append(int(max(multiple, min(cap, multiple * math.floor(v / multiple)))))
    return tuple(out)


def patch_for(shape: Sequence[float], max_voxels: float, multiple: int, max_axis: int) -> tuple[int, ...]:
    """The largest patch with the image's aspect (each axis ≤ the image and ``max_axis``) within ``max_voxels``."""
    dims = np.minimum(np.asarray(shape, dtype=np.float64), max_axis)
    volume = float(np.prod(dims))
    if volume > max_voxels:
        scale = (max_voxels / volume) ** (1.0 / len(dims))
        dims = dims * scale
        # an axis already capped by the image gives its share back to the others
        for _ in range(3):
            free = dims < np.asarray(shape) - 1
            room = max_voxels / float(np.prod(dims))
            if room <= 1.01 or not free.any():
                break
            grow = room ** (1.0 / int(free.sum()))
            dims = np.where(free, np.minimum(dims * grow, np.minimum(shape, max_axis)), dims)
    return round_patch(dims, shape, multiple)


#: AdamW's peak learning rate per dimensionality, for a run of minutes with a cosine decay to zero.
LEARNING_RATES = {2: 1e-3, 3: 2e-3}


def learning_rate(fp: Fingerprint) -> tuple[float, str]:
    """(peak learning rate, reason). In 3D, 1e-3 left a class of 0.03 % of voxels unlearned after a
    3-minute run (validation Dice 0.00 in three runs of four) where 2e-3 learned it to 0.97."""
    if fp.spatial_dims == 3:
        return LEARNING_RATES[3], ("AdamW peak, cosine to zero with the time: in 3-minute 3D runs 1e-3 "
                                   "left a class of 0.03 % of voxels unlearned, 2e-3 did not")
    return LEARNING_RATES[2], "AdamW peak, cosine to zero with the time"
