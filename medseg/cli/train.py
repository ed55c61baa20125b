"""``medseg train``: config-driven training, resumable, on the GPU when there is one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from medseg.cli import app


def _overrides(**values: Any) -> dict[str, Any]:
    """CLI flags that were given, as a nested config mapping."""
    where = {
        "data": "data.path", "epochs": "train.epochs", "batch_size": "train.batch_size", "lr": "train.lr",
        "device": "train.device", "seed": "train.seed", "precision": "train.precision",
        "max_minutes": "train.max_minutes",
    }
    out: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        section, key = where[name].split(".")
        out.setdefault(section, {})[key] = str(value) if isinstance(value, Path) else value
    return out


@app.command()
def train(
    model: Annotated[str | None, typer.Option(help="Model name (see `medseg models`); default: dual_unet_resnet on the demo, planned for --data.")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Experiment YAML (or a built-in name: nuclei2d, organ3d, unet, ...).")] = None,
    data: Annotated[Path | None, typer.Option(help="Dataset folder (Folder, MSD or nnU-Net raw layout); default: the generated demo data.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Number of epochs (overrides train.epochs); planned when not set.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Cases per step (overrides train.batch_size); planned when not set.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate (overrides train.lr).")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory to create; default runs/<time>_<model>.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N; auto takes the GPU when there is one.")] = None,
    precision: Annotated[str | None, typer.Option(help="auto, fp32, bf16 or fp16; auto: bf16 where the GPU or CPU has it.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (split, initialisation, augmentation).")] = None,
    max_minutes: Annotated[float | None, typer.Option(help="Wall-clock budget in minutes, planning included; the schedule ends when it does.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any other config value, e.g. --set train.loss=dice_focal (repeatable).")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the run in this directory where it stopped.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Train a segmentation model and write a run directory (config, plan, weights, metrics, curves).

    With --data DIR, whatever the config does not set is planned from the dataset, the machine and --max-minutes (see medseg plan); the plan is printed and saved in the run as plan.yaml.

    With no options it trains dual_unet_resnet on the 2D demo data, generating it first if missing.

    Under `torchrun --nproc_per_node=N -m medseg train ...` it trains with DistributedDataParallel.
    """
    from medseg.config import deep_merge, parse_set, resolve_config
    from medseg.training import resume_config
    from medseg.training import train as run_training

    overrides = _overrides(
        data=data, epochs=epochs, batch_size=batch_size, lr=lr, device=device, seed=seed,
        precision=precision, max_minutes=max_minutes,
    )
    if resume is not None:
        if model or config:
            typer.echo("error: --resume continues a run with its own config; drop --model/--config", err=True)
            raise typer.Exit(2)
        cfg = resume_config(resume, deep_merge(overrides, parse_set(set_ or [])))
        run_training(cfg, resume=resume, quiet=quiet)
        return
    cfg = resolve_config(model=model, config=config, overrides=overrides, sets=set_ or [])
    run_training(cfg, run_dir=out, quiet=quiet)
