"""Lesion-wise counts on hand-made cases whose matches are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medseg.evaluation import evaluate_pair
from medseg.evaluation.lesions import lesion_counts


def _boxes(shape, *boxes) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for box in boxes:
        mask[box] = True
    return mask


def test_split_merged_missed_and_false_lesions() -> None:
    shape = (40, 40)
    gt = _boxes(shape,
                np.s_[2:8, 2:8],      # A: split by the prediction into two parts
                np.s_[12:16, 2:6],    # B and C: merged by one predicted component
                np.s_[12:16, 8:12],
                np.s_[30:34, 30:34])  # D: missed
    pred = _boxes(shape,
                  np.s_[2:8, 2:4], np.s_[2:8, 6:8],  # A in two pieces (a gap at columns 4-5)
                  np.s_[12:16, 2:12],                # one component over B, C and the gap between
                  np.s_[20:23, 20:23])               # a false lesion
    counts = lesion_counts(pred, gt)
    assert (counts.gt, counts.pred, counts.detected, counts.missed, counts.false) == (4, 4, 3, 1, 1)
    assert counts.sensitivity == pytest.approx(3 / 4)
    assert counts.precision == pytest.approx(3 / 4)
    assert counts.f1 == pytest.approx(0.75)
    dice_a = 2 * 24 / (36 + 24)  # A (36 px) against its two pieces (24 px), all inside A
    dice_bc = 2 * 16 / (16 + 40)  # B (16 px) against the merged component (40 px)
    assert counts.dice == pytest.approx((dice_a + 2 * dice_bc + 0.0) / (4 + 1))


def test_diagonal_neighbours_are_one_lesion_in_3d() -> None:
    gt = np.zeros((6, 6, 6), dtype=bool)
    gt[1, 1, 1] = gt[2, 2, 2] = True  # touching at a corner: one lesion
    counts = lesion_counts(gt.copy(), gt)
    assert (counts.gt, counts.detected, counts.false, counts.dice) == (1, 1, 0, 1.0)


def test_nothing_to_find_and_nothing_found_is_nan() -> None:
    empty = np.zeros((5, 5), dtype=bool)
    counts = lesion_counts(empty, empty)
    assert math.isnan(counts.sensitivity) and math.isnan(counts.precision) and math.isnan(counts.dice)


def test_rows_carry_the_lesion_columns() -> None:
    gt = np.zeros((20, 20), dtype=np.uint8)
    gt[2:6, 2:6] = 1
    gt[10:14, 10:14] = 1
    pred = np.zeros_like(gt)
    pred[2:6, 2:6] = 1
    (row,) = evaluate_pair(pred, gt, labels={0: "background", 1: "lesion"})
    assert (row["lesions_gt"], row["lesions_missed"], row["lesions_false"]) == (2, 1, 0)
    assert row["lesion_sensitivity"] == 0.5 and row["lesion_precision"] == 1.0
    assert row["lesion_dice"] == pytest.approx(0.5)
