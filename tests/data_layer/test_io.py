"""Geometry-exact reading and writing: NIfTI, NRRD, MetaImage, DICOM series, PNG/JPEG/TIFF, and MONAI loading."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from medseg.data import io
from medseg.errors import MedsegError


def _oblique(lps: bool) -> np.ndarray:
    """A right-handed oblique direction; ``lps=False`` flips the first two axes (RAS-stored voxels)."""
    a, b = math.radians(17), math.radians(9)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    d = rz @ rx
    return d if lps else d @ np.diag([-1.0, -1.0, 1.0])


def _reference(shape_zyx=(5, 7, 6), lps=True, dtype=np.int16) -> sitk.Image:
    rng = np.random.default_rng(1)
    image = sitk.GetImageFromArray(rng.integers(-200, 300, shape_zyx).astype(dtype))
    image.SetSpacing((0.7, 0.7, 5.0))
    image.SetOrigin((-112.25, 37.5, -480.75))
    image.SetDirection(_oblique(lps).ravel().tolist())
    return image


def _assert_same_geometry(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-5)


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd", ".mha"])
@pytest.mark.parametrize("lps", [True, False])
def test_round_trip_keeps_geometry_and_voxels(tmp_path, ext, lps):
    ref_path = tmp_path / f"ref{ext}"
    sitk.WriteImage(_reference(lps=lps), str(ref_path))
    array, meta = io.read_image(ref_path)
    assert array.shape == (6, 7, 5)  # (x, y, z): SimpleITK's (z, y, x) transposed
    assert meta.shape == (6, 7, 5)
    np.testing.assert_allclose(meta.spacing, (0.7, 0.7, 5.0), atol=1e-5)
    out = io.write_like(array, ref_path, tmp_path / f"out{ext}")
    ref, written = sitk.ReadImage(str(ref_path)), sitk.ReadImage(str(out))
    _assert_same_geometry(ref, written)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ref), sitk.GetArrayFromImage(written))
    # meta.origin / direction are LPS, as SimpleITK reports them
    np.testing.assert_allclose(meta.origin, ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(meta.direction.ravel(), ref.GetDirection(), atol=1e-6)


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd", ".mha"])
def test_read_image_matches_monai_loader(tmp_path, ext):
    path = tmp_path / f"img{ext}"
    sitk.WriteImage(_reference(), str(path))
    array, meta = io.read_image(path)
    loaded = io.load_transform("image")({"image": str(path)})["image"]
    np.testing.assert_array_equal(loaded.numpy(), array)
    np.testing.assert_allclose(loaded.affine.numpy(), meta.affine, atol=1e-5)
    # the RAS affine maps voxel (i, j, k) to the world point SimpleITK gives (LPS -> RAS flips x, y)
    ref = sitk.ReadImage(str(path))
    lps = np.array(ref.TransformIndexToPhysicalPoint((2, 3, 4)))
    np.testing.assert_allclose(meta.affine @ [2, 3, 4, 1], [-lps[0], -lps[1], lps[2], 1], atol=1e-4)


def test_nifti_header_codes_and_dtypes_kept(tmp_path):
    affine = np.array([[-0.7, 0.1, 0, 30.0], [0.05, 0.69, 0.2, -12.0], [0, -0.1, 4.9, 55.0], [0, 0, 0, 1]])
    img = nib.Nifti1Image(np.zeros((6, 5, 4), np.float32), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=2)
    ref = tmp_path / "ref.nii.gz"
    nib.save(img, str(ref))
    labels = np.zeros((6, 5, 4), np.int64)
    labels[1:3, 2, 1] = 2
    out = nib.load(str(io.write_like(labels, ref, tmp_path / "seg.nii.gz")))
    src = nib.load(str(ref))
    assert int(out.header["qform_code"]) == 1 and int(out.header["sform_code"]) == 2
    for key in ("quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z",
                "srow_x", "srow_y", "srow_z"):
        np.testing.assert_array_equal(out.header[key], src.header[key])
    np.testing.assert_array_equal(out.header["pixdim"][:4], src.header["pixdim"][:4])
    np.testing.assert_array_equal(out.affine, src.affine)
    assert out.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asanyarray(out.dataobj), labels)
    big = io.write_like(labels * 200, ref, tmp_path / "big.nii.gz")
    assert nib.load(str(big)).get_data_dtype() == np.uint16
    prob = io.write_like(np.full((6, 5, 4), 0.25), ref, tmp_path / "prob.nii.gz")
    assert nib.load(str(prob)).get_data_dtype() == np.float32


def _dicom_series(folder, image: sitk.Image) -> None:
    """Write ``image`` as a DICOM series (one file per slice) with SimpleITK."""
    folder.mkdir()
    direction = image.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series_uid = "1.2.826.0.1.3680043.2.1125.1.42"
    for k in range(image.GetDepth()):
        s = image[:, :, k]
        for tag, value in {
            "0008|0060": "CT",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1.41",
            "0020|000e": series_uid,
            "0020|0037": "\\".join(f"{v:.10f}" for v in (direction[0], direction[3], direction[6],
                                                             direction[1], direction[4], direction[7])),
            "0020|0032": "\\".join(f"{v:.10f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))),
            "0020|0013": str(k + 1),
            "0018|0050": f"{image.GetSpacing()[2]:.6f}",
        }.items():
            s.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice_{k:03d}.dcm"))
        writer.Execute(s)


def test_dicom_series_round_trip(tmp_path):
    image = _reference(shape_zyx=(4, 6, 5))
    series = tmp_path / "series"
    _dicom_series(series, image)
    assert io.is_dicom_series(series) and not io.is_dicom_series(tmp_path)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(series)))
    ref = reader.Execute()
    _assert_same_geometry(ref, image)  # the series itself holds the geometry we wrote
    array, meta = io.read_image(series)
    assert meta.format == "dicom" and array.shape == (5, 6, 4)
    loaded = io.load_transform("image")({"image": str(series)})["image"]
    np.testing.assert_array_equal(loaded.numpy(), array)
    for ext in (".nii.gz", ".mha"):
        out = io.write_like(array, series, tmp_path / f"from_dicom{ext}")
        written = sitk.ReadImage(str(out))
        _assert_same_geometry(ref, written)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(ref), sitk.GetArrayFromImage(written))
    with pytest.raises(MedsegError, match="DICOM"):
        io.write_like(array, series, tmp_path / "x.dcm")


def test_png_orientation_matches_monai_and_writes_back(tmp_path):
    rows, cols = 5, 8
    gray = np.arange(rows * cols, dtype=np.uint8).reshape(rows, cols)
    Image.fromarray(gray).save(tmp_path / "g.png")
    array, meta = io.read_image(tmp_path / "g.png")
    assert array.shape == (cols, rows) and meta.spacing == (1.0, 1.0)  # PILReader's (W, H) order
    np.testing.assert_array_equal(array, gray.T)
    loaded = io.load_transform("image")({"image": str(tmp_path / "g.png")})["image"]
    np.testing.assert_array_equal(loaded.numpy(), array)
    labels = (array > 20).astype(np.int64)
    io.write_like(labels, tmp_path / "g.png", tmp_path / "seg.png")
    back = np.asarray(Image.open(tmp_path / "seg.png"))
    np.testing.assert_array_equal(back, (gray > 20).astype(np.uint8))  # overlays the input pixel for pixel
    rgb = np.stack([gray, gray // 2, 255 - gray], -1)
    Image.fromarray(rgb).save(tmp_path / "c.jpg", quality=100)
    c, cmeta = io.read_image(tmp_path / "c.jpg")
    assert c.shape == (cols, rows, 3) and cmeta.num_channels == 3
    with pytest.raises(MedsegError, match="lossy"):
        io.write_like(labels, tmp_path / "g.png", tmp_path / "seg.jpg")
    with pytest.raises(MedsegError, match="uint8 or uint16"):
        io.write_like(labels * 0.5, tmp_path / "g.png", tmp_path / "prob.png")
    io.write_like(labels * 0.5, tmp_path / "g.png", tmp_path / "prob.tif")  # float maps go to TIFF
    np.testing.assert_array_equal(io.read_image(tmp_path / "prob.tif")[0], labels * 0.5)


def test_tiff_reads_like_png(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (6, 9, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.tif")
    Image.fromarray(rgb).save(tmp_path / "a.png")
    tif, meta = io.read_image(tmp_path / "a.tif")
    png, _ = io.read_image(tmp_path / "a.png")
    assert meta.format == "tiff"
    np.testing.assert_array_equal(tif, png)
    assert isinstance(io.MedsegReader()._factories["sitk"](), io.SimpleITKReader)


def test_multichannel_files_stack_as_channels(tmp_path):
    from monai.transforms import Compose, EnsureChannelFirstd

    a = np.random.default_rng(0).normal(size=(4, 5, 3)).astype(np.float32)
    for i in range(2):
        io.write_image(a + i, tmp_path / f"c{i}.nii.gz", np.diag([0.8, 0.8, 2.5, 1.0]))
    load = Compose([io.load_transform("image"), EnsureChannelFirstd("image")])
    image = load({"image": [str(tmp_path / "c0.nii.gz"), str(tmp_path / "c1.nii.gz")]})["image"]
    assert tuple(image.shape) == (2, 4, 5, 3)
    np.testing.assert_allclose(image[1].numpy() - image[0].numpy(), 1.0, atol=1e-6)


def test_user_errors_are_one_line(tmp_path):
    with pytest.raises(MedsegError, match="not found"):
        io.read_image(tmp_path / "missing.nii.gz")
    (tmp_path / "x.xyz").write_text("?")
    with pytest.raises(MedsegError, match="unsupported image format"):
        io.read_image(tmp_path / "x.xyz")
    (tmp_path / "bad.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(MedsegError, match="cannot read"):
        io.read_image(tmp_path / "bad.nii.gz")
    ref = io.write_image(np.zeros((4, 4, 3), np.uint8), tmp_path / "r.nii.gz")
    with pytest.raises(MedsegError, match="does not match the spatial shape"):
        io.write_like(np.zeros((3, 4, 4)), ref, tmp_path / "o.nii.gz")
