"""A cross-validation's summary: out-of-fold predictions, metrics per fold and pooled, the
post-processing chosen from them, and how well the uncertainty score ranks the cases.

Each fold's best weights predict that fold's validation cases (with the run's test-time mirroring,
without post-processing, with uncertainty), written to ``PARENT/oof/``. Every metric of
:mod:`medseg.evaluation` is computed per case; ``cv_summary.json`` holds, per class, each fold's
mean, the mean ± std over folds and the pooled out-of-fold mean; ``cv_metrics.csv`` every row.
:mod:`medseg.evaluation.postprocessing` then chooses each class's post-processing on the pooled
cases (``postprocessing.json``, which ``medseg predict --run PARENT`` applies), and the per-case
uncertainty score is set against the per-case Dice (Spearman's rank correlation, ``uncertainty.png``).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from medseg.config import load_config
from medseg.data import datasets
from medseg.data.io import read_image
from medseg.data.resolve import dataset_root
from medseg.errors import MedsegError
from medseg.evaluation import evaluate_arrays
from medseg.evaluation import summarise as summarise_metrics
from medseg.evaluation.postprocessing import choose_postprocessing
from medseg.inference import Predictor, output_path
from medseg.inference.postprocess import POSTPROCESSING_FILE, apply_postprocessing
from medseg.run import CV_FILE, fold_dir, read_checkpoint
from medseg.utils import atomic_write_json, atomic_write_text

SUMMARY_FILE = "cv_summary.json"
METRICS_FILE = "cv_metrics.csv"
FIGURE_FILE = "uncertainty.png"


@dataclass
class OutOfFold:
    """One validation case predicted by the fold that did not train on it."""

    case: str
    fold: int
    pred: np.ndarray = field(repr=False)
    gt: np.ndarray = field(repr=False)
    spacing: tuple[float, ...]
    uncertainty: float | None

    @property
    def voxel_size(self) -> float:
        return float(np.prod(self.spacing))


@dataclass
class CrossValidationSummary:
    """What :func:`summarise` found and wrote."""

    parent: Path
    summary: dict[str, Any]
    rows: list[dict[str, Any]] = field(repr=False)
    files: dict[str, Path] = field(default_factory=dict)


def _folds_and_splits(parent: Path) -> tuple[list[int], list[dict[str, list[str]]]]:
    try:
        cv = json.loads((parent / CV_FILE).read_text(encoding="utf-8"))
        splits = json.loads((parent / "splits.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise MedsegError(f"{parent}: not a cross-validation with cv.json and splits.json ({err}); "
                          "pass the folder medseg train --folds made") from None
    finished = sorted(int(k) for k in cv.get("finished", []))
    if not finished:
        raise MedsegError(f"{parent}: no fold has finished; train them first (medseg train --folds {cv.get('folds')})")
    return finished, splits


def predict_out_of_fold(
    parent: Path, on_progress: Callable[[str], None] | None = None, device: str = "auto", precision: str = "auto",
) -> list[OutOfFold]:
    """Every finished fold's validation cases, predicted by that fold and written to ``parent/oof``."""
    folds, splits = _folds_and_splits(parent)
    cfg = load_config(fold_dir(parent, folds[0]) / "config.yaml")
    info = datasets.discover(dataset_root(cfg))  # data.path, or the demo data
    by_id = {c.id: c for c in info.cases}
    out: list[OutOfFold] = []
    for k in folds:
        predictor = Predictor(fold_dir(parent, k), device=device, precision=precision, uncertainty=True,
                              postprocessing=False)
        for case_id in splits[k]["val"]:
            case = by_id[case_id]
            assert case.label is not None
            source = case.images if len(case.images) > 1 else case.images[0]
            prediction = predictor.predict(source)
            predictor.write(prediction, output_path(source, parent / "oof", multiple=True))
            gt, _ = read_image(case.label)
            out.append(OutOfFold(case_id, k, prediction.labels, np.rint(gt).astype(prediction.labels.dtype),
                                 tuple(prediction.meta.spacing) if prediction.meta else (1.0,), prediction.uncertainty_score))
            if on_progress is not None:
                on_progress(f"fold {k}: {case_id} predicted ({len(out)} out-of-fold cases)")
    return out


def _rows(cases: Sequence[OutOfFold], labels: Mapping[int, str], processed: bool) -> list[dict[str, Any]]:
    rows = []
    for c in cases:
        for row in evaluate_arrays(c.pred, c.gt, c.spacing, labels, case=c.case):
            rows.append({**row, "fold": c.fold, "postprocessed": processed})
    return rows


def _fold_table(rows: Sequence[Mapping[str, Any]], labels: Mapping[int, str], folds: list[int]) -> dict[str, Any]:
    """Per class: each fold's mean Dice, their mean ± std, and the pooled mean over every case."""
    table: dict[str, Any] = {}
    for label in sorted(k for k in labels if k != 0):
        name = labels[label]
        per_fold = [float(np.mean([r["dice"] for r in rows if r["label"] == label and r["fold"] == k])) for k in folds]
        pooled = [float(r["dice"]) for r in rows if r["label"] == label]
        table[name] = {"folds": dict(zip(map(str, folds), per_fold, strict=True)), "mean": float(np.mean(per_fold)),
                       "std": float(np.std(per_fold, ddof=1)) if len(per_fold) > 1 else 0.0,
                       "pooled": float(np.mean(pooled))}
    return table


def case_dice(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Each case's Dice averaged over its classes."""
    by_case: dict[str, list[float]] = {}
    for r in rows:
        by_case.setdefault(str(r["case"]), []).append(float(r["dice"]))
    return {case: float(np.mean(v)) for case, v in by_case.items()}


def uncertainty_ranking(cases: Sequence[OutOfFold], dice: Mapping[str, float]) -> dict[str, Any]:
    """Spearman's rank correlation of the per-case uncertainty score with the per-case Dice."""
    pairs = [(c.uncertainty, dice[c.case]) for c in cases if c.uncertainty is not None]
    out: dict[str, Any] = {"cases": len(pairs), "score": "mean normalised entropy on the predicted "
                           "foreground's border (one voxel inside and outside)", "per_case": {c.case: c.uncertainty for c in cases}}
    if len(pairs) < 3 or len({p[0] for p in pairs}) < 2 or len({p[1] for p in pairs}) < 2:
        return {**out, "spearman": None, "p_value": None}
    rho, p = stats.spearmanr([p[0] for p in pairs], [p[1] for p in pairs])
    return {**out, "spearman": float(rho), "p_value": float(p)}


def summarise(
    parent: Path, on_progress: Callable[[str], None] | None = None, device: str = "auto", precision: str = "auto",
) -> CrossValidationSummary:
    """Predict out of fold, evaluate, choose post-processing, rank uncertainty; write it all into ``parent``."""
    parent = Path(parent)
    cases = predict_out_of_fold(parent, on_progress, device, precision)
    folds = sorted({c.fold for c in cases})
    labels = _labels(parent, folds[0])
    rows = _rows(cases, labels, processed=False)
    choice = choose_postprocessing([(c.pred, c.gt, c.voxel_size) for c in cases], labels)
    atomic_write_json(parent / POSTPROCESSING_FILE, choice)
    rules = {int(k): v for k, v in choice["classes"].items()}
    for c in cases:
        apply_postprocessing(c.pred, rules, c.voxel_size)
    after = _rows(cases, labels, processed=True)
    dice = case_dice(rows)  # per case, before post-processing: what the uncertainty is judged against
    summary = {
        "medseg_cv_summary": 1, "folds": folds, "cases": len(cases),
        "dice": _fold_table(rows, labels, folds), "dice_postprocessed": _fold_table(after, labels, folds),
        "metrics": summarise_rows(rows), "postprocessing": choice,
        "uncertainty": uncertainty_ranking(cases, dice),
    }
    files = write_summary(parent, summary, [*rows, *after])
    files["figure"] = _figure(parent, cases, dice, summary["uncertainty"])
    return CrossValidationSummary(parent, summary, rows, files)


def _labels(parent: Path, fold: int) -> dict[int, str]:
    return dict(read_checkpoint(fold_dir(parent, fold)).preprocess.labels)


def summarise_rows(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Every metric over the pooled out-of-fold cases (mean, std, median, bootstrap CI per class)."""
    return summarise_metrics(rows) if rows else {}


def write_summary(parent: Path, summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> dict[str, Path]:
    """``cv_summary.json`` and ``cv_metrics.csv`` (every case, class and fold, before and after post-processing)."""
    atomic_write_json(parent / SUMMARY_FILE, summary)
    columns = ["fold", "case", "label", "class", "postprocessed", "status", "dice", "iou", "hd95", "assd", "nsd"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(parent / METRICS_FILE, buffer.getvalue())
    return {"json": parent / SUMMARY_FILE, "csv": parent / METRICS_FILE, "postprocessing": parent / POSTPROCESSING_FILE}


def _figure(parent: Path, cases: Sequence[OutOfFold], dice: Mapping[str, float], ranking: Mapping[str, Any]) -> Path:
    """Per-case uncertainty score against per-case Dice, coloured by fold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 4.0))
    for fold in sorted({c.fold for c in cases}):
        mine = [c for c in cases if c.fold == fold and c.uncertainty is not None]
        ax.scatter([c.uncertainty for c in mine], [dice[c.case] for c in mine], s=18, label=f"fold {fold}")
    rho = ranking.get("spearman")
    ax.set_title(f"Spearman ρ = {rho:.2f} over {ranking['cases']} cases" if rho is not None else "too few cases")
    ax.set_xlabel("uncertainty score (mean entropy on the predicted borders)")
    ax.set_ylabel("Dice (mean over classes)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = parent / FIGURE_FILE
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
