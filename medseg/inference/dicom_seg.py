"""DICOM SEG for DICOM-series inputs, so a PACS takes the result: one segment per structure, by name.

The SEG (through ``highdicom``, the optional extra ``medseg[dicom]``) references the source series'
study, series and instance UIDs and its frame of reference; each frame is one source slice (empty
frames are left out, as highdicom does by default), and its plane position is the source slice's.
The label map comes in medseg's reader order, ``(x, y, z)`` with ``z`` following the slices as
SimpleITK sorts them by position, so frame ``k`` is slice ``k`` of that order.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data import io
from medseg.errors import MedsegError
from medseg.utils import atomic_path

MANUFACTURER = "medseg"


def _highdicom() -> tuple[Any, Any]:
    """``(highdicom, pydicom)``, imported only when a SEG is asked for."""
    try:
        import highdicom
        import pydicom
    except ImportError:
        raise MedsegError("--format dicom-seg needs highdicom; install it with: pip install 'medseg[dicom]'") from None
    return highdicom, pydicom


def write_dicom_seg(labels: np.ndarray, series: Path, names: Mapping[int, str], out: Path, model: str) -> Path:
    """A DICOM SEG of ``labels`` (medseg order, the series' grid) for the DICOM series folder ``series``."""
    if not (series.is_dir() and io.is_dicom_series(series)):
        raise MedsegError(f"{series}: --format dicom-seg is for DICOM series inputs; "
                          "use seg.nrrd or nii.gz for other images")
    hd, pydicom = _highdicom()
    from pydicom.sr.codedict import codes

    files = io.dicom_files(series)
    sources = [pydicom.dcmread(f) for f in files]
    if labels.ndim != 3 or labels.shape[2] != len(sources):
        raise MedsegError(f"{series}: the mask has {labels.shape} voxels but the series {len(sources)} slices")
    present = sorted(k for k in names if k != 0)
    numbers = np.zeros(int(max(present, default=0)) + 1, dtype=np.uint16)  # label value -> segment number
    for number, value in enumerate(present, start=1):
        numbers[value] = number
    frames = numbers[np.clip(labels, 0, len(numbers) - 1)].transpose(2, 1, 0)  # (slices, rows, columns)
    algorithm = hd.AlgorithmIdentificationSequence(name=model, family=codes.cid7162.ArtificialIntelligence,
                                                   version=_version())
    segments = [hd.seg.SegmentDescription(
        segment_number=number, segment_label=str(names[value])[:64],
        segmented_property_category=codes.SCT.Tissue, segmented_property_type=codes.SCT.Tissue,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
    ) for number, value in enumerate(present, start=1)]
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments, series_instance_uid=hd.UID(), series_number=9000,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER,
        manufacturer_model_name=model[:64], software_versions=_version(), device_serial_number="0",
    )
    with atomic_path(out) as tmp:
        seg.save_as(str(tmp))
    return out


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("medseg")
    except PackageNotFoundError:
        return "0"
