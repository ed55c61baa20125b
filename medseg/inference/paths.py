"""Which files a prediction reads and where it writes: inputs expanded, outputs named.

The naming rule itself (``<name>_seg.<ext>``) is the run format's (:mod:`medseg.run`), so
evaluation and comparison match predictions to cases by the same rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from medseg.data import io
from medseg.errors import MedsegError
from medseg.run import is_prediction, prediction_name, split_name


def output_path(source: Path, out: Path | None, multiple: bool) -> Path:
    """``<name>_seg.<same extension>`` beside the input, or inside ``out`` when it is a folder.

    DICOM series get NIfTI in the series' geometry and JPEG inputs PNG (JPEG would alter labels).
    ``out`` is a folder when several inputs are predicted, when it exists as one, or when it has no
    image extension.
    """
    default = prediction_name(source)
    if out is None:
        return source.parent / default
    if multiple or out.is_dir() or not split_name(out)[1]:
        return out / default
    return out


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files stay files; a DICOM series folder stays one input; other folders give their images.

    Folders give their image files (any suffix :mod:`medseg.data.io` reads, not earlier ``*_seg``
    outputs) and DICOM series sub-folders, sorted.
    """
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
