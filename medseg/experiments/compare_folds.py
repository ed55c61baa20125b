"""``medseg compare --folds K``: models compared by cross-validation, with a paired test per model.

Each model is cross-validated (:mod:`medseg.training.folds`) on the same K folds (one
``splits.json``, copied into every model's parent) with the same seed and budget, and summarised out
of fold (:mod:`medseg.experiments.crossval`). The table gives, per model, the mean ± std of the
folds' Dice and the pooled out-of-fold Dice; each model's per-case Dice is set against the best
model's with the Wilcoxon signed-rank test (paired by case), Holm-corrected over the comparisons,
so the report says which differences the data can tell apart. Everything is written into ``OUT``:
``cv/<model>/`` (the cross-validations), ``comparison_folds.csv``, ``comparison_folds.md`` and
``report_folds.html``.
"""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from medseg.errors import MedsegError
from medseg.evaluation.report import html_table, markdown_table, write_report
from medseg.experiments.compare import variant_configs
from medseg.experiments.crossval import CrossValidationSummary, case_dice, summarise
from medseg.training.folds import train_folds
from medseg.utils import atomic_write_text

COLUMNS = ["model", "folds_dice", "pooled_dice", "cases", "vs_best", "p_holm", "significant"]
HEADERS = {"model": "Model", "folds_dice": "Dice\nfolds", "pooled_dice": "Dice\npooled", "cases": "Cases",
           "vs_best": "Δ vs\nbest", "p_holm": "p\n(Holm)", "significant": "Signif."}
ALPHA = 0.05


@dataclass
class FoldComparison:
    """Every model's cross-validation summary, the table rows and the files written."""

    out_dir: Path
    summaries: dict[str, CrossValidationSummary]
    rows: list[dict[str, str]]
    files: dict[str, Path]


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (same order as given)."""
    order = np.argsort(p_values)
    adjusted = np.empty(len(p_values))
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * float(p_values[index])))
        adjusted[index] = running
    return [float(p) for p in adjusted]


def paired_test(a: Mapping[str, float], b: Mapping[str, float]) -> tuple[float, float, int]:
    """Mean difference ``a − b`` over the shared cases, the Wilcoxon signed-rank p-value, and n."""
    cases = sorted(set(a) & set(b))
    diff = np.asarray([a[c] - b[c] for c in cases])
    if len(cases) < 2 or not np.any(diff):
        return float(diff.mean()) if len(cases) else float("nan"), 1.0, len(cases)
    return float(diff.mean()), float(stats.wilcoxon(diff, zero_method="zsplit").pvalue), len(cases)


def _train_each(models: Sequence[str], encoders: Sequence[str], config: Any, overrides: Any, sets: Sequence[str],
                out: Path, folds: int, quiet: bool, say: Callable[[str], None]) -> dict[str, CrossValidationSummary]:
    configs = variant_configs(models, encoders, config, overrides, sets)
    summaries: dict[str, CrossValidationSummary] = {}
    shared: Path | None = None
    for name, cfg in configs.items():
        parent = out / "cv" / name
        if shared is not None and not (parent / "splits.json").exists():
            parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shared, parent / "splits.json")  # the same folds for every model
        say(f"{name}: {folds}-fold cross-validation in {parent}")
        train_folds(cfg, folds, parent, quiet=quiet)
        shared = shared or parent / "splits.json"
        say(f"{name}: out-of-fold predictions")
        summaries[name] = summarise(parent, None, cfg.train.device, cfg.train.precision)
    return summaries


def compare_folds(
    models: Sequence[str], folds: int, config: str | Path | None = None, overrides: dict[str, Any] | None = None,
    sets: Sequence[str] = (), out: Path = Path("runs/compare"), quiet: bool = False,
    on_progress: Callable[[str], None] | None = None, encoders: Sequence[str] = (),
) -> FoldComparison:
    """Cross-validate each model (or model and encoder, see :func:`~medseg.experiments.compare.variant_configs`)
    on shared folds and compare them with paired tests on per-case Dice."""
    if not models:
        raise MedsegError("--models is empty; name at least one model, e.g. --models unet,dual_unet_resnet")
    say = on_progress or (lambda _m: None)
    summaries = _train_each(models, encoders, config, overrides, sets, out, folds, quiet, say)
    rows = comparison_rows(summaries)
    return FoldComparison(out, summaries, rows, _write(out, rows, summaries, folds))


def _model_dice(summary: CrossValidationSummary) -> tuple[list[float], float]:
    """The folds' Dice (mean over classes) and the pooled out-of-fold Dice (mean over classes)."""
    table = summary.summary["dice"]
    folds = [str(k) for k in summary.summary["folds"]]
    per_fold = [float(np.mean([row["folds"][k] for row in table.values()])) for k in folds]
    return per_fold, float(np.mean([row["pooled"] for row in table.values()]))


def comparison_rows(summaries: Mapping[str, CrossValidationSummary]) -> list[dict[str, str]]:
    """One row per model: folds' mean ± std, pooled Dice, and the paired test against the best model."""
    dice = {name: _model_dice(s) for name, s in summaries.items()}
    per_case = {name: case_dice(s.rows) for name, s in summaries.items()}
    best = max(dice, key=lambda n: dice[n][1])
    tests = {n: paired_test(per_case[n], per_case[best]) for n in summaries if n != best}
    adjusted = dict(zip(tests, holm([t[1] for t in tests.values()]), strict=True)) if tests else {}
    rows = []
    for name in sorted(summaries, key=lambda n: -dice[n][1]):
        per_fold, pooled = dice[name]
        row = {"model": name, "folds_dice": f"{np.mean(per_fold):.4f} ± {np.std(per_fold, ddof=1):.4f}",
               "pooled_dice": f"{pooled:.4f}", "cases": str(len(per_case[name]))}
        if name == best:
            row.update(vs_best="best", p_holm="", significant="")
        else:
            delta, _, _ = tests[name]
            p = adjusted[name]
            row.update(vs_best=f"{delta:+.4f}", p_holm=f"{p:.3g}", significant="yes" if p < ALPHA else "no")
        rows.append(row)
    return rows


def _write(out: Path, rows: list[dict[str, str]], summaries: Mapping[str, CrossValidationSummary],
           folds: int) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {"csv": out / "comparison_folds.csv", "md": out / "comparison_folds.md", "html": out / "report_folds.html"}
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(files["csv"], buffer.getvalue())
    n = rows[0]["cases"] if rows else "0"
    note = (f"{folds}-fold cross-validation on the same folds for every model; {n} out-of-fold cases. "
            "Dice folds: mean ± std of the folds' mean Dice; pooled: every out-of-fold case together. "
            f"Δ vs best and p: each model's per-case Dice against the best model's, Wilcoxon signed-rank "
            f"(paired by case), Holm-corrected over {max(0, len(rows) - 1)} comparison(s); significant at {ALPHA}. "
            "A 'no' means these cases cannot tell the two apart, not that they are equal.")
    atomic_write_text(files["md"], f"# Model comparison by cross-validation\n\n{note}\n\n{markdown_table(rows, COLUMNS)}\n")
    sections: list[tuple[str, Any]] = [("Summary", f"<p>{note}</p>"), ("Comparison table", html_table(rows, COLUMNS))]
    sections += [(f"Uncertainty against Dice: {name}", s.files["figure"]) for name, s in summaries.items()
                 if s.files.get("figure") and Path(s.files["figure"]).is_file()]
    write_report(files["html"], "medseg model comparison (cross-validation)", sections)
    return files
