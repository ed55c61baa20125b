"""A cross-validation parent as a run: the folds' probabilities averaged, uncertainty maps beside the
mask, the cross-validation's post-processing applied, and the parent's bookkeeping (cv.json, latest)."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from inference_helpers import TINY_UNET, ThresholdNet, make_run, write_nifti
from typer.testing import CliRunner

from medseg.cli import _register, app
from medseg.errors import MedsegError
from medseg.inference import Predictor
from medseg.inference.postprocess import POSTPROCESSING_FILE
from medseg.inference.predictor import uncertainty_path
from medseg.inferer import tta_flips
from medseg.models import build_model
from medseg.run import CV_FILE, fold_dir, is_cross_validation, member_runs, point_latest

_register()
runner = CliRunner()

#: Orientation only (a permutation and a flip, anisotropic voxels): no resampling on the way back.
AFFINE = np.array([[0.0, -1.5, 0.0, 20.0], [1.0, 0.0, 0.0, -8.0], [0.0, 0.0, 2.0, 5.0], [0.0, 0.0, 0.0, 1.0]])


def unet(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("unet", spatial_dims=3, in_channels=1, out_channels=2, **TINY_UNET)


def make_cv(parent: Path, models: list[torch.nn.Module], finished: list[int] | None = None, **kwargs) -> Path:
    """A cross-validation parent as medseg train --folds writes it, each fold a run of ``models``."""
    for k, model in enumerate(models):
        make_run(fold_dir(parent, k), model, **kwargs)
    cv = {"medseg_cv": 1, "folds": len(models), "request": {}, "finished": list(range(len(models))) if finished is None else finished}
    (parent / CV_FILE).write_text(json.dumps(cv), encoding="utf-8")
    shutil.copyfile(fold_dir(parent, 0) / "config.yaml", parent / "config.yaml")
    return parent


@pytest.fixture
def scan(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    image = rng.uniform(-175, 250, (14, 18, 10)).astype(np.float32)
    return write_nifti(tmp_path / "scan.nii.gz", image, AFFINE)


@pytest.fixture
def two_unet_folds(tmp_path: Path) -> Path:
    return make_cv(tmp_path / "cv", [unet(0), unet(1)])


def test_a_parent_counts_one_pass_per_fold_and_mirroring(two_unet_folds: Path) -> None:
    predictor = Predictor(two_unet_folds, device="cpu", precision="fp32", tta=False)
    assert predictor.members == [fold_dir(two_unet_folds, 0), fold_dir(two_unet_folds, 1)]
    assert len(predictor.windows) == 2 and predictor.passes == 2
    assert "2 folds" in predictor.cost() and "= 2 network passes per case" in predictor.cost()
    with_tta = Predictor(two_unet_folds, device="cpu", precision="fp32", tta=True)
    assert with_tta.passes == 2 * len(tta_flips(3)) == 16
    single = Predictor(fold_dir(two_unet_folds, 0), device="cpu", precision="fp32", tta=False)
    assert single.passes == 1 and len(single.windows) == 1


def test_ensemble_probabilities_are_the_mean_of_the_folds(two_unet_folds: Path, scan: Path) -> None:
    options = {"device": "cpu", "precision": "fp32", "tta": False, "save_probabilities": True}
    ensemble = Predictor(two_unet_folds, **options).predict(scan)
    folds = [Predictor(fold_dir(two_unet_folds, k), **options).predict(scan) for k in (0, 1)]
    a, b = (f.probabilities for f in folds)
    assert a is not None and b is not None and ensemble.probabilities is not None
    assert ensemble.probabilities.shape == (2, 14, 18, 10)
    assert np.abs(a - b).max() > 1e-3, "the two folds should predict differently for this test to mean anything"
    np.testing.assert_allclose(ensemble.probabilities, (a + b) / 2, atol=1e-5)
    np.testing.assert_array_equal(ensemble.labels, np.argmax(ensemble.probabilities, 0))


def test_uncertainty_maps_are_written_beside_the_mask(two_unet_folds: Path, scan: Path, tmp_path: Path) -> None:
    predictor = Predictor(two_unet_folds, device="cpu", precision="fp32", tta=False, uncertainty=True,
                          save_probabilities=True)
    result = predictor.predict(scan)
    assert result.uncertainty is not None and result.uncertainty.shape == (2, 14, 18, 10)
    assert result.uncertainty.dtype == np.float32
    assert result.uncertainty.min() >= 0.0 and result.uncertainty.max() <= 1.0 + 1e-6
    # the entropy map is the normalised entropy of the averaged probabilities, voxel by voxel
    p = result.probabilities.astype(np.float64)
    expected = -(p * np.log(np.clip(p, 1e-12, None))).sum(0) / math.log(2)
    np.testing.assert_allclose(result.uncertainty[0], expected, atol=1e-4)
    assert result.uncertainty[1].max() > 0.0 and (result.uncertainty[1] <= result.uncertainty[0] + 1e-5).all()
    assert result.uncertainty_score is not None and 0.0 <= result.uncertainty_score <= 1.0

    out = tmp_path / "out" / "scan_seg.nii.gz"
    predictor.write(result, out)
    entropy_file, disagreement_file = out.with_name("scan_seg_entropy.nii.gz"), out.with_name("scan_seg_disagreement.nii.gz")
    assert uncertainty_path(out, "entropy") == entropy_file
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        ["scan_seg.nii.gz", "scan_seg_entropy.nii.gz", "scan_seg_disagreement.nii.gz", "scan_seg_prob_organ.nii.gz"])
    source = nib.load(str(scan))
    for path, values in ((entropy_file, result.uncertainty[0]), (disagreement_file, result.uncertainty[1])):
        img = nib.load(str(path))
        assert img.shape == source.shape and img.get_data_dtype() == np.float32
        np.testing.assert_allclose(img.affine, source.affine, atol=1e-5)
        np.testing.assert_allclose(np.asarray(img.dataobj), values, atol=1e-6)
    mask = nib.load(str(out))
    np.testing.assert_array_equal(np.asarray(mask.dataobj), result.labels)
    # the mask is written last: a mask on disk means the case is complete
    assert out.stat().st_mtime_ns >= max(entropy_file.stat().st_mtime_ns, disagreement_file.stat().st_mtime_ns)


def test_one_fold_without_tta_writes_only_the_entropy(two_unet_folds: Path, scan: Path, tmp_path: Path) -> None:
    predictor = Predictor(fold_dir(two_unet_folds, 0), device="cpu", precision="fp32", tta=False, uncertainty=True)
    result = predictor.predict(scan)
    assert result.uncertainty is not None and result.uncertainty.shape == (1, 14, 18, 10)
    out = predictor.write(result, tmp_path / "one" / "scan_seg.nii.gz")
    assert sorted(p.name for p in out.parent.iterdir()) == ["scan_seg.nii.gz", "scan_seg_entropy.nii.gz"]
    # without uncertainty: same labels, no maps
    plain = Predictor(fold_dir(two_unet_folds, 0), device="cpu", precision="fp32", tta=False).predict(scan)
    assert plain.uncertainty is None and plain.uncertainty_score is None
    np.testing.assert_array_equal(plain.labels, result.labels)


# -- post-processing from the cross-validation --------------------------------------------------------
@pytest.fixture
def blob_scan(tmp_path: Path) -> Path:
    """A 6×6×6 bright block (432 mm³) and a 2×2×2 bright speck (16 mm³) in 2 mm³ voxels (1 × 1 × 2 mm)."""
    image = np.full((20, 20, 12), -100.0, dtype=np.float32)
    image[2:8, 2:8, 2:8] = 200.0
    image[15:17, 15:17, 9:11] = 200.0
    affine = np.diag([-1.0, 1.0, 2.0, 1.0])
    return write_nifti(tmp_path / "blobs.nii.gz", image, affine)


@pytest.fixture
def threshold_cv(tmp_path: Path, threshold_model) -> Path:
    return make_cv(tmp_path / "tcv", [ThresholdNet(3), ThresholdNet(3, threshold=0.45)])


def write_rules(parent: Path, rule: dict) -> None:
    spec = {"medseg_postprocessing": 1, "classes": {"1": {"name": "organ", **rule}}}
    (parent / POSTPROCESSING_FILE).write_text(json.dumps(spec), encoding="utf-8")


def test_postprocessing_of_the_cross_validation_is_applied_unless_switched_off(threshold_cv: Path, blob_scan: Path) -> None:
    write_rules(threshold_cv, {"operation": "remove_small", "min_size": 50.0})  # 25 voxels of 2 mm³
    options = {"device": "cpu", "precision": "fp32", "tta": False}
    raw = Predictor(threshold_cv, postprocessing=False, **options)
    assert raw.postprocessing == {} and not raw.postprocesses()
    labels = raw.predict(blob_scan).labels
    assert labels[2:8, 2:8, 2:8].all() and labels[15:17, 15:17, 9:11].all() and labels.sum() == 216 + 8

    processed = Predictor(threshold_cv, **options)
    assert processed.postprocesses() and "mm³" in processed.describe_postprocessing()
    labels = processed.predict(blob_scan).labels
    assert labels[2:8, 2:8, 2:8].all() and labels.sum() == 216  # the speck is gone, the block kept

    # the threshold is in mm³: 10 mm³ is 5 voxels here, so the 8-voxel speck (16 mm³) stays
    write_rules(threshold_cv, {"operation": "remove_small", "min_size": 10.0})
    assert Predictor(threshold_cv, **options).predict(blob_scan).labels.sum() == 216 + 8

    write_rules(threshold_cv, {"operation": "largest_component"})
    assert Predictor(threshold_cv, **options).predict(blob_scan).labels.sum() == 216

    write_rules(threshold_cv, {"operation": "none"})
    none = Predictor(threshold_cv, **options)
    assert not none.postprocesses()
    assert none.predict(blob_scan).labels.sum() == 216 + 8
    # an explicit largest_component replaces the cross-validation's choice
    assert Predictor(threshold_cv, largest_component=True, **options).predict(blob_scan).labels.sum() == 216


def test_cli_no_postprocessing_keeps_what_postprocessing_removes(threshold_cv: Path, blob_scan: Path, tmp_path: Path) -> None:
    write_rules(threshold_cv, {"operation": "remove_small", "min_size": 50.0})
    masks = {}
    for flag in ("--postprocessing", "--no-postprocessing"):
        out = tmp_path / flag.strip("-") / "blobs_seg.nii.gz"
        result = runner.invoke(app, ["predict", str(blob_scan), "--run", str(threshold_cv), "-o", str(out), "--no-tta",
                                     "--device", "cpu", "--precision", "fp32", flag])
        assert result.exit_code == 0, result.output
        assert "2 folds" in result.output
        masks[flag] = (np.asarray(nib.load(str(out)).dataobj), result.output)
    (on, on_text), (off, off_text) = masks["--postprocessing"], masks["--no-postprocessing"]
    assert on.sum() == 216 and off.sum() == 216 + 8
    np.testing.assert_array_equal(on, off * (np.arange(20)[:, None, None] < 10))  # only the speck differs
    assert "post-processing from the cross-validation" in on_text
    assert "post-processing from the cross-validation" not in off_text


def test_cli_uncertainty_writes_both_maps_for_an_ensemble(threshold_cv: Path, blob_scan: Path, tmp_path: Path) -> None:
    out = tmp_path / "u" / "blobs_seg.nii.gz"
    result = runner.invoke(app, ["predict", str(blob_scan), "--run", str(threshold_cv), "-o", str(out), "--no-tta",
                                 "--device", "cpu", "--precision", "fp32", "--uncertainty"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "blobs_seg.nii.gz", "blobs_seg_disagreement.nii.gz", "blobs_seg_entropy.nii.gz"]


# -- the parent's bookkeeping ---------------------------------------------------------------------------
def test_folds_that_preprocess_differently_are_refused_in_one_line(tmp_path: Path) -> None:
    parent = tmp_path / "mixed"
    make_run(fold_dir(parent, 0), unet(0))
    make_run(fold_dir(parent, 1), unet(1), patch_size=[16, 16, 8])
    (parent / CV_FILE).write_text(json.dumps({"medseg_cv": 1, "folds": 2, "request": {}, "finished": [0, 1]}))
    shutil.copyfile(fold_dir(parent, 0) / "config.yaml", parent / "config.yaml")
    with pytest.raises(MedsegError) as info:
        Predictor(parent, device="cpu", precision="fp32")
    message = str(info.value)
    assert "\n" not in message and "fold_1" in message and "preprocesses differently" in message


def test_folds_with_different_labels_are_refused(tmp_path: Path) -> None:
    parent = tmp_path / "labels"
    make_run(fold_dir(parent, 0), unet(0))
    make_run(fold_dir(parent, 1), unet(1), labels={"0": "background", "1": "liver"})
    (parent / CV_FILE).write_text(json.dumps({"medseg_cv": 1, "folds": 2, "request": {}, "finished": [0, 1]}))
    shutil.copyfile(fold_dir(parent, 0) / "config.yaml", parent / "config.yaml")
    with pytest.raises(MedsegError, match="preprocesses differently"):
        Predictor(parent, device="cpu", precision="fp32")


def test_point_latest_leaves_a_cross_validation_alone(tmp_path: Path) -> None:
    parent = make_cv(tmp_path / "runs" / "cv", [unet(0), unet(1)])
    point_latest(fold_dir(parent, 0))
    point_latest(fold_dir(parent, 1))
    assert not (parent / "latest").exists() and not (parent / "latest").is_symlink()
    point_latest(parent)  # the parent itself is pointed at, as an ordinary run is
    assert (tmp_path / "runs" / "latest").resolve() == parent.resolve()
    assert is_cross_validation(tmp_path / "runs" / "latest")
    # an ordinary run still moves runs/latest
    other = make_run(tmp_path / "runs" / "plain", unet(2))
    point_latest(other)
    assert (tmp_path / "runs" / "latest").resolve() == other.resolve()


def test_member_runs(tmp_path: Path) -> None:
    plain = make_run(tmp_path / "plain", unet(0))
    assert member_runs(plain) == [plain]
    parent = make_cv(tmp_path / "cv", [unet(0), unet(1)])
    assert member_runs(parent) == [fold_dir(parent, 0), fold_dir(parent, 1)]
    with pytest.raises(MedsegError, match=r"last\.safetensors") as info:
        member_runs(parent, "last")  # make_run writes best only
    assert "\n" not in str(info.value) and "--folds 2" in str(info.value)
    (fold_dir(parent, 0) / "best.safetensors").unlink()
    assert member_runs(parent) == [fold_dir(parent, 1)]  # only the folds that have weights
    (fold_dir(parent, 1) / "best.safetensors").unlink()
    with pytest.raises(MedsegError, match=r"no fold has best\.safetensors"):
        member_runs(parent)
    (parent / CV_FILE).write_text("{broken", encoding="utf-8")
    with pytest.raises(MedsegError, match=re.escape(CV_FILE)):
        member_runs(parent)


def test_a_parent_without_finished_folds_is_a_one_line_error(tmp_path: Path) -> None:
    parent = tmp_path / "cv"
    parent.mkdir()
    (parent / CV_FILE).write_text(json.dumps({"medseg_cv": 1, "folds": 3, "request": {}, "finished": []}))
    with pytest.raises(MedsegError) as info:
        Predictor(parent)
    assert "\n" not in str(info.value) and "fold_0" in str(info.value)


def test_statistics_carry_the_uncertainty_scores(threshold_cv: Path, blob_scan: Path, tmp_path: Path) -> None:
    predictor = Predictor(threshold_cv, device="cpu", precision="fp32", tta=False, uncertainty=True,
                          statistics=True, postprocessing=False)
    result = predictor.predict(blob_scan)
    entropy_map = result.uncertainty[0]
    (row,) = result.statistics
    assert row["label"] == 1 and row["voxels"] == 216 + 8 and row["components"] == 2
    assert row["entropy_mean"] == pytest.approx(float(entropy_map[result.labels == 1].mean()), abs=1e-6)
    assert row["case_uncertainty"] == result.uncertainty_score
    out = predictor.write(result, tmp_path / "s" / "blobs_seg.nii.gz")
    stats = json.loads(out.with_name("blobs_seg_stats.json").read_text(encoding="utf-8"))
    assert stats["structures"][0]["case_uncertainty"] == pytest.approx(result.uncertainty_score)


def test_cost_names_folds_mirrorings_and_the_network_grid(two_unet_folds: Path, scan: Path) -> None:
    from medseg.data import io

    predictor = Predictor(two_unet_folds, device="cpu", precision="fp32", tta=True)
    line = predictor.cost(io.read_header(scan))
    assert line.startswith("2 folds × 8 mirrorings = 16 network passes per case, about ")
    # the scan is 14 × 18 × 10 voxels, axes 0 and 1 swapped by the RAS orientation, padded to the 16³ patch
    step = int(16 * (1 - predictor.inference.overlap))
    assert f"(18×16×16 network voxels, {math.ceil(2 / step) + 1} windows a pass)" in line


def test_a_single_run_costs_one_model(two_unet_folds: Path) -> None:
    line = Predictor(two_unet_folds / "fold_0", device="cpu", precision="fp32", tta=False).cost()
    assert line == "1 model × 1 mirroring = 1 network pass per case"
