"""Masks with names and colours: 3D Slicer's seg.nrrd read back by slicerio, ITK-SNAP's label file."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from inference_helpers import make_run
from typer.testing import CliRunner

from medseg.cli import _register, app, main
from medseg.errors import MedsegError
from medseg.inference.formats import PALETTE, itksnap_labels, slicer_fields

_register()
LABELS = {"0": "background", "1": "liver", "2": "tumour"}


def _scan(path) -> None:
    c, s = np.cos(0.25), np.sin(0.25)
    affine = np.array([[-0.9 * c, 0.9 * s, 0, 40.0], [-0.9 * s, -0.9 * c, 0, -5.0], [0, 0, 3.0, 12.0], [0, 0, 0, 1]])
    data = np.random.default_rng(0).normal(0, 1, (14, 12, 8)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, affine), str(path))


def _predict(tmp_path, fmt: str):
    """``medseg predict scan.nii.gz --format FMT`` with a tiny three-class run; the scan's path."""
    run = make_run(tmp_path / "run", spacing=None, labels=LABELS)
    scan = tmp_path / "scan.nii.gz"
    _scan(scan)
    result = CliRunner().invoke(app, ["predict", str(scan), "--run", str(run), "-o", str(tmp_path / "out"),
                                      "--format", fmt, "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    return scan


def test_seg_nrrd_opens_in_slicerio_with_names_colours_and_geometry(tmp_path) -> None:
    slicerio = pytest.importorskip("slicerio")
    scan = _predict(tmp_path, "seg.nrrd")
    seg = slicerio.read_segmentation(str(tmp_path / "out" / "scan_seg.seg.nrrd"))
    segments = {s["labelValue"]: s for s in seg["segments"]}
    assert {v: s["name"] for v, s in segments.items()} == {1: "liver", 2: "tumour"}
    for value, segment in segments.items():
        np.testing.assert_allclose(segment["color"], [c / 255 for c in PALETTE[value - 1]], atol=1e-5)
    ref = sitk.ReadImage(str(scan))
    ijk_to_lps = np.asarray(seg["ijkToLPS"])
    np.testing.assert_allclose(ijk_to_lps[:3, 3], ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(ijk_to_lps[:3, :3], np.asarray(ref.GetDirection()).reshape(3, 3) * ref.GetSpacing(),
                               atol=1e-4)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "scan_seg.seg.nrrd")))
    np.testing.assert_array_equal(np.asarray(seg["voxels"]).transpose(2, 1, 0), mask)


def test_slicer_extent_is_each_structures_box() -> None:
    labels = np.zeros((10, 9, 8), dtype=np.uint8)
    labels[2:5, 3:7, 1:2] = 1
    fields = slicer_fields(labels, {0: "background", 1: "liver", 2: "tumour"})
    assert fields["Segment0_Extent"] == "2 4 3 6 1 1" and fields["Segment0_Name"] == "liver"
    assert fields["Segment1_Extent"] == "0 9 0 8 0 7"  # absent: the whole image, as Slicer writes empty ones


def test_nrrd_gets_an_itksnap_label_file(tmp_path) -> None:
    _predict(tmp_path, "nrrd")
    text = (tmp_path / "out" / "scan_seg_labels.txt").read_text()
    assert text == itksnap_labels({0: "background", 1: "liver", 2: "tumour"})
    assert '"liver"' in text and '"tumour"' in text
    assert (tmp_path / "out" / "scan_seg.nrrd").is_file()


def test_an_unknown_format_is_one_line(tmp_path, capsys) -> None:
    run = make_run(tmp_path / "run", spacing=None)
    with pytest.raises(SystemExit) as stopped:
        main(["predict", str(tmp_path), "--run", str(run), "--format", "dicom"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--format dicom: not a mask format" in err


def test_colours_can_be_overridden_by_value_name_or_json(tmp_path) -> None:
    import json

    from medseg.inference.formats import parse_colours

    names = {0: "background", 1: "liver", 2: "tumour"}
    assert parse_colours(["1=255,0,0", "tumour=#00ff80"], names) == {1: (255, 0, 0), 2: (0, 255, 128)}
    spec = tmp_path / "dataset.json"
    spec.write_text(json.dumps({"labels": {"0": "background", "1": "liver"}, "colors": {"liver": [10, 20, 30]}}))
    assert parse_colours([str(spec)], names) == {1: (10, 20, 30)}
    assert "    1    10   20   30" in itksnap_labels(names, {1: (10, 20, 30)})
    for bad, message in (("1=300,0,0", "three values 0-255"), ("spleen=1,2,3", "not a label value or name"),
                         ("red", "write VALUE=R,G,B")):
        with pytest.raises(MedsegError, match=message):
            parse_colours([bad], names)


def test_an_overridden_colour_reaches_slicer(tmp_path) -> None:
    slicerio = pytest.importorskip("slicerio")
    run = make_run(tmp_path / "run", spacing=None, labels=LABELS)
    scan = tmp_path / "scan.nii.gz"
    _scan(scan)
    result = CliRunner().invoke(app, ["predict", str(scan), "--run", str(run), "-o", str(tmp_path / "out"),
                                      "--format", "seg.nrrd", "--colors", "liver=#ff0000", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    seg = slicerio.read_segmentation(str(tmp_path / "out" / "scan_seg.seg.nrrd"), skip_voxels=True)
    liver = next(s for s in seg["segments"] if s["name"] == "liver")
    np.testing.assert_allclose(liver["color"], [1.0, 0.0, 0.0])


def test_the_datasets_colours_travel_with_the_run_and_colors_still_overrides(tmp_path) -> None:
    slicerio = pytest.importorskip("slicerio")
    run = make_run(tmp_path / "run", spacing=None, labels=LABELS, colours={1: (0, 255, 0), 2: (0, 0, 255)})
    scan = tmp_path / "scan.nii.gz"
    _scan(scan)
    for extra, liver in (([], [0.0, 1.0, 0.0]), (["--colors", "1=255,0,0"], [1.0, 0.0, 0.0])):
        out = tmp_path / f"out{len(extra)}"
        result = CliRunner().invoke(app, ["predict", str(scan), "--run", str(run), "-o", str(out),
                                          "--format", "seg.nrrd", "--precision", "fp32", *extra])
        assert result.exit_code == 0, result.output
        seg = slicerio.read_segmentation(str(out / "scan_seg.seg.nrrd"), skip_voxels=True)
        colours = {s["name"]: s["color"] for s in seg["segments"]}
        np.testing.assert_allclose(colours["liver"], liver)
        np.testing.assert_allclose(colours["tumour"], [0.0, 0.0, 1.0])
