"""``medseg cv``: a cross-validation's summary, computed again on demand."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from medseg.cli import app

if TYPE_CHECKING:
    from medseg.experiments.crossval import CrossValidationSummary


@app.command()
def cv(
    run: Annotated[Path | None, typer.Argument(help="The cross-validation's parent run directory (medseg train --folds K); default runs/latest.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[str, typer.Option(help="auto, fp32, bf16 or fp16.")] = "auto",
) -> None:
    """Summarise a cross-validation: predict each fold's validation cases with that fold, evaluate them per fold and pooled, choose post-processing per class, and rank cases by uncertainty.

    Writes oof/ (the out-of-fold masks and entropy maps), cv_summary.json, cv_metrics.csv, postprocessing.json (applied by medseg predict --run PARENT) and uncertainty.png into the parent.
    """
    from medseg.errors import MedsegError
    from medseg.experiments.crossval import summarise
    from medseg.run import is_cross_validation

    parent = run or Path("runs") / "latest"
    if not is_cross_validation(parent):
        raise MedsegError(f"{parent}: not a cross-validation (no cv.json); pass the folder medseg train --folds made")
    console = Console(stderr=True)
    print_summary(summarise(parent.resolve(), lambda msg: console.print(msg, highlight=False), device, precision))


def print_summary(result: CrossValidationSummary) -> None:
    """Dice per fold, mean ± std and pooled; the post-processing choice; the uncertainty ranking."""
    summary = result.summary
    folds = [str(k) for k in summary["folds"]]
    table = Table(title=f"Cross-validation: {summary['cases']} out-of-fold cases, Dice", padding=(0, 1))
    for column in ("Class", *(f"fold {k}" for k in folds), "mean ± std", "pooled", "rule", "after"):
        table.add_column(column, justify="left" if column == "Class" else "right")
    for name, row in summary["dice"].items():
        rule = next(r for r in summary["postprocessing"]["classes"].values() if r["name"] == name)
        op = {"none": "none", "largest_component": "largest", "remove_small": f"< {rule.get('min_size', 0):.3g}"}[rule["operation"]]
        table.add_row(name, *(f"{row['folds'][k]:.3f}" for k in folds), f"{row['mean']:.3f}\n±{row['std']:.3f}",
                      f"{row['pooled']:.3f}", op, f"{summary['dice_postprocessed'][name]['pooled']:.3f}")
    console = Console()
    console.print(table)
    unit = summary["postprocessing"].get("size_unit", "")
    console.print(f"rule: the post-processing ('<' removes components under that many {unit}), kept only where it raised "
                  f"the out-of-fold Dice; medseg predict --run {result.parent} applies it", highlight=False)
    ranking = summary["uncertainty"]
    if ranking.get("spearman") is not None:
        console.print(f"uncertainty score vs Dice over {ranking['cases']} cases: Spearman ρ = {ranking['spearman']:.2f} "
                      f"(p = {ranking['p_value']:.2g}); a higher score means a case to check first", highlight=False)
    typer.echo(f"summary: {result.files['json']}")
