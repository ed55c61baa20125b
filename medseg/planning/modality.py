"""The modality of each channel: declared in dataset.json, or guessed from the images with a warning.

The planner picks the normalisation from it (CT: clip to the foreground percentiles and scale with
fixed statistics; MRI and 2D images: per-image statistics), so a wrong guess costs accuracy quietly.
That is why a guess always comes with a warning that says how to declare the modality.
"""

from __future__ import annotations

import json

from medseg.data.datasets import DatasetInfo

UNDECLARED = {"", "unknown", "none"}
HU_AIR = (-4000.0, -500.0)  # CT air is about -1000 HU (-1024, or -3024 outside the field of view)
HU_DENSE = 100.0  # soft tissue and contrast reach past 100 HU, bone far past it


def declared(info: DatasetInfo, n: int) -> list[str] | None:
    """The channel names dataset.json gives (one name for every channel, or one per channel), else None."""
    names = [str(m) for m in info.modalities]
    if not names or all(m.strip().lower() in UNDECLARED for m in names):
        return None
    if len(names) == 1:
        return names * n
    return names if len(names) == n else None


def guess(spatial_dims: int, n: int, low: float | None, high: float | None, whole: bool) -> tuple[list[str], str]:
    """(modality per channel, why) from the shape of the data and the value range of channel 0."""
    if spatial_dims == 2:
        return (["rgb"] * 3, "a 2D image with 3 channels") if n == 3 else (["gray"] * n, "a 2D image")
    hounsfield = (
        n == 1 and whole and low is not None and high is not None
        and HU_AIR[0] <= low < HU_AIR[1] and high > HU_DENSE
    )
    if hounsfield:
        return ["CT"], f"whole-number values from {low:g} to {high:g}, in Hounsfield range"
    return ["MRI"] * n, "a 3D image whose values are not in Hounsfield units"


def channel_modalities(
    info: DatasetInfo, lows: list[float | None], highs: list[float | None], whole: list[bool]
) -> tuple[list[str], bool, list[str]]:
    """(modality per channel, guessed?, warnings) for the ``len(lows)`` channels the images hold."""
    n = len(lows)
    names = declared(info, n)
    if names is not None:
        return names, False, []
    names, why = guess(info.spatial_dims, n, lows[0] if n else None, highs[0] if n else None, all(whole))
    key = "channel_names" if info.layout == "nnunet" else "modality"
    example = json.dumps({key: {str(c): m for c, m in enumerate(names)}}, ensure_ascii=False)[1:-1]
    named = [m for m in info.modalities if str(m).strip().lower() not in UNDECLARED]
    given = f" (it names {len(named)} channel(s); the images hold {n})" if named else ""
    warning = (
        f"{info.root}: modality not declared in dataset.json{given}; guessed {', '.join(names)} from {why}; "
        f"declare it in dataset.json, e.g. {example}"
    )
    return names, True, [warning]
