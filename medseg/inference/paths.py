"""Which files a prediction reads and where it writes: inputs expanded, outputs named.

The naming rule itself (``<name>_seg.<ext>``) is the run format's (:mod:`medseg.run`), so
evaluation and comparison match predictions to cases by the same rule.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from medseg.data import io
from medseg.errors import MedsegError
from medseg.run import is_prediction, prediction_name, split_name

#: nnU-Net's channel naming: ``<case>_<4-digit channel>.<ext>``
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")

#: One input: a file, a DICOM series folder, or one file per channel of a case.
Source = Path | list[Path]


def first_file(source: Source) -> Path:
    """The input's (first channel's) path: what messages and outputs are named after."""
    return source[0] if isinstance(source, list) else source


def case_of(source: Path, channels: int = 1) -> str:
    """The case a (first-channel) input file names: the suffix dropped, and ``_0000`` too for a
    run of several channels."""
    name = split_name(source)[0]
    match = _CHANNEL.match(name) if channels > 1 else None
    return match["case"] if match else name


def output_path(source: Source, out: Path | None, multiple: bool) -> Path:
    """``<name>_seg.<same extension>`` beside the input, or inside ``out`` when it is a folder.

    DICOM series get NIfTI in the series' geometry and JPEG inputs PNG (JPEG would alter labels).
    A case given as one file per channel (``case_0000``, ``case_0001``, …) gives ``case_seg``.
    ``out`` is a folder when several inputs are predicted, when it exists as one, or when it has no
    image extension.
    """
    if isinstance(source, list):
        name, ext = split_name(source[0])
        match = _CHANNEL.match(name)
        source = source[0].with_name((match["case"] if match else name) + ext)
    default = prediction_name(source)
    if out is None:
        return source.parent / default
    if multiple or out.is_dir() or not split_name(out)[1]:
        return out / default
    return out


def expand_inputs(inputs: Sequence[str | Path], channels: int = 1) -> list[Source]:
    """Files stay files; a DICOM series folder stays one input; other folders give their images.

    Folders give their image files (any suffix :mod:`medseg.data.io` reads, not earlier ``*_seg``
    outputs) and DICOM series sub-folders, sorted. For a run of several ``channels`` the files of a
    case named nnU-Net's way (``case_0000.nii.gz``, ``case_0001.nii.gz``, …) become one input, a
    list in channel order; a single ``case_0000`` file given alone brings its siblings.
    """
    files = _expand(inputs)
    return files if channels == 1 else _group_channels(files, channels)


def _group_channels(files: list[Path], channels: int) -> list[Source]:
    """nnU-Net channel files grouped into cases; one line naming the case when a channel is missing.

    A file with no sibling channel files (``photo.jpg``, ``ISIC_0001.png``, a 4D NIfTI) is one
    case holding every channel itself: an RGB image for an RGB run. The predictor checks its
    channel count when it reads it.
    """
    cases: dict[tuple[Path, str, str], dict[int, Path]] = {}
    order: list[Path | tuple[Path, str, str]] = []
    for path in files:
        name, ext = split_name(path)
        match = _CHANNEL.match(name)
        key = (path.parent, match["case"], ext) if match else None
        if key is None or not _has_sibling(key, int(match["channel"]), channels):  # type: ignore[index]
            order.append(path)
            continue
        if key not in cases:
            order.append(key)
        cases.setdefault(key, {})[int(match["channel"])] = path  # type: ignore[index]
    return [item if isinstance(item, Path) else _case_files(item, cases[item], channels) for item in order]


def _has_sibling(key: tuple[Path, str, str], channel: int, channels: int) -> bool:
    folder, case, ext = key
    return any((folder / f"{case}_{k:04d}{ext}").is_file() for k in range(max(channels, channel + 2)) if k != channel)


def _case_files(key: tuple[Path, str, str], found: dict[int, Path], channels: int) -> list[Path]:
    """The channel files of one case in channel order; a lone file given alone brings its siblings."""
    folder, case, ext = key
    for k in range(channels):
        sibling = folder / f"{case}_{k:04d}{ext}"
        if k not in found and sibling.is_file():
            found[k] = sibling
    missing = [k for k in range(channels) if k not in found]
    if missing or len(found) != channels:
        raise MedsegError(f"{folder / case}: the run takes channels 0000-{channels - 1:04d}; "
                          f"found {', '.join(f'{k:04d}' for k in sorted(found))}; give every channel of the case")
    return [found[k] for k in range(channels)]


def _expand(inputs: Sequence[str | Path]) -> list[Path]:
    result: list[Path] = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise MedsegError(f"{path}: input not found; give image files, folders or a DICOM series folder")
        if path.is_dir() and not io.is_dicom_series(path):
            files = sorted(
                p for p in path.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(io.IMAGE_SUFFIXES)
                and not is_prediction(p)
            )
            subdirs = sorted(p for p in path.iterdir() if p.is_dir() and io.is_dicom_series(p))
            if not files and not subdirs:
                raise MedsegError(f"{path}: no image files ({', '.join(io.IMAGE_SUFFIXES)}) or DICOM series inside")
            result.extend(files + subdirs)
        else:
            result.append(path)
    return result


def user_error(path: Path, err: BaseException) -> MedsegError:
    """The MedsegError inside MONAI's wrapped transform error, or one naming the file and the cause."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, MedsegError):
            return cause
        cause = cause.__cause__ or cause.__context__
    root = err
    while root.__cause__ is not None:
        root = root.__cause__
    reason = " ".join(str(root).split())[:300]
    return MedsegError(f"{path}: cannot read or preprocess it ({type(root).__name__}: {reason}); check the file")
