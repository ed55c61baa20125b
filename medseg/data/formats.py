"""Which image format a path holds, by suffix, and where a folder's DICOM series is.

One table (:data:`IMAGE_SUFFIXES`, :func:`image_format`) that the readers, the writers and the dataset
discovery all consult, so a suffix means the same thing everywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import SimpleITK as sitk

from medseg.errors import MedsegError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
SITK_SUFFIXES = (".seg.nrrd", ".nrrd", ".nhdr", ".mha", ".mhd", ".tif", ".tiff", ".dcm")  # longest first
IMAGE_SUFFIXES = NIFTI_SUFFIXES + PIL_SUFFIXES + SITK_SUFFIXES
LOSSY_SUFFIXES = (".jpg", ".jpeg")
NO_GEOMETRY_FORMATS = ("png", "jpeg", "bmp")



def image_format(path: str | os.PathLike[str]) -> str:
    """The format name of ``path``: ``nifti``, ``png``, ``jpeg``, ``bmp``, ``nrrd``, ``mha``, ``tiff``, ``dicom``."""
    path = Path(path)
    if path.is_dir():
        return "dicom"
    name = path.name.lower()
    for suffixes, fmt in _FORMATS:
        if name.endswith(suffixes):
            return fmt
    raise MedsegError(
        f"{path}: unsupported image format; use NIfTI (.nii/.nii.gz), NRRD, MetaImage (.mha/.mhd), "
        "a DICOM series folder, PNG, JPEG or TIFF"
    )


_FORMATS: list[tuple[tuple[str, ...], str]] = [
    (NIFTI_SUFFIXES, "nifti"),
    ((".png",), "png"),
    ((".jpg", ".jpeg"), "jpeg"),
    ((".bmp",), "bmp"),
    ((".nrrd", ".nhdr"), "nrrd"),
    ((".mha", ".mhd"), "mha"),
    ((".tif", ".tiff"), "tiff"),
    ((".dcm",), "dicom"),
]
READER_OF_FORMAT = {"nifti": "nibabel", "png": "pil", "jpeg": "pil", "bmp": "pil"}  # the rest: sitk


def strip_suffix(name: str) -> str:
    """``case_1.nii.gz`` -> ``case_1`` (known image suffixes only; otherwise the last suffix)."""
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def is_dicom_series(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a folder holding at least one DICOM series SimpleITK can read."""
    path = Path(path)
    if not path.is_dir() or not any(_looks_like_dicom(p) for p in path.iterdir()):
        return False
    return bool(_series_ids(path))


def _looks_like_dicom(path: Path) -> bool:
    """A ``.dcm`` file, or a DICOM Part 10 file (``DICM`` after the 128-byte preamble)."""
    if not path.is_file() or path.name.startswith("."):
        return False
    if path.name.lower().endswith(".dcm"):
        return True
    try:
        with path.open("rb") as handle:
            return handle.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def _series_ids(folder: Path) -> tuple[str, ...]:
    """GDCM's series ids in ``folder``, without ITK's console warning when there are none."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        return tuple(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def dicom_files(folder: Path) -> list[str]:
    """The file names of the largest DICOM series in ``folder``, in slice order."""
    ids = _series_ids(folder)
    if not ids:
        raise MedsegError(f"{folder}: no DICOM series found; give a folder of .dcm slices of one series")
    series = [sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid) for sid in ids]
    return list(max(series, key=len))
