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

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import ImageReader, PILReader
from monai.transforms import LoadImaged
from monai.utils import MetaKeys, SpaceKeys

from medseg.data.nifti import NiftiReader, save_nifti
from medseg.errors import MedsegError
from medseg.utils import atomic_path

NIFTI_SUFFIXES = (".nii.gz", ".nii")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
SITK_SUFFIXES = (".seg.nrrd", ".nrrd", ".nhdr", ".mha", ".mhd", ".tif", ".tiff", ".dcm")  # longest first
IMAGE_SUFFIXES = NIFTI_SUFFIXES + PIL_SUFFIXES + SITK_SUFFIXES
LOSSY_SUFFIXES = (".jpg", ".jpeg")
NO_GEOMETRY_FORMATS = ("png", "jpeg", "bmp")


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


# -- format detection --------------------------------------------------------------------------------
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
_READER_OF_FORMAT = {"nifti": "nibabel", "png": "pil", "jpeg": "pil", "bmp": "pil"}  # the rest: sitk


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


# -- SimpleITK <-> medseg arrays -------------------------------------------------------------------
def _sitk_read(path: Path) -> sitk.Image:
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(dicom_files(path))
            return reader.Execute()
        return sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise MedsegError(f"{path}: SimpleITK cannot read it ({str(err).strip().splitlines()[-1]})") from None


def _from_sitk_array(image: sitk.Image) -> np.ndarray:
    """SimpleITK's ``(z, y, x[, c])`` array as medseg's ``(x, y, z[, c])``."""
    array = sitk.GetArrayFromImage(image)
    dims = image.GetDimension()
    axes = (*reversed(range(dims)), *range(dims, array.ndim))
    return np.ascontiguousarray(np.transpose(array, axes))


def _to_sitk_image(array: np.ndarray, spatial_dims: int) -> sitk.Image:
    """medseg's ``(x, y, z[, c])`` array as a SimpleITK image (geometry not set)."""
    axes = (*reversed(range(spatial_dims)), *range(spatial_dims, array.ndim))
    data = np.ascontiguousarray(np.transpose(array, axes))
    return sitk.GetImageFromArray(data, isVector=array.ndim > spatial_dims)


def _lps_ras(affine: np.ndarray) -> np.ndarray:
    """Flip the first two spatial axes of an affine: LPS <-> RAS (MONAI's ``orientation_ras_lps``)."""
    flip = np.ones(affine.shape[0])
    flip[: min(2, affine.shape[0] - 1)] = -1
    return np.diag(flip) @ affine


def _sitk_affine(image: sitk.Image) -> np.ndarray:
    """The RAS voxel-to-mm affine of a SimpleITK image."""
    d = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(d, d)
    affine = np.eye(d + 1)
    affine[:d, :d] = direction @ np.diag(image.GetSpacing())
    affine[:d, d] = image.GetOrigin()
    return _lps_ras(affine)


def _geometry_from_affine(affine: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], np.ndarray]:
    """(spacing, LPS origin, LPS direction) of a RAS affine."""
    lps = _lps_ras(np.asarray(affine, dtype=np.float64))
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
        images = [_sitk_read(Path(n)) for n in names]
        return images if len(images) > 1 else images[0]

    def get_data(self, img: Any) -> tuple[np.ndarray, dict[str, Any]]:
        """The array in medseg/MONAI order and the metadata MONAI's transforms need."""
        images = img if isinstance(img, list | tuple) else [img]
        arrays: list[np.ndarray] = []
        meta: dict[str, Any] = {}
        for image in images:
            array = _from_sitk_array(image)
            arrays.append(array)
            if not meta:
                affine = _sitk_affine(image)
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
        kinds = {_READER_OF_FORMAT.get(image_format(n), "sitk") for n in names}
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
        """Delegate to the reader that read ``img``; the array comes back C-ordered (see :func:`_c_order`)
        unless ``c_order=False``."""
        array, meta = img.reader.get_data(img.img)
        return (_c_order(array) if c_order else array), meta


def _c_order(array: np.ndarray) -> np.ndarray:
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


def _fortran_order(array: np.ndarray) -> np.ndarray:
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


# -- reading -----------------------------------------------------------------------------------------
def read_image(path: str | os.PathLike[str], c_order: bool = True) -> tuple[np.ndarray, ImageMeta]:
    """Read an image file or DICOM series folder; the array is exactly what ``load_transform`` loads.

    Only the dtype differs: ``read_image`` keeps the file's own dtype (``LoadImaged`` casts to float32).
    ``c_order=False`` keeps the memory order the file stores (x fastest for NIfTI), without the copy
    :func:`_c_order` makes; the prediction's resampling reads it in that order.
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
    spacing, origin, direction = _geometry_from_affine(affine)
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
        spacing, origin, direction = _geometry_from_affine(affine)
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
                     direction, _lps_ras(affine), reader.GetNumberOfComponents(),
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
    image = _to_sitk_image(array, meta.spatial_dims)
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
    img = nib.Nifti1Image(_fortran_order(array), None, header=header)
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
    spacing, origin, direction = _geometry_from_affine(affine)
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
