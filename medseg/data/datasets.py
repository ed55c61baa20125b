"""Find the cases of a dataset in the layouts the field uses, and split them reproducibly.

Three layouts give the same :class:`Case` list:

- **nnU-Net v2 raw**: ``dataset.json`` with ``channel_names``, ``labels`` (name -> value) and
  ``file_ending``; ``imagesTr/CASE_0000<ending>`` (``_0001`` ... are more channels), ``labelsTr/CASE<ending>``,
  optional ``imagesTs/``.
- **Medical Segmentation Decathlon (MSD)**: ``dataset.json`` with a ``training`` list of
  ``{"image", "label"}`` pairs, ``labels`` (value -> name), ``modality`` and an optional ``test`` list.
- **Folder**: ``images/`` and ``labels/`` holding files with the same case id (the extension may
  differ, e.g. ``images/a.jpg`` with ``labels/a.png``), optional ``test/`` for unlabelled images and
  an optional ``dataset.json`` with ``labels`` (value -> name) and ``modality``.

``labels`` is read in either convention in every layout: value -> name (MSD) or name -> value
(nnU-Net v2); see :func:`parse_labels`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.io import IMAGE_SUFFIXES, read_header, read_image, strip_suffix
from medseg.errors import MedsegError
from medseg.utils import atomic_write_json

_HIDDEN_PREFIXES = (".", "._")  # macOS resource forks (``._case.nii.gz``) ship inside the MSD tars


@dataclass
class Case:
    """One case: its id, its image files (one per channel, or one multi-channel file) and its label."""

    id: str
    images: list[Path]
    label: Path | None = None


@dataclass
class DatasetInfo:
    """What :func:`discover` found: layout, labelled and test cases, classes, channels, dimensions.

    ``labels`` maps label value to class name, 0 (background) included; ``colours`` holds the RGB
    colours dataset.json's ``colors`` gives (by value or name), for the viewers. ``modalities`` names the
    channels in order (e.g. ``["CT"]`` or ``["FLAIR", "T1w", "t1gd", "T2w"]``). ``problems`` lists
    what discovery noticed but did not stop for (missing files, unpaired images); ``medseg data check``
    reports them as errors.
    """

    root: Path
    layout: str
    cases: list[Case]
    test_cases: list[Case]
    labels: dict[int, str]
    num_channels: int
    spatial_dims: int
    file_ending: str
    modalities: list[str] = field(default_factory=list)
    name: str = ""
    problems: list[str] = field(default_factory=list)
    colours: dict[int, tuple[int, int, int]] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Number of classes, background included (the model's ``out_channels``)."""
        return len(self.labels)


# -- helpers -----------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise MedsegError(f"{path}: not valid JSON ({err}); fix or remove the file") from None
    if not isinstance(data, dict):
        raise MedsegError(f"{path}: expected a JSON object at the top level")
    return data


def _image_files(folder: Path) -> list[Path]:
    """Image files (and DICOM sub-folders) in ``folder``, sorted, without hidden/resource-fork files."""
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir()
        if not p.name.startswith(_HIDDEN_PREFIXES) and (p.is_dir() or p.name.lower().endswith(IMAGE_SUFFIXES))
    )


def _ending(path: Path) -> str:
    return path.name[len(strip_suffix(path.name)):]


def _is_int(value: Any) -> bool:
    """An integer, or a string of one (JSON object keys are always strings)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and value.strip().lstrip("-").isdigit()


def parse_labels(mapping: Any, path: Path, key: str = "labels") -> dict[int, str]:
    """``labels`` of a dataset.json in either convention -> ``{value: name}``, background 0 included.

    MSD (and the Folder layout) write value -> name, ``{"0": "background", "1": "organ"}``; nnU-Net v2
    writes name -> value, ``{"background": 0, "organ": 1}``. The convention is read from the types:
    integer keys with name values are MSD's, integer values nnU-Net's. A list value is an nnU-Net
    region (several labels trained as one), which medseg does not support.
    """
    example = '{"0": "background", "1": "organ"} or {"background": 0, "organ": 1}'
    if not isinstance(mapping, dict) or not mapping:
        raise MedsegError(f"{path}: '{key}' must map label values to class names, e.g. {example}")
    for name, value in mapping.items():
        if isinstance(value, list | tuple):
            raise MedsegError(
                f"{path}: '{key}' entry '{name}' is {list(value)}, an nnU-Net region; regions are not supported, "
                "give each class one integer value"
            )
    if all(_is_int(k) for k in mapping) and not all(isinstance(v, int) and not isinstance(v, bool) for v in mapping.values()):
        pairs = [(int(k), str(v)) for k, v in mapping.items()]  # MSD: value -> name
    elif all(_is_int(v) for v in mapping.values()):
        pairs = [(int(v), str(k)) for k, v in mapping.items()]  # nnU-Net v2: name -> value
    else:
        raise MedsegError(f"{path}: '{key}' must map label values to class names (or names to values), e.g. {example}")
    labels: dict[int, str] = {}
    for value, name in pairs:
        if value < 0:
            raise MedsegError(f"{path}: '{key}' gives class '{name}' the value {value}; label values are 0 or more")
        if value in labels:
            raise MedsegError(f"{path}: '{key}' gives '{labels[value]}' and '{name}' the same value {value}; give each class its own")
        labels[value] = name
    return _with_background(labels)


def parse_colours(mapping: Any, labels: Mapping[int, str], where: str) -> dict[int, tuple[int, int, int]]:
    """A ``colors`` mapping (label value or name -> ``[R, G, B]``, ``"R,G,B"`` or ``"#RRGGBB"``, 0-255)
    -> ``{value: (r, g, b)}``; ``where`` starts each error message (the file or option)."""
    if mapping is None:
        return {}
    if not isinstance(mapping, Mapping):
        raise MedsegError(f"{where}: 'colors' must map label values or names to [R, G, B]")
    by_name = {str(v): k for k, v in labels.items()}
    out: dict[int, tuple[int, int, int]] = {}
    for key, rgb in mapping.items():
        label = int(key) if _is_int(key) else by_name.get(str(key))
        if label is None:
            raise MedsegError(f"{where}: colour for {key!r}, which is not a label value or name ({', '.join(by_name)})")
        out[label] = parse_rgb(f"{where}: {key}={rgb}", rgb)
    return out


def parse_rgb(where: str, rgb: Any) -> tuple[int, int, int]:
    """``[r, g, b]``, ``"r,g,b"`` or ``"#rrggbb"`` as three ints in 0-255."""
    try:
        if isinstance(rgb, str) and rgb.startswith("#") and len(rgb) == 7:
            values = [int(rgb[i:i + 2], 16) for i in (1, 3, 5)]
        else:
            values = [int(v) for v in (rgb.split(",") if isinstance(rgb, str) else rgb)]
    except (TypeError, ValueError):
        values = []
    if len(values) != 3 or not all(0 <= v <= 255 for v in values):
        raise MedsegError(f"{where}: give three values 0-255 (R,G,B) or #RRGGBB")
    return values[0], values[1], values[2]


def _with_background(labels: dict[int, str]) -> dict[int, str]:
    labels = dict(sorted(labels.items()))
    labels.setdefault(0, "background")
    return dict(sorted(labels.items()))


def _resolve(root: Path, entry: str) -> Path:
    return (root / entry).resolve() if not Path(entry).is_absolute() else Path(entry)


def _header_dims(path: Path) -> tuple[int, int]:
    """(spatial_dims, channels) of one image file, read from its header."""
    meta = read_header(path)
    return meta.spatial_dims, meta.num_channels


# -- layouts -----------------------------------------------------------------------------------------
def _nnunet(root: Path, meta: dict[str, Any]) -> DatasetInfo:
    path = root / "dataset.json"
    ending = str(meta["file_ending"])
    try:
        channels = {int(k): str(v) for k, v in meta["channel_names"].items()}
    except (AttributeError, TypeError, ValueError):
        raise MedsegError(f"{path}: 'channel_names' must map channel indices to names, e.g. {{\"0\": \"CT\"}}") from None
    labels = parse_labels(meta.get("labels"), path)
    problems: list[str] = []

    def collect(folder: Path, labelled: bool) -> list[Case]:
        groups: dict[str, dict[int, Path]] = {}
        for f in sorted(folder.glob(f"*{ending}")) if folder.is_dir() else []:
            if f.name.startswith(_HIDDEN_PREFIXES):
                continue
            stem = f.name[: -len(ending)]
            case_id, _, channel = stem.rpartition("_")
            if not case_id or len(channel) != 4 or not channel.isdigit():
                problems.append(f"{f}: not named CASE_XXXX{ending} (XXXX = 4-digit channel index)")
                continue
            groups.setdefault(case_id, {})[int(channel)] = f
        cases = []
        for case_id, files in sorted(groups.items()):
            missing = [c for c in channels if c not in files]
            if missing:
                problems.append(
                    f"{folder / case_id}: missing channel file(s) "
                    + ", ".join(f"{case_id}_{c:04d}{ending}" for c in missing)
                )
            label = root / "labelsTr" / f"{case_id}{ending}" if labelled else None
            if label is not None and not label.exists():
                problems.append(f"{label}: label file missing for case {case_id}")
            cases.append(Case(case_id, [files[c] for c in sorted(files)], label))
        return cases

    cases = collect(root / "imagesTr", True)
    if not cases:
        raise _no_nnunet_cases(root / "imagesTr", ending)
    test = collect(root / "imagesTs", False)
    dims = _header_dims(cases[0].images[0])[0]
    return DatasetInfo(root, "nnunet", cases, test, labels, len(channels), dims, ending,
                       [channels[c] for c in sorted(channels)], str(meta.get("name", root.name)), problems)


def _no_nnunet_cases(folder: Path, ending: str) -> MedsegError:
    """The error for an nnU-Net v2 ``imagesTr`` with no usable channel file, naming the fix."""
    found = sorted(f for f in folder.glob(f"*{ending}") if not f.name.startswith(_HIDDEN_PREFIXES)) \
        if folder.is_dir() else []
    if not found:
        return MedsegError(f"{folder}: no {ending} files (dataset.json's 'file_ending'); put the images there "
                           "or set 'file_ending' to their extension")
    stem = found[0].name[: -len(ending)]
    return MedsegError(
        f"{folder}: {len(found)} {ending} file(s), none named CASE_XXXX{ending} as nnU-Net v2 names one file per "
        f"channel (dataset.json has 'file_ending'); rename {found[0].name} to {stem}_0000{ending}, and so on")


def _msd(root: Path, meta: dict[str, Any]) -> DatasetInfo:
    path = root / "dataset.json"
    problems: list[str] = []
    cases: list[Case] = []
    for i, entry in enumerate(meta["training"]):
        if not isinstance(entry, dict) or "image" not in entry:
            raise MedsegError(f"{path}: training[{i}] must be {{\"image\": ..., \"label\": ...}}")
        image = _resolve(root, str(entry["image"]))
        label = _resolve(root, str(entry["label"])) if entry.get("label") else None
        for p in (image, label):
            if p is not None and not p.exists():
                problems.append(f"{p}: listed in dataset.json training[{i}] but missing")
        cases.append(Case(strip_suffix(image.name), [image], label))
    if not cases:
        raise MedsegError(f"{path}: the 'training' list is empty; list image/label pairs in it")
    test: list[Case] = []
    for entry in meta.get("test", []) or []:
        image = _resolve(root, str(entry["image"] if isinstance(entry, dict) else entry))
        if not image.exists():
            problems.append(f"{image}: listed in dataset.json test but missing")
        test.append(Case(strip_suffix(image.name), [image], None))
    modality = meta.get("modality") or {"0": "unknown"}
    modalities = [str(v) for _, v in sorted(((int(k), v) for k, v in dict(modality).items()))]
    labels = parse_labels(meta.get("labels") or {"0": "background", "1": "foreground"}, path)
    first = next((c.images[0] for c in cases if c.images[0].exists()), cases[0].images[0])
    dims, channels = _header_dims(first) if first.exists() else (3, 1)
    return DatasetInfo(root, "msd", cases, test, labels, max(channels, len(modalities)), dims, _ending(first),
                       modalities, str(meta.get("name", root.name)), problems)


def _folder(root: Path, meta: dict[str, Any] | None) -> DatasetInfo:
    problems: list[str] = []
    images = {strip_suffix(p.name): p for p in _image_files(root / "images")}
    labels_by_id = {strip_suffix(p.name): p for p in _image_files(root / "labels")}
    if not images:
        raise MedsegError(f"{root / 'images'}: no image files; put images there with matching files in labels/")
    for case_id in sorted(set(images) - set(labels_by_id)):
        problems.append(f"{images[case_id]}: no label with the same name in {root / 'labels'}")
    for case_id in sorted(set(labels_by_id) - set(images)):
        problems.append(f"{labels_by_id[case_id]}: no image with the same name in {root / 'images'}")
    cases = [Case(i, [images[i]], labels_by_id[i]) for i in sorted(images) if i in labels_by_id]
    if not cases:
        raise MedsegError(f"{root}: no image in images/ has a label of the same name in labels/")
    test = [Case(strip_suffix(p.name), [p], None) for p in _image_files(root / "test")]
    dims, channels = _header_dims(cases[0].images[0])
    meta = meta or {}
    if meta.get("labels"):
        labels = parse_labels(meta["labels"], root / "dataset.json")
    else:
        labels = _scan_labels(cases)
    modality = meta.get("modality") or meta.get("channel_names") or {}
    modalities = [str(v) for _, v in sorted(((int(k), v) for k, v in dict(modality).items()))]
    return DatasetInfo(root, "folder", cases, test, labels, channels, dims, _ending(cases[0].images[0]),
                       modalities, str(meta.get("name", root.name)), problems)


def _scan_labels(cases: Sequence[Case]) -> dict[int, str]:
    """Label values found in the label files (when no dataset.json names the classes)."""
    values: set[int] = {0}
    for case in cases:
        if case.label is None:
            continue
        try:
            array, _ = read_image(case.label)
        except MedsegError:
            continue  # reported by medseg data check
        finite = array[np.isfinite(array)] if np.issubdtype(array.dtype, np.floating) else array
        values.update(int(v) for v in np.unique(np.rint(finite)))
    return {v: ("background" if v == 0 else f"class_{v}") for v in sorted(values)}


_LAYOUTS: list[tuple[str, Callable[[Path, dict[str, Any] | None], bool], Callable[..., DatasetInfo]]] = [
    ("nnunet", lambda root, meta: meta is not None and "channel_names" in meta and "file_ending" in meta, _nnunet),
    ("msd", lambda root, meta: meta is not None and isinstance(meta.get("training"), list), _msd),
    ("folder", lambda root, meta: (root / "images").is_dir() and (root / "labels").is_dir(), _folder),
]


def discover(root: str | os.PathLike[str]) -> DatasetInfo:
    """Detect the layout of ``root`` (nnU-Net v2 raw, MSD or Folder) and list its cases."""
    root = Path(root)
    if not root.is_dir():
        raise MedsegError(f"{root}: not a folder; give a dataset folder (MSD, nnU-Net v2 raw, or images/ + labels/)")
    meta = _read_json(root / "dataset.json") if (root / "dataset.json").is_file() else None
    for _, matches, build in _LAYOUTS:
        if matches(root, meta):
            info = build(root, meta)
            if meta:
                info.colours = parse_colours(meta.get("colors"), info.labels, str(root / "dataset.json"))
            return info
    raise MedsegError(
        f"{root}: unrecognised dataset layout; expected dataset.json with channel_names + file_ending "
        "(nnU-Net v2), dataset.json with a 'training' list (MSD), or images/ and labels/ folders"
    )


# -- splits ------------------------------------------------------------------------------------------
def make_splits(
    ids: Sequence[str], val_fraction: float = 0.2, seed: int = 0, num_folds: int | None = None
) -> list[dict[str, list[str]]]:
    """Seeded splits: one train/validation split, or ``num_folds`` k-fold splits (nnU-Net's format)."""
    ordered = sorted(ids)
    order = [ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))]
    if num_folds is None:
        n_val = min(max(1, round(len(order) * val_fraction)), len(order) - 1) if len(order) > 1 else 0
        return [{"train": sorted(order[n_val:]), "val": sorted(order[:n_val])}]
    if len(order) < num_folds:
        raise MedsegError(f"{len(order)} labelled case(s) cannot make {num_folds} folds; lower data.num_folds")
    folds = np.array_split(np.arange(len(order)), num_folds)
    return [
        {"train": sorted(order[i] for i in range(len(order)) if i not in set(f)), "val": sorted(order[i] for i in f)}
        for f in folds
    ]


def load_or_make_split(
    info: DatasetInfo,
    split_path: str | os.PathLike[str],
    val_fraction: float = 0.2,
    seed: int = 0,
    fold: int | None = None,
    num_folds: int = 5,
) -> tuple[list[Case], list[Case]]:
    """The (train, val) cases of one split; ``splits.json`` is reused if present, else written.

    ``fold=None``: a single seeded split (a one-entry list). ``fold=k``: fold k of ``num_folds``
    k-fold splits. The file is nnU-Net's format: a list of ``{"train": [ids], "val": [ids]}``.
    """
    path = Path(split_path)
    want = 1 if fold is None else num_folds
    if path.is_file():
        try:
            splits = json.loads(path.read_text(encoding="utf-8"))
            ok = isinstance(splits, list) and all(isinstance(s, dict) and "train" in s and "val" in s for s in splits)
        except (OSError, json.JSONDecodeError):
            ok = False
        if not ok:
            raise MedsegError(f"{path}: not a list of {{train, val}} splits; delete it to make a new one")
        if len(splits) != want:
            kind = "a train/validation split" if len(splits) == 1 else f"{len(splits)} folds"
            asked = "a train/validation split (no fold)" if fold is None else f"fold {fold} of {num_folds}"
            raise MedsegError(f"{path}: holds {kind} but {asked} was asked for; delete it or move it away to re-split")
    else:
        splits = make_splits([c.id for c in info.cases], val_fraction, seed, None if fold is None else num_folds)
        atomic_write_json(path, splits)
    index = 0 if fold is None else fold
    if not 0 <= index < len(splits):
        raise MedsegError(f"fold {fold}: {path} has folds 0..{len(splits) - 1}; pick one of them")
    by_id = {c.id: c for c in info.cases}
    chosen = splits[index]
    unknown = [i for i in [*chosen["train"], *chosen["val"]] if i not in by_id]
    if unknown:
        raise MedsegError(
            f"{path}: case(s) {', '.join(unknown[:3])} are not in {info.root}; the split is stale, delete it"
        )
    return [by_id[i] for i in chosen["train"]], [by_id[i] for i in chosen["val"]]


def to_monai_dicts(cases: Sequence[Case]) -> list[dict[str, Any]]:
    """MONAI data dicts: ``image`` (a path, or a list of paths for several channel files), ``label``, ``id``."""
    dicts = []
    for case in cases:
        images = [str(p) for p in case.images]
        item: dict[str, Any] = {"id": case.id, "image": images[0] if len(images) == 1 else images}
        if case.label is not None:
            item["label"] = str(case.label)
        dicts.append(item)
    return dicts
