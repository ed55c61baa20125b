"""Folder and file evaluation: case matching, geometry errors, metrics.csv and summary.json."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from medseg.data.io import write_image
from medseg.errors import MedsegError
from medseg.evaluation import evaluate, evaluate_arrays, read_metrics_csv, summarise
from medseg.evaluation.evaluate import match_cases

AFFINE = np.diag([0.8, 1.2, 2.5, 1.0])


def cube(shape=(20, 18, 8), lo=(4, 4, 2), hi=(12, 12, 6), label=1) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = label
    return out


@pytest.fixture
def folders(tmp_path):
    """Three good cases (one with a missed class 2), one shape mismatch, one prediction without GT."""
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    for k, shift in enumerate((0, 1, 2)):
        g = cube()
        g[14:17, 3:6, 1:4] = 2
        p = cube(lo=(4 + shift, 4, 2), hi=(12 + shift, 12, 6))
        if k != 2:
            p[14:17, 3:6, 1:4] = 2
        write_image(g, gt / f"case{k}.nii.gz", AFFINE)
        write_image(p, pred / f"case{k}_seg.nii.gz", AFFINE)
    write_image(cube(), gt / "bad.nii.gz", AFFINE)
    write_image(cube(shape=(20, 18, 9)), pred / "bad_seg.nii.gz", AFFINE)
    write_image(cube(), pred / "orphan_seg.nii.gz", AFFINE)
    write_image(cube(), gt / "unpredicted.nii.gz", AFFINE)
    (pred / "notes.txt").write_text("not an image")
    return pred, gt


def test_folder_evaluation_writes_csv_and_summary_and_records_errors(folders, tmp_path):
    pred, gt = folders
    seen = []
    result = evaluate(pred, gt, tmp_path / "out", labels={1: "organ", 2: "lesion"}, tolerance_mm=2.0,
                      progress=lambda done, total, case: seen.append((done, total, case)))
    assert seen[-1][:2] == (5, 5)
    assert sorted(e.case for e in result.errors) == ["bad", "orphan"]
    bad = next(e for e in result.errors if e.case == "bad")
    assert "bad_seg.nii.gz" in bad.message and "bad.nii.gz" in bad.message and "shape" in bad.message
    assert result.unmatched_gt == ["unpredicted"] and not result.ok

    rows = read_metrics_csv(result.files["csv"])
    assert [(r["case"], r["class"]) for r in rows] == [(f"case{k}", c) for k in range(3) for c in ("organ", "lesion")]
    assert rows[0]["dice"] == 1.0 and rows[0]["hd95"] == 0.0
    assert rows[2]["dice"] == pytest.approx(2 * 7 / 16)  # shifted by one voxel of 8 along x
    assert rows[5]["status"] == "pred_empty" and rows[5]["hd95"] == math.inf
    assert rows[0]["pred_file"].endswith("case0_seg.nii.gz") and rows[0]["gt_file"].endswith("case0.nii.gz")

    summary = json.loads(result.files["json"].read_text())
    assert summary["n_cases"] == 3 and summary["n_errors"] == 2 and summary["tolerance_mm"] == 2.0
    assert summary["counts"]["lesion"] == {"ok": 2, "both_empty": 0, "pred_empty": 1, "gt_empty": 0}
    hd = summary["metrics"]["hd95"]["lesion"]
    assert (hd["n"], hd["n_inf"], hd["mean"]) == (2, 1, 0.0)  # inf counted, not averaged
    dice = summary["metrics"]["dice"]["organ"]
    values = [r["dice"] for r in rows if r["class"] == "organ"]
    assert dice["mean"] == pytest.approx(np.mean(values)) and dice["median"] == pytest.approx(np.median(values))
    assert dice["std"] == pytest.approx(np.std(values, ddof=1))
    assert dice["ci95"][0] <= dice["mean"] <= dice["ci95"][1]
    assert {e["case"] for e in summary["errors"]} == {"bad", "orphan"}
    assert not list((tmp_path / "out").glob(".tmp-*"))


def test_without_labels_classes_missing_from_a_case_get_both_empty_rows(tmp_path):
    pred, gt = tmp_path / "p", tmp_path / "g"
    write_image(cube(), gt / "a.nii.gz", AFFINE)
    write_image(cube(), pred / "a.nii.gz", AFFINE)  # no _seg suffix: matched too
    write_image(cube(label=3), gt / "b.nii.gz", AFFINE)
    write_image(cube(label=3), pred / "b_seg.nii.gz", AFFINE)
    result = evaluate(pred, gt, None)
    got = [(r["case"], r["label"], r["status"]) for r in result.rows]
    assert got == [("a", 1, "ok"), ("a", 3, "both_empty"), ("b", 1, "both_empty"), ("b", 3, "ok")]
    assert result.files == {} and result.ok


def test_single_files_geometry_mismatch_names_both_files(tmp_path):
    gt = write_image(cube(), tmp_path / "gt.nii.gz", AFFINE)
    moved = AFFINE.copy()
    moved[0, 3] = 5.0
    pred = write_image(cube(), tmp_path / "gt_seg.nrrd", moved)
    with pytest.raises(MedsegError, match=r"gt_seg\.nrrd.*gt\.nii\.gz.*origin"):
        evaluate(pred, gt, tmp_path / "out")
    assert not (tmp_path / "out" / "metrics.csv").exists()
    same = write_image(cube(), tmp_path / "same_seg.nrrd", AFFINE)  # other format, same geometry: fine
    result = evaluate(same, gt, tmp_path / "out")
    assert result.rows[0]["dice"] == 1.0 and result.files["csv"].is_file()


def test_matching_rules(tmp_path):
    pred, gt = tmp_path / "p", tmp_path / "g"
    for name in ("x_0000_seg.nii.gz", "y_seg.png"):
        (pred / name).parent.mkdir(exist_ok=True)
        (pred / name).write_bytes(b"")
    for name in ("x.nii.gz", "y.png", "z.nrrd"):
        (gt / name).parent.mkdir(exist_ok=True)
        (gt / name).write_bytes(b"")
    pairs, unmatched = match_cases(pred, gt)
    assert [(c, p.name, g.name) for c, p, g in pairs] == [("x", "x_0000_seg.nii.gz", "x.nii.gz"),
                                                          ("y", "y_seg.png", "y.png")]
    assert unmatched == ["z"]
    (gt / "y.nii.gz").write_bytes(b"")
    with pytest.raises(MedsegError, match="both case 'y'"):
        match_cases(pred, gt)
    with pytest.raises(MedsegError, match="both be files or both be folders"):
        match_cases(pred, gt / "x.nii.gz")


def test_summarise_counts_non_finite_values_and_ci_contains_mean():
    rows = []
    for k in range(25):
        p, g = np.zeros((16, 16), np.uint8), np.zeros((16, 16), np.uint8)
        p[2:8 + k % 5, 3:9], g[3:9, 2:8 + k % 3] = 1, 1
        if k == 0:
            p[:] = 0
        rows += evaluate_arrays(p, g, (0.5, 0.7), case=f"c{k}")
    summary = summarise(rows, seed=1)
    assert summary["n_cases"] == 25
    for metric in ("dice", "iou", "hd95", "assd", "nsd"):
        st = summary["metrics"][metric]["1"]
        assert st["ci95"][0] < st["mean"] < st["ci95"][1], metric
        assert st["n"] + st["n_nan"] + st["n_inf"] == 25
    assert summary["metrics"]["hd95"]["1"]["n_inf"] == 1 and summary["counts"]["1"]["pred_empty"] == 1
    assert summarise(rows, seed=1) == summary  # fixed seed: reproducible
