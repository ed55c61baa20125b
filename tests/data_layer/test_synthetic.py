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
