"""``prepare`` converts tiny fake downloads, built in the real published layouts, into medseg layouts."""

from __future__ import annotations

import json
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

from medseg.data import datasets, io, prepare
from medseg.data.check import check_dataset
from medseg.errors import MedsegError


def _rgb(path, h=12, w=10, seed=0, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.random.default_rng(seed).integers(0, 255, (h, w, 3)).astype(np.uint8)
    Image.fromarray(array).save(path, format=fmt)
    return array


def _mask(path, box, h=12, w=10, value=255, mode="L", fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros((h, w), np.uint8)
    m[box] = value
    Image.fromarray(m).convert(mode).save(path, format=fmt)
    return m > 0


def _zip(folder, archive):
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(folder.rglob("*")):
            zf.write(p, p.relative_to(folder.parent))
    return archive


def _label(root, case_id):
    return io.read_image(root / "labels" / f"{case_id}.png")[0].T  # back to (rows, cols)


def test_cards_cover_the_targeted_datasets_and_resolve_aliases():
    names = {c["name"] for c in prepare.list_cards()}
    assert names == {"msd_spleen", "msd_lung", "msd_hippocampus", "msd_braintumour", "kvasir_seg",
                     "cvc_clinicdb", "isic2018", "busi", "dsb2018"}
    for c in prepare.list_cards():
        for key in ("source", "license", "modality", "classes", "download", "preset", "converter"):
            assert c[key], (c["name"], key)
        assert c["classes"][0] == "background" and len(c["preset"]["patch_size"]) == c["spatial_dims"]
        assert c["converter"] in prepare._CONVERTERS
    assert prepare.card("Task09_Spleen")["name"] == "msd_spleen"
    assert prepare.card("Kvasir-SEG")["name"] == "kvasir_seg"
    with pytest.raises(MedsegError, match="no card"):
        prepare.card("imagenet")


def test_msd_tar_with_resource_forks(tmp_path):
    task = tmp_path / "dl" / "Task09_Spleen"
    training = []
    for cid in ("spleen_2", "spleen_3"):
        label = np.zeros((6, 5, 4), np.uint8)
        label[1:3, 1:3, 1:3] = 1
        io.write_image(np.ones((6, 5, 4), np.int16), task / "imagesTr" / f"{cid}.nii.gz", np.diag([0.8, 0.8, 5, 1]))
        io.write_image(label, task / "labelsTr" / f"{cid}.nii.gz", np.diag([0.8, 0.8, 5, 1]))
        (task / "imagesTr" / f"._{cid}.nii.gz").write_bytes(b"\x00\x05\x16\x07")
        training.append({"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"})
    io.write_image(np.ones((6, 5, 4), np.int16), task / "imagesTs" / "spleen_1.nii.gz")
    (task / "dataset.json").write_text(json.dumps({
        "name": "Spleen", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "spleen"},
        "numTraining": 2, "training": training, "test": ["./imagesTs/spleen_1.nii.gz"]}))
    archive = tmp_path / "Task09_Spleen.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(task, arcname="Task09_Spleen")
    out = prepare.prepare("Task09_Spleen", archive, tmp_path / "spleen")
    info = datasets.discover(out)
    assert info.layout == "msd" and [c.id for c in info.cases] == ["spleen_2", "spleen_3"]
    assert not list(out.rglob("._*")) and check_dataset(out).ok
    with pytest.raises(MedsegError, match="differ from the msd_lung card"):
        prepare.prepare("msd_lung", archive, tmp_path / "lung")
    assert not (tmp_path / "lung").exists()  # nothing half-written


def test_kvasir_zip(tmp_path):
    root = tmp_path / "dl" / "Kvasir-SEG"
    for i, cid in enumerate(["cju0qkwl35piu0993l0dewei2", "cju0qoxqj9q6s0835b43399p4"]):
        _rgb(root / "images" / f"{cid}.jpg", seed=i)
        # JPEG masks carry compression noise around 0 and 255
        _mask(root / "masks" / f"{cid}.jpg", (slice(2, 6), slice(3, 8)), mode="RGB")
    (root / "kavsir_bboxes.json").write_text("{}")
    out = prepare.prepare("kvasir_seg", _zip(root, tmp_path / "kvasir-seg.zip"), tmp_path / "kvasir")
    info = datasets.discover(out)
    assert info.layout == "folder" and info.num_channels == 3 and info.labels == {0: "background", 1: "polyp"}
    assert (out / "images" / "cju0qkwl35piu0993l0dewei2.jpg").read_bytes() == (
        root / "images" / "cju0qkwl35piu0993l0dewei2.jpg").read_bytes()  # images copied untouched
    label = _label(out, "cju0qkwl35piu0993l0dewei2")
    assert set(np.unique(label)) == {0, 1} and label[3, 5] == 1 and label[10, 1] == 0
    assert check_dataset(out).ok


def test_cvc_clinicdb_tiffs(tmp_path):
    root = tmp_path / "dl" / "CVC-ClinicDB"
    image = _rgb(root / "Original" / "1.tif", h=9, w=11)
    _rgb(root / "Original" / "2.tif", h=9, w=11, seed=1)
    truth = _mask(root / "Ground Truth" / "1.tif", (slice(1, 4), slice(2, 9)), h=9, w=11)
    _mask(root / "Ground Truth" / "2.tif", (slice(5, 8), slice(0, 3)), h=9, w=11)
    out = prepare.prepare("cvc_clinicdb", _zip(root, tmp_path / "CVC-ClinicDB.zip"), tmp_path / "cvc")
    info = datasets.discover(out)
    assert [c.id for c in info.cases] == ["1", "2"] and info.file_ending == ".png"
    np.testing.assert_array_equal(io.read_image(out / "images" / "1.png")[0], np.swapaxes(image, 0, 1))
    np.testing.assert_array_equal(_label(out, "1"), truth.astype(np.uint8))


def test_isic_folder_of_zips(tmp_path):
    dl = tmp_path / "dl"
    staging = tmp_path / "staging"
    ids = ["ISIC_0000000", "ISIC_0000001"]
    for i, cid in enumerate(ids):
        _rgb(staging / "ISIC2018_Task1-2_Training_Input" / f"{cid}.jpg", seed=i)
        _mask(staging / "ISIC2018_Task1_Training_GroundTruth" / f"{cid}_segmentation.png", (slice(0, 5), slice(0, 5)))
    _rgb(staging / "ISIC2018_Task1-2_Test_Input" / "ISIC_0012236.jpg")
    (staging / "ISIC2018_Task1-2_Training_Input" / "LICENSE.txt").write_text("CC-BY-NC")
    dl.mkdir()
    for name in ("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth", "ISIC2018_Task1-2_Test_Input"):
        _zip(staging / name, dl / f"{name}.zip")
    out = prepare.prepare("isic2018", dl, tmp_path / "isic")
    info = datasets.discover(out)
    assert [c.id for c in info.cases] == ids and [c.id for c in info.test_cases] == ["ISIC_0012236"]
    assert _label(out, ids[1])[:5, :5].all() and _label(out, ids[1]).sum() == 25


def test_busi_merges_masks_and_skips_normal(tmp_path):
    root = tmp_path / "dl" / "Dataset_BUSI_with_GT"
    _rgb(root / "benign" / "benign (1).png")
    _mask(root / "benign" / "benign (1)_mask.png", (slice(0, 3), slice(0, 3)))
    _mask(root / "benign" / "benign (1)_mask_1.png", (slice(8, 10), slice(7, 9)))
    _rgb(root / "malignant" / "malignant (12).png", seed=2)
    _mask(root / "malignant" / "malignant (12)_mask.png", (slice(4, 9), slice(2, 6)))
    _rgb(root / "normal" / "normal (1).png", seed=3)
    _mask(root / "normal" / "normal (1)_mask.png", (slice(0, 0), slice(0, 0)))
    out = prepare.prepare("busi", _zip(root, tmp_path / "Dataset_BUSI.zip"), tmp_path / "busi")
    info = datasets.discover(out)
    assert [c.id for c in info.cases] == ["benign_001", "malignant_012"] and info.num_channels == 1
    assert _label(out, "benign_001").sum() == 9 + 4  # both masks of the image
    assert check_dataset(out).ok


def test_dsb2018_kaggle_zip_of_zips(tmp_path):
    staging = tmp_path / "staging"
    for i, cid in enumerate(["0a7d30b252359a10fd298b638b90cb9ada3acced4e0c0e5a3692013f432ee4e9", "0b2e"]):
        case = staging / "stage1_train" / cid
        _rgb(case / "images" / f"{cid}.png", seed=i)
        rgba = np.concatenate([np.asarray(Image.open(case / "images" / f"{cid}.png")),
                               np.full((12, 10, 1), 255, np.uint8)], -1)
        Image.fromarray(rgba).save(case / "images" / f"{cid}.png")  # DSB images are RGBA
        _mask(case / "masks" / "m1.png", (slice(0, 2), slice(0, 2)))
        _mask(case / "masks" / "m2.png", (slice(2, 4), slice(2, 4)))  # touches m1 diagonally
    _rgb(staging / "stage1_test" / "t1" / "images" / "t1.png")
    dl = tmp_path / "dl"
    dl.mkdir()
    with zipfile.ZipFile(dl / "stage1_train.zip", "w") as zf:  # the stage zip holds <id>/ directly
        for p in sorted((staging / "stage1_train").rglob("*")):
            zf.write(p, p.relative_to(staging / "stage1_train"))
    _zip(staging / "stage1_test", dl / "stage1_test.zip")
    kaggle = _zip(dl, tmp_path / "data-science-bowl-2018.zip")
    out = prepare.prepare("dsb2018", kaggle, tmp_path / "dsb")
    info = datasets.discover(out)
    assert len(info.cases) == 2 and [c.id for c in info.test_cases] == ["t1"]
    assert info.num_channels == 3  # alpha dropped
    assert _label(out, "0b2e").sum() == 8 and check_dataset(out).ok


def test_wrong_download_and_existing_output(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedsegError, match="images/ and masks/"):
        prepare.prepare("kvasir_seg", tmp_path / "empty", tmp_path / "out")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    with pytest.raises(MedsegError, match="not empty"):
        prepare.prepare("kvasir_seg", tmp_path / "empty", tmp_path / "taken")
    with pytest.raises(MedsegError, match="not found"):
        prepare.prepare("kvasir_seg", tmp_path / "missing.zip", tmp_path / "out2")
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(MedsegError, match="cannot unpack"):
        prepare.prepare("kvasir_seg", tmp_path / "broken.zip", tmp_path / "out3")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left
