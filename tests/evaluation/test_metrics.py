"""Metric values against MONAI's reference metrics, on random multi-class masks with anisotropic spacing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import (
    DiceMetric,
    HausdorffDistanceMetric,
    MeanIoU,
    SurfaceDistanceMetric,
    compute_confusion_matrix_metric,
    get_confusion_matrix,
)
from monai.metrics.surface_dice import compute_surface_dice
from scipy import ndimage

from medseg.errors import MedsegError
from medseg.evaluation.metrics import METRICS, as_label_map, class_stats, evaluate_pair, register_metric

NUM_CLASSES = 3  # background + 2


def blobs(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Smooth random label map with classes 1 and 2, touching the image border."""
    field = ndimage.gaussian_filter(rng.random(shape), 1.5)
    lo, hi = np.quantile(field, [0.55, 0.8])
    out = np.zeros(shape, np.uint8)
    out[field > lo] = 1
    out[field > hi] = 2
    return out


def one_hot(a: np.ndarray) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.as_tensor(a, dtype=torch.long), NUM_CLASSES).movedim(-1, 0)[None].float()


@pytest.mark.parametrize(
    ("shape", "spacing"),
    [((48, 40), (0.7, 1.9)), ((30, 26, 10), (0.8, 1.1, 3.0)), ((20, 24, 16), (2.0, 0.5, 1.25))],
)
def test_metrics_equal_monai(shape, spacing):
    rng = np.random.default_rng(len(shape) * 7 + shape[0])
    pred, gt = blobs(rng, shape), blobs(rng, shape)
    tolerance = 1.5
    rows = evaluate_pair(pred, gt, spacing, tolerance_mm=tolerance)
    assert [r["label"] for r in rows] == [1, 2] and all(r["status"] == "ok" for r in rows)
    P, G = one_hot(pred), one_hot(gt)
    ref = {
        "dice": DiceMetric(include_background=False, reduction="none", ignore_empty=False)(P, G),
        "iou": MeanIoU(include_background=False, reduction="none", ignore_empty=False)(P, G),
        "hd95": HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")(
            P, G, spacing=spacing),
        "assd": SurfaceDistanceMetric(include_background=False, symmetric=True, reduction="none")(
            P, G, spacing=spacing),
        "nsd": compute_surface_dice(P, G, [tolerance] * 2, spacing=spacing),
    }
    confusion = get_confusion_matrix(P, G, include_background=False)
    for name, key in (("sensitivity", "sensitivity"), ("specificity", "specificity"), ("precision", "precision")):
        ref[name] = compute_confusion_matrix_metric(key, confusion)
    for k, row in enumerate(rows):
        for name, values in ref.items():
            expected = float(values[0, k])
            assert row[name] == pytest.approx(expected, abs=1e-4, rel=1e-5), (name, row["label"])
        c = k + 1
        unit = np.prod(spacing) / (1000.0 if len(shape) == 3 else 1.0)
        assert row["volume_pred"] == pytest.approx(np.sum(pred == c) * unit)
        assert row["volume_gt"] == pytest.approx(np.sum(gt == c) * unit)
        assert row["volume_diff"] == pytest.approx((np.sum(pred == c) - np.sum(gt == c)) * unit)
        assert row["volume_diff_rel"] == pytest.approx(np.sum(pred == c) / np.sum(gt == c) - 1)
        assert row["volume_unit"] == ("mL" if len(shape) == 3 else "mm2")
        assert row["tp"] + row["fp"] + row["fn"] + row["tn"] == pred.size


def test_distances_use_spacing_and_the_crop_does_not_change_them():
    """A 2-voxel shift along an axis of 3 mm spacing is 6 mm; a far-away crop gives the same answer."""
    gt = np.zeros((40, 40, 20), np.uint8)
    gt[10:20, 10:20, 5:10] = 1
    pred = np.roll(gt, 2, axis=2)
    row = evaluate_pair(pred, gt, (0.5, 0.5, 3.0))[0]
    assert row["hd95"] == pytest.approx(6.0)
    big_pred, big_gt = np.zeros((90, 90, 40), np.uint8), np.zeros((90, 90, 40), np.uint8)
    big_pred[40:80, 40:80, 15:35], big_gt[40:80, 40:80, 15:35] = pred, gt
    big = evaluate_pair(big_pred, big_gt, (0.5, 0.5, 3.0))[0]
    for name in ("dice", "iou", "hd95", "assd", "nsd", "sensitivity", "precision", "volume_diff"):
        assert big[name] == pytest.approx(row[name]), name
    assert big["tn"] == big_pred.size - big["tp"] - big["fp"] - big["fn"]


def test_assd_is_the_mean_over_both_distance_sets():
    stats = class_stats(*_pair_with_outlier(), spacing=(1.0, 1.0))[1]
    d = np.concatenate([stats.pred_to_gt, stats.gt_to_pred])
    assert METRICS["assd"](stats) == pytest.approx(d.mean())
    assert METRICS["assd"](stats) != pytest.approx((stats.pred_to_gt.mean() + stats.gt_to_pred.mean()) / 2)


def _pair_with_outlier() -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros((40, 40), np.uint8)
    gt[5:25, 5:25] = 1
    pred = gt.copy()
    pred[33:35, 33:35] = 1  # a small far-away false positive: unequal set sizes and means
    return pred, gt


@pytest.mark.parametrize(
    ("pred_on", "gt_on", "status", "dice", "distance", "nsd"),
    [(False, False, "both_empty", 1.0, "nan", 1.0), (False, True, "pred_empty", 0.0, "inf", 0.0),
     (True, False, "gt_empty", 0.0, "inf", 0.0)],
)
def test_empty_mask_policy(pred_on, gt_on, status, dice, distance, nsd):
    pred, gt = np.zeros((12, 10, 6), np.int16), np.zeros((12, 10, 6), np.int16)
    if pred_on:
        pred[2:5, 2:5, 1:3] = 1
    if gt_on:
        gt[4:8, 3:7, 2:5] = 1
    row = evaluate_pair(pred, gt, (1.0, 1.0, 2.0), labels={1: "organ"})[0]
    assert (row["class"], row["status"], row["dice"], row["iou"], row["nsd"]) == ("organ", status, dice, dice, nsd)
    for name in ("hd95", "assd"):
        assert (math.isnan(row[name]) if distance == "nan" else row[name] == math.inf), name
    assert math.isnan(row["sensitivity"]) == (not gt_on)
    assert math.isnan(row["precision"]) == (not pred_on)
    assert row["specificity"] == pytest.approx((pred.size - np.sum(pred | gt)) / (pred.size - gt.sum()))


def test_labels_select_classes_and_absent_ones_are_both_empty():
    pred, gt = np.zeros((10, 10), np.uint8), np.zeros((10, 10), np.uint8)
    pred[2:6, 2:6] = gt[3:7, 3:7] = 1
    pred[8, 8] = 7  # not a named class: ignored
    rows = evaluate_pair(pred, gt, labels={0: "background", 1: "cell", 2: "nucleus"})
    assert [(r["label"], r["class"], r["status"]) for r in rows] == [(1, "cell", "ok"), (2, "nucleus", "both_empty")]
    assert rows[0]["dice"] == pytest.approx(2 * 9 / 32)
    assert [r["label"] for r in evaluate_pair(pred, gt)] == [1, 7]


def test_label_map_inputs_are_checked():
    assert as_label_map(np.array([[0.0, 2.0]], np.float32)).dtype.kind == "i"
    with pytest.raises(MedsegError, match="whole numbers"):
        as_label_map(np.array([[0.2, 0.9]]), "prediction")
    with pytest.raises(MedsegError, match="non-negative"):
        as_label_map(np.array([[-1, 0]]))
    with pytest.raises(MedsegError, match="shape"):
        evaluate_pair(np.zeros((4, 4), int), np.zeros((4, 5), int))
    with pytest.raises(MedsegError, match="spacing"):
        evaluate_pair(np.zeros((4, 4), int), np.zeros((4, 4), int), spacing=(1.0, 1.0, 1.0))


def test_register_metric_adds_a_column():
    name = "fp_voxels_test"
    register_metric(name, lambda s: float(s.fp))
    try:
        row = evaluate_pair(*_pair_with_outlier())[0]
        assert row[name] == 4.0
        with pytest.raises(ValueError, match="already"):
            register_metric(name, lambda s: 0.0)
    finally:
        METRICS.pop(name)
