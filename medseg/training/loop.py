"""The training loop in named steps: prepare, restore, one epoch, validation, saving, stopping.

:func:`train` does the whole job for the CLI and for Python users. It runs on the GPU when there is
one (AMP, channels_last, cudnn.benchmark, optional torch.compile, pinned memory), on the CPU
otherwise, and under ``torchrun`` as DistributedDataParallel with only rank 0 writing.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader
from monai.utils import set_determinism
from rich.console import Console
from torch import nn
from torch.utils.data import DistributedSampler

from medseg import runtime, tuning
from medseg.config import ExperimentConfig, deep_merge, load_config, load_raw
from medseg.config import validate as validate_config
from medseg.data.resolve import DataSetup, resolve_data
from medseg.errors import MedsegError
from medseg.inferer import SlidingWindow
from medseg.planning import Fingerprint, analyse
from medseg.planning.display import plan_summary, plan_table
from medseg.planning.plan import Plan, plan_experiment
from medseg.run import (
    Preprocess,
    checkpoint_metadata,
    foreground_names,
    load_weights,
    new_run_dir,
    point_latest,
    save_weights,
)
from medseg.training import checkpoint, distributed
from medseg.training.losses import SegmentationLoss
from medseg.training.progress import TrainProgress, budget_fit, format_row
from medseg.training.runlog import RunLog, tensorboard_writer
from medseg.training.schedule import Budget, build_scheduler
from medseg.training.setup import (
    Loaders,
    build_loaders,
    build_network,
    build_optimizer,
    network_args,
    preprocess_for,
    step_shape,
)
from medseg.utils import atomic_write_json, atomic_write_text, remove_stale_temporaries

#: Consecutive optimizer steps with non-finite gradients tolerated before training stops with an error.
MAX_BAD_STEPS = 20


@dataclass
class TrainResult:
    """What a finished run left behind."""

    run_dir: Path
    best_dice: float
    best_epoch: int
    epochs_done: int
    wall_seconds: float
    precision: str
    model: nn.Module = field(repr=False)


@dataclass
class _Run:
    """Everything the epochs of one run share (built by :func:`_prepare`)."""

    cfg: ExperimentConfig
    run_dir: Path
    device: torch.device
    dist_info: distributed.DistInfo
    precision: runtime.Precision
    channels_last: bool
    setup: DataSetup
    preprocess: Preprocess
    loaders: Loaders
    model: nn.Module
    net: nn.Module
    loss_fn: SegmentationLoss
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    window: SlidingWindow
    files: RunLog
    console: Console
    quiet: bool
    budget: Budget
    plan: Plan | None = None
    layout: str = ""  # why channels_last is on or off
    start_epoch: int = 1
    best_dice: float = -1.0
    best_epoch: int = 0
    since_best: int = 0

    @property
    def main(self) -> bool:
        return self.dist_info.is_main

    def say(self, *args: Any, **kwargs: Any) -> None:
        """Print on the main rank unless quiet."""
        if self.main and not self.quiet:
            self.console.print(*args, **kwargs)

    @property
    def params(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]


def resume_config(run_dir: Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """A run's saved ``config.yaml`` with ``overrides`` (e.g. more epochs) merged in."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise MedsegError(f"--resume {run_dir}: no config.yaml there; pass a run directory made by medseg train")
    if not overrides:
        return load_config(path)
    return validate_config(deep_merge(load_raw(path), overrides), str(path))


def train(
    cfg: ExperimentConfig | None = None,
    run_dir: Path | None = None,
    resume: Path | None = None,
    console: Console | None = None,
    quiet: bool = False,
) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data`` and write a run directory; resume from one if given.

    With ``resume`` and no ``cfg``, the run's own ``config.yaml`` is used; pass a config (for example
    the saved one with more epochs, see :func:`resume_config`) to extend a run.
    """
    if cfg is None:
        if resume is None:
            raise ValueError("train() needs a config or a run directory to resume")
        cfg = resume_config(Path(resume))
    budget = Budget(None)  # the clock starts now: planning and caching count against --max-minutes
    run = _prepare(cfg, run_dir, resume, console or Console(stderr=False), quiet, budget)
    _write_run_start(run)
    epoch = _run_epochs(run)
    return _finish(run, epoch)


# -- preparing ------------------------------------------------------------------------------------------
def _prepare(
    cfg: ExperimentConfig, run_dir: Path | None, resume: Path | None, console: Console, quiet: bool, budget: Budget
) -> _Run:
    """Devices, seeds, data, plan, network, optimiser and run files; restored from ``resume`` if given."""
    device = runtime.resolve_device(cfg.train.device)
    dist_info = distributed.init_distributed(device.type)
    if dist_info.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
    state = checkpoint.load_state(Path(resume) / "state.pt") if resume is not None else None
    if resume is not None:
        run_dir = Path(resume)
        remove_stale_temporaries(run_dir)  # what a write interrupted by the crash left behind
    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(cfg.out, cfg.model.name)
    _seed(cfg, dist_info.rank)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.train.deterministic
    setup = _resolve_data_once(cfg, dist_info)
    if state is not None:
        budget.spent = float(state["wall_seconds"])
    cfg, plan, fingerprint = _plan(cfg, setup, device, dist_info, budget, console if dist_info.is_main and not quiet else None)
    budget.seconds = cfg.train.max_minutes * 60.0 if cfg.train.max_minutes else None
    preprocess = preprocess_for(cfg, setup, plan, fingerprint)
    precision = runtime.resolve_precision(cfg.train.precision, device)
    layout = tuning.choose_channels_last(cfg.train.channels_last, "train", network_args(cfg, preprocess),
                                         step_shape(cfg, preprocess), device, precision)
    channels_last = layout.channels_last
    loaders = build_loaders(cfg, setup, preprocess, dist_info, device, run_dir)
    model, net = build_network(cfg, preprocess, device, dist_info, channels_last)
    optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], cfg.train)
    steps = loaders.steps_per_epoch
    scheduler = build_scheduler(optimizer, cfg.train.schedule, cfg.train.epochs * steps,
                                round(cfg.train.warmup_epochs * steps), budget)
    window = SlidingWindow(model, preprocess.patch_size, cfg.inference, device, precision, channels_last)
    run = _Run(
        cfg, run_dir, device, dist_info, precision, channels_last, setup, preprocess, loaders, model, net,
        SegmentationLoss(cfg.train.loss, cfg.train.deep_supervision_weights), optimizer, scheduler,
        torch.amp.GradScaler(device.type, enabled=precision.grad_scaler), window,
        RunLog(run_dir, foreground_names(preprocess.labels), dist_info.is_main), console, quiet, budget, plan,
    )
    run.layout = layout.reason
    if state is not None:
        _restore(run, state)
    return run


def _seed(cfg: ExperimentConfig, rank: int) -> None:
    set_determinism(seed=cfg.train.seed + rank, use_deterministic_algorithms=cfg.train.deterministic or None)
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def _plan(
    cfg: ExperimentConfig, setup: DataSetup, device: torch.device, dist_info: distributed.DistInfo, budget: Budget,
    console: Console | None,
) -> tuple[ExperimentConfig, Plan | None, Fingerprint]:
    """Check the dataset (one line naming a bad file), fingerprint it, and plan what ``cfg`` leaves unset."""
    fingerprint = analyse(setup.info, allow_empty=True).require_valid().fingerprint  # empty masks train fine
    if not cfg.needs_planning():
        return cfg, None, fingerprint
    plan = plan_experiment(cfg, fingerprint, device=device, measure=not dist_info.enabled,
                           spent_seconds=budget.elapsed())
    if console is not None:
        console.print(plan_table(plan))
        console.print(plan_summary(plan), highlight=False)
        for line in plan.advice:
            console.print(f"[yellow]note:[/] {line}", highlight=False, soft_wrap=True)
    return plan.apply(cfg), plan, fingerprint


def _resolve_data_once(cfg: ExperimentConfig, dist_info: distributed.DistInfo) -> DataSetup:
    """Rank 0 makes the demo data and the split; the other ranks wait, then read them."""
    setup = resolve_data(cfg) if dist_info.is_main else None
    distributed.barrier(dist_info)
    return setup if setup is not None else resolve_data(cfg)


def _restore(run: _Run, state: dict[str, Any]) -> None:
    """Weights, optimiser, schedule, scaler, RNG and bookkeeping from a crashed or finished run."""
    run.start_epoch = int(state["epoch"]) + 1
    meta = load_weights(run.run_dir / "last.safetensors", run.model)
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    checkpoint.set_rng_state(state["rng"])
    run.best_dice, run.best_epoch = float(state["best_dice"]), int(state["best_epoch"])
    run.since_best = int(state.get("since_best", 0))
    run.files.load(run.start_epoch - 1)
    if int(meta.get("epoch", run.start_epoch - 1)) != run.start_epoch - 1:
        run.say(f"[yellow]warning:[/] last.safetensors is from epoch {meta.get('epoch')}, "
                f"state.pt from {run.start_epoch - 1}")


def _write_run_start(run: _Run) -> None:
    """config.yaml, splits.json and runs/latest; the start-of-run lines on screen and in log.txt."""
    cfg, setup = run.cfg, run.setup
    if run.main:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.run_dir / "config.yaml", cfg.to_yaml())
        if run.plan is not None and not (run.run_dir / "plan.yaml").exists():
            atomic_write_text(run.run_dir / "plan.yaml", run.plan.to_yaml(cfg))
            atomic_write_json(run.run_dir / "fingerprint.json", run.plan.fingerprint.to_dict())
        if setup.split_path.is_file() and not (run.run_dir / "splits.json").exists():
            shutil.copyfile(setup.split_path, run.run_dir / "splits.json")
        point_latest(run.run_dir)
    describe = runtime.describe(run.device, run.precision, run.channels_last,
                                runtime.allocator_plan("while training runs"), run.layout)
    run.say(f"[bold]medseg train[/] {cfg.model.name} on {setup.root} ({len(setup.train_cases)} train / "
            f"{len(setup.val_cases)} val cases, {run.preprocess.spatial_dims}D)")
    run.say(describe)
    started = f"resume at epoch {run.start_epoch}" if run.start_epoch > 1 else "start"
    run.files.log(f"{started}: {cfg.model.name}; {describe}")
    if run.plan is not None and run.start_epoch == 1:
        for line in run.plan.advice:
            run.files.log(f"plan note: {line}")


# -- the epochs -----------------------------------------------------------------------------------------
def _run_epochs(run: _Run) -> int:
    """Every epoch from ``start_epoch``: train, validate, save, maybe stop. Returns the last epoch run."""
    cfg = run.cfg
    progress = TrainProgress(run.console, cfg.train.epochs, run.start_epoch, enabled=run.main and not run.quiet)
    writer = tensorboard_writer(run.run_dir) if run.main else None
    epoch = run.start_epoch - 1
    try:
        with runtime.network_allocator(run.device):  # freed activations reused while the epochs run
            for epoch in range(run.start_epoch, cfg.train.epochs + 1):
                t_epoch = time.perf_counter()
                row: dict[str, Any] = {"epoch": epoch, "train_loss": _train_epoch(run, epoch, progress),
                                       "val_loss": "", "val_dice": "", "lr": run.scheduler.get_last_lr()[0]}
                improved = _validate_epoch(run, epoch, row)
                wall = run.budget.elapsed()
                row.update(epoch_seconds=time.perf_counter() - t_epoch, wall_seconds=wall)
                if run.main:
                    _save(run, epoch, row, improved, wall, writer)
                progress.end_epoch(row, cfg.train.epochs, _budget_note(run))
                if epoch == run.start_epoch:
                    _say_budget_fit(run, epoch, row["epoch_seconds"])
                if distributed.broadcast_flag(_should_stop(run, epoch, wall), run.dist_info, run.device):
                    break
    finally:
        progress.close()
        if writer is not None:
            writer.close()
    return epoch


def _say_budget_fit(run: _Run, epoch: int, epoch_seconds: float) -> None:
    """After the first epoch: whether ``--max-minutes`` ends the run before its last epoch."""
    budget, minutes = run.budget, run.cfg.train.max_minutes
    if not minutes or not budget.seconds:
        return
    line = budget_fit(epoch, run.cfg.train.epochs, budget.step_seconds() - budget.elapsed(), epoch_seconds, minutes)
    if line:
        run.say(line, highlight=False, soft_wrap=True)
        if run.main:
            run.files.log(line)


def _budget_note(run: _Run) -> str:
    """How much of ``--max-minutes`` is used, for the epoch line ('' without a budget)."""
    minutes = run.cfg.train.max_minutes
    return f"{min(1.0, run.budget.fraction()):.0%} of the {minutes:g}-min budget" if minutes else ""


def _batches(loader: DataLoader, sampler: DistributedSampler | None, epoch: int) -> Iterator[dict[str, Any]]:
    """Cycle the loader (for a fixed ``steps_per_epoch``), advancing the sampler epoch each pass."""
    k = 0
    while True:
        if sampler is not None:
            sampler.set_epoch(epoch * 1000 + k)
        yield from loader
        k += 1


def _train_epoch(run: _Run, epoch: int, progress: TrainProgress) -> float:
    """``steps_per_epoch`` optimiser steps with seeds replayed by epoch; the mean loss over all ranks."""
    loaders, cfg = run.loaders, run.cfg
    loaders.train_transform.set_random_state(seed=cfg.train.seed * 100_003 + epoch * 7919 + run.dist_info.rank)
    loaders.generator.manual_seed(cfg.train.seed + epoch)
    run.net.train()
    batches = _batches(loaders.train, loaders.sampler, epoch)
    progress.start_epoch(epoch, loaders.steps_per_epoch)
    loss_sum, skipped, bad_steps = 0.0, 0, 0
    done, waited, started = 0, 0.0, time.perf_counter()
    for _ in range(loaders.steps_per_epoch):
        if run.budget.fraction() >= 1.0:  # the time is up: validate and save what there is
            break
        t0 = time.perf_counter()
        batch = next(batches)
        waited += time.perf_counter() - t0
        loss_value, finite = _step(run, batch)
        done += 1
        skipped += not finite
        bad_steps = 0 if finite else bad_steps + 1
        if bad_steps > MAX_BAD_STEPS or not math.isfinite(loss_value):
            raise MedsegError(
                f"train loss {loss_value:.4g} with non-finite gradients in {bad_steps} steps in a row at "
                f"epoch {epoch}; lower train.lr (now {cfg.train.learning_rate:g}) or use --precision fp32"
            )
        loss_sum += loss_value
        progress.step(loss_value, run.scheduler.get_last_lr()[0])
    spent = time.perf_counter() - started
    run.files.log(f"epoch {epoch}: {done} steps in {spent:.1f} s, {waited:.1f} s of it waiting for data "
                  f"({100 * waited / max(spent, 1e-9):.0f} %)")
    if skipped:
        run.files.log(f"epoch {epoch}: skipped {skipped} of {loaders.steps_per_epoch} steps with non-finite gradients")
    distributed.sync_buffers(run.model, run.dist_info)
    mean = torch.tensor([loss_sum / max(1, done)])
    return float(distributed.all_reduce_sum(mean, run.dist_info)) / run.dist_info.world_size


def _step(run: _Run, batch: dict[str, Any]) -> tuple[float, bool]:
    """One optimiser step; ``(loss, gradients finite)``. A non-finite bf16 step is skipped, as AMP's
    GradScaler skips fp16 ones."""
    spatial_dims = run.preprocess.spatial_dims
    x = runtime.prepare_batch(batch["image"], run.device, spatial_dims, run.channels_last)
    y = runtime.plain(batch["label"]).to(run.device, non_blocking=True)
    run.optimizer.zero_grad(set_to_none=True)
    with runtime.autocast(run.precision, run.device):
        outputs = run.net(x)
    loss = run.loss_fn(outputs, y)
    run.scaler.scale(loss).backward()
    run.scaler.unscale_(run.optimizer)
    grad_norm = nn.utils.clip_grad_norm_(run.params, run.cfg.train.grad_clip or float("inf"))
    finite = bool(run.precision.grad_scaler or torch.isfinite(grad_norm))
    if finite:
        run.scaler.step(run.optimizer)  # fp16: the GradScaler itself skips non-finite steps
        run.scaler.update()
    else:
        run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()
    return float(loss.detach()), finite


def _validate_epoch(run: _Run, epoch: int, row: dict[str, Any]) -> bool:
    """Validate when the cadence says so; fill ``row`` and return whether the Dice improved."""
    cfg = run.cfg
    last = epoch == cfg.train.epochs or run.budget.fraction() >= 1.0
    if epoch % (cfg.train.val_every or 1) != 0 and not last:
        return False
    from medseg.training.validation import validate

    t0 = time.perf_counter()
    val_loss, per_class = validate(run.window, run.loaders.val, run.loss_fn, run.preprocess.num_classes,
                                   run.dist_info)
    run.budget.reserve = 1.5 * (time.perf_counter() - t0) + 2.0  # the last validation and saving must fit
    dice = float(np.nanmean(per_class)) if np.isfinite(per_class).any() else 0.0
    row.update(val_loss=val_loss, val_dice=dice)
    for name, value in zip(foreground_names(run.preprocess.labels), per_class, strict=True):
        row[f"dice_{name}"] = float(value)
    if dice > run.best_dice:
        run.best_dice, run.best_epoch, run.since_best = dice, epoch, 0
        return True
    run.since_best += 1
    return False


def _save(run: _Run, epoch: int, row: dict[str, Any], improved: bool, wall: float, writer: Any) -> None:
    """Weights (last, and best when improved), the resumable state, metrics, log and TensorBoard."""
    meta = checkpoint_metadata(run.model.build_args, run.preprocess, epoch=epoch, val_dice=row["val_dice"],
                               precision=run.precision.name)
    save_weights(run.run_dir / "last.safetensors", run.model, meta)
    if improved:
        save_weights(run.run_dir / "best.safetensors", run.model, meta)
    checkpoint.save_state(run.run_dir / "state.pt", {
        "epoch": epoch, "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(), "rng": checkpoint.rng_state(), "best_dice": run.best_dice,
        "best_epoch": run.best_epoch, "since_best": run.since_best, "wall_seconds": wall,
        "precision": run.precision.name,
    })
    run.files.add(row)
    run.files.log(format_row(row, run.cfg.train.epochs))
    if writer is not None:
        for key in ("train_loss", "val_loss", "val_dice", "lr"):
            if row.get(key) != "":
                writer.add_scalar(key, row[key], epoch)


def _should_stop(run: _Run, epoch: int, wall: float) -> bool:
    """Early stopping or the wall-clock budget, logged with the reason."""
    train_cfg = run.cfg.train
    if train_cfg.early_stopping and run.since_best >= train_cfg.early_stopping:
        run.files.log(f"early stopping: no better validation Dice for {run.since_best} validations")
        return True
    if train_cfg.max_minutes and run.budget.fraction() >= 1.0:
        run.files.log(f"time budget of {train_cfg.max_minutes} min reached after epoch {epoch} ({wall:.0f} s)")
        return True
    return False


def _finish(run: _Run, epoch: int) -> TrainResult:
    """best.safetensors exists (the last epoch's when validation never improved); the closing lines."""
    wall = run.budget.elapsed()
    best, last = run.run_dir / "best.safetensors", run.run_dir / "last.safetensors"
    if run.main and not best.exists() and last.exists():
        shutil.copyfile(last, best)
    run.files.log(f"done: best val dice {run.best_dice:.4f} at epoch {run.best_epoch}, {wall:.1f}s")
    run.say(f"[bold green]done[/] best val Dice {run.best_dice:.4f} (epoch {run.best_epoch}) in {wall:.0f}s; "
            f"run: {run.run_dir}")
    distributed.barrier(run.dist_info)
    return TrainResult(run.run_dir, run.best_dice, run.best_epoch, epoch, wall, run.precision.name, run.model)
