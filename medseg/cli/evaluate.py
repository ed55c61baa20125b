"""``medseg evaluate PRED GT``: Dice, IoU, HD95, ASSD, NSD and more, per case and class, in mm."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from medseg.cli import app
from medseg.errors import MedsegError

#: Columns of the printed table: (summary metric, header, format of the mean and std).
TABLE_METRICS = (("dice", "Dice", ".3f"), ("iou", "IoU", ".3f"), ("hd95", "HD95\nmm", ".2f"),
                 ("assd", "ASSD\nmm", ".2f"), ("nsd", "NSD", ".3f"), ("lesion_f1", "Lesion\nF1", ".3f"))


def parse_labels(values: list[str] | None) -> dict[int, str] | None:
    """``["1=liver,2=tumour"]``, repeated ``1=liver`` options, or a JSON file (MSD/nnU-Net ``labels``)."""
    if not values:
        return None
    labels: dict[int, str] = {}
    for value in values:
        path = Path(value)
        if value.endswith(".json") and path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise MedsegError(f"--labels {path}: not valid JSON ({err.msg} at line {err.lineno})") from None
            found = data.get("labels", data) if isinstance(data, dict) else None
            if not isinstance(found, dict):
                raise MedsegError(f"--labels {path}: expected a 'labels' object mapping values to names")
            for k, v in found.items():  # MSD: {"1": "liver"}; nnU-Net v2: {"liver": 1}
                key, name = (k, v) if str(k).lstrip("-").isdigit() else (v, k)
                if isinstance(key, int | str) and str(key).lstrip("-").isdigit():
                    labels[int(key)] = str(name)
            continue
        for item in value.split(","):
            key, sep, name = item.partition("=")
            if not sep or not key.strip().isdigit() or not name.strip():
                raise MedsegError(f"--labels {item!r}: write VALUE=NAME pairs, e.g. --labels 1=liver,2=tumour, "
                                  "or give a dataset.json")
            labels[int(key)] = name.strip()
    labels.pop(0, None)
    if not labels:
        raise MedsegError("--labels names no foreground class; give e.g. --labels 1=liver")
    return labels


def dataset_labels(gt: Path) -> dict[int, str] | None:
    """The label names of the dataset.json beside ``gt`` (its folder, or the one above: ``labelsTs/``
    sits in the dataset), so tables name the structures; None when there is none or it names none."""
    folder = gt if gt.is_dir() else gt.parent
    for candidate in (folder / "dataset.json", folder.parent / "dataset.json"):
        if candidate.is_file():
            try:
                return parse_labels([str(candidate)])
            except MedsegError:
                return None
    return None


def _cell(stats: dict[str, Any], fmt: str) -> str:
    """The mean, and the std on the line below it: whole numbers on an 80-column terminal."""
    if stats.get("mean") is None:
        return "-"
    std = stats.get("std")
    return f"{stats['mean']:{fmt}}" + (f"\n±{std:{fmt}}" if std is not None else "")


def summary_table(summary: dict[str, Any], title: str = "Evaluation") -> Table:
    """A compact rich table: one row per class, mean ± std of the main metrics, empty-case counts."""
    tol = summary.get("tolerance_mm")
    caption = (f"{summary.get('n_cases', 0)} cases; mean, ± std below it, over finite values"
               + (f"; NSD at {tol:g} mm" if tol is not None else "")
               + ". Missed: in the ground truth only; FP: in the prediction only; Empty: in neither. "
               "Lesion F1: connected components matched by overlap. Sensitivity, specificity, precision, "
               "volumes and lesion counts: metrics.csv and summary.json.")
    table = Table(title=title, caption=caption, padding=(0, 1))
    table.add_column("Class", style="bold", overflow="fold")
    table.add_column("n", justify="right")
    for key, header, _ in TABLE_METRICS:
        if key in summary["metrics"]:
            table.add_column(header, justify="right")
    table.add_column("Missed/\nFP/\nEmpty", justify="right")
    for name, counts in summary["counts"].items():
        cells = [_cell(summary["metrics"][key][name], fmt) for key, _, fmt in TABLE_METRICS
                 if key in summary["metrics"]]
        n = sum(counts.values())
        table.add_row(name, str(n), *cells, f"{counts['pred_empty']}/{counts['gt_empty']}/{counts['both_empty']}")
    return table


def default_out_dir(pred: Path) -> Path:
    """``PRED/evaluation`` for a folder, ``<case>_evaluation`` beside a single prediction file."""
    from medseg.evaluation.evaluate import case_name

    return pred / "evaluation" if pred.is_dir() else pred.parent / f"{case_name(pred, prediction=True)}_evaluation"


@app.command("evaluate")
def evaluate_command(
    pred: Annotated[Path, typer.Argument(help="Prediction label file, or a folder of them.")],
    gt: Annotated[Path, typer.Argument(help="Ground-truth label file, or a folder matched by case name.")],
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Folder for metrics.csv and summary.json (default: PRED/evaluation for a "
        "folder, <case>_evaluation beside a PRED file).")] = None,
    tolerance: Annotated[float, typer.Option(
        "--tolerance", help="Normalised surface Dice tolerance in mm.")] = 1.0,
    labels: Annotated[list[str] | None, typer.Option(
        "--labels", help="Classes to evaluate as VALUE=NAME pairs (1=liver,2=tumour) or a dataset.json; "
        "default: the classes of the dataset.json beside the ground truth (in its folder or the one above), "
        "else every non-zero value found.")] = None,
) -> None:
    """Compare predictions with ground truth: Dice, IoU, HD95, ASSD, NSD, sensitivity, specificity, precision and volume difference per case and foreground class, with distances in mm from the voxel spacing.

    Folders are matched by case name (image suffixes, and a _seg suffix on predictions, are ignored). A case whose files cannot be read or differ in shape or geometry is reported and skipped, and the exit code is then 1.

    Empty masks: both empty gives Dice 1 and NaN distances; one empty gives Dice 0 and infinite distances. The table counts such cases (Missed / FP / Empty); see docs/evaluation.md.
    """
    from rich.progress import Progress

    from medseg.evaluation import evaluate

    out_dir = out if out is not None else default_out_dir(pred)
    console = Console()
    with Progress(console=console, transient=True, disable=not pred.is_dir()) as bar:
        task = bar.add_task("evaluating", total=None)

        def advance(done: int, total: int, case: str) -> None:
            bar.update(task, completed=done, total=total, description=f"evaluating {case}")

        names = parse_labels(labels) if labels else dataset_labels(gt)
        result = evaluate(pred, gt, out_dir, labels=names, tolerance_mm=tolerance, progress=advance)
    if result.rows:
        console.print(summary_table(result.summary, title=f"medseg evaluate: {pred}"))
    else:
        console.print("[yellow]no case could be evaluated[/yellow]")
    if result.unmatched_gt:
        shown = ", ".join(result.unmatched_gt[:5]) + (" ..." if len(result.unmatched_gt) > 5 else "")
        console.print(f"{len(result.unmatched_gt)} ground-truth case(s) without a prediction (not evaluated): {shown}")
    for error in result.errors:
        typer.echo(f"error: {error.case}: {error.message}", err=True)
    typer.echo(f"wrote {result.files['csv']} and {result.files['json']}")
    if result.errors:
        typer.echo(f"{len(result.errors)} of {len(result.errors) + result.summary['n_cases']} cases failed", err=True)
        raise typer.Exit(1)
