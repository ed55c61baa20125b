"""``medseg compare``: several models, one split, one budget, one report."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from medseg.cli import app

if TYPE_CHECKING:
    from medseg.experiments.compare import Comparison
    from medseg.experiments.compare_folds import FoldComparison


@app.command()
def compare(
    models: Annotated[str, typer.Option(help="Comma-separated model names.")] = "fcn,unet,unet_resnet,dual_unet_resnet",
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Task config shared by all models (default: each model's built-in, on the 2D demo task).")] = None,
    data: Annotated[Path | None, typer.Option(help="Dataset folder; default: the generated demo data.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs per model (same for all).")] = None,
    max_minutes: Annotated[float | None, typer.Option(help="Wall-clock budget per model, in minutes (same for all).")] = None,
    out: Annotated[Path, typer.Option(help="Output folder for runs, predictions, tables, figures and report.html.")] = Path("runs/compare"),
    reuse: Annotated[bool, typer.Option("--reuse", help="Reuse finished runs in OUT/runs whose config is unchanged.")] = False,
    seed: Annotated[int | None, typer.Option(help="Seed shared by every model.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
    precision: Annotated[str | None, typer.Option(help="auto, fp32, bf16 or fp16.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Config value for every model, e.g. --set data.patch_size=[96,96].")] = None,
    encoders: Annotated[str | None, typer.Option("--encoders", help="Comma-separated encoders (see medseg models): train every model on each, e.g. --models unet_resnet --encoders resnet34,resnext50_32x4d,seresnet50; rows are named model+encoder.")] = None,
    folds: Annotated[int | None, typer.Option("--folds", help="Compare by K-fold cross-validation (shared folds, --max-minutes per model): mean ± std over folds, pooled out-of-fold Dice, and a Wilcoxon signed-rank test on per-case Dice against the best model (Holm-corrected). Interrupted, the same command continues.")] = None,
) -> None:
    """Train each model under the same split, seed, preprocessing and budget, then evaluate and report.

    Writes comparison.csv, comparison.md, grid.png (Image | Mask | Prediction per model),
    dice_bars.png and a self-contained report.html into OUT.

    With --folds K: OUT/cv/<model>/ (each model's cross-validation), comparison_folds.csv, comparison_folds.md and report_folds.html.
    """
    from medseg.cli.train import _overrides
    from medseg.experiments.compare import compare as run_compare

    names = [m.strip() for m in models.split(",") if m.strip()]
    encoder_names = [e.strip() for e in (encoders or "").split(",") if e.strip()]
    overrides = _overrides(data=data, epochs=epochs, max_minutes=max_minutes, seed=seed, device=device, precision=precision)
    console = Console(stderr=True)
    if folds is not None:
        from medseg.experiments.compare_folds import compare_folds

        if reuse:
            console.print("--reuse is implied with --folds: finished folds are always kept", highlight=False)
        fold_result = compare_folds(names, folds, config, overrides, set_ or [], out, quiet=False,
                                    on_progress=lambda msg: console.print(msg, highlight=False), encoders=encoder_names)
        print_fold_comparison(fold_result)
        return
    result = run_compare(names, config, overrides, set_ or [], out, reuse, quiet=False,
                         on_progress=lambda msg: console.print(msg, highlight=False), encoders=encoder_names)
    print_comparison(result)


#: Short terminal headers for comparison.csv's columns (the CSV keeps its names).
HEADERS = {"model": "Model", "dice": "Dice", "iou": "IoU", "hd95": "HD95\nmm", "params_m": "Params\nM",
           "gflops": "GFLOPs", "train_minutes": "Train\nmin", "epochs": "Ep.", "infer_seconds_per_case": "Infer\ns"}


def comparison_table(rows: list[dict[str, str]], n_cases: int) -> Table:
    """comparison.csv as a table whose numbers stay whole on an 80-column terminal (std below the mean)."""
    from medseg.experiments.compare import COLUMNS

    table = Table(title=f"Held-out cases: {n_cases}", padding=(0, 1))
    for col in COLUMNS:
        table.add_column(HEADERS.get(col, col), justify="left" if col == "model" else "right",
                         overflow="fold" if col == "model" else "ellipsis")
    for row in rows:
        table.add_row(*[str(row[c]).replace(" ± ", "\n±") for c in COLUMNS])
    return table


def print_comparison(result: Comparison) -> None:
    """The comparison table on the terminal, and where the files are."""
    with open(result.files["csv"], encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    Console().print(comparison_table(rows, result.n_cases))
    typer.echo(f"report: {result.files['html']}")


def print_fold_comparison(result: FoldComparison) -> None:
    """comparison_folds.csv as a table (std below the mean), and where the report is."""
    from medseg.experiments.compare_folds import COLUMNS, HEADERS

    table = Table(title=f"Cross-validation, {result.rows[0]['cases']} out-of-fold cases", padding=(0, 1))
    for col in COLUMNS:
        table.add_column(HEADERS[col], justify="left" if col == "model" else "right",
                         overflow="fold" if col == "model" else "ellipsis")
    for row in result.rows:
        table.add_row(*[str(row[c]).replace(" ± ", "\n±") for c in COLUMNS])
    Console().print(table)
    typer.echo(f"report: {result.files['html']}")
