"""Masks the viewers open with names and colours: 3D Slicer's ``.seg.nrrd`` and ITK-SNAP label files.

- ``seg.nrrd``: the label map as one shared layer with Slicer's segmentation header fields
  (``Segment{N}_Name``, ``_Color``, ``_LabelValue``, ``_Layer``, ``_Extent``, ``_ID``, …), so 3D Slicer
  (and ``slicerio``) list each structure by name and colour instead of "Segment_1".
- ``nrrd`` / ``mha``: the plain label map, plus ``<name>_labels.txt`` beside it in ITK-SNAP's label
  description format (Segmentation > Import Label Descriptions).
- ``dicom-seg``: a DICOM SEG for DICOM-series inputs (:mod:`medseg.inference.dicom_seg`).

Colours come from :data:`PALETTE`, a fixed list indexed by label value (value 1 takes the first), so a
structure keeps its colour across cases and runs; ``--colors`` (:func:`parse_colours`) overrides any of
them, from the command line or a JSON file such as a dataset.json with a ``colors`` entry.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medseg.data.datasets import parse_colours as parse_dataset_colours
from medseg.errors import MedsegError
from medseg.run import split_name

#: ``--format`` choices: the input's own format, or one named here (``dicom-seg``: DICOM series inputs only).
FORMATS = ("same", "nii.gz", "seg.nrrd", "nrrd", "mha", "dicom-seg")
_EXTENSION = {"dicom-seg": "dcm"}

#: Colours (RGB 0-255) by label value 1, 2, …; repeats after the last. Distinct, saturated, readable
#: on grey CT and MRI (the first ten are matplotlib's "tab10").
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120),
    (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (199, 199, 199),
    (219, 219, 141), (158, 218, 229),
)


Colours = Mapping[int, tuple[int, int, int]]


def colour(label: int, colours: Colours | None = None) -> tuple[int, int, int]:
    """The colour of a label value: ``colours``' where it has one, else the palette's (1-based)."""
    if colours and int(label) in colours:
        return colours[int(label)]
    return PALETTE[(int(label) - 1) % len(PALETTE)]


def parse_colours(values: Sequence[str], names: Mapping[int, str]) -> dict[int, tuple[int, int, int]]:
    """``--colors`` items: ``VALUE=R,G,B``, ``NAME=#RRGGBB`` (0-255), or a JSON file mapping values or
    names to ``[R, G, B]`` (a dataset.json's ``colors``, or the whole file being that mapping)."""
    out: dict[int, tuple[int, int, int]] = {}
    for value in values:
        if value.endswith(".json") and Path(value).is_file():
            out.update(parse_dataset_colours(_json_colours(Path(value)), names, f"--colors {value}"))
            continue
        key, sep, rgb = value.partition("=")
        if not sep:
            raise MedsegError(f"--colors {value!r}: write VALUE=R,G,B or NAME=#RRGGBB, e.g. --colors 1=255,0,0")
        out.update(parse_dataset_colours({key.strip(): rgb.strip()}, names, "--colors"))
    return out


def _json_colours(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise MedsegError(f"--colors {path}: not a readable JSON file ({err})") from None
    found = data.get("colors", data) if isinstance(data, dict) else None
    if not isinstance(found, dict):
        raise MedsegError(f"--colors {path}: expected an object mapping label values or names to [R, G, B]")
    return found


def with_format(path: Path, fmt: str) -> Path:
    """``path`` with the extension of ``fmt`` (``same`` keeps it)."""
    if fmt == "same":
        return path
    return path.with_name(f"{split_name(path)[0]}.{_EXTENSION.get(fmt, fmt)}")


def slicer_fields(labels: np.ndarray, names: Mapping[int, str], colours: Colours | None = None) -> dict[str, str]:
    """3D Slicer's segmentation header fields for a label map with one shared layer."""
    fields = {
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_ReferenceImageExtentOffset": " ".join("0" for _ in range(labels.ndim)),
    }
    boxes = ndimage.find_objects(labels.astype(np.int32, copy=False), max_label=max(names, default=0))
    full = " ".join(f"0 {n - 1}" for n in labels.shape)
    for index, label in enumerate(sorted(k for k in names if k != 0)):
        box = boxes[label - 1] if label - 1 < len(boxes) else None
        extent = " ".join(f"{s.start} {s.stop - 1}" for s in box) if box is not None else full
        r, g, b = (c / 255 for c in colour(label, colours))
        prefix = f"Segment{index}_"
        fields.update({
            prefix + "ID": f"Segment_{label}", prefix + "Name": names[label], prefix + "NameAutoGenerated": "0",
            prefix + "Color": f"{r:.6g} {g:.6g} {b:.6g}", prefix + "ColorAutoGenerated": "0",
            prefix + "LabelValue": str(label), prefix + "Layer": "0", prefix + "Extent": extent,
            prefix + "Tags": "Segmentation.Status:inprogress|",
        })
    return fields


def itksnap_labels(names: Mapping[int, str], colours: Colours | None = None) -> str:
    """An ITK-SNAP label description file: background and one line per structure with its colour."""
    lines = [
        "# ITK-SnAP Label Description File (written by medseg)",
        "# Columns: IDX -R- -G- -B- -A-- VIS MSH LABEL",
        '    0     0    0    0        0  0  0    "Clear Label"',
    ]
    for label in sorted(k for k in names if k != 0):
        r, g, b = colour(label, colours)
        name = str(names[label]).replace('"', "'")
        lines.append(f'{label:5d} {r:5d} {g:4d} {b:4d}        1  1  1    "{name}"')
    return "\n".join(lines) + "\n"


def itksnap_path(mask: Path) -> Path:
    """``scan_seg.nrrd`` -> ``scan_seg_labels.txt`` beside it."""
    return mask.with_name(f"{split_name(mask)[0]}_labels.txt")
