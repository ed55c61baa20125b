"""Dataset cards and ``medseg data prepare``: turn a downloaded public dataset into a layout medseg reads.

The cards (``medseg/data/cards/*.yaml``) describe each dataset: source page, license, modality,
classes, the download layout and a recommended preset. :func:`prepare` takes the archive (``.zip``,
``.tar``, ``.tar.gz``; archives inside archives or inside a folder are unpacked too) or the unpacked
folder exactly as published and writes:

- MSD tasks: the MSD folder itself (already a medseg layout), without macOS ``._*`` files;
- 2D datasets: the Folder layout, ``images/`` (original image bytes where lossless, else PNG),
  ``labels/`` (PNG, class indices 0/1) and ``dataset.json`` naming the classes and the modality;
  unlabelled test images, where the download has them, go to ``test/``.

Nothing is downloaded. The output is built in a temporary folder beside ``out`` and moved into place.
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from medseg.data.datasets import discover
from medseg.errors import MedsegError
from medseg.utils import atomic_path, atomic_write_json

CARD_DIR = Path(__file__).parent / "cards"
_ARCHIVES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
_JUNK = ("._", ".DS_Store", "__MACOSX", "Thumbs.db")


# -- cards -------------------------------------------------------------------------------------------
@cache
def _all_cards() -> dict[str, dict[str, Any]]:
    cards: dict[str, dict[str, Any]] = {}
    for path in sorted(CARD_DIR.glob("*.yaml")):
        card = yaml.safe_load(path.read_text(encoding="utf-8"))
        cards[str(card["name"])] = card
    return cards


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def list_cards() -> list[dict[str, Any]]:
    """Every dataset card, sorted by name."""
    return [_all_cards()[k] for k in sorted(_all_cards())]


def card(name: str) -> dict[str, Any]:
    """The card of ``name`` (its name or an alias, case and punctuation ignored, e.g. ``Task09_Spleen``)."""
    wanted = _key(name)
    for c in _all_cards().values():
        if wanted in {_key(c["name"]), *(_key(a) for a in c.get("aliases", []))}:
            return c
    names = ", ".join(sorted(_all_cards()))
    raise MedsegError(f"dataset {name!r}: no card; use one of {names} (medseg data list)")


# -- unpacking ---------------------------------------------------------------------------------------
def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(_ARCHIVES)


def _junk(path: Path) -> bool:
    return any(part.startswith(_JUNK) for part in path.parts)


def _extract(archive: Path, dest: Path) -> Path:
    """Unpack ``archive`` into ``dest`` (refusing members that would land outside it)."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                root = dest.resolve()
                for member in zf.namelist():
                    if not (dest / member).resolve().is_relative_to(root):
                        raise MedsegError(f"{archive}: member {member!r} would be written outside the output; not unpacking")
                zf.extractall(dest)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(dest, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as err:
        raise MedsegError(f"{archive}: cannot unpack it ({err}); download it again") from None
    return dest


def _unpack(src: Path, work: Path, depth: int = 2) -> list[Path]:
    """Folders to search: ``src`` itself (a folder) or its unpacked copy, plus archives found inside."""
    if not src.exists():
        raise MedsegError(f"--src {src}: not found; give the downloaded archive or its unpacked folder")
    roots: list[Path] = []
    if _is_archive(src):
        roots.append(_extract(src, work / f"unpacked_{len(list(work.glob('unpacked_*')))}"))
    elif src.is_dir():
        roots.append(src)
    else:
        raise MedsegError(f"--src {src}: not a folder or a .zip/.tar archive")
    if depth > 0:
        for root in list(roots):
            for inner in sorted(p for p in root.rglob("*") if _is_archive(p) and not _junk(p.relative_to(root))):
                roots.extend(_unpack(inner, work, depth - 1))
    return roots


def _find_dirs(roots: Iterable[Path], test: Callable[[Path], bool]) -> list[Path]:
    found = []
    for root in roots:
        for d in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]:
            if not _junk(d.relative_to(root)) and test(d):
                found.append(d)
    return found


def _child(folder: Path, *names: str) -> Path | None:
    """The sub-folder of ``folder`` whose name matches one of ``names`` (case and spaces ignored)."""
    wanted = {_key(n) for n in names}
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        if p.is_dir() and _key(p.name) in wanted:
            return p
    return None


def _files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(_JUNK)
                  and p.name.lower().endswith(suffixes))


# -- writing -----------------------------------------------------------------------------------------
def _copy(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _save_png(array: np.ndarray, dst: Path) -> None:
    from PIL import Image

    with atomic_path(dst) as tmp:
        Image.fromarray(np.ascontiguousarray(array)).save(str(tmp), format="PNG")


def _open(path: Path, mode: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            if mode == "L" and im.mode in ("I;16", "I", "F"):  # 16-bit / float masks
                return np.asarray(im).astype(np.float64)
            return np.asarray(im.convert(mode))
    except OSError as err:
        raise MedsegError(f"{path}: cannot read it ({err})") from None


def _mask(paths: list[Path], shape: tuple[int, ...], image: Path) -> np.ndarray:
    """Union of binary masks (anything above half the maximum is foreground) as 0/1 uint8."""
    out = np.zeros(shape[:2], bool)
    for p in paths:
        m = _open(p, "L")
        if m.shape != out.shape:
            raise MedsegError(f"{p}: mask size {m.shape[::-1]} differs from its image {image.name} {out.shape[::-1]}")
        out |= m > (m.max() / 2 if m.max() > 1 else 0.5)
    return out.astype(np.uint8)


def _image(src: Path, dst_dir: Path, case_id: str, mode: str | None) -> tuple[int, ...]:
    """Copy a PNG/JPEG as it is (``mode=None``) or convert to PNG in ``mode``; return (rows, cols)."""
    if mode is None and src.name.lower().endswith((".png", ".jpg", ".jpeg")):
        _copy(src, dst_dir / f"{case_id}{src.suffix.lower().replace('.jpeg', '.jpg')}")
        return _open(src, "L").shape
    array = _open(src, mode or "RGB")
    _save_png(array, dst_dir / f"{case_id}.png")
    return array.shape[:2]


def _folder_dataset(
    out: Path,
    meta: dict[str, Any],
    pairs: list[tuple[str, Path, list[Path]]],
    tests: list[tuple[str, Path]],
    mode: str | None,
) -> None:
    """Write images/, labels/, test/ and dataset.json of the Folder layout."""
    if not pairs:
        raise MedsegError(f"{meta['name']}: found no image with a mask in the download; check --src against the card")
    for case_id, image, masks in pairs:
        shape = _image(image, out / "images", case_id, mode)
        _save_png(_mask(masks, shape, image), out / "labels" / f"{case_id}.png")
    for case_id, image in tests:
        _image(image, out / "test", case_id, mode)
    atomic_write_json(out / "dataset.json", meta)


def _meta(c: dict[str, Any], src: Path) -> dict[str, Any]:
    return {
        "name": c["name"], "description": c["title"], "reference": c["source"], "licence": c["license"],
        "modality": {str(i): m for i, m in enumerate(c["channels"])},
        "labels": {str(k): v for k, v in c["classes"].items()},
        "medseg_prepared": {"card": c["name"], "source": str(src)},
    }


# -- converters --------------------------------------------------------------------------------------
def _msd(c: dict[str, Any], roots: list[Path], out: Path, src: Path, move: bool) -> None:
    import json

    task = c["msd_task"]
    dirs = _find_dirs(roots, lambda d: (d / "dataset.json").is_file() and (d / "imagesTr").is_dir())
    dirs.sort(key=lambda d: (task.lower() not in d.name.lower(), len(d.parts)))
    if not dirs:
        raise MedsegError(f"--src {src}: no folder with dataset.json and imagesTr/; expected {task}/ from {task}.tar")
    top = dirs[0]
    for p in sorted(top.rglob("*")):
        rel = p.relative_to(top)
        if _junk(rel) or p.is_dir():
            continue
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if move:
            os.replace(p, dst)
        else:
            try:
                os.link(p, dst)
            except OSError:
                _copy(p, dst)
    meta = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    expected = {str(k): str(v).lower() for k, v in c["classes"].items()}
    if {str(k): str(v).lower() for k, v in dict(meta.get("labels", {})).items()} != expected:
        raise MedsegError(f"{top / 'dataset.json'}: labels {meta.get('labels')} differ from the {c['name']} card {expected}; "
                          "is this the right task?")


def _kvasir(c: dict[str, Any], roots: list[Path], out: Path, src: Path, move: bool) -> None:
    dirs = _find_dirs(roots, lambda d: _child(d, "images") is not None and _child(d, "masks") is not None)
    if not dirs:
        raise MedsegError(f"--src {src}: no folder with images/ and masks/; expected Kvasir-SEG/images and Kvasir-SEG/masks")
    images, masks = _child(dirs[0], "images"), _child(dirs[0], "masks")
    assert images is not None and masks is not None
    by_id = {p.stem: p for p in _files(masks, (".jpg", ".jpeg", ".png"))}
    pairs = [(p.stem, p, [by_id[p.stem]]) for p in _files(images, (".jpg", ".jpeg", ".png")) if p.stem in by_id]
    _folder_dataset(out, _meta(c, src), pairs, [], None)


def _cvc(c: dict[str, Any], roots: list[Path], out: Path, src: Path, move: bool) -> None:
    dirs = _find_dirs(roots, lambda d: _child(d, "Original") is not None and _child(d, "Ground Truth", "GroundTruth") is not None)
    if not dirs:
        raise MedsegError(f"--src {src}: no folder with Original/ and 'Ground Truth'/; expected CVC-ClinicDB/Original/1.tif")
    images, truth = _child(dirs[0], "Original"), _child(dirs[0], "Ground Truth", "GroundTruth")
    assert images is not None and truth is not None
    exts = (".tif", ".tiff", ".png", ".bmp")
    by_id = {p.stem: p for p in _files(truth, exts)}
    pairs = [(p.stem, p, [by_id[p.stem]]) for p in _files(images, exts) if p.stem in by_id]
    _folder_dataset(out, _meta(c, src), pairs, [], "RGB")


def _isic(c: dict[str, Any], roots: list[Path], out: Path, src: Path, move: bool) -> None:
    def named(pattern: str) -> list[Path]:
        return _find_dirs(roots, lambda d: re.fullmatch(pattern, d.name, flags=re.IGNORECASE) is not None)

    pairs: list[tuple[str, Path, list[Path]]] = []
    for part in ("Training", "Validation"):
        inputs, truths = named(rf"ISIC2018_Task1-2_{part}_Input"), named(rf"ISIC2018_Task1_{part}_GroundTruth")
        if inputs and truths:
            by_id = {p.name[: -len("_segmentation.png")]: p for p in _files(truths[0], ("_segmentation.png",))}
            pairs += [(p.stem, p, [by_id[p.stem]]) for p in _files(inputs[0], (".jpg",)) if p.stem in by_id]
    if not pairs:
        raise MedsegError(f"--src {src}: expected ISIC2018_Task1-2_Training_Input/ and ISIC2018_Task1_Training_GroundTruth/")
    tests = named(r"ISIC2018_Task1-2_Test_Input")
    test = [(p.stem, p) for p in _files(tests[0], (".jpg",))] if tests else []
    _folder_dataset(out, _meta(c, src), pairs, test, None)


def _busi(c: dict[str, Any], roots: list[Path], out: Path, src: Path, move: bool) -> None:
    dirs = _find_dirs(roots, lambda d: _child(d, "benign") is not None and _child(d, "malignant") is not None)
    if not dirs:
        raise MedsegError(f"--src {src}: no folder with benign/ and malignant/; expected Dataset_BUSI_with_GT/benign/...")
    pairs: list[tuple[str, Path, list[Path]]] = []
    for cls in c.get("prepare_classes", ["benign", "malignant"]):
        folder = _child(dirs[0], cls)
        if folder is None:
            continue
        files = _files(folder, (".png",))
        masks: dict[str, list[Path]] = {}
        for p in files:
            m = re.fullmatch(r"(.*)_mask(_\d+)?", p.stem)
            if m:
                masks.setdefault(m.group(1), []).append(p)
        for p in files:
            if "_mask" in p.stem:
                continue
            number = re.search(r"\((\d+)\)", p.stem)
            case_id = f"{cls}_{int(number.group(1)):03d}" if number else f"{cls}_{_key(p.stem)}"
            if p.stem in masks:
                pairs.append((case_id, p, sorted(masks[p.stem])))
    _folder_dataset(out, _meta(c, src), pairs, [], "L")


def _dsb(c: dict[str, Any], roots: list[Path], out: Path, src: Path, move: bool) -> None:
    cases = _find_dirs(roots, lambda d: (d / "images" / f"{d.name}.png").is_file())
    pairs, tests = [], []
    for d in cases:
        masks = _files(d / "masks", (".png",)) if (d / "masks").is_dir() else []
        if masks:
            pairs.append((d.name, d / "images" / f"{d.name}.png", masks))
        else:
            tests.append((d.name, d / "images" / f"{d.name}.png"))
    if not pairs:
        raise MedsegError(f"--src {src}: no stage1_train/<id>/images/<id>.png with masks/; give stage1_train.zip")
    _folder_dataset(out, _meta(c, src), pairs, tests, "RGB")


_CONVERTERS: dict[str, Callable[[dict[str, Any], list[Path], Path, Path, bool], None]] = {
    "msd": _msd, "kvasir": _kvasir, "cvc": _cvc, "isic": _isic, "busi": _busi, "dsb": _dsb,
}


def prepare(name: str, src: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Convert the download of dataset ``name`` at ``src`` (archive or folder) into a medseg layout at ``out``.

    ``out`` must be missing or empty. Returns ``out``; the result passes :func:`medseg.data.datasets.discover`.
    """
    c = card(name)
    src, out = Path(src), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MedsegError(f"--out {out}: exists and is not empty; choose a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.prepare.", dir=out.parent))
    try:
        roots = _unpack(src, work)
        staged = work / "dataset"
        staged.mkdir()
        _CONVERTERS[c["converter"]](c, roots, staged, src, roots[0] != src)
        info = discover(staged)
        if out.exists():
            out.rmdir()
        os.replace(staged, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not info.cases:
        raise MedsegError(f"{out}: no labelled cases after preparing {c['name']}")
    return out
