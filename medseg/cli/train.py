"""``medseg train``: config-driven training, resumable, on the GPU when there is one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from medseg.cli import app
from medseg.run import is_cross_validation


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
    resume: Annotated[Path | None, typer.Option(help="Continue the run (or cross-validation) in this directory where it stopped.")] = None,
    folds: Annotated[int | None, typer.Option("--folds", help="Cross-validate: train K folds as runs under one parent run directory (shared splits.json; --max-minutes is shared by all folds), then evaluate them out of fold, choose post-processing and write cv_summary.json. The same command continues an interrupted one.")] = None,
    fold: Annotated[int | None, typer.Option("--fold", help="Train only this fold of the --folds cross-validation (default 5 folds).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Train a segmentation model and write a run directory (config, plan, weights, metrics, curves).

    With --data DIR, whatever the config does not set is planned from the dataset, the machine and --max-minutes (see medseg plan); the plan is printed and saved in the run as plan.yaml.

    With no options it trains dual_unet_resnet on the 2D demo data, generating it first if missing.

    With --folds K it trains K folds under runs/<time>_<model>_cv<K> (or --out), summarises them (see medseg cv) and points runs/latest at the parent, so medseg predict averages the folds.

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
        if is_cross_validation(resume):
            _cross_validate(None, resume, None, None, quiet)
            return
        cfg = resume_config(resume, deep_merge(overrides, parse_set(set_ or [])))
        run_training(cfg, resume=resume, quiet=quiet)
        return
    cfg = resolve_config(model=model, config=config, overrides=overrides, sets=set_ or [])
    if folds is not None or fold is not None:
        _cross_validate(cfg, out, folds or 5, fold, quiet)
        return
    run_training(cfg, run_dir=out, quiet=quiet)


def _cross_validate(cfg: Any, out: Path | None, folds: int | None, fold: int | None, quiet: bool) -> None:
    """Train the folds (all, or one); when every fold has finished, summarise them."""
    from rich.console import Console

    from medseg.training.folds import parent_config, read_cv, train_folds

    if cfg is None:  # --resume PARENT
        assert out is not None
        cfg, folds = parent_config(out), read_cv(out)["folds"]
    assert folds is not None
    console = Console()
    result = train_folds(cfg, folds, out, None if fold is None else [fold], console, quiet)
    if not result.complete:
        left = sorted(set(range(folds)) - set(read_cv(result.parent)["finished"]))
        console.print(f"folds {', '.join(map(str, left))} still to train; the summary follows when they finish "
                      f"(medseg train --folds {folds} --out {result.parent})", highlight=False)
        return
    from medseg.cli.cv import print_summary
    from medseg.experiments.crossval import summarise

    progress = None if quiet else lambda msg: console.print(msg, highlight=False)
    print_summary(summarise(result.parent, progress, cfg.train.device, cfg.train.precision))
