"""``medseg demo``: data, training, comparison, prediction, evaluation and report in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from medseg.cli import app


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo writes.")] = Path("runs/demo"),
    models: Annotated[str, typer.Option(help="Comma-separated models to train and compare.")] = "fcn,unet,unet_resnet,dual_unet_resnet",
    minutes_per_model: Annotated[float, typer.Option(help="Wall-clock cap on each model's training, in minutes.")] = 3.0,
    epochs: Annotated[int | None, typer.Option(help="Epochs per model; default: the nuclei2d config's (12).")] = None,
    precision: Annotated[str, typer.Option(help="auto, fp32, bf16 or fp16.")] = "auto",
    reuse: Annotated[bool, typer.Option("--reuse", help="Reuse finished runs in OUT/runs.")] = False,
) -> None:
    """The whole journey on the generated 2D demo data; prints where the report is."""
    from medseg.cli.compare import print_comparison
    from medseg.experiments.demo import run_demo

    console = Console(stderr=True)
    names = [m.strip() for m in models.split(",") if m.strip()]
    result = run_demo(out, names, minutes_per_model, epochs, precision, reuse,
                      on_progress=lambda msg: console.print(f"[bold]demo[/] {msg}", highlight=False))
    print_comparison(result.comparison)
    typer.echo(f"prediction: {result.prediction}")
    typer.echo(f"evaluation: {result.evaluation_dir / 'summary.json'}")
    typer.echo(f"demo finished in {result.seconds / 60:.1f} min; open {result.report}")
