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
    """List the registered encoders and models: parameters, forward GFLOPs, description.

    Everything is built on PyTorch's meta device, so the listing is instant and allocates nothing.
    Models have 1 input channel and 2 classes; encoders have 1 input channel and no classifier.
    """
    from medseg.models.summary import reference_shape, summarize

    if spatial_dims not in (2, 3):
        raise MedsegError(f"--spatial-dims {spatial_dims}: give 2 or 3")
    if size < 32:
        raise MedsegError(f"--size {size}: give at least 32 (the ResNet encoders reduce by 32)")
    shape = "×".join(str(s) for s in reference_shape(spatial_dims, size))
    table = Table(
        title=f"medseg encoders and models ({spatial_dims}D)",
        caption=f"GFLOPs: one forward pass of a {shape} input (models: 1 channel in, 2 classes out; "
        "a multiply-add counts 2). Encoders: 1 input channel, no classifier.",
    )
    table.add_column("Kind")
    table.add_column("Name", style="bold")
    table.add_column("Parameters", justify="right")
    table.add_column("GFLOPs", justify="right")
    table.add_column("Description")
    for row in summarize(spatial_dims, size):
        gflops = "" if row.gflops is None else f"{row.gflops:.2f}"
        table.add_row(row.kind, row.name, f"{row.parameters:,}", gflops, row.description)
    Console().print(table)
