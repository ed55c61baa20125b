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

DEFAULTS = {"steps": 1000, "batch_size": None, "lr": None, "image_size": 12, "n_train": 5000, "n_test": 500, "recipe": "small"}


@experiment_app.command()
def degradation(
    out: Annotated[
        Path, typer.Option(help="Folder for curves.csv, summary.csv, gradient_norms.csv, response_std.csv and "
                           "three figures.")
    ] = Path("runs/degradation"),
    depths: Annotated[
        str, typer.Option(help="Comma-separated CIFAR ResNet depths, 6n+2 each (8, 14, 20, 32, 44, 56, 110).")
    ] = "20,56",
    families: Annotated[
        str, typer.Option(help="Comma-separated families: plain, resnet, highway, fractal.")
    ] = "plain,resnet",
    recipe: Annotated[
        str, typer.Option(help="small: one-cycle, no augmentation (CPU scale). he: He et al.'s CIFAR recipe "
                          "(per-pixel mean subtraction, pad-4 crop + flip, lr 0.1 / 10 at 50 % and 75 %, "
                          "0.01 warm-up from 110 layers; batch 128).")
    ] = DEFAULTS["recipe"],
    data: Annotated[
        Path | None, typer.Option(help="A local cifar-10-batches-py folder, or a folder with one sub-folder of "
                                  "images per class (resized to --image-size). Default: the generated task.")
    ] = None,
    steps: Annotated[int, typer.Option(help="Training steps per network (the same budget for all).")] = DEFAULTS[
        "steps"
    ],
    batch_size: Annotated[
        int | None, typer.Option(help="Mini-batch size; default the recipe's (small 32, he 128).")
    ] = DEFAULTS["batch_size"],
    lr: Annotated[
        float | None, typer.Option(help="Peak (small) or initial (he) SGD learning rate; default 0.025 / 0.1.")
    ] = DEFAULTS["lr"],
    image_size: Annotated[int, typer.Option(help="Side of the generated square images, in pixels.")] = DEFAULTS[
        "image_size"
    ],
    n_train: Annotated[
        int, typer.Option(help="Generated training images; with --data, the most training images used (0 = all).")
    ] = DEFAULTS["n_train"],
    n_test: Annotated[
        int, typer.Option(help="Held-out images (generated, or the most used from --data; 0 = all).")
    ] = DEFAULTS["n_test"],
    seed: Annotated[int, typer.Option(help="Seed of the data, the initialisation and the batch order.")] = 0,
    threads: Annotated[
        int, typer.Option(help="CPU threads for torch; 0 keeps torch's default. The networks are tiny: on a busy "
                          "machine one thread was several times faster than two.")
    ] = 1,
) -> None:
    """Plain, residual, highway and fractal networks at several depths (He et al. 2015, Fig. 1, 6, 7).

    Trains each family's CIFAR-style network at each depth under one budget, on a generated 10-class
    texture task or on --data, and records per-layer gradient norms (at initialisation with and
    without batch norm, and after training) and per-layer response stds. Writes the curves, a
    summary, both per-layer tables and three figures; see docs/experiments.md. About 3 to 5 minutes
    on 2 CPU cores with the defaults. The paper's Fig. 6: --depths 20,32,44,56,110 --families
    plain,resnet --recipe he --data cifar-10-batches-py --steps 64000 --n-train 0 --n-test 0.
    """
    import torch

    from medseg.errors import MedsegError
    from medseg.experiments.degradation import FAMILIES, RECIPES, parse_depths, parse_list, run_degradation

    depth_list = parse_depths(depths)
    family_list = parse_list(families, list(FAMILIES), "--families")
    parse_list(recipe, list(RECIPES), "--recipe")
    if threads < 0:
        raise MedsegError(f"--threads {threads}: give 0 (torch's default) or a positive count")
    if threads:
        torch.set_num_threads(threads)
    console = Console(stderr=True)
    result = run_degradation(
        out, depth_list, steps=steps, batch_size=batch_size, lr=lr, image_size=image_size, n_train=n_train,
        n_test=n_test, seed=seed, families=family_list, recipe=recipe, data=data, on_progress=lambda msg: console.print(msg, highlight=False),
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
