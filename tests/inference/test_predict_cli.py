"""``medseg predict``: files, folders and DICOM series in, masks in the input's exact geometry out."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from inference_helpers import ellipsoid_case, make_run, oblique_affine, write_nifti
from typer.testing import CliRunner

from medseg.cli import _register, app

_register()
runner = CliRunner()


def assert_same_geometry(mask_path, image_path) -> None:
    """Shape, origin, spacing and direction as SimpleITK reads them, to 1e-5."""
    mask, image = sitk.ReadImage(str(mask_path)), sitk.ReadImage(str(image_path))
    assert mask.GetSize() == image.GetSize()
    np.testing.assert_allclose(mask.GetOrigin(), image.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(mask.GetSpacing(), image.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(mask.GetDirection(), image.GetDirection(), atol=1e-5)


def write_nrrd(path, array, spacing=(0.9, 0.8, 3.5), origin=(12.0, -40.0, 7.5)):
    """An NRRD (LPS) with a tilted direction and anisotropic spacing."""
    image = sitk.GetImageFromArray(np.transpose(array, (2, 1, 0)))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    c, s = np.cos(0.35), np.sin(0.35)
    image.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(image, str(path))
    return path


def write_dicom_series(folder, array, spacing=(0.75, 0.75, 2.5), origin=(-20.0, 15.0, 100.0)):
    """A CT series, one file per slice, with patient position, orientation and spacing tags."""
    folder.mkdir()
    volume = sitk.GetImageFromArray(np.transpose(array, (2, 1, 0)).astype(np.int16))
    volume.SetSpacing(spacing)
    volume.SetOrigin(origin)
    direction = volume.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid = "1.2.826.0.1.3680043.2.1125.1"
    for z in range(volume.GetDepth()):
        slice_ = volume[:, :, z]
        for tag, value in {
            "0008|0060": "CT", "0020|000d": uid + ".1", "0020|000e": uid + ".2", "0008|0018": f"{uid}.3.{z}",
            "0020|0037": "\\".join(str(v) for v in (*direction[0:7:3], *direction[1:8:3])),
            "0020|0032": "\\".join(str(v) for v in volume.TransformIndexToPhysicalPoint((0, 0, z))),
            "0020|0013": str(z), "0028|0030": f"{spacing[1]}\\{spacing[0]}", "0018|0050": str(spacing[2]),
        }.items():
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{z:03d}.dcm"))
        writer.Execute(slice_)
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny real U-Net run with a target spacing, so predict resamples and re-orients."""
    return make_run(tmp_path_factory.mktemp("runs") / "run1", spacing=[1.2, 1.2, 2.0])


def test_oblique_nifti_nrrd_and_dicom_keep_their_geometry(tmp_path, run_dir):
    image, _ = ellipsoid_case((40, 36, 10))
    nifti = write_nifti(tmp_path / "oblique.nii.gz", image, oblique_affine(), qform_code=1, sform_code=2)
    nrrd = write_nrrd(tmp_path / "tilted.nrrd", image)
    dicom = write_dicom_series(tmp_path / "series", image[:, :, :6])

    result = runner.invoke(app, ["predict", str(nifti), str(nrrd), str(dicom), "--run", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert str(run_dir) in result.output  # says which run it used
    outputs = {tmp_path / "oblique_seg.nii.gz": nifti, tmp_path / "tilted_seg.nrrd": nrrd,
               tmp_path / "series_seg.nii.gz": dicom}
    for mask, source in outputs.items():
        assert mask.is_file(), result.output
        if source.is_dir():
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(source)))
            series = reader.Execute()
            sitk.WriteImage(series, str(tmp_path / "series_as_nifti.nii.gz"))
            source = tmp_path / "series_as_nifti.nii.gz"
        assert_same_geometry(mask, source)
        assert sitk.ReadImage(str(mask)).GetPixelID() == sitk.sitkUInt8
    written, original = nib.load(str(tmp_path / "oblique_seg.nii.gz")), nib.load(str(nifti))
    assert int(written.header["qform_code"]) == 1 and int(written.header["sform_code"]) == 2
    np.testing.assert_allclose(written.affine, original.affine, atol=1e-6)


def test_folder_with_a_corrupt_file_predicts_the_others(tmp_path, run_dir):
    folder = tmp_path / "cases"
    folder.mkdir()
    image, _ = ellipsoid_case((24, 20, 8))
    for name in ("a", "c"):
        write_nifti(folder / f"{name}.nii.gz", image, oblique_affine())
    (folder / "b.nii.gz").write_bytes(b"\x1f\x8b this is not a gzip stream")
    out = tmp_path / "masks"
    result = runner.invoke(app, ["predict", str(folder), "--run", str(run_dir), "-o", str(out)])
    assert result.exit_code != 0
    assert "b.nii.gz" in result.output and "failed" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["a_seg.nii.gz", "c_seg.nii.gz"]
    assert_same_geometry(out / "a_seg.nii.gz", folder / "a.nii.gz")


def test_default_run_output_file_and_options(tmp_path, run_dir, monkeypatch):
    (tmp_path / "runs").mkdir()
    os.symlink(run_dir, tmp_path / "runs" / "latest")
    monkeypatch.chdir(tmp_path)
    image, _ = ellipsoid_case((24, 20, 8))
    scan = write_nifti(tmp_path / "scan.nii.gz", image, oblique_affine())
    target = tmp_path / "out" / "mask.nrrd"
    result = runner.invoke(app, ["predict", "scan.nii.gz", "-o", str(target), "--tta", "--largest-component",
                                 "--probabilities", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    assert "runs/latest" in result.output or str(run_dir) in result.output
    assert_same_geometry(target, scan)
    assert_same_geometry(tmp_path / "out" / "mask_prob_organ.nrrd", scan)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(target)))
    assert set(np.unique(labels)) <= {0, 1}


def test_missing_run_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image, _ = ellipsoid_case((12, 12, 4))
    write_nifti(tmp_path / "scan.nii.gz", image, oblique_affine())
    result = runner.invoke(app, ["predict", "scan.nii.gz"])
    assert result.exit_code != 0
    assert "runs/latest" in str(result.exception) + result.output
