"""``medseg export``: a trained run's network as TorchScript or ONNX, for deployment without medseg."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medseg.cli import app


@app.command()
def export(
    run: Annotated[Path | None, typer.Argument(help="Run directory from medseg train; default runs/latest.")] = None,
    format: Annotated[str, typer.Option("--format", "-f", help="torchscript (.pt) or onnx (.onnx; needs the onnx package).")] = "torchscript",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output file; default <run>/model.<ext>.")] = None,
    checkpoint: Annotated[str, typer.Option(help="Which weights: best or last.")] = "best",
) -> None:
    """Export the run's network (eval mode, fp32, one patch of the run's patch size).

    The export is run on a random patch and compared with the original network; the preprocessing a deployment must repeat is written beside it as <output>.json.
    """
    from medseg.inference.export import export_run

    path, max_diff = export_run(run, format, output, checkpoint)
    typer.echo(f"wrote {path} and {path.name}.json (max |difference| to the original on a test patch: {max_diff:.2e})")
