"""What a model was trained on, compactly, and the warnings ``medseg predict`` gives outside it.

The envelope is stored in every planned run's :class:`medseg.run.Preprocess` (``fingerprint``):
spacing range, orientations, channel count and each channel's intensity range. An input outside it
still predicts; the user is told, one line per reason, because a model is only known to work on
data like its training data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from medseg.planning.records import Fingerprint

#: How far outside the training range a spacing or intensity may lie before predict warns.
SPACING_TOLERANCE, INTENSITY_TOLERANCE = 0.25, 0.25


def envelope(fp: Fingerprint) -> dict[str, Any]:
    """The training data's ranges (JSON-ready), from its fingerprint."""
    return {
        "spacing_min": list(fp.min_spacing), "spacing_max": list(fp.max_spacing),
        "orientations": sorted({c.orientation for c in fp.cases if c.orientation}),
        "num_channels": fp.num_channels,
        "intensity": [[c.image_min, c.image_max] for c in fp.channels],
        "modalities": fp.modalities,
    }


def _outside(value: float, low: float, high: float, tolerance: float) -> bool:
    span = max(high - low, abs(high), abs(low), 1e-6)
    return value < low - tolerance * span or value > high + tolerance * span


def warnings_for(env: Mapping[str, Any], spacing: tuple[float, ...], orientation: str, channels: int,
                 image: np.ndarray | None = None) -> list[str]:
    """One line per way the input lies outside ``env`` (empty when it is inside)."""
    out = []
    lo, hi = env.get("spacing_min") or [], env.get("spacing_max") or []
    if len(lo) == len(spacing) and any(s < a * (1 - SPACING_TOLERANCE) or s > b * (1 + SPACING_TOLERANCE)
                                       for s, a, b in zip(spacing, lo, hi, strict=True)):
        out.append(f"spacing {'x'.join(f'{s:.3g}' for s in spacing)} mm is outside the training range "
                   f"{'x'.join(f'{a:.3g}' for a in lo)} to {'x'.join(f'{b:.3g}' for b in hi)} mm")
    known = env.get("orientations") or []
    if orientation and known and orientation not in known:
        out.append(f"orientation {orientation} was not in training ({', '.join(known)}); it is reoriented, "
                   "but check the result")
    if channels != env.get("num_channels", channels):
        out.append(f"{channels} channel(s), the model was trained on {env['num_channels']}")
    if image is not None and image.size:
        for c, (low, high) in enumerate(env.get("intensity") or []):
            if low is None or high is None or c >= (image.shape[0] if image.ndim > len(spacing) else 1):
                continue
            values = image[c] if image.ndim > len(spacing) else image
            vmin, vmax = float(np.min(values)), float(np.max(values))
            if _outside(vmin, low, high, INTENSITY_TOLERANCE) or _outside(vmax, low, high, INTENSITY_TOLERANCE):
                out.append(f"channel {c} intensities {vmin:.4g} to {vmax:.4g} are outside the training range "
                           f"{low:.4g} to {high:.4g} (another modality or scaling?)")
    return out
