"""Run directories made without training, and images with awkward geometry, for the inference tests.

A uniquely named module (not ``conftest``): ``from conftest import`` would find another folder's conftest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from torch import nn

from medseg.config import resolve_config
from medseg.models import build_model
from medseg.run import Preprocess, checkpoint_metadata, labels_from, save_weights
from medseg.utils import atomic_write_text

#: A U-Net small enough to run a 3D sliding window in well under a second.
TINY_UNET = {"features": [4, 4, 8]}
LABELS = {"0": "background", "1": "organ"}


def make_run(
    root: Path,
    model: nn.Module | None = None,
    *,
    spatial_dims: int = 3,
    preset: str = "ct",
    patch_size: list[int] | None = None,
    spacing: list[float] | None = None,
    in_channels: int = 1,
    labels: dict[str, str] | None = None,
    inference: dict[str, Any] | None = None,
    envelope: dict[str, Any] | None = None,
    colours: dict[int, tuple[int, int, int]] | None = None,
) -> Path:
    """A run directory (config.yaml, best.safetensors with build_args and preprocess) as training writes it;
    ``envelope`` is the training data's ranges a planned run stores (``Preprocess.fingerprint``)."""
    labels = labels or LABELS
    patch_size = patch_size or ([16, 16, 16] if spatial_dims == 3 else [32, 32])
    if model is None:
        torch.manual_seed(0)
        model = build_model("unet", spatial_dims=spatial_dims, in_channels=in_channels,
                            out_channels=len(labels), **TINY_UNET)
    data = {"patch_size": patch_size, "spacing": spacing, "preset": preset, "cache": "none"}
    cfg = resolve_config(model="unet", overrides={"data": data, "inference": inference or {}})
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "config.yaml", cfg.to_yaml())
    preprocess = Preprocess(preset, spatial_dims, tuple(patch_size), in_channels, labels_from(labels),
                            tuple(spacing) if spacing else None, fingerprint=envelope, colours=colours or {})
    build_args = getattr(model, "build_args", {"name": "threshold"})  # ThresholdNet is built by no registry
    save_weights(root / "best.safetensors", model, checkpoint_metadata(build_args, preprocess))
    return root


class ThresholdNet(nn.Module):
    """Logits ``[0, k·(x − t)]``: class 1 exactly where the normalised intensity exceeds ``t``.

    A 1×1 convolution, so it predicts the label of any image whose organ is brighter than ``t``
    after the run's normalisation; used to check that prediction maps back to the label.
    """

    def __init__(self, spatial_dims: int = 3, threshold: float = 0.5, gain: float = 50.0) -> None:
        super().__init__()
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        self.head = conv(1, 2, 1)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.zero_()
            self.head.weight[1] = gain
            self.head.bias[1] = -gain * threshold
        self.build_args = {"name": "threshold", "spatial_dims": spatial_dims}
        self.num_outputs = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


def oblique_affine(spacing=(0.7, 0.7, 5.0), origin=(-31.5, 12.25, 40.0), angles=(0.3, -0.2, 0.45)) -> np.ndarray:
    """A RAS affine with a rotation about all three axes, anisotropic spacing and a non-zero origin."""
    a, b, c = angles
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ ry @ rx @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def ellipsoid_case(shape=(48, 44, 12), spacing=(0.7, 0.7, 5.0), radii_mm=(11.0, 9.0, 18.0)) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like volume (organ 200 HU in −50 HU tissue, mild noise) and its label, both in voxel order."""
    grid = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij")
    inside = sum((g / r) ** 2 for g, r in zip(grid, radii_mm, strict=True)) <= 1.0
    rng = np.random.default_rng(0)
    image = np.where(inside, 200.0, -50.0) + rng.normal(0, 5, shape)
    return image.astype(np.int16), inside.astype(np.uint8)


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray, qform_code: int = 1, sform_code: int = 2) -> Path:
    """A NIfTI with both qform and sform set (different codes, as scanners write them)."""
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=qform_code)
    img.set_sform(affine, code=sform_code)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))
    return path
