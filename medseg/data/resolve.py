"""From a config's ``data`` section to cases: find (or generate) the dataset, discover it, split it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medseg.config import ExperimentConfig
from medseg.data import datasets, synthetic
from medseg.errors import MedsegError


@dataclass
class DataSetup:
    """The resolved dataset: where it is, what it holds, and the split."""

    root: Path
    info: datasets.DatasetInfo
    train_cases: list[datasets.Case]
    val_cases: list[datasets.Case]
    #: The ``splits.json`` the split was read from or written to.
    split_path: Path


def dataset_root(cfg: ExperimentConfig) -> Path:
    """``data.path``, checked; the demo dataset (generated on first use) when it is not set."""
    if cfg.data.path:
        root = Path(cfg.data.path)
        if not root.exists():
            raise MedsegError(f"data.path {root}: folder not found; pass --data with a dataset folder")
        return root
    return synthetic.ensure_demo_data(cfg.data.demo)


def resolve_data(cfg: ExperimentConfig, info: datasets.DatasetInfo | None = None) -> DataSetup:
    """Discover the dataset (unless ``info`` is given) and split it as ``cfg`` says (``splits.json``)."""
    root = Path(info.root) if info is not None else dataset_root(cfg)
    info = info or datasets.discover(root)
    split_path = Path(cfg.data.split_file) if cfg.data.split_file else root / "splits.json"
    train_cases, val_cases = datasets.load_or_make_split(
        info, split_path, val_fraction=cfg.data.val_fraction, seed=cfg.train.seed,
        fold=cfg.data.fold, num_folds=cfg.data.num_folds,
    )
    if not train_cases or not val_cases:
        raise MedsegError(f"{root}: {len(info.cases)} labelled case(s) cannot make a train/validation split; add cases")
    return DataSetup(root, info, train_cases, val_cases, split_path)


def infer_preset(info: datasets.DatasetInfo) -> str:
    """Normalisation preset from the dataset: CT/MRI for volumes (by its declared modality), else 2D."""
    if info.spatial_dims == 2:
        return "rgb2d" if info.num_channels == 3 else "gray2d"
    modality = " ".join(str(m) for m in info.modalities).lower()
    return "ct" if "ct" in modality.split() else "mri"
