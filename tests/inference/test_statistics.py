"""Per-structure statistics: volumes from the header's spacing, positions as SimpleITK computes them."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from inference_helpers import make_run
from typer.testing import CliRunner

from medseg.cli import _register, app
from medseg.data import io
from medseg.inference.statistics import structure_statistics

_register()


def _oblique_nifti(path, data) -> None:
    c, s = np.cos(0.3), np.sin(0.3)
    affine = np.array([[-0.8 * c, 0.8 * s, 0, 30.0], [-0.8 * s, -0.8 * c, 0, 12.0], [0, 0, 2.5, -40.0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(data, affine), str(path))


def test_volume_centroid_components_and_border(tmp_path) -> None:
    labels = np.zeros((20, 18, 10), dtype=np.uint8)
    labels[4:9, 5:10, 2:5] = 1          # 75 voxels, inside
    labels[12:15, 12:15, 6:8] = 1       # a second component of structure 1 (18 voxels)
    labels[0:3, 0:2, 0:10] = 2          # structure 2 touches the border
    image = np.random.default_rng(0).normal(100, 10, labels.shape).astype(np.float32)
    path = tmp_path / "scan.nii.gz"
    _oblique_nifti(path, image)
    _, meta = io.read_image(path)
    rows = structure_statistics(labels, meta, {0: "background", 1: "organ", 2: "rim", 3: "absent"}, image, "scan")
    organ, rim, absent = rows
    assert organ["voxels"] == 93 and organ["volume"] == pytest.approx(93 * 0.8 * 0.8 * 2.5 / 1000)
    assert organ["components"] == 2 and organ["largest_share"] == pytest.approx(75 / 93)
    assert not organ["touches_border"] and rim["touches_border"]
    assert organ["bbox_start"] == [4, 5, 2] and organ["bbox_stop"] == [15, 15, 8]
    assert organ["bbox_size_mm"] == pytest.approx([11 * 0.8, 10 * 0.8, 6 * 2.5])
    ref = sitk.ReadImage(str(path))
    centre = np.argwhere(labels == 1).mean(axis=0)
    expected = ref.TransformContinuousIndexToPhysicalPoint([float(v) for v in centre])
    np.testing.assert_allclose(organ["centroid_lps"], expected, atol=1e-3)
    np.testing.assert_allclose(organ["centroid_ras"], [-expected[0], -expected[1], expected[2]], atol=1e-3)
    assert organ["intensity_mean"] == pytest.approx(float(image[labels == 1].mean()), rel=1e-6)
    assert organ["intensity_max"] == pytest.approx(float(image[labels == 1].max()))
    assert absent["voxels"] == 0 and absent["components"] == 0 and np.isnan(absent["intensity_mean"])


def test_predict_stats_writes_json_and_csv(tmp_path) -> None:
    run = make_run(tmp_path / "run", spacing=None)
    image = np.random.default_rng(1).normal(0, 1, (12, 12, 8)).astype(np.float32)
    scan = tmp_path / "scan.nii.gz"
    _oblique_nifti(scan, image)
    result = CliRunner().invoke(app, ["predict", str(scan), "--run", str(run), "-o", str(tmp_path / "out"),
                                      "--stats", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    mask = tmp_path / "out" / "scan_seg.nii.gz"
    saved = json.loads((tmp_path / "out" / "scan_seg_stats.json").read_text())
    labels = np.asarray(nib.load(str(mask)).dataobj)
    zooms = nib.load(str(mask)).header.get_zooms()
    for row in saved["structures"]:
        count = int((labels == row["label"]).sum())
        assert row["voxels"] == count
        assert row["volume"] == pytest.approx(count * float(np.prod(zooms)) / 1000)
    with open(tmp_path / "out" / "statistics.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [r["structure"] for r in table] == [r["structure"] for r in saved["structures"]]
