"""Post-processing chosen from out-of-fold cases (medseg.evaluation.postprocessing) and applied at
prediction time (medseg.inference.postprocess): hand-made label maps whose best choice is known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from medseg.errors import MedsegError
from medseg.evaluation.postprocessing import MIN_GAIN, Components, choose_postprocessing, components_of
from medseg.inference.postprocess import (
    POSTPROCESSING_FILE,
    apply_postprocessing,
    keep_largest_components,
    read_postprocessing,
    remove_small_components,
)

LABELS = {0: "background", 1: "organ"}


def dice(pred: np.ndarray, gt: np.ndarray, label: int) -> float:
    a, b = pred == label, gt == label
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / total


def mean_dice(pairs, label: int) -> float:
    return float(np.mean([dice(p, g, label) for p, g, _ in pairs]))


def square(shape, corner, size, value=1, out=None):
    """``out`` (zeros of ``shape`` by default) with a cube of side ``size`` at ``corner`` set to ``value``."""
    out = np.zeros(shape, dtype=np.uint8) if out is None else out
    out[tuple(slice(c, c + size) for c in corner)] = value
    return out


def two_true_parts_and_a_speck(dims: int):
    """Cases whose ground truth has two parts (5-wide and 4-wide cubes) and whose prediction adds a
    2-wide speck: removing the speck is right, keeping only the largest part is wrong."""
    shape = (24,) * dims
    gt_a = square(shape, (2,) * dims, 5)
    square(shape, (12,) * dims, 4, out=gt_a)
    pred_a = gt_a.copy()
    square(shape, (20,) * dims, 2, out=pred_a)  # spurious
    gt_b = square(shape, (3,) * dims, 5)
    pred_b = gt_b.copy()
    square(shape, (18,) * (dims - 1) + (2,), 2, out=pred_b)  # spurious
    return [(pred_a, gt_a), (pred_b, gt_b)]


@pytest.mark.parametrize(("dims", "spacing"), [(2, (2.0, 1.5)), (3, (0.5, 0.5, 3.0))], ids=["2d", "3d"])
def test_a_spurious_speck_makes_remove_small_win_with_a_threshold_in_mm(dims, spacing) -> None:
    voxel = float(np.prod(spacing))
    assert voxel != 1.0  # sizes in voxels and in mm must differ for this test to mean anything
    pairs = [(p, g, voxel) for p, g in two_true_parts_and_a_speck(dims)]
    before = mean_dice(pairs, 1)
    assert before < 0.99

    choice = choose_postprocessing(pairs, LABELS)
    rule = choice["classes"]["1"]
    assert rule["name"] == "organ" and rule["operation"] == "remove_small"
    assert choice["cases"] == 2 and choice["size_unit"] == ("mm3" if dims == 3 else "mm2")
    speck, smallest_true = 2**dims * voxel, 4**dims * voxel
    assert speck < rule["min_size"] <= smallest_true  # between the speck and the smaller true part, in mm
    assert rule["dice_before"] == pytest.approx(before)
    assert rule["dice_after"] == pytest.approx(1.0)

    # the same cases at unit spacing: the threshold is in mm, so it scales with the voxel size
    unit = choose_postprocessing([(p, g, 1.0) for p, g, _ in pairs], LABELS)["classes"]["1"]
    assert unit["operation"] == "remove_small"
    assert 2**dims < unit["min_size"] <= 4**dims
    assert rule["min_size"] == pytest.approx(unit["min_size"] * voxel, rel=1e-5)

    # largest_component would have cost the second true part: it must not be what was chosen
    largest = [(keep_largest_components(p.copy(), [1]), g, v) for p, g, v in pairs]
    assert mean_dice(largest, 1) < rule["dice_after"] - MIN_GAIN


def test_a_true_second_component_keeps_none_and_largest_component_is_not_chosen() -> None:
    shape = (20, 20)
    cases = []
    for shift in (0, 3):
        gt = square(shape, (1 + shift, 1), 6)
        square(shape, (14, 12 - shift), 3, out=gt)  # a true, smaller second part
        pred = gt.copy()
        pred[1 + shift, 1:7] = 0  # a slightly eroded prediction, so Dice is not 1 to start with
        cases.append((pred, gt, 0.25))
    choice = choose_postprocessing(cases, LABELS)["classes"]["1"]
    assert choice["operation"] == "none"
    assert "min_size" not in choice
    assert choice["dice_after"] == choice["dice_before"] == pytest.approx(mean_dice(cases, 1))
    largest = [(keep_largest_components(p.copy(), [1]), g, v) for p, g, v in cases]
    assert mean_dice(largest, 1) < choice["dice_before"]  # it would have hurt


def test_remove_small_below_a_small_true_part_is_chosen_over_largest_component() -> None:
    """The true second part is small (2×2) and the speck smaller (1 voxel): the threshold lies between."""
    shape = (16, 16)
    cases = []
    for k in range(3):
        gt = square(shape, (2, 2 + k), 6)
        square(shape, (12, 12), 2, out=gt)
        pred = gt.copy()
        pred[14, 3 + k] = 1  # a one-voxel speck, not touching anything
        cases.append((pred, gt, 0.5))
    rule = choose_postprocessing(cases, LABELS)["classes"]["1"]
    assert rule["operation"] == "remove_small"
    assert 1 * 0.5 < rule["min_size"] <= 4 * 0.5
    assert rule["dice_after"] == pytest.approx(1.0)


def test_each_class_is_chosen_on_its_own() -> None:
    """Class 1 has two true parts (none); class 2 has one true part plus specks (an operation that removes them)."""
    shape = (20, 20, 6)
    cases = []
    for k in range(2):
        gt = square(shape, (1, 1, 0), 5)
        square(shape, (1, 12, 0), 4, out=gt)
        square(shape, (12, 3 + k, 1), 5, value=2, out=gt)
        pred = gt.copy()
        pred[18, 18, 5] = 2
        pred[18, 10, 0] = 2
        cases.append((pred, gt, 1.2))
    labels = {0: "background", 1: "liver", 2: "tumour"}
    choice = choose_postprocessing(cases, labels)["classes"]
    assert set(choice) == {"1", "2"}
    assert choice["1"]["operation"] == "none" and choice["1"]["name"] == "liver"
    assert choice["2"]["operation"] in ("largest_component", "remove_small")
    assert choice["2"]["dice_after"] == pytest.approx(1.0)
    assert choice["2"]["dice_before"] < 1.0 - MIN_GAIN
    rules = {int(k): v for k, v in choice.items()}
    for pred, gt, voxel in cases:
        out = apply_postprocessing(pred.copy(), rules, voxel)
        np.testing.assert_array_equal(out == 1, pred == 1)  # class 1 untouched
        np.testing.assert_array_equal(out, gt)


def _direct_dice(pred: np.ndarray, gt: np.ndarray, keep: np.ndarray | None) -> float:
    """Dice of the prediction with only the full-connectivity components ``keep`` of class 1."""
    structure = ndimage.generate_binary_structure(pred.ndim, pred.ndim)
    components, n = ndimage.label(pred == 1, structure=structure)
    kept = np.arange(1, n + 1) if keep is None else np.arange(1, n + 1)[keep]
    mask = np.isin(components, kept) & (components > 0)
    truth = gt == 1
    total = int(mask.sum() + truth.sum())
    return 1.0 if total == 0 else 2.0 * float((mask & truth).sum()) / total


@pytest.mark.parametrize("dims", [2, 3])
def test_components_dice_equals_a_direct_dice(dims: int) -> None:
    rng = np.random.default_rng(dims)
    shape = (18, 17) if dims == 2 else (9, 10, 8)
    for trial in range(6):
        pred = (rng.random(shape) < 0.12).astype(np.uint8)
        gt = (rng.random(shape) < 0.15).astype(np.uint8)
        pred[rng.random(shape) < 0.05] = 2  # another class: not part of class 1's components
        c = components_of(pred, gt, 1, 0.7)
        assert c.sizes.sum() == np.count_nonzero(pred == 1) and c.truth == np.count_nonzero(gt == 1)
        assert c.voxel_size == pytest.approx(0.7)
        assert c.sizes.size > 3, "the random masks should fall apart into several components"
        assert c.dice() == pytest.approx(_direct_dice(pred, gt, None))
        assert c.dice() == pytest.approx(dice(pred, gt, 1))
        keep = rng.random(c.sizes.size) < 0.5
        assert c.dice(keep) == pytest.approx(_direct_dice(pred, gt, keep)), trial


def test_components_dice_of_empty_masks() -> None:
    empty = np.zeros((5, 5), dtype=np.uint8)
    assert components_of(empty, empty, 1, 1.0).dice() == 1.0  # both empty
    gt = square((5, 5), (1, 1), 2)
    assert components_of(empty, gt, 1, 1.0).dice() == 0.0
    assert components_of(gt, empty, 1, 1.0).dice() == 0.0
    c = components_of(gt, gt, 1, 1.0)
    assert c.dice(np.zeros(1, dtype=bool)) == 0.0  # every component removed, truth not empty
    assert Components(np.zeros(0, int), np.zeros(0, int), 0, 1.0).dice() == 1.0


def test_applying_the_choice_reproduces_the_dice_it_reported() -> None:
    """Random blobs of many sizes, at two resolutions: apply_postprocessing gives exactly dice_after."""
    rng = np.random.default_rng(7)
    pairs = []
    for k in range(6):
        spacing = (0.8, 0.8, 2.0) if k % 2 else (0.5, 0.5, 1.0)  # mixed resolutions: thresholds in mm³
        gt = np.zeros((20, 20, 10), dtype=np.uint8)
        gt[4:14, 5:15, 2:8] = 1
        pred = gt.copy()
        pred[4:6, 5:15, 2:8] = 0  # under-segmented
        for _ in range(5):  # spurious blobs of assorted sizes, some touching the truth
            x, y, z = rng.integers(0, 18), rng.integers(0, 18), rng.integers(0, 8)
            s = int(rng.integers(1, 3))
            pred[x:x + s, y:y + s, z:z + s] = 1
        pairs.append((pred, gt, float(np.prod(spacing))))
    choice = choose_postprocessing(pairs, LABELS)
    rule = choice["classes"]["1"]
    assert rule["operation"] != "none"
    assert rule["dice_after"] > rule["dice_before"] + MIN_GAIN
    assert rule["dice_before"] == pytest.approx(mean_dice(pairs, 1))
    rules = {int(k): v for k, v in choice["classes"].items()}
    processed = [(apply_postprocessing(p.copy(), rules, v), g, v) for p, g, v in pairs]
    assert mean_dice(processed, 1) == pytest.approx(rule["dice_after"], abs=1e-12)


def test_remove_small_components_removes_only_smaller_components() -> None:
    labels = np.zeros((12, 12), dtype=np.uint8)
    labels[0:3, 0:3] = 1  # 9 voxels
    labels[6:8, 6:8] = 1  # 4 voxels
    labels[11, 11] = 1  # 1 voxel
    labels[0:2, 10:12] = 2  # another class, 4 voxels
    out = remove_small_components(labels.copy(), 1, 4)
    assert out[11, 11] == 0 and out[6:8, 6:8].all() and out[0:3, 0:3].all()  # 4 is not below 4
    assert (out == 2).sum() == 4
    out = remove_small_components(labels.copy(), 1, 4.5)
    assert (out == 1).sum() == 9 and (out == 2).sum() == 4
    # through apply_postprocessing: min_size in mm², here 2 mm² per voxel, so 9 mm² is 4.5 voxels
    out = apply_postprocessing(labels.copy(), {1: {"operation": "remove_small", "min_size": 9.0}}, 2.0)
    assert (out == 1).sum() == 9
    out = apply_postprocessing(labels.copy(), {1: {"operation": "largest_component"}, 2: {"operation": "none"}}, 2.0)
    assert (out == 1).sum() == 9 and (out == 2).sum() == 4


def test_read_postprocessing_round_trip(tmp_path: Path) -> None:
    assert read_postprocessing(tmp_path) == {}  # no file: no rules
    pairs = [(p, g, 0.75) for p, g in two_true_parts_and_a_speck(3)]
    choice = choose_postprocessing(pairs, {0: "background", 1: "organ", 2: "absent"})
    (tmp_path / POSTPROCESSING_FILE).write_text(json.dumps(choice), encoding="utf-8")
    rules = read_postprocessing(tmp_path)
    assert set(rules) == {1, 2}
    assert rules[1]["operation"] == "remove_small"
    assert rules[1]["min_size"] == pytest.approx(choice["classes"]["1"]["min_size"])
    assert rules[2]["operation"] == "none"  # a class never predicted nor present: nothing to gain
    for pred, gt, voxel in pairs:
        np.testing.assert_array_equal(apply_postprocessing(pred.copy(), rules, voxel), gt)


@pytest.mark.parametrize("text", [
    "{not json",
    json.dumps({"cases": 3}),
    json.dumps({"classes": ["1", "2"]}),
    json.dumps({"classes": {"one": {"operation": "none"}}}),
    json.dumps({"classes": {"1": "largest_component"}}),
    json.dumps({"classes": {"1": {"operation": "dilate"}}}),
    json.dumps([1, 2, 3]),
], ids=["not-json", "no-classes", "classes-list", "label-not-int", "rule-not-dict", "unknown-operation", "list"])
def test_a_broken_postprocessing_file_is_one_line(tmp_path: Path, text: str) -> None:
    (tmp_path / POSTPROCESSING_FILE).write_text(text, encoding="utf-8")
    with pytest.raises(MedsegError) as info:
        read_postprocessing(tmp_path)
    message = str(info.value)
    assert "\n" not in message and POSTPROCESSING_FILE in message


@pytest.mark.parametrize("rule", [{"operation": "remove_small"}, {"operation": "remove_small", "min_size": "big"}],
                         ids=["missing", "not-a-number"])
def test_remove_small_without_a_usable_min_size_is_one_line(tmp_path: Path, rule: dict) -> None:
    (tmp_path / POSTPROCESSING_FILE).write_text(json.dumps({"classes": {"1": rule}}), encoding="utf-8")
    with pytest.raises(MedsegError, match="min_size") as info:
        read_postprocessing(tmp_path)
    assert "\n" not in str(info.value) and POSTPROCESSING_FILE in str(info.value)
