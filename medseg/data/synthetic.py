"""Built-in demo datasets, generated deterministically and written as a real MSD dataset would be.

- ``nuclei2d``: fluorescence-microscopy-like 2D images (PNG, grayscale uint8) of nuclei of varied
  size and shape, some touching, some dim, with internal texture, blur, uneven illumination, Poisson
  and Gaussian noise and unlabelled debris; the label is a binary nucleus mask (PNG, 0/1).
- ``organ3d``: CT-like volumes (NIfTI, int16 HU) with anisotropic spacing and an oblique, sometimes
  LPS-stored affine: a body outline with fat rim, a spine and an unlabelled organ-like distractor,
  and the labelled organ (1) holding a hypodense lesion (2).

Both are written as ``dataset.json`` (MSD keys plus ``medseg_synthetic``), ``imagesTr/``,
``labelsTr/``, ``imagesTs/`` and ``labelsTs/`` (test labels, so ``medseg evaluate`` has ground truth).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from medseg.data.io import write_image
from medseg.errors import MedsegError
from medseg.utils import atomic_write_json

GENERATOR_VERSION = 1
DEFAULT_ROOT = Path("data/demo")


@dataclass(frozen=True)
class _Kind:
    """How one demo dataset is made: its generator, defaults, file ending and description."""

    make: Callable[[np.random.Generator, tuple[int, ...]], tuple[np.ndarray, np.ndarray, np.ndarray]]
    n_cases: int
    size: tuple[int, ...]
    ending: str
    modality: str
    labels: dict[int, str]
    description: str


# -- nuclei2d ----------------------------------------------------------------------------------------
def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field with correlation length ``sigma`` voxels."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-8)


def _nucleus(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    """Mask of one blob: an ellipse with a wavy outline (low radial harmonics)."""
    ratio = rng.uniform(1.0, 1.6)
    angle = rng.uniform(0, math.pi)
    dy, dx = yy - cy, xx - cx
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    a, b = r * math.sqrt(ratio), r / math.sqrt(ratio)
    rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    theta = np.arctan2(v, u)
    wobble = sum(rng.uniform(0.0, 0.08) * np.cos(k * theta + rng.uniform(0, 2 * math.pi)) for k in (2, 3, 5))
    return rho <= 1.0 + wobble


def _nuclei2d(rng: np.random.Generator, size: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One microscopy-like image (uint8, PIL order: W, H) and its 0/1 mask; identity affine."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    scale = math.sqrt(h * w) / 128.0
    mask = np.zeros((h, w), bool)
    signal = np.zeros((h, w), np.float32)
    centres: list[tuple[float, float, float]] = []
    target = int(rng.integers(7, 17) * scale**2)
    for _ in range(target * 20):
        if len(centres) >= target:
            break
        r = rng.uniform(4.0, 10.5) * scale ** 0.5
        if centres and rng.random() < 0.35:  # touch a neighbour
            py, px, pr = centres[int(rng.integers(len(centres)))]
            angle = rng.uniform(0, 2 * math.pi)
            dist = (pr + r) * rng.uniform(0.85, 1.0)
            cy, cx = py + dist * math.sin(angle), px + dist * math.cos(angle)
        else:
            cy, cx = rng.uniform(-2, h + 2), rng.uniform(-2, w + 2)
        if any(math.hypot(cy - py, cx - px) < 0.8 * (r + pr) for py, px, pr in centres):
            continue
        blob = _nucleus(rng, yy, xx, cy, cx, r)
        if blob.sum() < 12:
            continue
        centres.append((cy, cx, r))
        brightness = rng.uniform(0.3, 1.0)
        texture = 1.0 + 0.22 * _smooth_noise(rng, (h, w), 1.2)
        signal = np.where(blob & ~mask, brightness * texture, signal)
        mask |= blob
    for _ in range(int(rng.integers(2, 7) * scale**2)):  # unlabelled debris: small bright specks
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        speck = (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(0.8, 2.0) ** 2
        signal = np.where(speck & ~mask, rng.uniform(0.4, 0.9), signal)
    background = rng.uniform(0.04, 0.12) * (1.0 + 0.3 * _smooth_noise(rng, (h, w), 12.0))
    image = ndimage.gaussian_filter(signal, rng.uniform(0.7, 1.6)) + background
    gy, gx = rng.uniform(-0.5, 0.5, 2)  # uneven illumination: a tilt and a broad bump
    illumination = 1.0 + gy * (yy / h - 0.5) + gx * (xx / w - 0.5) + 0.25 * _smooth_noise(rng, (h, w), 30.0)
    image = np.clip(image * np.clip(illumination, 0.45, 1.6), 0, None)
    peak = rng.uniform(25.0, 90.0)  # photons at brightness 1: Poisson shot noise
    image = rng.poisson(image * peak) / peak + rng.normal(0, 0.02, image.shape)
    pixels = np.clip(image * 190.0, 0, 255).astype(np.uint8)
    return pixels.T.copy(), mask.T.astype(np.uint8), np.eye(3)


# -- organ3d -----------------------------------------------------------------------------------------
def _rotation(rz: float, rx: float) -> np.ndarray:
    cz, sz, cx, sx = math.cos(rz), math.sin(rz), math.cos(rx), math.sin(rx)
    z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    return z @ x


def _organ3d(rng: np.random.Generator, size: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One CT-like volume (int16 HU) and its labels (0 background, 1 organ, 2 lesion) with an oblique affine."""
    # about 1.5 x 1.5 x 3 mm at the default 64 x 64 x 32: the field of view (~96 mm) is the same at any size
    spacing = np.array([1.5, 1.5, 3.0]) * (np.array([64, 64, 32]) / np.array(size)) * rng.uniform(0.92, 1.08, 3)
    spacing[1] = spacing[0]
    direction = _rotation(math.radians(rng.uniform(-20, 20)), math.radians(rng.uniform(-6, 6)))
    if rng.random() < 0.5:  # stored like a DICOM conversion: LPS voxel order
        direction = direction @ np.diag([-1.0, -1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(spacing)
    centre_vox = (np.array(size) - 1) / 2.0
    centre_world = rng.uniform(-120, 120, 3)
    affine[:3, 3] = centre_world - affine[:3, :3] @ centre_vox
    # world coordinates (mm, RAS) of every voxel, relative to the scan centre
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in size], indexing="ij"), -1)
    p = (grid - centre_vox.astype(np.float32)) @ affine[:3, :3].T.astype(np.float32)
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    warp = 6.0 * _smooth_noise(rng, size, 6.0)  # mm: irregular outlines

    body_a, body_b = rng.uniform(38, 44), rng.uniform(28, 33)
    body_r = np.sqrt((x / body_a) ** 2 + (y / body_b) ** 2)
    body = body_r * (1 + 0.02 * warp / 6.0) <= 1.0
    fat = body & (body_r > 1.0 - rng.uniform(0.08, 0.14))
    spine = ((x / 7.0) ** 2 + ((y + body_b * 0.62) / 7.0) ** 2) <= 1.0
    side = 1.0 if rng.random() < 0.5 else -1.0  # the organ lies right or left of the midline
    oc = np.array([side * rng.uniform(12, 17), rng.uniform(-3, 6), rng.uniform(-6, 6)])
    oa = np.array([rng.uniform(16, 20), rng.uniform(12, 15), rng.uniform(28, 36)])
    organ_f = ((x - oc[0]) / oa[0]) ** 2 + ((y - oc[1]) / oa[1]) ** 2 + ((z - oc[2]) / oa[2]) ** 2
    organ = (organ_f + warp / 20.0 <= 1.0) & body
    dc = np.array([-side * rng.uniform(14, 18), rng.uniform(-12, -6), rng.uniform(-8, 8)])  # distractor
    da = np.array([rng.uniform(6, 8), rng.uniform(7, 10), rng.uniform(14, 20)])
    distractor = (((x - dc[0]) / da[0]) ** 2 + ((y - dc[1]) / da[1]) ** 2 + ((z - dc[2]) / da[2]) ** 2) <= 1.0
    distractor &= body & ~organ
    lesion = np.zeros(size, bool)
    inside = np.argwhere(ndimage.binary_erosion(organ, iterations=2))
    if len(inside):
        c = p[tuple(inside[int(rng.integers(len(inside)))])]
        radius = rng.uniform(5.5, 10.0)
        lesion = (np.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) + warp / 4.0 <= radius) & organ

    organ_hu = rng.uniform(95, 135)
    hu = np.full(size, -1000.0, np.float32)
    hu[body] = rng.uniform(35, 55)
    hu[fat] = rng.uniform(-110, -80)
    hu[spine & body] = rng.uniform(450, 750)
    hu[distractor] = organ_hu + rng.uniform(-15, 15)
    hu[organ] = organ_hu
    hu[lesion] = organ_hu - rng.uniform(35, 65)
    hu += 8.0 * _smooth_noise(rng, size, 3.0) * body  # tissue texture
    hu = ndimage.gaussian_filter(hu, 0.6) + rng.normal(0, rng.uniform(10, 18), size)
    labels = np.where(lesion, 2, np.where(organ, 1, 0)).astype(np.uint8)
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16), labels, affine


_KINDS: dict[str, _Kind] = {
    "nuclei2d": _Kind(
        _nuclei2d, 40, (128, 128), ".png", "fluorescence microscopy",
        {0: "background", 1: "nucleus"},
        "Synthetic fluorescence-microscopy nuclei (medseg demo); binary nucleus masks.",
    ),
    "organ3d": _Kind(
        _organ3d, 12, (64, 64, 32), ".nii.gz", "CT",
        {0: "background", 1: "organ", 2: "lesion"},
        "Synthetic CT-like volumes (medseg demo): organ with a hypodense lesion, oblique affine, anisotropic spacing.",
    ),
}


def kinds() -> list[str]:
    """Names accepted by :func:`generate`."""
    return list(_KINDS)


def _kind(kind: str) -> _Kind:
    if kind not in _KINDS:
        raise MedsegError(f"demo data kind {kind!r}: use one of {', '.join(_KINDS)}")
    return _KINDS[kind]


def _is_synthetic(folder: Path) -> bool:
    import json

    try:
        meta = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "medseg_synthetic" in meta


def generate(
    kind: str,
    out: str | os.PathLike[str],
    n_cases: int | None = None,
    seed: int = 0,
    size: Sequence[int] | None = None,
) -> Path:
    """Write the ``kind`` demo dataset (MSD layout) to ``out``; the same seed gives the same files.

    ``n_cases`` training cases (default 40 for nuclei2d, 12 for organ3d) and ``ceil(n_cases / 5)``
    test cases. The dataset is built in a temporary folder and moved into place, so ``out`` never
    holds half a dataset. ``out`` may be missing, empty, or an earlier medseg demo dataset (replaced).
    """
    spec = _kind(kind)
    out = Path(out)
    n_train = spec.n_cases if n_cases is None else int(n_cases)
    if n_train < 2:
        raise MedsegError(f"--cases {n_train}: give at least 2 training cases")
    shape = tuple(int(s) for s in (size or spec.size))
    if len(shape) != len(spec.size) or min(shape) < 16:
        raise MedsegError(f"size {list(shape)}: {kind} needs {len(spec.size)} sizes of at least 16")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not _is_synthetic(out))):
        raise MedsegError(f"{out}: exists and is not a medseg demo dataset; choose an empty or new --out folder")
    n_test = math.ceil(n_train / 5)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        training, test = [], []
        for i in range(n_train + n_test):
            rng = np.random.default_rng([seed, i])
            image, label, affine = spec.make(rng, shape)
            split = "Tr" if i < n_train else "Ts"
            name = f"{kind}_{i:03d}{spec.ending}"
            write_image(image, tmp / f"images{split}" / name, affine)
            write_image(label, tmp / f"labels{split}" / name, affine)
            entry = {"image": f"./images{split}/{name}", "label": f"./labels{split}/{name}"}
            (training if i < n_train else test).append(entry)
        atomic_write_json(tmp / "dataset.json", {
            "name": f"medseg-{kind}",
            "description": spec.description,
            "reference": "generated by medseg.data.synthetic",
            "licence": "CC0-1.0",
            "release": f"medseg synthetic v{GENERATOR_VERSION}",
            "tensorImageSize": f"{len(shape)}D",
            "modality": {"0": spec.modality},
            "labels": {str(k): v for k, v in spec.labels.items()},
            "numTraining": n_train,
            "numTest": n_test,
            "training": training,
            "test": [t["image"] for t in test],
            "test_labels": test,
            "medseg_synthetic": {"kind": kind, "seed": seed, "size": list(shape), "version": GENERATOR_VERSION},
        })
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _replace_dir(new: Path, out: Path) -> None:
    """Move ``new`` to ``out``, replacing an earlier folder there (renames, so readers never see half)."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old.{os.getpid()}.{time.time_ns()}")
        os.replace(out, old)
    os.replace(new, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def ensure_demo_data(kind: str = "nuclei2d", root: str | os.PathLike[str] = DEFAULT_ROOT) -> Path:
    """The demo dataset ``root/kind``, generated with the default size and seed 0 if missing or outdated."""
    import json

    _kind(kind)
    folder = Path(root) / kind
    try:
        meta = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
        info = meta["medseg_synthetic"]
        complete = all((folder / e["image"]).exists() and (folder / e["label"]).exists() for e in meta["training"])
        if info.get("kind") == kind and info.get("version") == GENERATOR_VERSION and complete:
            return folder
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return generate(kind, folder)
