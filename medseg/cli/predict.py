"""``medseg predict``: segment files, folders or DICOM series with a trained run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from medseg.cli import app

if TYPE_CHECKING:
    from medseg.inference import Predictor
    from medseg.inference.paths import Source


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
    fmt: Annotated[str, typer.Option("--format", help="Mask format: same (the input's; DICOM gives nii.gz), nii.gz, seg.nrrd (3D Slicer: names and colours), nrrd or mha (with an ITK-SNAP <name>_seg_labels.txt beside it), dicom-seg (DICOM series inputs; needs medseg[dicom]).")] = "same",
    colors: Annotated[list[str] | None, typer.Option("--colors", help="Structure colours for seg.nrrd and ITK-SNAP labels, over the fixed palette and the training dataset.json's colors: VALUE=R,G,B or NAME=#RRGGBB (repeat it), or a JSON file mapping values or names to [R, G, B] (a dataset.json's \"colors\" too).")] = None,
    stats: Annotated[bool, typer.Option("--stats", help="Also write per-structure statistics (volume in mL, voxels, intensity under the mask, components, bounding box, centroid in LPS and RAS, touches_border): <name>_seg_stats.json beside each mask and statistics.csv for all.")] = False,
    uncertainty: Annotated[bool, typer.Option("--uncertainty", help="Also write <name>_seg_entropy (predictive entropy of the averaged probabilities, 0-1) and, with several folds or --tta, <name>_seg_disagreement maps; with --stats, entropy scores per structure and uncertainty per case.")] = False,
    postprocessing: Annotated[bool, typer.Option("--postprocessing/--no-postprocessing", help="Apply the post-processing a cross-validation chose per class (postprocessing.json in the run; medseg cv).")] = True,
    resume: Annotated[bool, typer.Option("--continue/--overwrite", help="Keep outputs an earlier (interrupted) call already wrote and predict only the rest; default: predict every input again.")] = False,
) -> None:
    """Segment images with a trained run; masks keep the input's exact geometry.

    Preprocessing is read from the run, so nothing has to be repeated here. The prediction is mapped back to each input's own grid (orientation and spacing undone) and written with its header.

    With --run pointing at a cross-validation (medseg train --folds K), the folds' probabilities are averaged (an ensemble), and the post-processing chosen from the cross-validation is applied.

    A file that fails is reported and the others go on; the exit code is 1 if any failed. For a run
    trained on several channels, give a case as its channel files named nnU-Net's way
    (case_0000.nii.gz, case_0001.nii.gz, …) or a folder of them: each case is one input and gives
    case_seg.nii.gz. A file with no sibling channel files holds every channel itself (an RGB
    photo for an RGB run).
    """
    from medseg.errors import MedsegError
    from medseg.inference import Predictor, expand_inputs, predict_many
    from medseg.inference.formats import FORMATS

    if fmt not in FORMATS:
        raise MedsegError(f"--format {fmt}: not a mask format; use one of {', '.join(FORMATS)}")
    console = Console(stderr=True)
    predictor = Predictor(
        run, device=device, precision=precision, checkpoint=checkpoint, tta=tta, overlap=overlap,
        largest_component=largest_component, save_probabilities=probabilities, statistics=stats,
        uncertainty=uncertainty, postprocessing=postprocessing,
    )
    if colors:
        from medseg.inference.formats import parse_colours

        predictor.colours.update(parse_colours(colors, predictor.labels))
    console.print(f"using {predictor.describe()}", highlight=False, soft_wrap=True)
    sources = expand_inputs(inputs, predictor.preprocess.in_channels)
    console.print(f"cost: {_cost(predictor, sources)}", highlight=False, soft_wrap=True)
    if predictor.postprocesses():
        console.print(f"post-processing from the cross-validation: {predictor.describe_postprocessing()}",
                      highlight=False, soft_wrap=True)
    total = len(sources)
    progress = Progress(TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[name]}"),
                        TimeRemainingColumn(), console=console, disable=total < 2 or not console.is_terminal)
    with progress:
        task = progress.add_task("predict", total=total, name="")
        report = predict_many(
            predictor, inputs, output,
            on_progress=lambda src, i, n: progress.update(task, completed=i, name=src.name), resume=resume,
            fmt=fmt,
        )
    if stats and report.written:
        from medseg.inference.statistics import write_statistics_csv

        table = write_statistics_csv(report.statistics, report.written[0][1].parent / "statistics.csv")
        typer.echo(f"statistics: {table}", err=True)
    if report.kept:
        typer.echo(f"kept {len(report.kept)} output(s) an earlier call wrote (--continue)", err=True)
    for source, warning in report.warnings:
        typer.echo(f"warning: {source}: {warning}", err=True)
    for source, target in report.written:
        typer.echo(f"{source} -> {target}")
    for source, reason in report.failed:
        typer.echo(f"failed: {reason}" if str(source) in reason else f"failed: {source}: {reason}", err=True)
    if report.failed:
        typer.echo(f"{len(report.failed)} of {total} input(s) failed", err=True)
        raise typer.Exit(1)


def _cost(predictor: Predictor, sources: list[Source]) -> str:
    """The predictor's cost line, timed for the first input's size when its header can be read."""
    from medseg.data.io import read_header
    from medseg.inference.paths import first_file

    try:
        meta = read_header(first_file(sources[0]))
    except Exception:  # an unreadable first input is reported when it is predicted
        return predictor.cost()
    return predictor.cost(meta)
