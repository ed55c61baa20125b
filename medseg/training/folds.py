"""Cross-validation: ``medseg train --folds K`` trains K runs under one parent run directory.

The parent holds ``cv.json`` (what was asked, which folds finished), ``splits.json`` (the K folds,
nnU-Net's format, shared by every fold), ``config.yaml`` (fold 0's planned config, so ``--run
PARENT`` works wherever a run does) and the runs ``fold_0/`` … ``fold_<K-1>/``. Fold 0 is planned
(so it starts first; with ``--fold k`` the others may run in parallel once it has); the others
train with its planned config, so every fold reads the images the same way and an
ensemble of them is well defined. Each fold is an ordinary run and resumes on its own: running
the same command again keeps finished folds, resumes the one that was interrupted, and trains
the rest. ``--max-minutes`` is the whole cross-validation's budget, shared equally by the folds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from medseg.config import ExperimentConfig, deep_merge, load_raw
from medseg.config import validate as validate_config
from medseg.errors import MedsegError
from medseg.run import CV_FILE, fold_dir, is_cross_validation, new_run_dir, point_latest
from medseg.training.loop import TrainResult, resume_config, train
from medseg.utils import atomic_write_json, atomic_write_text

#: ``cv.json``'s format version.
CV_FORMAT = 1


@dataclass
class FoldsResult:
    """The parent run directory and what each fold that ran this time gave."""

    parent: Path
    folds: int
    trained: dict[int, TrainResult] = field(default_factory=dict)
    kept: list[int] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return len(read_cv(self.parent)["finished"]) == self.folds


def request_of(cfg: ExperimentConfig, folds: int) -> dict[str, Any]:
    """What identifies a cross-validation: a different one must not continue it."""
    return {"model": cfg.model.name, "data": str(Path(cfg.data.path).resolve()) if cfg.data.path else cfg.data.demo,
            "folds": folds, "seed": cfg.train.seed}


def read_cv(parent: Path) -> dict[str, Any]:
    """A parent's ``cv.json``, checked."""
    path = Path(parent) / CV_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["folds"], data["finished"] = int(data["folds"]), [int(k) for k in data.get("finished", [])]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise MedsegError(f"{path}: not a medseg cross-validation file ({err}); pass another --out") from None
    return data


def parent_config(parent: Path) -> ExperimentConfig:
    """The config a cross-validation was started with, for ``--resume PARENT``: fold 0's, with the
    whole budget (the folds' shares added back)."""
    from medseg.config import load_config

    source = Path(parent) / "config.yaml"
    if not source.is_file():
        source = fold_dir(parent, 0) / "config.yaml"
    if not source.is_file():
        raise MedsegError(f"--resume {parent}: no fold has started; start it again with medseg train --folds ... --out {parent}")
    cfg = load_config(source)
    folds = read_cv(parent)["folds"]
    whole = {"max_minutes": cfg.train.max_minutes * folds} if cfg.train.max_minutes else {}
    data = {"fold": None, "split_file": None}
    return validate_config(deep_merge(cfg.model_dump(mode="json"), {"data": data, "train": whole}), str(source))


def parent_dir(cfg: ExperimentConfig, folds: int, out: Path | None) -> Path:
    """``out``; else the unfinished cross-validation ``runs/latest`` points at when it asked the same
    (so the same command continues it); else a new ``runs/<time>_<model>_cv<K>``."""
    if out is not None:
        return Path(out)
    latest = Path(cfg.out) / "latest"
    if is_cross_validation(latest):
        cv = read_cv(latest)
        if cv.get("request") == request_of(cfg, folds) and len(cv["finished"]) < cv["folds"]:
            return latest.resolve()
    return new_run_dir(cfg.out, f"{cfg.model.name}_cv{folds}")


def _start(parent: Path, cfg: ExperimentConfig, folds: int) -> dict[str, Any]:
    """Create or check the parent's ``cv.json``; point ``runs/latest`` at the parent."""
    request = request_of(cfg, folds)
    if (parent / CV_FILE).is_file():
        cv = read_cv(parent)
        if cv.get("request") != request:
            raise MedsegError(f"{parent}: holds a cross-validation of {cv.get('request')}, not {request}; "
                              "pass another --out to start a new one")
        return cv
    if parent.exists() and any(p.name != "splits.json" for p in parent.iterdir()):  # given folds are welcome
        raise MedsegError(f"--out {parent}: exists and is not a cross-validation; pass a new or empty folder")
    parent.mkdir(parents=True, exist_ok=True)
    cv = {"medseg_cv": CV_FORMAT, "folds": folds, "request": request, "finished": []}
    atomic_write_json(parent / CV_FILE, cv)
    point_latest(parent)
    return cv


def fold_config(cfg: ExperimentConfig, parent: Path, fold: int, folds: int) -> ExperimentConfig:
    """Fold ``fold``'s config: ``cfg`` with its budget share for fold 0 (which plans), fold 0's planned
    config for the others (written when fold 0 starts); its split is the parent's."""
    data = {"fold": fold, "num_folds": folds, "split_file": str((parent / "splits.json").resolve())}
    if fold == 0:
        share = {"train": {"max_minutes": cfg.train.max_minutes / folds}} if cfg.train.max_minutes else {}
        return validate_config(deep_merge(cfg.model_dump(mode="json"), {"data": data, **share}), "fold 0")
    planned = fold_dir(parent, 0) / "config.yaml"
    if not planned.is_file():
        raise MedsegError(f"fold {fold}: fold 0 has not started in {parent}, and it plans every fold; "
                          f"train it first (medseg train --folds {folds} --fold 0 --out {parent})")
    return validate_config(deep_merge(load_raw(planned), {"data": data}), str(planned))


def train_folds(
    cfg: ExperimentConfig,
    folds: int,
    out: Path | None = None,
    only: Sequence[int] | None = None,
    console: Console | None = None,
    quiet: bool = False,
) -> FoldsResult:
    """Train (or resume, or keep) each fold of a ``folds``-fold cross-validation; ``only`` picks folds."""
    if folds < 2:
        raise MedsegError(f"--folds {folds}: a cross-validation needs at least 2 folds")
    chosen = list(range(folds)) if only is None else list(only)
    for k in chosen:
        if not 0 <= k < folds:
            raise MedsegError(f"--fold {k}: pick a fold in 0..{folds - 1}")
    console = console or Console()
    parent = parent_dir(cfg, folds, out)
    cv = _start(parent, cfg, folds)
    result = FoldsResult(parent, folds)
    say = (lambda msg: None) if quiet else (lambda msg: console.print(msg, highlight=False))
    budget = f", {cfg.train.max_minutes / folds:.3g} min each" if cfg.train.max_minutes else ""
    say(f"[bold]cross-validation[/] {folds} folds in {parent}{budget}")
    for k in chosen:
        run = fold_dir(parent, k)
        if k in cv["finished"]:
            say(f"fold {k}: finished earlier, kept")
            result.kept.append(k)
            continue
        if (run / "state.pt").is_file():
            say(f"fold {k}: resuming the interrupted run {run}")
            result.trained[k] = train(resume_config(run), resume=run, console=console, quiet=quiet)
        else:
            say(f"fold {k} of {folds}")
            result.trained[k] = train(fold_config(cfg, parent, k, folds), run_dir=run, console=console, quiet=quiet)
        _finished(parent, k)
        cv = read_cv(parent)
    return result


def _finished(parent: Path, fold: int) -> None:
    """Record fold ``fold`` as finished; the first finished fold's config becomes the parent's."""
    cv = read_cv(parent)
    cv["finished"] = sorted({*cv["finished"], fold})
    source = fold_dir(parent, fold) / "config.yaml"
    if not (parent / "config.yaml").is_file() or fold == 0:
        atomic_write_text(parent / "config.yaml", source.read_text(encoding="utf-8"))
    atomic_write_json(parent / CV_FILE, cv)
