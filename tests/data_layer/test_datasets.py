"""Dataset discovery (Folder, MSD, nnU-Net v2 raw), splits and MONAI data dicts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medseg.data import datasets, io
from medseg.errors import MedsegError

IDS = ["case_a", "case_b", "case_c", "case_d", "case_e"]
AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])


def _arrays(i: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(i)
    label = (rng.random((6, 5, 4)) > 0.7).astype(np.uint8)
    return rng.normal(size=(6, 5, 4)).astype(np.float32), label


def _folder(root):
    for i, cid in enumerate(IDS):
        image, label = _arrays(i)
        io.write_image(image, root / "images" / f"{cid}.nii.gz", AFFINE)
        io.write_image(label, root / "labels" / f"{cid}.nii.gz", AFFINE)
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "organ"}, "modality": {"0": "CT"}}))
    return root


def _msd(root):
    training = []
    for i, cid in enumerate(IDS):
        image, label = _arrays(i)
        io.write_image(image, root / "imagesTr" / f"{cid}.nii.gz", AFFINE)
        io.write_image(label, root / "labelsTr" / f"{cid}.nii.gz", AFFINE)
        training.append({"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"})
    io.write_image(_arrays(9)[0], root / "imagesTs" / "case_t.nii.gz", AFFINE)
    (root / "imagesTr" / "._case_a.nii.gz").write_bytes(b"\x00\x05\x16\x07 mac resource fork")
    meta = {"name": "toy", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "organ"},
            "training": training, "test": ["./imagesTs/case_t.nii.gz"]}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def _nnunet(root, channels=1):
    for i, cid in enumerate(IDS):
        image, label = _arrays(i)
        for c in range(channels):
            io.write_image(image + c, root / "imagesTr" / f"{cid}_{c:04d}.nii.gz", AFFINE)
        io.write_image(label, root / "labelsTr" / f"{cid}.nii.gz", AFFINE)
    names = {str(c): n for c, n in enumerate(["CT", "PET"][:channels])}
    meta = {"channel_names": names, "labels": {"background": 0, "organ": 1}, "numTraining": len(IDS),
            "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def _content(case: datasets.Case) -> tuple:
    images = tuple(io.read_image(p)[0].tobytes() for p in case.images)
    return case.id, images, io.read_image(case.label)[0].tobytes()


def test_three_layouts_give_identical_cases(tmp_path):
    infos = {
        "folder": datasets.discover(_folder(tmp_path / "folder")),
        "msd": datasets.discover(_msd(tmp_path / "msd")),
        "nnunet": datasets.discover(_nnunet(tmp_path / "nnunet")),
    }
    for layout, info in infos.items():
        assert info.layout == layout
        assert [c.id for c in info.cases] == IDS
        assert info.labels == {0: "background", 1: "organ"}
        assert (info.num_channels, info.spatial_dims, info.file_ending) == (1, 3, ".nii.gz")
        assert info.modalities == ["CT"] and not info.problems
    contents = {layout: [_content(c) for c in info.cases] for layout, info in infos.items()}
    assert contents["folder"] == contents["msd"] == contents["nnunet"]
    assert [c.id for c in infos["msd"].test_cases] == ["case_t"]


def test_nnunet_multichannel_case(tmp_path):
    info = datasets.discover(_nnunet(tmp_path / "nn", channels=2))
    assert info.num_channels == 2 and info.modalities == ["CT", "PET"]
    case = info.cases[0]
    assert [p.name for p in case.images] == ["case_a_0000.nii.gz", "case_a_0001.nii.gz"]
    item = datasets.to_monai_dicts([case])[0]
    assert item["image"] == [str(p) for p in case.images] and item["label"] == str(case.label)
    from monai.transforms import Compose, EnsureChannelFirstd

    data = Compose([io.load_transform(["image", "label"]), EnsureChannelFirstd(["image", "label"])])(item)
    assert tuple(data["image"].shape) == (2, 6, 5, 4) and tuple(data["label"].shape) == (1, 6, 5, 4)


def test_nnunet_missing_channel_is_a_problem(tmp_path):
    root = _nnunet(tmp_path / "nn", channels=2)
    (root / "imagesTr" / "case_c_0001.nii.gz").unlink()
    info = datasets.discover(root)
    assert len(info.problems) == 1 and "case_c_0001.nii.gz" in info.problems[0]


def test_nnunet_without_channel_suffixes_names_the_rename(tmp_path):
    root = _nnunet(tmp_path / "nn")
    for f in (root / "imagesTr").iterdir():
        f.rename(f.with_name(f.name.replace("_0000", "")))
    with pytest.raises(MedsegError, match=r"5 \.nii\.gz file\(s\), none named CASE_XXXX.*rename case_a\.nii\.gz "
                                          r"to case_a_0000\.nii\.gz"):
        datasets.discover(root)
    for f in (root / "imagesTr").iterdir():
        f.unlink()
    with pytest.raises(MedsegError, match=r"imagesTr: no \.nii\.gz files .*'file_ending'"):
        datasets.discover(root)


def test_folder_layout_scans_labels_and_pairs_by_id(tmp_path):
    root = tmp_path / "f"
    for i, cid in enumerate(["x", "y"]):
        io.write_image(np.full((8, 6, 3), 100, np.uint8), root / "images" / f"{cid}.png")
        io.write_image(np.full((8, 6), i + 1, np.uint8), root / "labels" / f"{cid}.png")
    io.write_image(np.zeros((8, 6), np.uint8), root / "labels" / "orphan.png")
    io.write_image(np.zeros((8, 6), np.uint8), root / "test" / "t.png")
    info = datasets.discover(root)
    assert info.layout == "folder" and info.spatial_dims == 2 and info.num_channels == 3
    assert info.labels == {0: "background", 1: "class_1", 2: "class_2"}
    assert [c.id for c in info.cases] == ["x", "y"] and [c.id for c in info.test_cases] == ["t"]
    assert len(info.problems) == 1 and "orphan.png" in info.problems[0]


def test_unrecognised_folder_names_what_was_expected(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(MedsegError, match="images/ and labels/"):
        datasets.discover(tmp_path / "stuff")
    with pytest.raises(MedsegError, match="not a folder"):
        datasets.discover(tmp_path / "nope")


def test_split_is_seeded_written_and_reused(tmp_path):
    info = datasets.discover(_msd(tmp_path / "msd"))
    split = tmp_path / "splits.json"
    train, val = datasets.load_or_make_split(info, split, val_fraction=0.4, seed=3)
    assert len(val) == 2 and len(train) == 3
    assert {c.id for c in train} | {c.id for c in val} == set(IDS) and not {c.id for c in train} & {c.id for c in val}
    saved = json.loads(split.read_text())
    assert saved == [{"train": [c.id for c in train], "val": [c.id for c in val]}]
    # a hand-edited split is reused as it is
    split.write_text(json.dumps([{"train": ["case_a", "case_b"], "val": ["case_e"]}]))
    train2, val2 = datasets.load_or_make_split(info, split, val_fraction=0.4, seed=3)
    assert [c.id for c in train2] == ["case_a", "case_b"] and [c.id for c in val2] == ["case_e"]
    # the same seed gives the same split; another seed (usually) another
    splits = {tuple(datasets.make_splits(IDS * 1, 0.4, seed)[0]["val"]) for seed in range(6)}
    assert datasets.make_splits(IDS, 0.4, 3) == saved and len(splits) > 1


def test_kfold_lists_cover_every_case_once(tmp_path):
    info = datasets.discover(_folder(tmp_path / "f"))
    split = tmp_path / "folds.json"
    vals = []
    for fold in range(5):
        train, val = datasets.load_or_make_split(info, split, fold=fold, num_folds=5)
        assert len(train) == 4 and len(val) == 1
        vals += [c.id for c in val]
    assert sorted(vals) == IDS and len(json.loads(split.read_text())) == 5
    with pytest.raises(MedsegError, match="holds 5 folds"):
        datasets.load_or_make_split(info, split)
    with pytest.raises(MedsegError, match="cannot make 6 folds"):
        datasets.load_or_make_split(info, tmp_path / "six.json", fold=0, num_folds=6)


def test_stale_split_is_reported(tmp_path):
    info = datasets.discover(_folder(tmp_path / "f"))
    split = tmp_path / "splits.json"
    split.write_text(json.dumps([{"train": ["case_a", "gone"], "val": ["case_b"]}]))
    with pytest.raises(MedsegError, match="stale"):
        datasets.load_or_make_split(info, split)


MSD_LABELS = {"0": "background", "1": "organ", "2": "lesion"}
NNUNET_LABELS = {"background": 0, "organ": 1, "lesion": 2}


def _with_labels(layout, root, labels):
    root = {"folder": _folder, "msd": _msd, "nnunet": _nnunet}[layout](root)
    meta = json.loads((root / "dataset.json").read_text())
    meta["labels"] = labels
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.mark.parametrize("layout", ["folder", "msd", "nnunet"])
@pytest.mark.parametrize("labels", [MSD_LABELS, NNUNET_LABELS], ids=["value->name", "name->value"])
def test_both_label_conventions_in_every_layout(tmp_path, layout, labels):
    info = datasets.discover(_with_labels(layout, tmp_path / layout, labels))
    assert info.layout == layout and info.labels == {0: "background", 1: "organ", 2: "lesion"}


@pytest.mark.parametrize("layout", ["folder", "msd", "nnunet"])
def test_dataset_colours_are_read_by_value_or_name_in_every_layout(tmp_path, layout):
    root = _with_labels(layout, tmp_path / layout, NNUNET_LABELS)
    meta = json.loads((root / "dataset.json").read_text())
    meta["colors"] = {"organ": "#ff8000", "2": [0, 0, 255]}
    (root / "dataset.json").write_text(json.dumps(meta))
    assert datasets.discover(root).colours == {1: (255, 128, 0), 2: (0, 0, 255)}
    meta["colors"] = {"spleen": [1, 2, 3]}
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(MedsegError, match=r"dataset.json: colour for 'spleen', which is not a label value or name"):
        datasets.discover(root)


@pytest.mark.parametrize("layout", ["folder", "msd", "nnunet"])
def test_nnunet_regions_are_a_one_line_error_in_every_layout(tmp_path, layout):
    root = _with_labels(layout, tmp_path / layout, {"background": 0, "organ": [1, 2], "lesion": 2})
    with pytest.raises(MedsegError, match=r"'organ' is \[1, 2\], an nnU-Net region; regions are not supported") as err:
        datasets.discover(root)
    assert "\n" not in str(err.value) and "dataset.json" in str(err.value)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"background": 0, "organ": 1, "lesion": 1}, "the same value 1"),
        ({"background": "zero"}, "must map label values to class names"),
        ({"0": "background", "1": None, "x": 2}, "must map label values to class names"),
        ({"background": 0, "organ": -1}, "value -1"),
        (["organ"], "must map label values"),
    ],
)
def test_bad_labels_name_the_problem(tmp_path, labels, message):
    root = _with_labels("folder", tmp_path / "f", labels)
    with pytest.raises(MedsegError, match=message):
        datasets.discover(root)


def test_label_convention_is_read_from_the_types():
    path = Path("dataset.json")
    assert datasets.parse_labels({"1": "organ"}, path) == {0: "background", 1: "organ"}  # background added
    assert datasets.parse_labels({"organ": "1", "background": "0"}, path) == {0: "background", 1: "organ"}
    assert datasets.parse_labels({"0": 0, "1": 1}, path) == {0: "0", 1: "1"}  # both readings agree
