"""Transform presets: alignment of image and label, invertibility, normalisation, cached datasets."""

from __future__ import annotations

from copy import deepcopy

import numpy as np
import pytest
import torch
from monai.data import CacheDataset, Dataset, MetaTensor, PersistentDataset, get_track_meta
from monai.transforms import (
    Compose,
    Invertd,
    Lambdad,
    RandAffined,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
)
from monai.transforms.utils import allow_missing_keys_mode

from medseg.data import cache, io, transforms
from medseg.errors import MedsegError

# stored LPS-like (x and y flipped), oblique in-plane, anisotropic, non-zero origin
AFFINE = np.array([[-0.0, -0.8, 0.0, 40.0], [-0.8, 0.0, 0.0, 25.0], [0.0, 0.0, 2.0, -30.0], [0, 0, 0, 1.0]])


def _volume(tmp_path):
    label = np.zeros((20, 18, 10), np.uint8)
    label[4:12, 3:9, 2:7] = 1
    label[6:9, 5:7, 3:5] = 2
    label[15:18, 12:16, 6:9] = 1
    image = 40.0 + label.astype(np.float32) * 60.0  # encodes the label: CT window [0, 200] -> 0.2 + 0.3 * label
    io.write_image(image, tmp_path / "img.nii.gz", AFFINE)
    io.write_image(label, tmp_path / "lab.nii.gz", AFFINE)
    return {"image": str(tmp_path / "img.nii.gz"), "label": str(tmp_path / "lab.nii.gz")}, label


def _set_probs(compose, exact: bool) -> None:
    """Exact spatial transforms always on, interpolating / intensity ones off."""
    for t in compose.transforms:
        if isinstance(t, RandFlipd | RandRotate90d):
            t.prob = 1.0
        if isinstance(t, RandAffined | RandGaussianNoised | RandScaleIntensityd | RandShiftIntensityd):
            t.prob = 0.0 if exact else t.prob


def _invert_train_sample(tf: Compose, sample: dict, key: str) -> np.ndarray:
    """Undo a train sample: augmentations (Compose.inverse), the crop (pad back), padding and orientation.

    MONAI's multi-sample crops are not ``InvertibleTransform`` s, so the crop is undone here from the
    offsets it recorded (``cropped``); everything else uses MONAI's own inverses.
    """
    steps = list(tf.transforms)
    cut = next(i for i, t in enumerate(steps) if isinstance(t, RandCropByPosNegLabeld))
    after, before = Compose(steps[cut + 1 :]), Compose(steps[:cut])
    with allow_missing_keys_mode(after):
        data = after.inverse({key: sample[key]})
    tensor = data[key]
    crop_op = tensor.applied_operations.pop()
    assert crop_op["class"] == "RandCropByPosNegLabel"
    cropped = crop_op["extra_info"]["extra_info"]["cropped"]
    widths = [(0, 0)] + [(cropped[2 * i], cropped[2 * i + 1]) for i in range(tensor.ndim - 1)]
    padded = MetaTensor(np.pad(tensor.numpy(), widths), meta=tensor.meta, applied_operations=tensor.applied_operations)
    padded.affine = tensor.affine  # (the pre-crop inverses use only the recorded operations)
    with allow_missing_keys_mode(before):
        return before.inverse({key: padded})[key][0].numpy()


def test_train_crops_flips_rotations_invert_to_the_original_label(tmp_path):
    item, label = _volume(tmp_path)
    tf = transforms.build_transforms(
        "train", preset="ct", spatial_dims=3, patch_size=[8, 8, 4], ct_window=(0, 200), num_samples=3,
        track_meta=True,
    )
    _set_probs(tf, exact=True)
    tf.set_random_state(7)
    crops = tf(item)
    assert len(crops) == 3
    for crop in crops:
        assert tuple(crop["label"].shape) == (1, 8, 8, 4)
        torch.testing.assert_close((crop["image"] - 0.2) / 0.3, crop["label"])  # image and label stay aligned
        names = [op["class"] for op in crop["label"].applied_operations]
        assert {"RandFlipd", "RandRotate90d", "RandCropByPosNegLabel", "Orientation"} <= set(names)
        ones = MetaTensor(torch.ones_like(crop["label"]), meta=crop["label"].meta,
                          applied_operations=deepcopy(crop["label"].applied_operations))
        covered = _invert_train_sample(tf, {"label": ones}, "label") > 0.5
        restored = _invert_train_sample(tf, crop, "label")
        image = _invert_train_sample(tf, crop, "image")
        # back on the file's own grid: the crop's 8*8*4 voxels are where they came from, unchanged
        assert restored.shape == label.shape and covered.sum() == 8 * 8 * 4
        np.testing.assert_array_equal(restored[covered], label[covered])
        np.testing.assert_array_equal(restored[~covered], 0)
        np.testing.assert_allclose((image[covered] - 0.2) / 0.3, label[covered], atol=1e-5)


def test_crops_are_foreground_balanced_and_augmented_pairs_stay_aligned(tmp_path):
    item, _ = _volume(tmp_path)
    tf = transforms.build_transforms("train", preset="ct", spatial_dims=3, patch_size=[8, 8, 4],
                                     ct_window=(0, 200), num_samples=4, elastic=True)
    tf.set_random_state(0)
    fg = 0
    for _ in range(5):
        for crop in tf(item):
            image, lab = crop["image"][0], crop["label"][0]
            assert set(torch.unique(lab).tolist()) <= {0.0, 1.0, 2.0}
            fg += int(lab[lab.shape[0] // 2, lab.shape[1] // 2, lab.shape[2] // 2] > 0)
            # despite noise, scaling, affine and elastic warps the image still outlines the label
            agree = ((image > 0.35) == (lab > 0)).float().mean()
            assert agree > 0.85
    assert fg >= 8  # pos=neg=1: about half the crops are centred on foreground (here 20 crops)


def test_val_pipeline_is_deterministic_and_inverts_exactly(tmp_path):
    item, label = _volume(tmp_path)
    tf = transforms.build_transforms("val", preset="ct", spatial_dims=3, patch_size=[8, 8, 4],
                                     spacing=[0.4, 0.4, 1.0], ct_window=(0, 200))
    a, b = tf(item), tf(item)
    torch.testing.assert_close(a["image"], b["image"])
    assert tuple(a["label"].shape) == (1, 35, 39, 19)  # RAS order, resampled to half the spacing: (n - 1) * 2 + 1
    np.testing.assert_allclose(a["image"].affine[:3, :3].abs().sum(0).numpy(), [0.4, 0.4, 1.0], atol=1e-6)
    back = Invertd(keys="label", transform=tf, orig_keys="label", nearest_interp=True)(a)
    np.testing.assert_array_equal(back["label"][0].numpy(), label)
    infer = transforms.build_transforms("infer", preset="ct", spatial_dims=3, patch_size=[8, 8, 4], label=False)
    assert set(infer({"image": item["image"]})) >= {"image"}


def test_presets_normalise_as_documented(tmp_path):
    rng = np.random.default_rng(0)
    ct = rng.uniform(-1000, 1000, (10, 9, 8)).astype(np.float32)
    io.write_image(ct, tmp_path / "ct.nii.gz")
    out = transforms.build_transforms("val", preset="ct", spatial_dims=3, patch_size=[8, 8, 8],
                                      ct_window=(-100, 300), label=False)({"image": str(tmp_path / "ct.nii.gz")})
    expected = np.clip((ct + 100) / 400, 0, 1)
    np.testing.assert_allclose(out["image"][0].numpy(), expected, atol=1e-5)

    mri = np.stack([rng.normal(50, 10, (10, 9, 8)), rng.normal(500, 100, (10, 9, 8))], -1).astype(np.float32)
    mri[:2] = 0  # background outside the head
    io.write_image(mri, tmp_path / "mri.nii.gz")
    out = transforms.build_transforms("val", preset="mri", spatial_dims=3, patch_size=[8, 8, 8],
                                      label=False)({"image": str(tmp_path / "mri.nii.gz")})["image"]
    assert out.shape[0] == 2
    for c in range(2):
        nz = out[c][torch.as_tensor(mri[..., c] != 0)]
        assert abs(float(nz.mean())) < 1e-4 and abs(float(nz.std(unbiased=False)) - 1) < 1e-3
        assert float(out[c][:2].abs().max()) == 0.0

    rgb = np.stack([rng.integers(10, 50, (12, 7)), rng.integers(100, 250, (12, 7)), rng.integers(0, 5, (12, 7))],
                   -1).astype(np.uint8)
    io.write_image(rgb, tmp_path / "rgb.png")
    out = transforms.build_transforms("val", preset="rgb2d", spatial_dims=2, patch_size=[8, 8],
                                      label=False)({"image": str(tmp_path / "rgb.png")})["image"]
    assert tuple(out.shape) == (3, 12, 7)
    np.testing.assert_allclose(out.amin(dim=(1, 2)).numpy(), 0) and np.testing.assert_allclose(out.amax(dim=(1, 2)).numpy(), 1)
    out = transforms.build_transforms("val", preset="gray2d", spatial_dims=2, patch_size=[8, 8],
                                      label=False)({"image": str(tmp_path / "rgb.png")})["image"]
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0


def test_2d_train_patches(tmp_path):
    io.write_image(np.random.default_rng(0).integers(0, 255, (20, 14)).astype(np.uint8), tmp_path / "i.png")
    mask = np.zeros((20, 14), np.uint8)
    mask[3:8, 4:9] = 1
    io.write_image(mask, tmp_path / "m.png")
    tf = transforms.build_transforms("train", preset="gray2d", spatial_dims=2, patch_size=[16, 16], num_samples=2)
    crops = tf({"image": str(tmp_path / "i.png"), "label": str(tmp_path / "m.png")})
    assert [tuple(c["image"].shape) for c in crops] == [(1, 16, 16)] * 2  # padded to the patch, then cropped


def test_training_augmentations_run_untracked_with_the_values_of_tracked_ones(tmp_path):
    item, _ = _volume(tmp_path)
    args = {"preset": "ct", "spatial_dims": 3, "patch_size": [8, 8, 4], "ct_window": (0, 200), "num_samples": 3,
            "class_ratios": [1.0, 1.0, 1.0]}
    flat = transforms.build_transforms("train", **args, track_meta=True)
    untracked = transforms.build_transforms("train", **args)
    random_part = untracked.transforms[-1]
    assert isinstance(random_part, transforms.UntrackedCompose)
    assert [type(t) for t in random_part.transforms] == [type(t) for t in flat.transforms[-len(random_part.transforms):]]
    # the same steps, the same seed, tracked and not: the same crops, as plain tensors
    tracked_part = Compose(flat.transforms[-len(random_part.transforms):])
    cached = Compose(untracked.transforms[:-1])(item)
    tracked_part.set_random_state(3)
    random_part.set_random_state(3)
    expected, got = tracked_part(deepcopy(cached)), random_part(deepcopy(cached))
    assert len(got) == 3
    for a, b in zip(expected, got, strict=True):
        assert isinstance(a["image"], MetaTensor) and type(b["image"]) is torch.Tensor and type(b["label"]) is torch.Tensor
        torch.testing.assert_close(b["image"], a["image"].as_tensor())
        torch.testing.assert_close(b["label"], a["label"].as_tensor())
    assert get_track_meta()  # switched back on after the call


def test_untracked_compose_restores_tracking_when_a_step_fails():
    def fail(_):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        transforms.UntrackedCompose([Lambdad("image", fail)])({"image": torch.zeros(1, 2, 2)})
    assert get_track_meta()


def test_a_cached_training_dataset_stores_tracked_images_and_serves_untracked_crops(tmp_path):
    item, _ = _volume(tmp_path)
    tf = transforms.build_transforms("train", preset="ct", spatial_dims=3, patch_size=[8, 8, 4],
                                     ct_window=(0, 200), num_samples=2)
    ds = cache.build_dataset([item], tf, "memory", num_workers=1)
    assert isinstance(ds._cache[0]["image"], MetaTensor)  # up to the first random step, as MONAI caches
    crops = ds[0]
    assert [tuple(c["image"].shape) for c in crops] == [(1, 8, 8, 4)] * 2
    assert all(type(c["image"]) is torch.Tensor for c in crops)


def test_build_dataset_cache_kinds(tmp_path):
    item, _ = _volume(tmp_path)
    tf = transforms.build_transforms("val", preset="ct", spatial_dims=3, patch_size=[8, 8, 4])
    assert type(cache.build_dataset([item], tf, "none")) is Dataset
    mem = cache.build_dataset([item], tf, "memory", num_workers=1)
    assert isinstance(mem, CacheDataset) and tuple(mem[0]["image"].shape) == (1, 18, 20, 10)
    assert cache.estimate_bytes([item]) == 2 * 20 * 18 * 10 * 4
    disk = cache.build_dataset([item], tf, "disk", cache_dir=tmp_path / "cache")
    assert isinstance(disk, PersistentDataset)
    torch.testing.assert_close(torch.as_tensor(disk[0]["image"]), torch.as_tensor(mem[0]["image"]))
    assert any((tmp_path / "cache").iterdir())
    with pytest.raises(MedsegError, match="cache folder"):
        cache.build_dataset([item], tf, "disk")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"preset": "pet"}, "data.preset"),
        ({"patch_size": [8, 8]}, "data.patch_size"),
        ({"spatial_dims": 2, "patch_size": [8, 8], "spacing": [1, 1, 1]}, "data.spacing"),
        ({"ct_window": (100, -100)}, "ct_window"),
    ],
)
def test_bad_settings_are_user_errors(kwargs, message):
    args = {"preset": "ct", "spatial_dims": 3, "patch_size": [8, 8, 8], **kwargs}
    with pytest.raises(MedsegError, match=message):
        transforms.build_transforms("val", **args)
