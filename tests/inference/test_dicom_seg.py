"""DICOM SEG round trip: each SEG frame mapped back to its source slice by position equals the
NIfTI mask of the same prediction, voxel for voxel, for axial, oblique and reversed slice order."""

from __future__ import annotations

import numpy as np
import pytest
from inference_helpers import make_run

from medseg.data import io
from medseg.errors import MedsegError
from medseg.inference import Predictor, predict_many

hd = pytest.importorskip("highdicom")
pydicom = pytest.importorskip("pydicom")

ORIENTATIONS = {
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "oblique": ((np.cos(0.3), np.sin(0.3), 0.0), (0.0, np.cos(0.2), np.sin(0.2))),
    "reversed": ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0)),  # normal along -z: positions fall as slices go on
}


def _ct_series(folder, orientation: str, shape=(20, 16, 7), spacing=(0.8, 0.7, 2.5)):
    """A CT series written with pydicom: HU -100, a brighter box of 200 HU; one file per slice."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir()
    row, col = (np.asarray(v, dtype=np.float64) for v in ORIENTATIONS[orientation])
    normal = np.cross(row, col)
    volume = np.full(shape, -100, dtype=np.int16)  # (x = column, y = row, z = slice)
    volume[4:12, 3:10, 2:5] = 200
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for k in range(shape[2]):
        position = np.array([10.0, -20.0, 30.0]) + normal * spacing[2] * k
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "P1", "Test^Patient", "19700101", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", "A1"
        ds.ReferringPhysicianName, ds.Modality, ds.Manufacturer = "", "CT", "test"
        ds.SeriesNumber, ds.InstanceNumber = 1, shape[2] - k if orientation == "reversed" else k + 1
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.ImageOrientationPatient = [float(v) for v in (*row, *col)]
        ds.PixelSpacing, ds.SliceThickness = [spacing[1], spacing[0]], spacing[2]
        ds.Rows, ds.Columns = shape[1], shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "HU"
        ds.PixelData = np.ascontiguousarray(volume[:, :, k].T).tobytes()
        ds.save_as(str(folder / f"slice_{k:03d}.dcm"), enforce_file_format=True)
    return folder


def _seg_as_labels(seg_path, series, names: dict[int, str]) -> np.ndarray:
    """The SEG's frames put back on the source grid (medseg order) by each frame's plane position."""
    seg = pydicom.dcmread(str(seg_path))
    files = io.dicom_files(series)
    positions = [np.asarray(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient, float) for f in files]
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    value_of = {int(s.SegmentNumber): next(k for k, v in names.items() if v == s.SegmentLabel)
                for s in seg.SegmentSequence}
    frames = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    labels = np.zeros((first.Columns, first.Rows, len(files)), dtype=np.uint8)
    for i, group in enumerate(seg.PerFrameFunctionalGroupsSequence):
        where = np.asarray(group.PlanePositionSequence[0].ImagePositionPatient, float)
        k = int(np.argmin([np.linalg.norm(where - p) for p in positions]))
        assert np.linalg.norm(where - positions[k]) < 1e-3
        number = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        labels[:, :, k][frames[i].T > 0] = value_of[number]
    return labels


@pytest.mark.parametrize("orientation", list(ORIENTATIONS))
def test_dicom_seg_round_trip(tmp_path, threshold_model, orientation) -> None:
    series = _ct_series(tmp_path / "series", orientation)
    names = {0: "background", 1: "organ", 2: "vessel"}
    run = make_run(tmp_path / "run", threshold_model(), spacing=None, labels={str(k): v for k, v in names.items()})
    predictor = Predictor(run, precision="fp32")
    nifti = predict_many(predictor, [series], tmp_path / "nifti", fmt="nii.gz")
    dicom = predict_many(predictor, [series], tmp_path / "seg", fmt="dicom-seg")
    assert not nifti.failed and not dicom.failed, (nifti.failed, dicom.failed)
    mask, _ = io.read_image(nifti.written[0][1])
    assert mask.any()
    seg_path = dicom.written[0][1]
    assert seg_path.name == "series_seg.dcm"
    np.testing.assert_array_equal(_seg_as_labels(seg_path, series, names), mask)
    seg = pydicom.dcmread(str(seg_path))
    source = pydicom.dcmread(io.dicom_files(series)[0], stop_before_pixels=True)
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["organ", "vessel"]


def test_dicom_seg_of_a_nifti_is_one_line(tmp_path) -> None:
    import nibabel as nib

    run = make_run(tmp_path / "run", spacing=None)
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.float32), np.eye(4)), str(scan))
    report = predict_many(Predictor(run, precision="fp32"), [scan], tmp_path / "out", fmt="dicom-seg")
    assert len(report.failed) == 1 and "is for DICOM series inputs" in report.failed[0][1]
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_without_highdicom_the_error_names_the_extra(monkeypatch) -> None:
    import builtins

    from medseg.inference import dicom_seg

    real = builtins.__import__

    def no_highdicom(name, *args, **kwargs):
        if name == "highdicom":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_highdicom)
    with pytest.raises(MedsegError, match=r"pip install 'medseg\[dicom\]'"):
        dicom_seg._highdicom()
