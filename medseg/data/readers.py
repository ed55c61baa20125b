"""medseg's MONAI image readers: one suffix-chosen reader for every format, arrays in a set layout.

:class:`MedsegReader` sends NIfTI to :class:`~medseg.data.nifti.NiftiReader`, PNG/JPEG/BMP to MONAI's
``PILReader`` and NRRD, MetaImage, TIFF and DICOM to :class:`SimpleITKReader`; :func:`load_transform` is
the ``LoadImaged`` built on it. Also here: the SimpleITK <-> ``(x, y, z[, c])`` array conversions and
the C/Fortran-order copies the reading and writing paths use (the axis convention is
:mod:`medseg.data.io`'s).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import ImageReader, PILReader
from monai.transforms import LoadImaged
from monai.utils import MetaKeys, SpaceKeys

from medseg.data.formats import READER_OF_FORMAT, SITK_SUFFIXES, dicom_files, image_format
from medseg.data.nifti import NiftiReader
from medseg.errors import MedsegError


# -- SimpleITK <-> medseg arrays -------------------------------------------------------------------
def sitk_read(path: Path) -> sitk.Image:
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(dicom_files(path))
            return reader.Execute()
        return sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise MedsegError(f"{path}: SimpleITK cannot read it ({str(err).strip().splitlines()[-1]})") from None


def from_sitk_array(image: sitk.Image) -> np.ndarray:
    """SimpleITK's ``(z, y, x[, c])`` array as medseg's ``(x, y, z[, c])``."""
    array = sitk.GetArrayFromImage(image)
    dims = image.GetDimension()
    axes = (*reversed(range(dims)), *range(dims, array.ndim))
    return np.ascontiguousarray(np.transpose(array, axes))


def to_sitk_image(array: np.ndarray, spatial_dims: int) -> sitk.Image:
    """medseg's ``(x, y, z[, c])`` array as a SimpleITK image (geometry not set)."""
    axes = (*reversed(range(spatial_dims)), *range(spatial_dims, array.ndim))
    data = np.ascontiguousarray(np.transpose(array, axes))
    return sitk.GetImageFromArray(data, isVector=array.ndim > spatial_dims)


def lps_ras(affine: np.ndarray) -> np.ndarray:
    """Flip the first two spatial axes of an affine: LPS <-> RAS (MONAI's ``orientation_ras_lps``)."""
    flip = np.ones(affine.shape[0])
    flip[: min(2, affine.shape[0] - 1)] = -1
    return np.diag(flip) @ affine


def sitk_affine(image: sitk.Image) -> np.ndarray:
    """The RAS voxel-to-mm affine of a SimpleITK image."""
    d = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(d, d)
    affine = np.eye(d + 1)
    affine[:d, :d] = direction @ np.diag(image.GetSpacing())
    affine[:d, d] = image.GetOrigin()
    return lps_ras(affine)


def geometry_from_affine(affine: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], np.ndarray]:
    """(spacing, LPS origin, LPS direction) of a RAS affine."""
    lps = lps_ras(np.asarray(affine, dtype=np.float64))
    d = lps.shape[0] - 1
    spacing = np.linalg.norm(lps[:d, :d], axis=0)
    direction = lps[:d, :d] / np.where(spacing > 0, spacing, 1.0)
    return tuple(float(s) for s in spacing), tuple(float(o) for o in lps[:d, d]), direction


def _stack(arrays: list[np.ndarray], meta: dict[str, Any]) -> np.ndarray:
    """Several files of one case become channels at a new first axis (as MONAI's readers stack them)."""
    if len(arrays) == 1:
        return arrays[0]
    meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
    return np.stack(arrays, axis=0)


# -- MONAI readers ---------------------------------------------------------------------------------
class SimpleITKReader(ImageReader):
    """MONAI ``ImageReader`` for NRRD, MetaImage, TIFF, single DICOM files and DICOM series folders.

    Returns what MONAI's ``NibabelReader`` returns for NIfTI: the array in ``(x, y, z[, c])`` order
    (channels last) and a RAS ``affine``, so ``Orientationd``, ``Spacingd`` and ``Invertd`` treat
    every format alike. It needs only SimpleITK, not the heavy ``itk`` package ``ITKReader`` wants.
    """

    def verify_suffix(self, filename: Sequence[os.PathLike[str] | str] | os.PathLike[str] | str) -> bool:
        """True for NRRD/MHA/TIFF/DICOM files and for folders (DICOM series)."""
        names = [filename] if isinstance(filename, str | os.PathLike) else list(filename)
        return all(Path(n).is_dir() or str(n).lower().endswith(SITK_SUFFIXES) for n in names)

    def read(self, data: Sequence[os.PathLike[str] | str] | os.PathLike[str] | str, **kwargs: Any) -> Any:
        """Read one image (or a list, one per channel) as SimpleITK images."""
        names = [data] if isinstance(data, str | os.PathLike) else list(data)
        images = [sitk_read(Path(n)) for n in names]
        return images if len(images) > 1 else images[0]

    def get_data(self, img: Any) -> tuple[np.ndarray, dict[str, Any]]:
        """The array in medseg/MONAI order and the metadata MONAI's transforms need."""
        images = img if isinstance(img, list | tuple) else [img]
        arrays: list[np.ndarray] = []
        meta: dict[str, Any] = {}
        for image in images:
            array = from_sitk_array(image)
            arrays.append(array)
            if not meta:
                affine = sitk_affine(image)
                meta = {
                    MetaKeys.AFFINE: affine,
                    MetaKeys.ORIGINAL_AFFINE: affine.copy(),
                    MetaKeys.SPATIAL_SHAPE: np.asarray(image.GetSize()),
                    MetaKeys.SPACE: SpaceKeys.RAS,
                    MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan") if array.ndim == image.GetDimension() else -1,
                    "spacing": np.asarray(image.GetSpacing()),
                    "lps_origin": np.asarray(image.GetOrigin()),
                    "lps_direction": np.asarray(image.GetDirection()).reshape(image.GetDimension(), -1),
                }
        return _stack(arrays, meta), meta


class _Tagged:
    """An image object read by one of :class:`MedsegReader`'s readers, and that reader."""

    def __init__(self, reader: ImageReader, img: Any) -> None:
        self.reader, self.img = reader, img


class MedsegReader(ImageReader):
    """One MONAI reader for every format medseg reads, chosen by suffix (not by trial and error).

    NIfTI goes to MONAI's ``NibabelReader``, PNG/JPEG/BMP to ``PILReader`` and everything else
    (NRRD, MetaImage, TIFF, DICOM) to :class:`SimpleITKReader`. Readers are made per call, so
    threads of a ``CacheDataset`` never share reader state.
    """

    _factories: dict[str, type[ImageReader]] = {
        "nibabel": NiftiReader,
        "pil": PILReader,
        "sitk": SimpleITKReader,
    }

    def verify_suffix(self, filename: Sequence[os.PathLike[str] | str] | os.PathLike[str] | str) -> bool:
        """True when every file has a suffix medseg reads (or is a DICOM folder)."""
        names = [filename] if isinstance(filename, str | os.PathLike) else list(filename)
        try:
            for n in names:
                image_format(n)
        except MedsegError:
            return False
        return True

    def read(self, data: Sequence[os.PathLike[str] | str] | os.PathLike[str] | str, **kwargs: Any) -> _Tagged:
        """Read ``data`` (one path or one per channel) with the reader its suffix calls for."""
        names = [data] if isinstance(data, str | os.PathLike) else list(data)
        kinds = {READER_OF_FORMAT.get(image_format(n), "sitk") for n in names}
        if len(kinds) > 1:
            raise MedsegError(f"{names[0]}: the channels of one case mix file formats; convert them to one format")
        for n in names:
            if not Path(n).exists():
                raise MedsegError(f"{n}: file not found")
        reader = self._factories[kinds.pop()]()
        try:
            img = reader.read([str(n) for n in names] if len(names) > 1 else str(names[0]), **kwargs)
        except MedsegError:
            raise
        except Exception as err:  # nibabel / PIL errors on corrupt files
            raise MedsegError(f"{names[0]}: cannot read it ({type(err).__name__}: {err})") from None
        return _Tagged(reader, img)

    def get_data(self, img: Any, c_order: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
        """Delegate to the reader that read ``img``; the array comes back C-ordered (see :func:`as_c_order`)
        unless ``c_order=False``."""
        array, meta = img.reader.get_data(img.img)
        return (as_c_order(array) if c_order else array), meta


def as_c_order(array: np.ndarray) -> np.ndarray:
    """A C-ordered copy of a Fortran-ordered array (NIfTI stores x fastest), made in the file's dtype.

    MONAI makes one anyway, after casting to float32, with NumPy on one core: 1.9 s for a 512×512×300
    CT. Copying the int16 data first with torch, one plane across the middle axis at a time (a 2D
    transpose that fits in cache), took 0.10 s on a 2-core Xeon; planes of the last axis 0.31 s, one
    ``contiguous()`` call 0.5 s.
    """
    if array.flags.c_contiguous or array.ndim < 2:
        return array
    if not array.flags.writeable:  # torch warns on read-only arrays (PIL's); those are small 2D images
        return np.ascontiguousarray(array)
    try:
        source = torch.from_numpy(array)
    except (TypeError, ValueError):  # a dtype or byte order torch lacks
        return np.ascontiguousarray(array)
    out = torch.empty(source.shape, dtype=source.dtype)
    if source.dim() == 2:
        out.copy_(source)
    else:
        for j in range(source.shape[1]):
            out[:, j] = source[:, j]
    return out.numpy()


def as_fortran_order(array: np.ndarray) -> np.ndarray:
    """A Fortran-ordered copy of a C-ordered array, so that nibabel writes it without a strided copy
    per slice (0.50 s for a 512×512×300 uint8 mask on a 2-core Xeon; this copy 0.07 s and the write 0.11 s)."""
    if array.flags.f_contiguous or array.ndim < 3:
        return array
    try:
        source = torch.from_numpy(np.ascontiguousarray(array))
    except (TypeError, ValueError):  # a dtype or byte order torch lacks
        return np.asfortranarray(array)
    reverse = tuple(range(array.ndim - 1, -1, -1))
    out = torch.empty(source.shape[::-1], dtype=source.dtype)
    for i in range(0, source.shape[0], 32):  # blocks of the first axis: the last one of ``out``
        out[..., i : i + 32] = source[i : i + 32].permute(*reverse)
    return out.permute(*reverse).numpy()


# MONAI's LoadImage builds every reader it knows; with pydicom installed (medseg[dicom]) its GPU DICOM
# reader logs and warns at each construction that nvImageCodec is missing. medseg reads DICOM through
# SimpleITK, so that is noise on every command.
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader", category=UserWarning)


def load_transform(keys: str | Sequence[str], **kwargs: Any) -> LoadImaged:
    """The ``LoadImaged`` medseg uses everywhere: :class:`MedsegReader`, float32 images.

    Missing keys (e.g. no ``label`` at inference) are allowed.
    """
    kwargs.setdefault("allow_missing_keys", True)
    return LoadImaged(keys=keys, reader=MedsegReader(), **kwargs)
