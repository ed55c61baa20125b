"""``medseg experiment``: small reproductions of published results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from medseg.cli import app

experiment_app = typer.Typer(help="Small reproductions of published results.", no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")


@experiment_app.command()
def degradation(
    out: Annotated[Path, typer.Option(help="Folder for degradation.csv, gradient_norms.csv and the figures.")] = Path("runs/degradation"),
    depths: Annotated[str, typer.Option(help="Comma-separated CIFAR-style depths (6n+2).")] = "20,56",
    steps: Annotated[int, typer.Option(help="Training steps per network (same budget for all).")] = 400,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 64,
    lr: Annotated[float, typer.Option(help="Peak SGD learning rate (one-cycle schedule).")] = 0.05,
    seed: Annotated[int, typer.Option(help="Random seed for data and initialisation.")] = 0,
) -> None:
    """Plain vs residual networks at two depths (He et al. 2015): training error and gradient norms."""
    from medseg.errors import MedsegError
    from medseg.experiments.degradation import run_degradation

    try:
        depth_list = [int(d) for d in depths.split(",") if d.strip()]
    except ValueError:
        raise MedsegError(f"--depths '{depths}': give comma-separated integers such as 20,56") from None
    bad = [d for d in depth_list if d < 8 or (d - 2) % 6]
    if bad or not depth_list:
        raise MedsegError(f"--depths {depths}: CIFAR ResNets have 6n+2 layers (20, 32, 44, 56, 110); fix {bad or depths}")
    console = Console(stderr=True)
    result = run_degradation(out, depth_list, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                             on_progress=lambda msg: console.print(msg, highlight=False))
    table = Table(title=f"Training error after {steps} steps (mean of the last eighth)")
    table.add_column("network")
    table.add_column("train loss", justify="right")
    table.add_column("train error", justify="right")
    for name in result.final_error:
        table.add_row(name, f"{result.final_loss[name]:.3f}", f"{100 * result.final_error[name]:.1f}%")
    Console().print(table)
    typer.echo(f"wrote {out}/degradation.csv, gradient_norms.csv, degradation.png, gradient_norms.png "
               f"in {result.seconds:.0f}s")
