"""``medseg experiment``: small reproductions of published results, thin over ``medseg.experiments``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from medseg.cli import app

experiment_app = typer.Typer(help="Small reproductions of published results.", no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")

DEFAULTS = {"steps": 1000, "batch_size": 32, "lr": 0.025, "image_size": 12, "n_train": 5000}


@experiment_app.command()
def degradation(
    out: Annotated[
        Path, typer.Option(help="Folder for curves.csv, summary.csv, gradient_norms.csv and the two figures.")
    ] = Path("runs/degradation"),
    depths: Annotated[
        str, typer.Option(help="Comma-separated CIFAR ResNet depths, 6n+2 each (8, 14, 20, 32, 44, 56, 110).")
    ] = "20,56",
    steps: Annotated[int, typer.Option(help="Training steps per network (the same budget for all).")] = DEFAULTS[
        "steps"
    ],
    batch_size: Annotated[int, typer.Option(help="Mini-batch size.")] = DEFAULTS["batch_size"],
    lr: Annotated[float, typer.Option(help="Peak SGD learning rate of the one-cycle schedule.")] = DEFAULTS["lr"],
    image_size: Annotated[int, typer.Option(help="Side of the generated square images, in pixels.")] = DEFAULTS[
        "image_size"
    ],
    n_train: Annotated[int, typer.Option(help="Number of generated training images.")] = DEFAULTS["n_train"],
    seed: Annotated[int, typer.Option(help="Seed of the data, the initialisation and the batch order.")] = 0,
    threads: Annotated[
        int, typer.Option(help="CPU threads for torch; 0 keeps torch's default. The networks are tiny: on a busy "
                          "machine one thread was several times faster than two.")
    ] = 1,
) -> None:
    """Plain against residual networks at two depths (He et al. 2015, Fig. 1 and 6).

    Trains plain and residual CIFAR-style networks at each depth on a generated 10-class texture
    task under one budget, and records per-layer gradient norms at initialisation (with and without
    batch norm) and after training. Writes the curves, a summary, the gradient norms, and two
    figures; see docs/experiments.md. About 3 to 5 minutes on 2 CPU cores with the defaults.
    """
    import torch

    from medseg.errors import MedsegError
    from medseg.experiments.degradation import parse_depths, run_degradation

    depth_list = parse_depths(depths)
    if threads < 0:
        raise MedsegError(f"--threads {threads}: give 0 (torch's default) or a positive count")
    if threads:
        torch.set_num_threads(threads)
    console = Console(stderr=True)
    result = run_degradation(
        out, depth_list, steps=steps, batch_size=batch_size, lr=lr, image_size=image_size, n_train=n_train,
        seed=seed, on_progress=lambda msg: console.print(msg, highlight=False),
    )  # fmt: skip
    table = Table(title=f"After {steps} steps (training: mean of the last tenth; held-out: at the end)")
    for column in ("network", "parameters", "train loss", "train error", "held-out error", "seconds"):
        table.add_column(column, justify="left" if column == "network" else "right")
    for row in result.summary:
        table.add_row(
            str(row["network"]), f"{int(row['parameters']):,}", f"{float(row['final_train_loss']):.3f}",  # type: ignore[call-overload,arg-type]
            f"{100 * float(row['final_train_error']):.1f}%", f"{100 * float(row['final_test_error']):.1f}%",  # type: ignore[arg-type]
            f"{float(row['seconds']):.0f}",  # type: ignore[arg-type]
        )  # fmt: skip
    Console().print(table)
    typer.echo(f"wrote {', '.join(p.name for p in result.files)} to {out} in {result.seconds:.0f}s")
