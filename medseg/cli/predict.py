"""``medseg predict``: segment files, folders or DICOM series with a trained run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from medseg.cli import app


@app.command()
def predict(
    inputs: Annotated[list[Path], typer.Argument(help="Image files, folders of images, or DICOM series folders.")],
    run: Annotated[Path | None, typer.Option(help="Run directory from medseg train; default runs/latest.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output file (one input) or folder; default <name>_seg.<ext> beside each input.")] = None,
    tta: Annotated[bool | None, typer.Option("--tta/--no-tta", help="Average predictions over flips (slower, often better); default: the run's setting, which a planned run turns on where a case predicts within a minute.")] = None,
    overlap: Annotated[float | None, typer.Option(help="Sliding-window overlap in [0, 1); default from the run's config.")] = None,
    largest_component: Annotated[bool | None, typer.Option("--largest-component/--all-components", help="Keep only the largest connected component per class.")] = None,
    probabilities: Annotated[bool | None, typer.Option("--probabilities/--no-probabilities", help="Also write <name>_seg_prob_<class> maps (float32).")] = None,
    checkpoint: Annotated[str, typer.Option(help="Which weights of the run: best or last.")] = "best",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[str, typer.Option(help="auto, fp32, bf16 or fp16; auto: bf16 where the hardware has it.")] = "auto",
) -> None:
    """Segment images with a trained run; masks keep the input's exact geometry.

    Preprocessing is read from the run, so nothing has to be repeated here. The prediction is mapped back to each input's own grid (orientation and spacing undone) and written with its header.

    A file that fails is reported and the others go on; the exit code is 1 if any failed.
    """
    from medseg.inference import Predictor, expand_inputs, predict_many

    console = Console(stderr=True)
    predictor = Predictor(
        run, device=device, precision=precision, checkpoint=checkpoint, tta=tta, overlap=overlap,
        largest_component=largest_component, save_probabilities=probabilities,
    )
    console.print(f"using {predictor.describe()}", highlight=False, soft_wrap=True)
    total = len(expand_inputs(inputs))
    progress = Progress(TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[name]}"),
                        TimeRemainingColumn(), console=console, disable=total < 2 or not console.is_terminal)
    with progress:
        task = progress.add_task("predict", total=total, name="")
        report = predict_many(
            predictor, inputs, output,
            on_progress=lambda src, i, n: progress.update(task, completed=i, name=src.name),
        )
    for source, warning in report.warnings:
        typer.echo(f"warning: {source}: {warning}", err=True)
    for source, target in report.written:
        typer.echo(f"{source} -> {target}")
    for source, reason in report.failed:
        typer.echo(f"failed: {reason}" if str(source) in reason else f"failed: {source}: {reason}", err=True)
    if report.failed:
        typer.echo(f"{len(report.failed)} of {total} input(s) failed", err=True)
        raise typer.Exit(1)
