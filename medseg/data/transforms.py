"""MONAI dictionary-transform presets for training, validation and inference.

Every pipeline works on the keys ``image`` and ``label`` and runs: load (:func:`medseg.data.io.load_transform`)
→ channel first → (3D) orientation RAS and target spacing → preset normalisation → (train only)
padding, foreground-balanced random crops and augmentation. ``val``/``infer`` stop after the
normalisation: they are deterministic, keep the whole image (the training loop and the predictor use
sliding-window inference over ``patch_size``) and are invertible with ``monai.transforms.Invertd``.

Presets (``preset`` in the config):

- ``ct``: with dataset statistics (``intensity``: ``clip`` low/high and ``mean``/``std`` of the
  foreground, per channel, as nnU-Net's CT scheme), clip to them and z-score; without, clip to the HU
  window ``ct_window`` and scale it to [0, 1] (runs planned before the fingerprint existed);
- ``mri``: z-score over non-zero voxels, per channel;
- ``zscore``: z-score over the whole image, per channel (what the planner uses for 2D images and
  for volumes whose non-zero region is most of the image);
- ``gray2d``: scale each image to [0, 1] (min-max);
- ``rgb2d``: scale each channel to [0, 1] (min-max per channel).

Training crops are centred by class when ``class_ratios`` is given (``RandCropByLabelClassesd`` on
indices computed once in the cached part), so a rare class is in a known share of the patches;
otherwise half of them on foreground (``RandCropByPosNegLabeld``).

Labels are one channel of integer class indices (stored as float32, resampled with nearest neighbour).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.data import MetaTensor, get_track_meta, set_track_meta
from monai.transforms import (
    ClassesToIndicesd,
    Compose,
    DeleteItemsd,
    EnsureChannelFirstd,
    EnsureTyped,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    Rand2DElasticd,
    Rand3DElasticd,
    RandAffined,
    RandCropByLabelClassesd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    ScaleIntensityd,
    ScaleIntensityRanged,
    SpatialPadd,
)

from medseg.data.spacing import SeparableSpacingd
from medseg.errors import MedsegError

STAGES = ("train", "val", "infer")


Intensity = Mapping[str, Sequence[float]]


def _ct(window: tuple[float, float], intensity: Intensity | None) -> list[MapTransform]:
    if intensity is not None:
        low, high = min(intensity["clip"][0::2]), max(intensity["clip"][1::2])
        return [
            ScaleIntensityRanged("image", a_min=low, a_max=high, b_min=low, b_max=high, clip=True),
            NormalizeIntensityd("image", subtrahend=list(intensity["mean"]), divisor=list(intensity["std"]),
                                channel_wise=True),
        ]
    lo, hi = float(window[0]), float(window[1])
    if not hi > lo:
        raise MedsegError(f"data.ct_window {list(window)}: the upper HU bound must exceed the lower, e.g. [-175, 250]")
    return [ScaleIntensityRanged("image", a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)]


_PRESETS: dict[str, Callable[[tuple[float, float], Intensity | None], list[MapTransform]]] = {
    "ct": _ct,
    "mri": lambda *_: [NormalizeIntensityd("image", nonzero=True, channel_wise=True)],
    "zscore": lambda *_: [NormalizeIntensityd("image", channel_wise=True)],
    "gray2d": lambda *_: [ScaleIntensityd("image", minv=0.0, maxv=1.0)],
    "rgb2d": lambda *_: [ScaleIntensityd("image", minv=0.0, maxv=1.0, channel_wise=True)],
}
#: Augmentation noise in normalised units: z-scored images have unit spread, [0, 1] ones far less.
_NOISE_STD = {"ct": 0.02, "mri": 0.1, "zscore": 0.1, "gray2d": 0.03, "rgb2d": 0.03}
_INDICES_KEY = "label_cls_indices"


def presets() -> list[str]:
    """Names accepted as ``preset``."""
    return list(_PRESETS)


def _check(stage: str, preset: str, spatial_dims: int, patch_size: Sequence[int], spacing: Sequence[float] | None) -> None:
    if stage not in STAGES:
        raise MedsegError(f"stage {stage!r}: use one of {', '.join(STAGES)}")
    if preset not in _PRESETS:
        raise MedsegError(f"data.preset {preset!r}: use one of {', '.join(_PRESETS)}")
    if spatial_dims not in (2, 3):
        raise MedsegError(f"spatial_dims {spatial_dims}: use 2 or 3")
    if len(patch_size) != spatial_dims:
        raise MedsegError(f"data.patch_size {list(patch_size)}: give {spatial_dims} sizes for {spatial_dims}D images")
    if spacing is not None and (spatial_dims != 3 or len(spacing) != 3):
        raise MedsegError(f"data.spacing {list(spacing)}: only for 3D images, as three numbers in mm")


def deterministic_transforms(
    *,
    preset: str,
    spatial_dims: int,
    spacing: Sequence[float] | None = None,
    ct_window: Sequence[float] = (-175.0, 250.0),
    intensity: Intensity | None = None,
    label: bool = True,
) -> list[MapTransform]:
    """Load, channel first, (3D) RAS + spacing, normalisation: the part shared by every stage."""
    from medseg.data.io import load_transform

    keys = ["image", "label"] if label else ["image"]
    steps: list[MapTransform] = [
        load_transform(keys),
        EnsureChannelFirstd(keys),
        # with a target spacing the resampling casts (a CT's int16 plane by plane): no float copy first
        EnsureTyped(keys, dtype=np.float32 if spacing is None or spatial_dims != 3 else None, track_meta=True),
    ]
    if spatial_dims == 3:
        # with a target spacing, orientation is only recorded (lazy) and resampled with the spacing step:
        # one pass over the voxels instead of a flipped copy, then the resampling
        steps.append(Orientationd(keys, axcodes="RAS", labels=None, lazy=spacing is not None))
        if spacing is not None:
            modes = ("bilinear", "nearest")[: len(keys)]
            steps.append(SeparableSpacingd(keys, pixdim=[float(s) for s in spacing], mode=modes, dtype=np.float32))
    steps += _PRESETS[preset]((float(ct_window[0]), float(ct_window[1])), intensity)
    return steps


class UntrackedCompose(Compose):
    """Transforms run on plain tensors, with MONAI's metadata tracking off while they run.

    For the random training augmentations: nothing inverts a training crop, and recording every
    operation on a ``MetaTensor`` cost more than the augmentations themselves (a 2D step's 10 patches
    of 128×96: 42 → 18 ms on a 2-core AVX2 CPU). The random state is consumed as in a flat pipeline.
    """

    def __call__(self, input_: Any, start: int = 0, end: int | None = None, threading: bool = False,
                 lazy: bool | None = None) -> Any:
        tracked = get_track_meta()
        set_track_meta(False)
        try:
            return super().__call__(_untracked(input_), start, end, threading, lazy)
        finally:
            set_track_meta(tracked)


def _untracked(data: Any) -> Any:
    """``data`` with every ``MetaTensor`` value of a dict (or of each dict in a list) as a plain tensor."""
    if isinstance(data, list):
        return [_untracked(d) for d in data]
    if isinstance(data, Mapping):
        return {k: v.as_tensor() if isinstance(v, MetaTensor) else v for k, v in data.items()}
    return data


def train_augmentations(
    *,
    preset: str,
    spatial_dims: int,
    patch_size: Sequence[int],
    elastic: bool = False,
    num_samples: int = 2,
    class_ratios: Sequence[float] | None = None,
    track_meta: bool = False,
) -> list[MapTransform | Compose]:
    """Pad to the patch, crops (by class, or half on foreground), flips, 90° turns, small affine,
    intensity, (elastic). The random part runs untracked (:class:`UntrackedCompose`) unless
    ``track_meta``, which keeps every step's record so a crop can be inverted to the file's grid."""
    keys = ["image", "label"]
    patch = [int(p) for p in patch_size]
    cached, crop = _crops(patch, num_samples, class_ratios)
    fixed: list[MapTransform | Compose] = [SpatialPadd(keys, spatial_size=patch), *cached]
    steps = [*crop, *_augmentations(spatial_dims, patch, preset, elastic)]
    return [*fixed, *steps] if track_meta else [*fixed, UntrackedCompose(steps)]


def _augmentations(spatial_dims: int, patch: list[int], preset: str, elastic: bool) -> list[MapTransform]:
    """Flips, 90° turns (square patches), a small affine, (elastic), noise and intensity changes."""
    keys = ["image", "label"]
    steps: list[MapTransform] = [RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in range(spatial_dims)]
    if patch[0] == patch[1]:  # a quarter turn in the (first two axes) plane keeps the patch shape
        steps.append(RandRotate90d(keys, prob=0.5, max_k=3, spatial_axes=(0, 1)))
    rotate = [math.radians(15)] if spatial_dims == 2 else [0.0, 0.0, math.radians(15)]
    steps.append(
        RandAffined(
            keys, prob=0.2, rotate_range=rotate, scale_range=[0.1] * spatial_dims,
            mode=("bilinear", "nearest"), padding_mode="zeros",
        )
    )
    if elastic:
        if spatial_dims == 2:
            grid = tuple(max(4, p // 8) for p in patch)
            steps.append(Rand2DElasticd(keys, spacing=grid, magnitude_range=(1.0, 2.0), prob=0.2,
                                        mode=("bilinear", "nearest"), padding_mode="zeros"))
        else:
            steps.append(Rand3DElasticd(keys, sigma_range=(5.0, 8.0), magnitude_range=(50.0, 150.0), prob=0.2,
                                        mode=("bilinear", "nearest"), padding_mode="zeros"))
    steps += [
        RandGaussianNoised("image", prob=0.15, mean=0.0, std=_NOISE_STD[preset]),
        RandScaleIntensityd("image", factors=0.1, prob=0.3),
        RandShiftIntensityd("image", offsets=0.1, prob=0.3),
    ]
    return steps


def _crops(
    patch: list[int], num_samples: int, class_ratios: Sequence[float] | None
) -> tuple[list[MapTransform], list[MapTransform]]:
    """``(cached, random)``: patch centres by class ratio (indices found once, in the cached part), or
    pos/neg 1:1."""
    if class_ratios is None:
        return [], [RandCropByPosNegLabeld(
            ["image", "label"], label_key="label", spatial_size=patch, pos=1.0, neg=1.0, num_samples=num_samples,
            image_key="image", allow_smaller=False,
        )]
    ratios = [float(r) for r in class_ratios]
    return [
        ClassesToIndicesd("label", num_classes=len(ratios), indices_postfix="_cls_indices",
                          max_samples_per_class=200_000),
    ], [
        RandCropByLabelClassesd(
            ["image", "label"], label_key="label", spatial_size=patch, ratios=ratios, num_classes=len(ratios),
            num_samples=num_samples, indices_key=_INDICES_KEY, allow_smaller=False, warn=False,
        ),
        DeleteItemsd(_INDICES_KEY),
    ]


def build_transforms(
    stage: str,
    *,
    preset: str,
    spatial_dims: int,
    patch_size: Sequence[int],
    spacing: Sequence[float] | None = None,
    ct_window: Sequence[float] = (-175.0, 250.0),
    intensity: Intensity | None = None,
    elastic: bool = False,
    num_samples: int = 2,
    class_ratios: Sequence[float] | None = None,
    label: bool = True,
    track_meta: bool = False,
) -> Compose:
    """The transform pipeline of one stage (``train``, ``val`` or ``infer``) on keys ``image``/``label``.

    ``train`` returns ``num_samples`` patch dicts per case (a list); ``val``/``infer`` return the whole,
    normalised image, deterministically and invertibly (``Invertd``). ``label=False`` (inference)
    drops the label key; training needs labels. ``track_meta`` keeps MONAI's record of the training
    augmentations (see :func:`train_augmentations`).
    """
    _check(stage, preset, spatial_dims, patch_size, spacing)
    if stage == "train" and not label:
        raise MedsegError("stage 'train' needs labels; use label=True")
    steps = deterministic_transforms(
        preset=preset, spatial_dims=spatial_dims, spacing=spacing, ct_window=tuple(ct_window), intensity=intensity,
        label=label,
    )
    if stage == "train":
        steps += train_augmentations(
            preset=preset, spatial_dims=spatial_dims, patch_size=patch_size, elastic=elastic, num_samples=num_samples,
            class_ratios=class_ratios, track_meta=track_meta,
        )
    return Compose(steps, lazy=None)  # each step's own mode: the lazy orientation waits for the spacing step
