"""``check_dataset`` finds each problem the issue lists, one message per problem, and passes clean data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medseg.data import io
from medseg.data.check import check_dataset

AFFINE = np.diag([0.9, 0.9, 3.0, 1.0])


def _dataset(root, n=3):
    """A clean 3D Folder dataset (NIfTI), classes background/organ/lesion."""
    for i in range(n):
        rng = np.random.default_rng(i)
        label = np.zeros((8, 7, 4), np.uint8)
        label[2:5, 2:5, 1:3] = 1
        label[3, 3, 2] = 2
        io.write_image(rng.normal(size=(8, 7, 4)).astype(np.float32), root / "images" / f"c{i}.nii.gz", AFFINE)
        io.write_image(label, root / "labels" / f"c{i}.nii.gz", AFFINE)
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "organ", "2": "lesion"}}))
    return root


def test_clean_dataset_passes_with_statistics(tmp_path):
    report = check_dataset(_dataset(tmp_path / "d"))
    assert report.ok and report.errors == [] and report.warnings == []
    assert (report.layout, report.spatial_dims, report.num_cases) == ("folder", 3, 3)
    voxels = 8 * 7 * 4
    assert report.class_fractions[2] == pytest.approx(1 / voxels)
    assert report.class_fractions[1] == pytest.approx(17 / voxels)
    assert sum(report.class_fractions.values()) == pytest.approx(1.0)
    assert report.spacing["median"] == pytest.approx([0.9, 0.9, 3.0])
    assert report.shape["max"] == [8, 7, 4] and report.channels == {1: 3}


def _break_missing(root):
    (root / "labels" / "c1.nii.gz").unlink()
    return "c1.nii.gz", "no label"


def _break_unreadable(root):
    (root / "images" / "c1.nii.gz").write_bytes(b"\x1f\x8b garbage")
    return "c1.nii.gz", "unreadable"


def _break_shape(root):
    io.write_image(np.ones((8, 6, 4), np.uint8), root / "labels" / "c1.nii.gz", AFFINE)
    return "c1.nii.gz", "shape"


def _break_geometry(root):
    label, _ = io.read_image(root / "labels" / "c1.nii.gz")
    io.write_image(label, root / "labels" / "c1.nii.gz", np.diag([0.9, 0.9, 2.0, 1.0]))
    return "c1.nii.gz", "spacing"


def _break_origin(root):
    label, _ = io.read_image(root / "labels" / "c1.nii.gz")
    shifted = AFFINE.copy()
    shifted[:3, 3] = [5.0, 0, 0]
    io.write_image(label, root / "labels" / "c1.nii.gz", shifted)
    return "c1.nii.gz", "origin"


def _break_non_integer(root):
    label, _ = io.read_image(root / "labels" / "c1.nii.gz")
    io.write_image(label.astype(np.float32) * 0.5, root / "labels" / "c1.nii.gz", AFFINE, dtype=np.float32)
    return "c1.nii.gz", "non-integer"


def _break_out_of_range(root):
    label, _ = io.read_image(root / "labels" / "c1.nii.gz")
    label[0, 0, 0] = 7
    io.write_image(label, root / "labels" / "c1.nii.gz", AFFINE)
    return "c1.nii.gz", "out of range"


def _break_nan(root):
    image, _ = io.read_image(root / "images" / "c1.nii.gz")
    image[1, 1, 1] = np.nan
    image[2, 1, 1] = np.inf
    io.write_image(image, root / "images" / "c1.nii.gz", AFFINE)
    return "c1.nii.gz", "NaN/Inf"


def _break_empty(root):
    io.write_image(np.zeros((8, 7, 4), np.uint8), root / "labels" / "c1.nii.gz", AFFINE)
    return "c1.nii.gz", "empty mask"


def _break_channels(root):
    image, _ = io.read_image(root / "images" / "c1.nii.gz")
    io.write_image(np.stack([image, image], -1), root / "images" / "c1.nii.gz", AFFINE)
    return "channel counts differ", "2 channel(s) in 1 case(s)"


def _break_label_channels(root):
    label, _ = io.read_image(root / "labels" / "c1.nii.gz")
    io.write_image(np.stack([label, label], -1), root / "labels" / "c1.nii.gz", AFFINE)
    return "c1.nii.gz", "label has 2 channels"


@pytest.mark.parametrize(
    "breaker",
    [_break_missing, _break_unreadable, _break_shape, _break_geometry, _break_origin, _break_non_integer,
     _break_out_of_range, _break_nan, _break_empty, _break_channels, _break_label_channels],
)
def test_each_problem_gives_one_error_line(tmp_path, breaker):
    root = _dataset(tmp_path / "d")
    where, what = breaker(root)
    report = check_dataset(root)
    assert not report.ok
    assert len(report.errors) == 1, report.errors
    message = report.errors[0]
    assert where in message and what in message and "\n" not in message


def test_allow_empty_turns_empty_masks_into_warnings(tmp_path):
    root = _dataset(tmp_path / "d")
    _break_empty(root)
    report = check_dataset(root, allow_empty=True)
    assert report.ok and len(report.warnings) == 1 and "empty mask" in report.warnings[0]


def test_missing_msd_file_and_missing_nnunet_channel(tmp_path):
    msd = tmp_path / "msd"
    io.write_image(np.ones((4, 4, 2), np.float32), msd / "imagesTr" / "a.nii.gz")
    io.write_image(np.ones((4, 4, 2), np.uint8), msd / "labelsTr" / "a.nii.gz")
    (msd / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "x"}, "training": [
        {"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"},
        {"image": "./imagesTr/b.nii.gz", "label": "./labelsTr/b.nii.gz"}]}))
    report = check_dataset(msd)
    assert len(report.errors) == 2 and all("b.nii.gz" in e and "missing" in e for e in report.errors)

    nn = tmp_path / "nn"
    for cid in ("a", "b"):
        for c in (0, 1):
            if (cid, c) != ("b", 1):
                io.write_image(np.ones((4, 4, 2), np.float32), nn / "imagesTr" / f"{cid}_{c:04d}.nii.gz")
        io.write_image(np.ones((4, 4, 2), np.uint8), nn / "labelsTr" / f"{cid}.nii.gz")
    (nn / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T1", "1": "T2"}, "file_ending": ".nii.gz",
                                                  "labels": {"background": 0, "x": 1}}))
    report = check_dataset(nn)
    assert any("b_0001.nii.gz" in e for e in report.errors)
    assert any("channel counts differ" in e for e in report.errors)


def test_unrecognised_folder_is_an_error(tmp_path):
    (tmp_path / "x").mkdir()
    report = check_dataset(tmp_path / "x")
    assert not report.ok and "unrecognised dataset layout" in report.errors[0]


def test_require_valid_raises_the_first_error_on_one_line(tmp_path):
    from medseg.data.check import require_valid
    from medseg.errors import MedsegError

    root = _dataset(tmp_path / "d")
    assert require_valid(root).ok
    _break_out_of_range(root)
    io.write_image(np.ones((8, 6, 4), np.uint8), root / "labels" / "c2.nii.gz", AFFINE)
    with pytest.raises(MedsegError) as err:
        require_valid(root)
    message = str(err.value)
    assert "c1.nii.gz" in message and "[7]" in message and "declare the class in dataset.json" in message
    assert "and 1 more error(s)" in message and f"medseg data check {root}" in message and "\n" not in message


def test_shape_mismatch_names_the_fix(tmp_path):
    from medseg.data.check import require_valid
    from medseg.errors import MedsegError

    root = _dataset(tmp_path / "d")
    _break_shape(root)
    with pytest.raises(MedsegError, match=r"c1.nii.gz: label does not match its image .*shape \[8, 7, 4\] vs \[8, 6, 4\]"):
        require_valid(root)


def test_value_counts_match_numpy():
    from medseg.data.check import value_counts

    rng = np.random.default_rng(0)
    for array in (rng.integers(0, 4, (40, 9, 7)).astype(np.uint8), rng.integers(-3, 3, (5000,)).astype(np.int8),
                  np.array([[0, 2**40]], np.int64)):
        values, counts = np.unique(array, return_counts=True)
        assert value_counts(array) == {int(v): int(c) for v, c in zip(values, counts)}
    assert value_counts(np.zeros((0, 3), np.uint8)) == {}


def test_on_case_gets_each_labelled_case_once_and_the_report_round_trips(tmp_path):
    from medseg.data.check import CheckReport, allowing_empty

    root = _dataset(tmp_path / "d")
    _break_empty(root)
    seen = []
    steps = []
    strict = check_dataset(root, on_case=seen.append, progress=lambda done, total: steps.append((done, total)))
    assert [a.case.id for a in seen] == ["c0", "c1", "c2"] and steps[-1] == (3, 3)
    assert all(a.label is not None and a.label.shape == (8, 7, 4) and len(a.images) == 1 for a in seen)
    assert seen[0].label_counts == {0: 224 - 18, 1: 17, 2: 1} and seen[1].label_counts == {0: 224}
    assert CheckReport.from_dict(json.loads(json.dumps(strict.as_dict()))) == strict
    assert allowing_empty(strict, True) == check_dataset(root, allow_empty=True)
    assert allowing_empty(strict, False) == strict


def test_a_tiff_image_with_a_png_mask_is_one_grid(tmp_path) -> None:
    """PNG stores no geometry: its placeholder direction must not be compared with a TIFF's."""
    import json

    import numpy as np

    from medseg.data import io
    from medseg.data.check import check_dataset

    image = (np.random.default_rng(0).random((20, 24)) * 4000).astype(np.uint16)
    label = np.zeros((20, 24), np.uint8)
    label[5:9, 6:10] = 1
    for i in range(2):
        io.write_image(image, tmp_path / "images" / f"t{i}.tif")
        io.write_image(label, tmp_path / "labels" / f"t{i}.png")
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "cell": 1}}))
    report = check_dataset(tmp_path)
    assert not report.errors, report.errors
