"""Generated datasets, deterministic by seed, written as the real datasets of their kind are.

The demo (what ``medseg demo`` and the quick start use), in the MSD layout:

- ``nuclei2d``: fluorescence-microscopy-like 2D images (PNG, grayscale uint8) of nuclei of varied
  size and shape, some touching, some dim, with internal texture, blur, uneven illumination, Poisson
  and Gaussian noise and unlabelled debris; the label is a binary nucleus mask (PNG, 0/1).
- ``organ3d``: CT-like volumes (NIfTI, int16 HU) with anisotropic spacing and an oblique, sometimes
  LPS-stored affine: a body outline with fat rim, a spine and an unlabelled organ-like distractor,
  and the labelled organ (1) holding a hypodense lesion (2).

Written as ``dataset.json`` (MSD keys plus ``medseg_synthetic``), ``imagesTr/``, ``labelsTr/``,
``imagesTs/`` and ``labelsTs/`` (test labels, so ``medseg evaluate`` has ground truth).

Datasets deliberately unlike the demo, the yardstick of ``benchmarks/time_to_dice.py`` (issue #13),
each 12 training and 3 held-out labelled cases in the form a user would bring them:

- ``micro2d_small``: 160 x 224 (rows x columns) 16-bit TIFF camera frames (background ~300-600,
  cells up to ~4000, shot and read noise, hot pixels, uneven illumination, unlabelled out-of-focus
  cells), many cells 2-6 px in radius covering 5-10 %; uint8 TIFF masks. Folder layout (``images/``,
  ``labels/``, ``test/``) with nnU-Net v2 label names in ``dataset.json`` (``{"background": 0, "cell": 1}``).
- ``derm2d_rgb``: 192 x 256 RGB JPEG dermoscopy-like photographs (skin texture and colour, hairs, a
  dark round vignette, colour casts) of one irregular pigmented lesion covering 15-40 %; PNG masks.
  Folder layout with MSD label names (``{"0": "background", "1": "lesion"}``).
- ``ct3d_lesion``: 160 x 160 x 40 int16 CT crops at about 0.78 x 0.78 x 3 mm, oblique by 1-6 degrees,
  stored in LPS voxel order with a non-zero origin: air, fat, soft tissue, bone, a kidney, bowel gas
  and a fluid pocket, the organ (1, ~60 HU) and one or two hypodense lesions (2) inside it covering
  0.2-0.55 % of the voxels (12-27 mm across). MSD layout.
- ``mri3d_2ch``: 96 x 112 x 80 head MRI at 1 x 1 x 1.2 mm, two channels: T1-like (uint16) and
  FLAIR-like (float32), each with its own bias field, Rician noise and an arbitrary scanner scale per
  case; oedema (1, bright in FLAIR) around a core (2, dark in T1). nnU-Net v2 raw layout
  (``CASE_0000``/``CASE_0001``, ``channel_names``, ``labels`` name -> value, ``file_ending``).

Every layout puts held-out labels in ``labelsTs/`` and lists them under ``test_labels``;
:func:`cases` reads the training and held-out pairs back.
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
from typing import Any

import numpy as np

from medseg.data import phantoms
from medseg.data.io import write_image
from medseg.errors import MedsegError
from medseg.utils import atomic_write_json

GENERATOR_VERSION = 1
DEFAULT_ROOT = Path("data/demo")


@dataclass(frozen=True)
class _Kind:
    """How one dataset is made and written: generator, defaults, layout, file endings and description.

    ``make(rng, size)`` returns the image (one array, channels last for RGB; or a list of arrays, one
    file per channel), the label map and the RAS affine. ``layout`` is ``msd``, ``folder`` or
    ``nnunet``; ``label_names`` how ``dataset.json`` writes ``labels``: ``msd`` (value -> name) or
    ``nnunet`` (name -> value).
    """

    make: Callable[[np.random.Generator, tuple[int, ...]], tuple[Any, np.ndarray, np.ndarray]]
    n_cases: int
    size: tuple[int, ...]
    ending: str
    modality: str
    labels: dict[int, str]
    description: str
    layout: str = "msd"
    label_ending: str = ""
    channels: tuple[str, ...] = ()
    label_names: str = "msd"


_KINDS: dict[str, _Kind] = {
    "nuclei2d": _Kind(
        phantoms.nuclei2d, 40, (128, 128), ".png", "fluorescence microscopy",
        {0: "background", 1: "nucleus"},
        "Synthetic fluorescence-microscopy nuclei (medseg demo); binary nucleus masks.",
    ),
    "organ3d": _Kind(
        phantoms.organ3d, 12, (64, 64, 32), ".nii.gz", "CT",
        {0: "background", 1: "organ", 2: "lesion"},
        "Synthetic CT-like volumes (medseg demo): organ with a hypodense lesion, oblique affine, anisotropic spacing.",
    ),
    # not the demo: datasets medseg was not tuned on (benchmarks/time_to_dice.py), in the forms users bring
    "micro2d_small": _Kind(
        phantoms.micro2d_small, 12, (160, 224), ".tif", "fluorescence microscopy",
        {0: "background", 1: "cell"},
        "Synthetic 16-bit camera frames of many small cells (2-6 px radius), shot noise, uneven illumination.",
        layout="folder", label_ending=".tif", label_names="nnunet",
    ),
    "derm2d_rgb": _Kind(
        phantoms.derm2d_rgb, 12, (192, 256), ".jpg", "dermoscopy",
        {0: "background", 1: "lesion"},
        "Synthetic dermoscopy-like RGB photographs: one large irregular lesion, skin texture, hairs, vignette.",
        layout="folder", label_ending=".png", channels=("R", "G", "B"),
    ),
    "ct3d_lesion": _Kind(
        phantoms.ct3d_lesion, 12, (160, 160, 40), ".nii.gz", "CT",
        {0: "background", 1: "organ", 2: "lesion"},
        "Synthetic abdominal CT crops, 0.78 x 0.78 x 3 mm, oblique: an organ at ~60 HU with small hypodense lesions.",
    ),
    "mri3d_2ch": _Kind(
        phantoms.mri3d_2ch, 12, (96, 112, 80), ".nii.gz", "MRI",
        {0: "background", 1: "oedema", 2: "core"},
        "Synthetic two-channel head MRI (T1, FLAIR) with bias fields and per-case scanner scaling; a lesion's "
        "oedema and core.",
        layout="nnunet", channels=("T1", "FLAIR"), label_names="nnunet",
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
    """Write the ``kind`` dataset to ``out`` in its layout; the same seed gives the same files.

    ``n_cases`` training cases (default 40 for nuclei2d, 12 for the others) and ``ceil(n_cases / 5)``
    held-out test cases with their labels. The dataset is built in a temporary folder and moved into
    place, so ``out`` never holds half a dataset. ``out`` may be missing, empty, or an earlier medseg
    generated dataset (replaced).
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
            entry = _write_case(spec, tmp, f"{kind}_{i:03d}", split, image, label, affine)
            (training if i < n_train else test).append(entry)
        info = {"kind": kind, "seed": seed, "size": list(shape), "version": GENERATOR_VERSION}
        atomic_write_json(tmp / "dataset.json", _dataset_json(spec, kind, info, training, test))
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


#: Where each layout puts images and labels: training ("Tr") and held-out test ("Ts") cases.
_FOLDERS = {
    "msd": {"Tr": ("imagesTr", "labelsTr"), "Ts": ("imagesTs", "labelsTs")},
    "nnunet": {"Tr": ("imagesTr", "labelsTr"), "Ts": ("imagesTs", "labelsTs")},
    "folder": {"Tr": ("images", "labels"), "Ts": ("test", "labelsTs")},
}


def _write_case(
    spec: _Kind, root: Path, case_id: str, split: str, image: Any, label: np.ndarray, affine: np.ndarray
) -> dict[str, Any]:
    """Write one case's files; return its ``{"image", "label"}`` entry (paths relative to ``root``).

    nnU-Net cases get one ``CASE_XXXX`` file per channel and a list of them as ``image``.
    """
    image_dir, label_dir = _FOLDERS[spec.layout][split]
    arrays = list(image) if spec.layout == "nnunet" else [image]
    if spec.layout == "nnunet":
        names = [f"{case_id}_{c:04d}{spec.ending}" for c in range(len(arrays))]
    else:
        names = [f"{case_id}{spec.ending}"]
    for array, name in zip(arrays, names):
        _write_picture(array, root / image_dir / name, affine)
    label_name = f"{case_id}{spec.label_ending or spec.ending}"
    write_image(label, root / label_dir / label_name, affine)
    paths = [f"./{image_dir}/{n}" for n in names]
    return {"image": paths if spec.layout == "nnunet" else paths[0], "label": f"./{label_dir}/{label_name}"}


def _write_picture(array: np.ndarray, path: Path, affine: np.ndarray) -> None:
    """An image in its own dtype; JPEG (lossy, as cameras save it) through PIL at quality 90."""
    if path.suffix.lower() in (".jpg", ".jpeg"):
        from PIL import Image

        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(np.swapaxes(array, 0, 1))).save(path, format="JPEG", quality=90)
        return
    write_image(array, path, affine, dtype=array.dtype)


def _dataset_json(
    spec: _Kind, kind: str, info: dict[str, Any], training: list[dict[str, Any]], test: list[dict[str, Any]]
) -> dict[str, Any]:
    """``dataset.json`` in the layout's own keys; every layout lists the held-out ``test_labels``."""
    channels = {str(i): c for i, c in enumerate(spec.channels or (spec.modality,))}
    if spec.label_names == "nnunet":
        labels: dict[str, Any] = {name: k for k, name in spec.labels.items()}
    else:
        labels = {str(k): name for k, name in spec.labels.items()}
    meta: dict[str, Any] = {
        "name": f"medseg-{kind}",
        "description": spec.description,
        "reference": "generated by medseg.data.synthetic",
        "licence": "CC0-1.0",
        "release": f"medseg synthetic v{GENERATOR_VERSION}",
    }
    if spec.layout == "msd":
        meta.update({"tensorImageSize": f"{len(info['size'])}D", "modality": channels, "labels": labels,
                     "numTraining": len(training), "numTest": len(test), "training": training,
                     "test": [t["image"] for t in test], "test_labels": test, "medseg_synthetic": info})
        return meta
    if spec.layout == "nnunet":
        meta.update({"channel_names": channels, "labels": labels, "numTraining": len(training),
                     "file_ending": spec.ending})
    else:
        meta.update({"modality": channels, "labels": labels, "numTraining": len(training)})
    # no top-level "training" list: that would make the folder look like an MSD dataset
    meta.update({"numTest": len(test), "test_labels": test, "medseg_synthetic": {**info, "training": training}})
    return meta


def cases(root: str | os.PathLike[str]) -> dict[str, list[tuple[list[Path], Path]]]:
    """``{"train": [(image files, label file)], "test": [...]}`` of a generated dataset, from its dataset.json.

    The held-out ``test`` cases come with their labels (``labelsTs/``), so predictions on them can be
    evaluated; image files are one per channel for nnU-Net layouts, else one.
    """
    import json

    root = Path(root)
    meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    training = meta["medseg_synthetic"].get("training", meta.get("training"))

    def pairs(entries: list[dict[str, Any]]) -> list[tuple[list[Path], Path]]:
        out = []
        for e in entries:
            images = e["image"] if isinstance(e["image"], list) else [e["image"]]
            out.append(([(root / i).resolve() for i in images], (root / e["label"]).resolve()))
        return out

    return {"train": pairs(training), "test": pairs(meta["test_labels"])}


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
        files = [p for images, label in cases(folder)["train"] for p in (*images, label)]
        if info.get("kind") == kind and info.get("version") == GENERATOR_VERSION and all(p.exists() for p in files):
            return folder
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return generate(kind, folder)
