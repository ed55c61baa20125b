"""The run directory format: what training writes and inference reads, and nothing else.

A run directory holds ``config.yaml``, ``best.safetensors`` / ``last.safetensors`` (weights with
the model's build arguments and the :class:`Preprocess` contract in the metadata), ``state.pt``
(training only), ``metrics.csv``, ``log.txt``, ``curves.png`` and ``splits.json``. This module sits
below :mod:`medseg.training` and :mod:`medseg.inference`: both use it, neither imports the other.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from medseg.data.io import IMAGE_SUFFIXES
from medseg.errors import MedsegError
from medseg.utils import atomic_path

#: ``medseg_format`` in the weights metadata; runs written before this module are format 1 too.
FORMAT_VERSION = 1
#: Marks a cross-validation's parent run directory; its folds are the runs ``fold_<k>/`` inside it.
CV_FILE = "cv.json"
#: What ``medseg predict`` appends to an input's name.
SEG_SUFFIX = "_seg"
#: Output extension for inputs whose own format cannot hold a label map (lossy, DICOM).
_OUTPUT_EXT = {"": ".nii.gz", ".dcm": ".nii.gz", ".jpg": ".png", ".jpeg": ".png", ".bmp": ".png"}
DEFAULT_CT_WINDOW = (-175.0, 250.0)


@dataclass(frozen=True)
class Preprocess:
    """The preprocessing contract between training and inference, stored with every checkpoint.

    ``labels`` maps label value to class name, background included; ``colours`` the RGB colours the
    dataset gave some of them (the viewers' outputs use the fixed palette for the rest). ``intensity`` holds the
    normalisation's dataset statistics when the preset needs them; ``plan`` and ``fingerprint``
    record how the values were chosen (see :mod:`medseg.planning`), for ``predict``'s warnings.
    """

    preset: str
    spatial_dims: int
    patch_size: tuple[int, ...]
    in_channels: int
    labels: Mapping[int, str]
    spacing: tuple[float, ...] | None = None
    ct_window: tuple[float, float] = DEFAULT_CT_WINDOW
    intensity: Mapping[str, Any] | None = field(default=None, compare=False)
    plan: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)
    fingerprint: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)
    colours: Mapping[int, tuple[int, int, int]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def num_classes(self) -> int:
        """Classes, background included: the model's ``out_channels``."""
        return len(self.labels)

    @property
    def foreground(self) -> list[int]:
        """Foreground label values, ascending."""
        return sorted(k for k in self.labels if k != 0)

    def to_metadata(self) -> dict[str, Any]:
        """A JSON-ready dict (label keys as strings); :meth:`from_metadata` reads it back."""
        out: dict[str, Any] = {
            "preset": self.preset, "spatial_dims": self.spatial_dims, "patch_size": list(self.patch_size),
            "spacing": list(self.spacing) if self.spacing is not None else None,
            "ct_window": list(self.ct_window), "in_channels": self.in_channels,
            "labels": {str(k): v for k, v in sorted(self.labels.items())},
        }
        for key in ("intensity", "plan", "fingerprint"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.colours:
            out["colours"] = {str(k): list(v) for k, v in sorted(self.colours.items())}
        return out

    @classmethod
    def from_metadata(cls, data: Mapping[str, Any], source: str = "preprocess") -> Preprocess:
        """Read what :meth:`to_metadata` (or a run written before it) stored."""
        try:
            spacing = data.get("spacing")
            return cls(
                preset=str(data["preset"]), spatial_dims=int(data["spatial_dims"]),
                patch_size=tuple(int(p) for p in data["patch_size"]), in_channels=int(data["in_channels"]),
                labels={int(k): str(v) for k, v in dict(data["labels"]).items()},
                spacing=tuple(float(s) for s in spacing) if spacing is not None else None,
                ct_window=tuple(float(w) for w in data.get("ct_window", DEFAULT_CT_WINDOW)),  # type: ignore[arg-type]
                intensity=data.get("intensity"), plan=data.get("plan"), fingerprint=data.get("fingerprint"),
                colours={int(k): (int(v[0]), int(v[1]), int(v[2])) for k, v in dict(data.get("colours") or {}).items()},
            )
        except (KeyError, TypeError, ValueError) as err:
            raise MedsegError(
                f"{source}: preprocessing metadata lacks or mangles {err}; re-train the run with this medseg version"
            ) from None

    def transforms(
        self, stage: str, *, label: bool | None = None, elastic: bool = False, num_samples: int = 2,
        class_ratios: Sequence[float] | None = None,
    ) -> Any:
        """The MONAI pipeline of ``stage`` (``train``, ``val``, ``infer``) for this contract.

        ``elastic``, ``num_samples`` and ``class_ratios`` shape the training crops and augmentation only.
        """
        from medseg.data.transforms import build_transforms

        return build_transforms(
            stage, preset=self.preset, spatial_dims=self.spatial_dims, patch_size=list(self.patch_size),
            spacing=self.spacing, ct_window=self.ct_window, intensity=self.intensity,
            label=(stage != "infer") if label is None else label, elastic=elastic, num_samples=num_samples,
            class_ratios=class_ratios,
        )


# -- weights ------------------------------------------------------------------------------------------
def save_weights(path: Path, model: nn.Module, metadata: Mapping[str, Any]) -> None:
    """Write the model's state dict and JSON-encoded ``metadata`` to a safetensors file atomically."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def read_metadata(path: Path) -> dict[str, Any]:
    """The metadata of a medseg safetensors file, JSON values decoded."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
    except (OSError, SafetensorError) as err:
        raise MedsegError(f"{path}: not a readable safetensors file ({err}); re-run training or pick another run") from err
    out: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def load_weights(path: Path, model: nn.Module) -> dict[str, Any]:
    """Load weights from ``path`` into ``model`` (strict) and return the file's metadata."""
    if not path.is_file():
        raise MedsegError(f"{path}: weights file not found; train first or pass the right --run")
    try:
        state = load_file(str(path), device="cpu")
    except (OSError, SafetensorError) as err:
        raise MedsegError(f"{path}: cannot read weights ({err}); the file is damaged, use last.safetensors") from err
    model.load_state_dict(state, strict=True)
    return read_metadata(path)


@dataclass(frozen=True)
class Checkpoint:
    """A run's weights file and what its metadata says: how to build the model and preprocess."""

    path: Path
    build_args: dict[str, Any]
    preprocess: Preprocess
    metadata: dict[str, Any]

    def build(self) -> nn.Module:
        """The model with these weights loaded, in eval mode."""
        from medseg.models import build_model

        model = build_model(**self.build_args)
        load_weights(self.path, model)
        return model.eval()


def checkpoint_metadata(build_args: Mapping[str, Any], preprocess: Preprocess, **extra: Any) -> dict[str, Any]:
    """The metadata :func:`read_checkpoint` expects, plus ``extra`` (epoch, val_dice, precision ...)."""
    return {"build_args": dict(build_args), "preprocess": preprocess.to_metadata(), **extra,
            "medseg_format": FORMAT_VERSION}


def read_checkpoint(run_dir: Path, name: str = "best") -> Checkpoint:
    """``run_dir/<name>.safetensors`` with its build arguments and preprocessing, checked."""
    path = Path(run_dir) / f"{name}.safetensors"
    if not path.is_file():
        raise MedsegError(f"{path}: not found; use --checkpoint last, or wait for the run to save one")
    meta = read_metadata(path)
    if "build_args" not in meta or "preprocess" not in meta:
        raise MedsegError(f"{path}: no medseg metadata (build_args, preprocess); it was not written by medseg train")
    version = int(meta.get("medseg_format", 1))
    if version > FORMAT_VERSION:
        raise MedsegError(f"{path}: run format {version} is newer than this medseg reads ({FORMAT_VERSION}); upgrade medseg")
    return Checkpoint(path, dict(meta["build_args"]), Preprocess.from_metadata(meta["preprocess"], str(path)), meta)


# -- run directories ----------------------------------------------------------------------------------
def find_run(run: str | Path | None) -> Path:
    """The run directory to use: ``run`` or ``runs/latest``, checked for a config."""
    path = Path(run) if run else Path("runs") / "latest"
    if is_cross_validation(path) and not (path / "config.yaml").is_file():
        raise MedsegError(f"--run {path}: a cross-validation none of whose folds has finished; wait for one, "
                          f"or pass a fold's run directory ({fold_dir(path, 0)})")
    if not (path / "config.yaml").is_file():
        hint = "train one first (medseg train) or pass --run DIR" if run is None else "pass a run directory made by medseg train"
        raise MedsegError(f"--run {path}: no config.yaml there; {hint}")
    return path.resolve()


def is_cross_validation(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` is a cross-validation's parent (``medseg train --folds K``)."""
    return (Path(run_dir) / CV_FILE).is_file()


def fold_dir(parent: str | Path, fold: int) -> Path:
    """The run directory of fold ``fold`` inside a cross-validation's parent."""
    return Path(parent) / f"fold_{fold}"


def member_runs(run_dir: Path, checkpoint: str = "best") -> list[Path]:
    """The runs a prediction averages: the folds of a cross-validation that have ``checkpoint``
    (its ``cv.json`` lists them), or ``run_dir`` itself."""
    if not is_cross_validation(run_dir):
        return [run_dir]
    try:
        folds = int(json.loads((run_dir / CV_FILE).read_text(encoding="utf-8"))["folds"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise MedsegError(f"{run_dir / CV_FILE}: not a medseg cross-validation file ({err})") from None
    runs = [fold_dir(run_dir, k) for k in range(folds) if (fold_dir(run_dir, k) / f"{checkpoint}.safetensors").is_file()]
    if not runs:
        raise MedsegError(f"--run {run_dir}: no fold has {checkpoint}.safetensors yet; train the folds first "
                          f"(medseg train --folds {folds} --out {run_dir})")
    return runs


def new_run_dir(out: str | Path, model_name: str) -> Path:
    """``<out>/<YYYYmmdd-HHMMSS>_<model>``, unique."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(out) / f"{stamp}_{model_name}"
    run_dir, k = base, 1
    while run_dir.exists():
        k += 1
        run_dir = base.with_name(f"{base.name}-{k}")
    return run_dir


def point_latest(run_dir: Path) -> None:
    """Make ``<parent>/latest`` a symlink to ``run_dir`` (replaced atomically); a fold of a
    cross-validation leaves it alone (``runs/latest`` points at the cross-validation)."""
    if is_cross_validation(run_dir.parent):
        return
    link = run_dir.parent / "latest"
    tmp = run_dir.parent / f".latest.{os.getpid()}"
    try:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        tmp.symlink_to(run_dir.name, target_is_directory=True)
        if link.exists() and not link.is_symlink():
            tmp.unlink()  # a real folder called 'latest': leave it alone
            return
        os.replace(tmp, link)
    except OSError:
        pass  # filesystems without symlinks: predict then needs --run


# -- output naming ------------------------------------------------------------------------------------
def split_name(path: Path) -> tuple[str, str]:
    """Split ``scan.nii.gz`` into ``("scan", ".nii.gz")``; a folder has no extension."""
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)], name[-len(suffix):]
    return name, ""


def prediction_name(source: Path) -> str:
    """``scan.nii.gz`` -> ``scan_seg.nii.gz``; DICOM gives NIfTI, JPEG and BMP give PNG."""
    name, ext = split_name(source)
    return f"{name}{SEG_SUFFIX}{_OUTPUT_EXT.get(ext.lower(), ext)}"


def is_prediction(path: Path) -> bool:
    """Files ``medseg predict`` wrote (``*_seg``, ``*_seg_prob_*``): never inputs of a folder prediction."""
    name = split_name(path)[0]
    return name.endswith(SEG_SUFFIX) or f"{SEG_SUFFIX}_prob_" in name


def case_name(name: str, prediction: bool = False) -> str:
    """The case a file name belongs to: image suffix stripped, then ``_seg`` for predictions."""
    stem = split_name(Path(name))[0]
    return stem[: -len(SEG_SUFFIX)] if prediction and stem.endswith(SEG_SUFFIX) else stem


def labels_from(mapping: Mapping[Any, Any]) -> dict[int, str]:
    """Label keys as ints (JSON stores them as strings)."""
    return {int(k): str(v) for k, v in mapping.items()}


def foreground_names(labels: Mapping[int, str]) -> list[str]:
    """Names of the foreground classes in label order."""
    return [labels[k] for k in sorted(labels) if k != 0]
