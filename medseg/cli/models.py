"""``medseg models``: every registered encoder and model, with its size and forward cost."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from medseg.cli import app
from medseg.errors import MedsegError


@app.command("models")
def models_command(
    spatial_dims: Annotated[int, typer.Option("--spatial-dims", help="Build everything in 2D or 3D.")] = 2,
    size: Annotated[int, typer.Option(help="Edge of the reference input the model GFLOPs refer to.")] = 256,
) -> None:
    """List the registered encoders (parameters) and models (parameters, forward GFLOPs).

    Everything is built on PyTorch's meta device, so the listing takes seconds and allocates nothing.
    Models have 1 input channel and 2 classes; encoders have 1 input channel and no classifier.
    """
    from medseg.models.summary import reference_shape, summarize

    if spatial_dims not in (2, 3):
        raise MedsegError(f"--spatial-dims {spatial_dims}: give 2 or 3")
    if size < 1:
        raise MedsegError(f"--size {size}: give a positive edge length, e.g. --size 256")
    rows = summarize(spatial_dims, size)
    shape = "×".join(str(s) for s in reference_shape(spatial_dims, size))
    console = Console()

    encoders = Table(title=f"Encoders ({spatial_dims}D, 1 input channel, no classifier)")
    encoders.add_column("Name", style="bold")
    encoders.add_column("Parameters", justify="right")
    encoders.add_column("Description")
    for row in rows:
        if row.kind == "encoder":
            encoders.add_row(row.name, f"{row.parameters:,}", row.description)
    console.print(encoders)

    models = Table(
        title=f"Models ({spatial_dims}D, 1 input channel, 2 classes, default options)",
        caption=f"GFLOPs: one forward pass of a {shape} input (a multiply-add counts 2).",
    )
    models.add_column("Name", style="bold")
    models.add_column("Parameters", justify="right")
    models.add_column(f"GFLOPs @ {shape}", justify="right")
    models.add_column("Description")
    for row in rows:
        if row.kind == "model":
            models.add_row(row.name, f"{row.parameters:,}", f"{row.gflops:.2f}", row.description)
    console.print(models)
