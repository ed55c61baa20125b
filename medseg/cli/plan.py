"""``medseg plan``: the dataset's fingerprint and the plan for this machine, each choice with its reason."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medseg.cli import app


@app.command()
def plan(
    data: Annotated[Path, typer.Argument(help="Dataset folder (Folder, MSD or nnU-Net raw layout).")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the plan as a config YAML that medseg train --config accepts.")] = None,
    model: Annotated[str | None, typer.Option(help="Model to plan for (default: planned).")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="A config whose values the plan keeps.")] = None,
    max_minutes: Annotated[float | None, typer.Option(help="Wall-clock budget of the training run, in minutes.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N: the device the run will train on.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Fix a config value, e.g. --set data.patch_size=[96,96].")] = None,
    measure: Annotated[bool, typer.Option("--measure/--no-measure", help="Time a few real training steps here (else estimate from FLOPs).")] = True,
) -> None:
    """Fingerprint a dataset and plan a training run for it on this machine.

    Prints the fingerprint's tables, then one row per config value: the planned value and why, or 'yours' for the values your config or flags set, and a note when the budget is too short for the data on this machine, naming the --max-minutes that would do. -o writes the plan as a config file; `medseg train --config plan.yaml` then trains exactly that.
    """
    from rich.console import Console

    from medseg.config import resolve_config
    from medseg.data.resolve import resolve_data
    from medseg.planning import analyse
    from medseg.planning.display import fingerprint_tables, plan_summary, plan_table
    from medseg.planning.plan import plan_experiment
    from medseg.runtime import resolve_device
    from medseg.utils import atomic_write_text

    overrides: dict[str, dict[str, object]] = {"data": {"path": str(data)}, "train": {}}
    if max_minutes is not None:
        overrides["train"]["max_minutes"] = max_minutes
    if device is not None:
        overrides["train"]["device"] = device
    cfg = resolve_config(model=model, config=config, overrides=overrides, sets=set_ or [])
    setup = resolve_data(cfg)
    fp = analyse(setup.info, allow_empty=True).require_valid().fingerprint
    console = Console()
    for table in fingerprint_tables(fp):
        console.print(table)
    result = plan_experiment(cfg, fp, device=resolve_device(cfg.train.device), measure=measure)
    console.print(plan_table(result))
    console.print(plan_summary(result), highlight=False)
    for line in result.advice:
        console.print(f"[yellow]note:[/] {line}", highlight=False, soft_wrap=True)
    if output is not None:
        atomic_write_text(output, result.to_yaml(cfg))
        console.print(f"wrote {output}", highlight=False)
