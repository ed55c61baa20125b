"""Read and write medical images with their geometry kept exact, and hook the readers into MONAI.

Axis convention (one for every format, the one MONAI's readers give before ``EnsureChannelFirst``):

- spatial axes first in voxel-index order ``(i, j[, k])``: for NIfTI exactly nibabel's order; for
  SimpleITK formats (NRRD, MetaImage, DICOM, TIFF) SimpleITK's ``(z, y, x)`` array transposed to
  ``(x, y, z)``; for PNG/JPEG, MONAI ``PILReader``'s ``(width, height)`` order, i.e. the transpose of
  the ``(rows, columns)`` array PIL gives;
- channels, when there are several (RGB, a 4D NIfTI), last.

``ImageMeta.affine`` maps voxel indices to RAS millimetres (nibabel and MONAI's convention);
``ImageMeta.origin`` and ``ImageMeta.direction`` are in LPS, exactly as SimpleITK reports them.
PNG/JPEG files have no geometry: spacing 1, origin 0, identity direction.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from monai.utils import MetaKeys

from medseg.data.formats import (
    IMAGE_SUFFIXES,
    LOSSY_SUFFIXES,
    NIFTI_SUFFIXES,
    NO_GEOMETRY_FORMATS,
    PIL_SUFFIXES,
    SITK_SUFFIXES,
    dicom_files,
    image_format,
    is_dicom_series,
    strip_suffix,
)
from medseg.data.nifti import save_nifti
from medseg.data.readers import (
    MedsegReader,
    SimpleITKReader,
    as_fortran_order,
    geometry_from_affine,
    load_transform,
    lps_ras,
    to_sitk_image,
)
from medseg.errors import MedsegError
from medseg.utils import atomic_path

#: The readers, the format table and ``load_transform`` live in :mod:`~medseg.data.readers` and
#: :mod:`~medseg.data.formats`; they are re-exported here, where users have always imported them.
__all__ = [
    "IMAGE_SUFFIXES", "LOSSY_SUFFIXES", "NIFTI_SUFFIXES", "NO_GEOMETRY_FORMATS", "PIL_SUFFIXES", "SITK_SUFFIXES",
    "ImageMeta", "MedsegReader", "SimpleITKReader", "as_label", "dicom_files", "image_format", "is_dicom_series",
    "load_transform", "read_header", "read_image", "strip_suffix", "write_image", "write_like",
]  # fmt: skip


@dataclass
class ImageMeta:
    """Geometry and provenance of an image read by :func:`read_image`.

    ``shape`` is the spatial shape (no channels); ``spacing`` is in mm per axis of the array;
    ``origin``/``direction`` are LPS (as SimpleITK reports); ``affine`` is the RAS voxel-to-mm matrix
    of size ``spatial_dims + 1``.
    """

    path: Path
    format: str
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: np.ndarray
    affine: np.ndarray
    num_channels: int = 1
    dtype: str = "float32"
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def spatial_dims(self) -> int:
        """2 or 3."""
        return len(self.shape)

    @property
    def has_geometry(self) -> bool:
        """False for formats that store no spacing, origin or direction (PNG, JPEG, BMP): their
        identity geometry is a placeholder, not something to compare with another file's."""
        return self.format not in NO_GEOMETRY_FORMATS



# -- reading -----------------------------------------------------------------------------------------
def read_image(path: str | os.PathLike[str], c_order: bool = True) -> tuple[np.ndarray, ImageMeta]:
    """Read an image file or DICOM series folder; the array is exactly what ``load_transform`` loads.

    Only the dtype differs: ``read_image`` keeps the file's own dtype (``LoadImaged`` casts to float32).
    ``c_order=False`` keeps the memory order the file stores (x fastest for NIfTI), without the copy
    :func:`~medseg.data.readers.as_c_order` makes; the prediction's resampling reads it in that order.
    """
    path = Path(path)
    if not path.exists():
        raise MedsegError(f"{path}: file not found")
    fmt = image_format(path)
    reader = MedsegReader()
    array, meta = reader.get_data(reader.read(path), c_order=c_order)
    array = np.asarray(array)
    spatial_shape = tuple(int(s) for s in np.asarray(meta[MetaKeys.SPATIAL_SHAPE]).ravel())
    dims = len(spatial_shape)
    affine = meta.get(MetaKeys.AFFINE)
    if affine is None:  # PNG/JPEG: no geometry
        affine = np.eye(dims + 1)
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape[0] != dims + 1:  # e.g. a 2D NIfTI: keep the in-plane part
        full = affine
        affine = np.eye(dims + 1)
        affine[:dims, :dims] = full[:dims, :dims]
        affine[:dims, dims] = full[:dims, -1]
    spacing, origin, direction = geometry_from_affine(affine)
    if "lps_origin" in meta:  # SimpleITK formats: its exact doubles, not a round trip through the affine
        spacing = tuple(float(s) for s in meta["spacing"])
        origin = tuple(float(o) for o in meta["lps_origin"])
        direction = np.asarray(meta["lps_direction"], dtype=np.float64)
    channels = int(np.prod(array.shape[dims:])) if array.ndim > dims else 1
    info = ImageMeta(
        path=path, format=fmt, shape=spatial_shape, spacing=spacing, origin=origin, direction=direction,
        affine=affine, num_channels=channels, dtype=str(array.dtype),
    )
    return array, info


def read_header(path: str | os.PathLike[str]) -> ImageMeta:
    """Geometry of an image without its voxels where the format allows it (NIfTI, SimpleITK files)."""
    path = Path(path)
    fmt = image_format(path)
    if fmt == "nifti":
        import nibabel as nib

        try:
            img = nib.load(str(path))
        except Exception as err:
            raise MedsegError(f"{path}: cannot read it ({type(err).__name__}: {err})") from None
        shape = tuple(int(s) for s in img.shape)
        dims = min(len(shape), 3)
        affine = np.asarray(img.affine, dtype=np.float64)
        if dims == 2:
            affine = np.delete(np.delete(affine, 2, 0), 2, 1)
        spacing, origin, direction = geometry_from_affine(affine)
        return ImageMeta(path, fmt, shape[:dims], spacing, origin, direction, affine,
                         int(np.prod(shape[dims:])) if len(shape) > dims else 1, str(img.get_data_dtype()))
    if fmt in ("dicom", "png", "jpeg", "bmp"):
        return read_image(path)[1]
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise MedsegError(f"{path}: SimpleITK cannot read it ({str(err).strip().splitlines()[-1]})") from None
    d = reader.GetDimension()
    direction = np.asarray(reader.GetDirection()).reshape(d, d)
    affine = np.eye(d + 1)
    affine[:d, :d] = direction @ np.diag(reader.GetSpacing())
    affine[:d, d] = reader.GetOrigin()
    return ImageMeta(path, fmt, tuple(reader.GetSize()), tuple(reader.GetSpacing()), tuple(reader.GetOrigin()),
                     direction, lps_ras(affine), reader.GetNumberOfComponents(),
                     sitk.GetPixelIDValueAsString(reader.GetPixelID()))


# -- writing -----------------------------------------------------------------------------------------
def _output_dtype(array: np.ndarray, dtype: Any | None) -> np.dtype[Any]:
    """Labels as uint8 (uint16 above 255), signed ints when negative, floats as float32."""
    if dtype is not None:
        return np.dtype(dtype)
    if array.dtype == bool:
        return np.dtype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        if array.size == 0:
            return np.dtype(np.uint8)
        lo, hi = int(array.min()), int(array.max())
        if lo >= 0:
            return np.dtype(np.uint8 if hi <= 255 else np.uint16 if hi <= 65535 else np.uint32)
        return np.dtype(np.int16 if lo >= -32768 and hi <= 32767 else np.int32)
    return np.dtype(np.float32)


def _write_pil(array: np.ndarray, out: Path) -> None:
    from PIL import Image

    if image_format(out) == "jpeg":
        raise MedsegError(f"{out}: JPEG is lossy and would change the values; write .png instead")
    if array.dtype not in (np.uint8, np.uint16):
        raise MedsegError(f"{out}: PNG holds uint8 or uint16 values, not {array.dtype}; write .tif or .nii.gz instead")
    if array.dtype == np.uint16 and array.ndim > 2:
        raise MedsegError(f"{out}: PNG cannot hold 16-bit colour images here; write .tif or .nii.gz instead")
    data = np.ascontiguousarray(np.swapaxes(array, 0, 1))  # (W, H[, C]) -> (rows, columns[, C])
    image = Image.fromarray(data)
    with atomic_path(out) as tmp:
        image.save(str(tmp), format=_PIL_FORMATS[image_format(out)])


_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "bmp": "BMP"}


def _write_sitk(array: np.ndarray, out: Path, meta: ImageMeta, fields: Mapping[str, str] | None = None) -> None:
    """Write through SimpleITK with ``meta``'s LPS origin, spacing and direction (exact doubles) and
    ``fields`` as header entries (NRRD writes them as ``key:=value``)."""
    image = to_sitk_image(array, meta.spatial_dims)
    for key, value in (fields or {}).items():
        image.SetMetaData(key, value)
    image.SetSpacing([float(s) for s in meta.spacing])
    image.SetOrigin([float(o) for o in meta.origin])
    image.SetDirection([float(v) for v in np.asarray(meta.direction, dtype=np.float64).ravel()])
    with atomic_path(out) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=not str(out).lower().endswith((".tif", ".tiff")))


_NIFTI_GEOMETRY_FIELDS = (
    "qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d",
    "qoffset_x", "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z", "xyzt_units",
)


def _write_nifti_like(array: np.ndarray, reference: Path, out: Path) -> None:
    """Copy the reference header (affine, qform/sform and their codes, units) and set the data type."""
    import nibabel as nib

    ref = nib.load(str(reference))
    header = ref.header.copy()
    header.set_data_dtype(array.dtype)
    img = nib.Nifti1Image(as_fortran_order(array), None, header=header)
    img.header.set_slope_inter(np.nan, np.nan)  # values are stored as they are
    for key in _NIFTI_GEOMETRY_FIELDS:  # byte-exact: no re-encoding of the quaternion
        img.header[key] = ref.header[key]
    with atomic_path(out) as tmp:
        save_nifti(img, tmp)


def write_like(
    array: np.ndarray,
    reference: str | os.PathLike[str] | ImageMeta,
    out_path: str | os.PathLike[str],
    dtype: Any | None = None,
    fields: Mapping[str, str] | None = None,
) -> Path:
    """Write ``array`` with the exact geometry of ``reference``; the format follows ``out_path``'s suffix.

    ``fields`` go into the header of formats written through SimpleITK (NRRD, MetaImage).

    ``array`` is in :func:`read_image`'s axis order and has the reference's spatial shape (channels
    last if any). NIfTI references keep their header (affine, qform/sform and codes) when written
    as NIfTI; everything else goes through SimpleITK with the reference's origin, spacing and
    direction. Integer labels become uint8 (uint16 above 255), floats float32. A DICOM series may
    be written as NIfTI/NRRD/MHA in the series' geometry. PNG output takes uint8/uint16 only (write
    probability maps as .tif or .nii.gz). Written atomically.
    """
    out = Path(out_path)
    meta = reference if isinstance(reference, ImageMeta) else read_header(reference)
    array = np.asarray(array)
    dims = meta.spatial_dims
    if tuple(array.shape[:dims]) != tuple(meta.shape) or array.ndim > dims + 1:
        raise MedsegError(
            f"{out}: array shape {tuple(array.shape)} does not match the spatial shape {meta.shape} of {meta.path}; "
            "give the array in the reference's voxel order (as read_image returns it)"
        )
    array = array.astype(_output_dtype(array, dtype), copy=False)
    if out.is_dir() or image_format(out) == "dicom":
        raise MedsegError(f"{out}: writing DICOM is not supported; write .nii.gz, .nrrd or .mha instead")
    out_fmt = image_format(out)
    if out_fmt == "nifti" and meta.format == "nifti":
        _write_nifti_like(array, meta.path, out)
    elif out_fmt in _PIL_FORMATS:
        if dims != 2:
            raise MedsegError(f"{out}: a {dims}D image cannot be written as {out_fmt}; write .nii.gz instead")
        _write_pil(array, out)
    else:
        _write_sitk(array, out, meta, fields)
    return out


def write_image(
    array: np.ndarray,
    out_path: str | os.PathLike[str],
    affine: np.ndarray | None = None,
    dtype: Any | None = None,
) -> Path:
    """Write a new image (no reference) from ``array`` in medseg's axis order and a RAS ``affine``.

    Used by the demo-data generator and ``medseg data prepare``. ``affine`` defaults to identity.
    NIfTI files get qform and sform code 1 (scanner); other formats store origin/spacing/direction.
    """
    out = Path(out_path)
    array = np.asarray(array)
    fmt = image_format(out)
    array = array.astype(_output_dtype(array, dtype), copy=False)
    if fmt in _PIL_FORMATS:
        _write_pil(array, out)
        return out
    dims = 3 if fmt == "nifti" and array.ndim >= 3 else 2 if array.ndim == 2 else min(array.ndim, 3)
    if affine is None:
        affine = np.eye(dims + 1)
    affine = np.asarray(affine, dtype=np.float64)
    if fmt == "nifti":
        import nibabel as nib

        full = np.eye(4)
        d = affine.shape[0] - 1
        full[:d, :d] = affine[:d, :d]
        full[:d, 3] = affine[:d, d]
        img = nib.Nifti1Image(array, full)
        img.set_qform(full, code=1)
        img.set_sform(full, code=1)
        img.header.set_xyzt_units("mm", "sec")
        with atomic_path(out) as tmp:
            save_nifti(img, tmp)
        return out
    spacing, origin, direction = geometry_from_affine(affine)
    _write_sitk(array, out, ImageMeta(out, fmt, tuple(array.shape[:dims]), spacing, origin, direction, affine))
    return out


def as_label(array: np.ndarray, path: str | os.PathLike[str] | None = None) -> np.ndarray:
    """A label array as integers; warns (once) and rounds when the values are not whole numbers."""
    if np.issubdtype(array.dtype, np.integer) or array.dtype == bool:
        return array.astype(np.int64, copy=False)
    rounded = np.rint(array)
    if not np.array_equal(rounded, array, equal_nan=False):
        warnings.warn(f"{path}: label values are not whole numbers; rounding them", stacklevel=2)
    return rounded.astype(np.int64)
