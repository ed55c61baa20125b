"""Demo data: deterministic by seed, real MSD files that pass the dataset check, MONAI-loadable."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medseg.data import datasets, io, synthetic
from medseg.data.check import check_dataset
from medseg.errors import MedsegError

SMALL = {"nuclei2d": (64, 64), "organ3d": (32, 32, 16)}


def _arrays(root):
    return {p.relative_to(root).as_posix(): io.read_image(p)[0] for p in sorted(root.rglob("*_0*.*"))}


@pytest.mark.parametrize("kind", ["nuclei2d", "organ3d"])
def test_same_seed_same_files_other_seed_other_files(tmp_path, kind):
    a = synthetic.generate(kind, tmp_path / "a", n_cases=3, seed=5, size=SMALL[kind])
    b = synthetic.generate(kind, tmp_path / "b", n_cases=3, seed=5, size=SMALL[kind])
    c = synthetic.generate(kind, tmp_path / "c", n_cases=3, seed=6, size=SMALL[kind])
    arrays_a, arrays_b, arrays_c = _arrays(a), _arrays(b), _arrays(c)
    assert len(arrays_a) == 2 * (3 + 1)  # images and labels, 3 training + 1 test
    assert arrays_a.keys() == arrays_b.keys() == arrays_c.keys()
    for name in arrays_a:
        np.testing.assert_array_equal(arrays_a[name], arrays_b[name])
    assert any(not np.array_equal(arrays_a[n], arrays_c[n]) for n in arrays_a)
    assert json.loads((a / "dataset.json").read_text()) == json.loads((b / "dataset.json").read_text())


@pytest.mark.parametrize("kind", ["nuclei2d", "organ3d"])
def test_generated_dataset_is_a_valid_msd_dataset(tmp_path, kind):
    root = synthetic.generate(kind, tmp_path / kind, n_cases=4, seed=0, size=SMALL[kind])
    info = datasets.discover(root)
    assert info.layout == "msd" and len(info.cases) == 4 and len(info.test_cases) == 1
    assert info.spatial_dims == len(SMALL[kind]) and info.num_channels == 1
    report = check_dataset(root)
    assert report.ok, report.errors
    assert set(report.class_fractions) == set(info.labels) and all(f > 0 for f in report.class_fractions.values())
    meta = json.loads((root / "dataset.json").read_text())
    assert (root / meta["test_labels"][0]["label"]).is_file()


def test_nuclei2d_is_grayscale_png_with_binary_masks(tmp_path):
    root = synthetic.generate("nuclei2d", tmp_path / "n", n_cases=3, size=(64, 48))
    image, meta = io.read_image(root / "imagesTr" / "nuclei2d_000.png")
    label, _ = io.read_image(root / "labelsTr" / "nuclei2d_000.png")
    assert image.dtype == np.uint8 and image.shape == (48, 64) and meta.format == "png"  # PIL (W, H) order
    assert set(np.unique(label)) == {0, 1}
    from monai.data import PILReader
    from monai.transforms import LoadImage

    loaded = LoadImage(reader=PILReader(), image_only=True)(str(root / "imagesTr" / "nuclei2d_000.png"))
    np.testing.assert_array_equal(loaded.numpy(), image)
    fg, bg = image[label == 1].mean(), image[label == 0].mean()
    assert fg > bg + 20  # nuclei are brighter, on average, than the background
    assert image[label == 1].std() > 5  # but not flat: texture, dim nuclei, noise


def test_organ3d_geometry_and_classes(tmp_path):
    root = synthetic.generate("organ3d", tmp_path / "o", n_cases=4)  # the default 64 x 64 x 32
    affines = []
    for i in range(4):
        image, meta = io.read_image(root / "imagesTr" / f"organ3d_{i:03d}.nii.gz")
        label, lmeta = io.read_image(root / "labelsTr" / f"organ3d_{i:03d}.nii.gz")
        assert image.dtype == np.int16 and label.dtype == np.uint8
        assert meta.spacing[2] > 1.6 * meta.spacing[0]  # anisotropic
        assert not np.allclose(meta.direction, np.eye(3), atol=1e-3)  # oblique / LPS-stored
        np.testing.assert_allclose(lmeta.affine, meta.affine)
        assert set(np.unique(label)) == {0, 1, 2}
        assert np.median(image[label == 1]) > np.median(image[label == 2]) + 15  # hypodense lesion
        assert image.min() <= -900  # air around the body
        affines.append(meta.affine)
    assert not np.allclose(affines[0], affines[1])


def test_ensure_demo_data_is_idempotent(tmp_path, monkeypatch):
    calls = []
    real = synthetic.generate
    monkeypatch.setattr(synthetic, "generate", lambda *a, **k: calls.append(a) or real(*a, n_cases=2, size=(32, 32)))
    first = synthetic.ensure_demo_data("nuclei2d", tmp_path / "demo")
    stamp = (first / "dataset.json").stat().st_mtime_ns
    second = synthetic.ensure_demo_data("nuclei2d", tmp_path / "demo")
    assert first == second == tmp_path / "demo" / "nuclei2d" and len(calls) == 1
    assert (second / "dataset.json").stat().st_mtime_ns == stamp
    (first / "imagesTr" / "nuclei2d_000.png").unlink()  # incomplete: generated again
    synthetic.ensure_demo_data("nuclei2d", tmp_path / "demo")
    assert len(calls) == 2 and (first / "imagesTr" / "nuclei2d_000.png").is_file()


def test_refuses_to_overwrite_other_folders_and_bad_arguments(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(MedsegError, match="not a medseg demo dataset"):
        synthetic.generate("nuclei2d", tmp_path / "mine", n_cases=2)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(MedsegError, match="use one of"):
        synthetic.generate("cells", tmp_path / "x")
    with pytest.raises(MedsegError, match="at least 2"):
        synthetic.generate("nuclei2d", tmp_path / "x", n_cases=1)


# -- datasets unlike the demo (issue #13's yardstick) -------------------------------------------------
NEW = {"micro2d_small": (48, 64), "derm2d_rgb": (48, 64), "ct3d_lesion": (48, 48, 16), "mri3d_2ch": (32, 36, 28)}
#: layout, channels, spatial dims, classes of each new kind, as medseg's discovery should report them
EXPECTED = {
    "micro2d_small": ("folder", 1, 2, {0: "background", 1: "cell"}),
    "derm2d_rgb": ("folder", 3, 2, {0: "background", 1: "lesion"}),
    "ct3d_lesion": ("msd", 1, 3, {0: "background", 1: "organ", 2: "lesion"}),
    "mri3d_2ch": ("nnunet", 2, 3, {0: "background", 1: "oedema", 2: "core"}),
}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Each new kind at its default size: 2 training and 1 held-out case (seed 0)."""
    root = tmp_path_factory.mktemp("kinds")
    return {kind: synthetic.generate(kind, root / kind, n_cases=2) for kind in NEW}


def _class_fractions(root, split="train"):
    """Per-case ``{label value: fraction of voxels}``."""
    out = []
    for _, label in synthetic.cases(root)[split]:
        array, _ = io.read_image(label)
        out.append({int(v): float((array == v).mean()) for v in np.unique(array)})
    return out


@pytest.mark.parametrize("kind", list(NEW))
def test_new_kinds_are_seeded(tmp_path, kind):
    a = synthetic.generate(kind, tmp_path / "a", n_cases=2, seed=3, size=NEW[kind])
    b = synthetic.generate(kind, tmp_path / "b", n_cases=2, seed=3, size=NEW[kind])
    c = synthetic.generate(kind, tmp_path / "c", n_cases=2, seed=4, size=NEW[kind])
    arrays_a, arrays_b, arrays_c = _arrays(a), _arrays(b), _arrays(c)
    files_per_case = 3 if kind == "mri3d_2ch" else 2  # nnU-Net: one file per channel
    assert len(arrays_a) == files_per_case * (2 + 1)
    assert arrays_a.keys() == arrays_b.keys() == arrays_c.keys()
    for name in arrays_a:
        np.testing.assert_array_equal(arrays_a[name], arrays_b[name])
    assert any(not np.array_equal(arrays_a[n], arrays_c[n]) for n in arrays_a)


@pytest.mark.parametrize("kind", list(NEW))
def test_new_kinds_are_discovered_and_pass_the_check(generated, kind):
    root = generated[kind]
    layout, channels, dims, labels = EXPECTED[kind]
    info = datasets.discover(root)
    assert (info.layout, info.num_channels, info.spatial_dims, info.labels) == (layout, channels, dims, labels)
    assert len(info.cases) == 2 and len(info.test_cases) == 1
    report = check_dataset(root)
    assert report.ok, report.errors
    held_out = synthetic.cases(root)["test"]
    assert len(held_out) == 1 and held_out[0][1].is_file() and all(p.is_file() for p in held_out[0][0])
    assert held_out[0][1].parent.name == "labelsTs"


def test_micro2d_small_is_a_16_bit_camera_frame_of_small_cells(generated):
    root = generated["micro2d_small"]
    meta_json = json.loads((root / "dataset.json").read_text())
    assert meta_json["labels"] == {"background": 0, "cell": 1}  # nnU-Net v2's convention, name -> value
    assert "training" not in meta_json  # which would make the folder look like an MSD dataset
    images, label_path = synthetic.cases(root)["train"][0]
    image, meta = io.read_image(images[0])
    label, _ = io.read_image(label_path)
    assert images[0].parent.name == "images" and meta.format == "tiff"
    assert image.dtype == np.uint16 and image.shape == (224, 160)  # (W, H): 160 rows x 224 columns
    assert 300 <= np.median(image[label == 0]) <= 600
    assert 1500 <= np.percentile(image[label == 1], 99) <= 4500
    from scipy import ndimage

    _, count = ndimage.label(label)
    assert count >= 20  # many objects, each small
    assert (label == 1).sum() / count < np.pi * 6.5**2
    for fractions in _class_fractions(root, "train") + _class_fractions(root, "test"):
        assert 0.05 <= fractions[1] <= 0.10


def test_derm2d_rgb_is_a_jpeg_photograph_with_one_large_lesion(generated):
    root = generated["derm2d_rgb"]
    images, label_path = synthetic.cases(root)["train"][0]
    image, meta = io.read_image(images[0])
    label, _ = io.read_image(label_path)
    assert meta.format == "jpeg" and image.dtype == np.uint8 and image.shape == (256, 192, 3)
    assert label_path.suffix == ".png" and set(np.unique(label)) == {0, 1}
    from scipy import ndimage

    assert ndimage.label(label)[1] == 1  # one lesion
    skin = image[(label == 0) & (image.sum(-1) > 150)].mean(0)
    assert skin[0] > skin[2] + 20  # skin-coloured: red above blue
    assert image[label == 1].mean() < image[(label == 0) & (image.sum(-1) > 150)].mean() - 20  # darker lesion
    assert image.min() < 10  # the dermoscope's dark corners
    for fractions in _class_fractions(root, "train") + _class_fractions(root, "test"):
        assert 0.15 <= fractions[1] <= 0.40


def test_ct3d_lesion_geometry_intensities_and_small_lesions(generated):
    root = generated["ct3d_lesion"]
    meta_json = json.loads((root / "dataset.json").read_text())
    assert meta_json["modality"] == {"0": "CT"}
    assert meta_json["labels"] == {"0": "background", "1": "organ", "2": "lesion"}
    from scipy import ndimage

    for images, label_path in synthetic.cases(root)["train"] + synthetic.cases(root)["test"]:
        image, meta = io.read_image(images[0])
        label, label_meta = io.read_image(label_path)
        assert image.dtype == np.int16 and image.shape == (160, 160, 40)
        np.testing.assert_allclose(meta.spacing, (0.78, 0.78, 3.0), rtol=0.06)
        off_diagonal = np.abs(meta.direction - np.diag(np.diag(meta.direction))).max()
        assert 0.015 < off_diagonal < 0.2  # oblique by a few degrees
        assert np.linalg.norm(meta.origin) > 50
        np.testing.assert_allclose(label_meta.affine, meta.affine)
        assert image.min() <= -900 and image.max() >= 600  # air and bone
        organ, lesion = np.median(image[label == 1]), np.median(image[label == 2])
        assert 50 <= organ <= 75 and lesion < organ - 15  # hypodense
        fractions = {v: float((label == v).mean()) for v in (1, 2)}
        assert 0.03 <= fractions[1] <= 0.15 and 0.002 <= fractions[2] <= 0.006
        assert 1 <= ndimage.label(label == 2)[1] <= 2
        rim = ndimage.binary_dilation(label == 2) & (label != 2)
        assert (label[rim] == 1).mean() > 0.9  # lesions lie inside the organ


def test_mri3d_2ch_is_nnunet_two_channel_with_scanner_scaling(generated):
    root = generated["mri3d_2ch"]
    meta_json = json.loads((root / "dataset.json").read_text())
    assert meta_json["channel_names"] == {"0": "T1", "1": "FLAIR"} and meta_json["file_ending"] == ".nii.gz"
    assert meta_json["labels"] == {"background": 0, "oedema": 1, "core": 2} and meta_json["numTraining"] == 2
    assert sorted(p.name for p in (root / "imagesTs").iterdir()) == ["mri3d_2ch_002_0000.nii.gz", "mri3d_2ch_002_0001.nii.gz"]
    assert (root / "labelsTs" / "mri3d_2ch_002.nii.gz").is_file()
    scales = []
    for images, label_path in synthetic.cases(root)["train"]:
        (t1, meta), (flair, _) = (io.read_image(p) for p in images)
        label, _ = io.read_image(label_path)
        assert t1.dtype == np.uint16 and flair.dtype == np.float32 and t1.shape == (96, 112, 80)
        np.testing.assert_allclose(meta.spacing, (1.0, 1.0, 1.2), rtol=1e-5)
        assert set(np.unique(label)) == {0, 1, 2}
        wm = np.percentile(t1, 99)
        assert np.median(t1[label == 2]) < 0.6 * np.median(t1[label == 1])  # core: dark in T1
        assert np.median(flair[label == 1]) > 1.4 * np.median(flair[(label == 0) & (t1 > 0.8 * wm)])  # oedema: bright FLAIR
        scales.append((np.percentile(t1, 99), np.percentile(flair, 99)))
    assert abs(np.log(scales[0][0] / scales[1][0])) > 0.05 or abs(np.log(scales[0][1] / scales[1][1])) > 0.05
    assert abs(np.log(scales[0][0] / scales[0][1])) > 0.5  # channels scaled unlike each other
    for fractions in _class_fractions(root):
        assert 0.005 <= fractions[1] <= 0.08 and 0.0005 <= fractions[2] <= 0.01


def test_ensure_demo_data_knows_the_new_layouts(tmp_path, monkeypatch):
    calls = []
    real = synthetic.generate
    monkeypatch.setattr(synthetic, "generate", lambda *a, **k: calls.append(a) or real(*a, n_cases=2, size=(32, 32, 16)))
    first = synthetic.ensure_demo_data("mri3d_2ch", tmp_path)
    assert synthetic.ensure_demo_data("mri3d_2ch", tmp_path) == first and len(calls) == 1
    (first / "imagesTr" / "mri3d_2ch_000_0001.nii.gz").unlink()  # a missing channel: generated again
    synthetic.ensure_demo_data("mri3d_2ch", tmp_path)
    assert len(calls) == 2
