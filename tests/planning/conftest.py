"""Small datasets with known content for the fingerprint tests (each unlike any demo dataset).

Every builder returns ``(root, truth)``: ``truth`` holds what the fingerprint must find, worked out
by hand from what was drawn (boxes, objects, spacings), not by the code under test.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medseg.data import io


def _ramp(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Non-zero uint8 values (1..250) that differ voxel to voxel."""
    return (1 + np.random.default_rng(seed).integers(0, 250, size=shape)).astype(np.uint8)


def build_gray2d(root: Path) -> tuple[Path, dict[str, Any]]:
    """Folder layout, grey PNGs of three sizes, zero outside a known box, classes 1 and 2, no modality."""
    specs = [  # shape, non-zero box, {class: [boxes]}
        ((40, 30), ((5, 25), (3, 20)), {1: [((6, 9), (4, 7)), ((15, 19), (10, 15))], 2: [((20, 22), (16, 18))]}),
        ((36, 30), ((2, 30), (0, 28)), {1: [((4, 6), (4, 7))]}),
        ((40, 32), ((0, 40), (5, 32)), {1: [((10, 20), (10, 12))], 2: [((30, 31), (20, 21)), ((33, 35), (20, 23))]}),
    ]
    foreground = []
    for i, (shape, box, objects) in enumerate(specs):
        image = np.zeros(shape, np.uint8)
        (x0, x1), (y0, y1) = box
        image[x0:x1, y0:y1] = _ramp((x1 - x0, y1 - y0), i)
        label = np.zeros(shape, np.uint8)
        for value, boxes in objects.items():
            for (a0, a1), (b0, b1) in boxes:
                label[a0:a1, b0:b1] = value
        io.write_image(image, root / "images" / f"g{i}.png")
        io.write_image(label, root / "labels" / f"g{i}.png")
        foreground.append(image[label > 0])
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "cell", "2": "debris"}}))
    truth = {
        "shapes": [(40, 30), (36, 30), (40, 32)], "cropped": [(20, 17), (28, 28), (40, 27)],
        "starts": [(5, 3), (2, 0), (0, 5)], "total": 40 * 30 + 36 * 30 + 40 * 32,
        "voxels": {1: 9 + 20 + 6 + 20, 2: 4 + 1 + 6}, "sizes": {1: [9, 20, 6, 20], 2: [4, 1, 6]},
        "cases": {1: 3, 2: 2}, "foreground": [np.concatenate(foreground)],
    }
    return root, truth


def build_rgb2d(root: Path) -> tuple[Path, dict[str, Any]]:
    """Folder layout, RGB PNGs; the non-zero box is the union of two channels' boxes."""
    foreground: list[list[np.ndarray]] = [[], [], []]
    for i in range(2):
        image = np.zeros((24, 20, 3), np.uint8)
        image[2:10, 3:12, 0] = _ramp((8, 9), 10 + i)
        image[8:20, 5:15, 2] = _ramp((12, 10), 20 + i)
        image[..., 1] = 0
        label = np.zeros((24, 20), np.uint8)
        label[4:8 + i, 5:9] = 1
        io.write_image(image, root / "images" / f"rgb{i}.png")
        io.write_image(label, root / "labels" / f"rgb{i}.png")
        for c in range(3):
            foreground[c].append(image[..., c][label > 0])
    return root, {"cropped": (18, 12), "start": (2, 3), "foreground": [np.concatenate(f) for f in foreground]}


def oblique(spacing: tuple[float, float, float], degrees: float, origin: tuple[float, ...]) -> np.ndarray:
    """A RAS affine rotated about the z axis, with the given voxel spacing."""
    t = math.radians(degrees)
    rotation = np.array([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def build_ct3d(root: Path) -> tuple[Path, dict[str, Any]]:
    """MSD layout without 'modality': int16 HU volumes, 0.8 x 0.8 x 3 mm (one case 2.5 mm), oblique."""
    lps = np.diag([-0.8, -0.8, 3.0, 1.0])
    lps[:3, 3] = [40.0, 30.0, -12.0]
    specs = [  # shape, affine, spacing, non-zero box, {class: [boxes]}
        ((20, 18, 8), oblique((0.8, 0.8, 3.0), 30, (-5, 3, 7)), ((2, 18), (1, 17), (1, 7)),
         {1: [((5, 9), (5, 9), (2, 4)), ((12, 14), (12, 15), (5, 6))]}),
        ((22, 18, 8), lps, ((0, 22), (2, 18), (0, 8)), {1: [((5, 8), (5, 8), (2, 5))]}),
        ((20, 16, 10), oblique((0.8, 0.8, 2.5), -15, (0, 0, 0)), ((1, 19), (1, 15), (2, 10)),
         {1: [((10, 12), (4, 6), (4, 6))], 2: [((6, 8), (6, 8), (3, 5))]}),
    ]
    training, foreground = [], []
    for i, (shape, affine, box, objects) in enumerate(specs):
        rng = np.random.default_rng(i)
        image = np.zeros(shape, np.int16)
        inside = tuple(slice(a, b) for a, b in box)
        image[inside] = -1000
        image[inside][2:-2, 2:-2, :] = rng.integers(20, 90, size=image[inside][2:-2, 2:-2, :].shape)
        image[box[0][0], box[1][0], box[2][0]] = 300  # a bone voxel
        label = np.zeros(shape, np.uint8)
        for value, boxes in objects.items():
            for b in boxes:
                label[tuple(slice(p, q) for p, q in b)] = value
        io.write_image(image, root / "imagesTr" / f"ct_{i}.nii.gz", affine)
        io.write_image(label, root / "labelsTr" / f"ct_{i}.nii.gz", affine)
        training.append({"image": f"./imagesTr/ct_{i}.nii.gz", "label": f"./labelsTr/ct_{i}.nii.gz"})
        foreground.append(image[label > 0])
    (root / "dataset.json").write_text(json.dumps({
        "name": "toy-ct", "labels": {"0": "background", "1": "organ", "2": "lesion"}, "training": training}))
    truth = {
        "spacings": [(0.8, 0.8, 3.0), (0.8, 0.8, 3.0), (0.8, 0.8, 2.5)],
        "shapes": [(20, 18, 8), (22, 18, 8), (20, 16, 10)], "cropped": [(16, 16, 6), (22, 16, 8), (18, 14, 8)],
        "orientations": ["RAS", "LPS", "RAS"], "voxel_mm3": [0.8 * 0.8 * 3.0, 0.8 * 0.8 * 3.0, 0.8 * 0.8 * 2.5],
        "sizes": {1: [[32, 6], [27], [8]], 2: [[], [], [8]]}, "foreground": [np.concatenate(foreground)],
    }
    return root, truth


def build_nnunet2ch(root: Path) -> tuple[Path, dict[str, Any]]:
    """nnU-Net v2 raw, two float32 channels (T1, T2) in separate files, labels name -> value."""
    foreground: list[list[np.ndarray]] = [[], []]
    affine = np.diag([1.0, 1.0, 1.5, 1.0])
    for i in range(2):
        rng = np.random.default_rng(100 + i)
        label = np.zeros((10, 10, 6), np.uint8)
        label[2:6, 3:7, 1:4 + i] = 1
        for c in range(2):
            image = (rng.normal(100 * (c + 1), 10, size=(10, 10, 6))).astype(np.float32)
            io.write_image(image, root / "imagesTr" / f"mr{i}_{c:04d}.nii.gz", affine)
            foreground[c].append(image[label > 0])
        io.write_image(label, root / "labelsTr" / f"mr{i}.nii.gz", affine)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T1", "1": "T2"}, "labels": {"background": 0, "tumour": 1},
        "numTraining": 2, "file_ending": ".nii.gz"}))
    return root, {"foreground": [np.concatenate(f) for f in foreground]}


@pytest.fixture
def gray2d(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    return build_gray2d(tmp_path / "gray2d")


@pytest.fixture
def rgb2d(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    return build_rgb2d(tmp_path / "rgb2d")


@pytest.fixture
def ct3d(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    return build_ct3d(tmp_path / "ct3d")


@pytest.fixture
def nnunet2ch(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    return build_nnunet2ch(tmp_path / "nnunet2ch")


@pytest.fixture(autouse=True)
def _user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep the user-level fingerprint cache inside the test's folder."""
    folder = tmp_path / "user-cache"
    monkeypatch.setenv("MEDSEG_CACHE_DIR", str(folder))
    return folder
