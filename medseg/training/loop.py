"""The training loop: data, model, optimisation, validation, and a resumable run directory.

One function, :func:`train`, does the whole job for the CLI and for Python users. It runs on the GPU
when there is one (AMP, channels_last, cudnn.benchmark, optional torch.compile, pinned memory), on
the CPU otherwise, and under ``torchrun`` as DistributedDataParallel with only rank 0 writing.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader
from monai.inferers import sliding_window_inference
from monai.metrics import DiceMetric
from monai.networks.utils import one_hot
from monai.utils import set_determinism
from rich.console import Console
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from medseg import runtime
from medseg.config import ExperimentConfig, deep_merge, load_config, load_raw
from medseg.config import validate as validate_config
from medseg.data import datasets, synthetic, transforms
from medseg.errors import MedsegError
from medseg.models import build_model
from medseg.training import checkpoint, distributed
from medseg.training.losses import SegmentationLoss
from medseg.training.progress import TrainProgress, format_row
from medseg.training.schedule import build_scheduler
from medseg.utils import atomic_write_text, remove_stale_temporaries

#: Consecutive optimizer steps with non-finite gradients tolerated before training stops with an error.
MAX_BAD_STEPS = 20
METRIC_FIELDS = ["epoch", "train_loss", "val_loss", "val_dice", "lr", "epoch_seconds", "wall_seconds"]


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
class DataSetup:
    """The resolved dataset: where it is, what it holds, and the split."""

    root: Path
    info: datasets.DatasetInfo
    train_cases: list[datasets.Case]
    val_cases: list[datasets.Case]
    preprocess: dict[str, Any]


def resolve_data(cfg: ExperimentConfig, split_dir: Path | None = None) -> DataSetup:
    """Find (or generate) the dataset, infer dimensions, channels and preset, and split it."""
    if cfg.data.path:
        root = Path(cfg.data.path)
        if not root.exists():
            raise MedsegError(f"data.path {root}: folder not found; pass --data with a dataset folder")
    else:
        root = synthetic.ensure_demo_data(cfg.data.demo)
    info = datasets.discover(root)
    if len(cfg.data.patch_size) != info.spatial_dims:
        raise MedsegError(
            f"data.patch_size {cfg.data.patch_size} is {len(cfg.data.patch_size)}D but {root} holds "
            f"{info.spatial_dims}D images; set --set data.patch_size=[...] with {info.spatial_dims} sizes"
        )
    split_path = (split_dir or root) / "splits.json"
    train_cases, val_cases = datasets.load_or_make_split(
        info, split_path, val_fraction=cfg.data.val_fraction, seed=cfg.train.seed,
        fold=cfg.data.fold, num_folds=cfg.data.num_folds,
    )
    if not train_cases or not val_cases:
        raise MedsegError(f"{root}: {len(info.cases)} labelled case(s) cannot make a train/validation split; add cases")
    preset = cfg.data.preset or infer_preset(info)
    preprocess = {
        "preset": preset,
        "spatial_dims": info.spatial_dims,
        "patch_size": list(cfg.data.patch_size),
        "spacing": cfg.data.spacing,
        "ct_window": list(cfg.data.ct_window),
        "in_channels": info.num_channels,
        "labels": {str(k): v for k, v in info.labels.items()},
    }
    return DataSetup(root, info, train_cases, val_cases, preprocess)


def infer_preset(info: datasets.DatasetInfo) -> str:
    """Normalisation preset from the dataset: CT/MRI for volumes (by its declared modality), else 2D."""
    if info.spatial_dims == 2:
        return "rgb2d" if info.num_channels == 3 else "gray2d"
    modality = " ".join(str(m) for m in (getattr(info, "modalities", None) or [])).lower()
    return "ct" if "ct" in modality.split() else "mri"


def transform_kwargs(preprocess: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :func:`medseg.data.transforms.build_transforms` stored in a run."""
    return {
        "preset": preprocess["preset"],
        "spatial_dims": preprocess["spatial_dims"],
        "patch_size": preprocess["patch_size"],
        "spacing": preprocess["spacing"],
        "ct_window": tuple(preprocess["ct_window"]),
    }


def resume_config(run_dir: Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """A run's saved ``config.yaml`` with ``overrides`` (e.g. more epochs) merged in."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise MedsegError(f"--resume {run_dir}: no config.yaml there; pass a run directory made by medseg train")
    if not overrides:
        return load_config(path)
    return validate_config(deep_merge(load_raw(path), overrides), str(path))


def new_run_dir(cfg: ExperimentConfig) -> Path:
    """``<out>/<YYYYmmdd-HHMMSS>_<model>``, unique."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(cfg.out) / f"{stamp}_{cfg.model.name}"
    run_dir, k = base, 1
    while run_dir.exists():
        k += 1
        run_dir = base.with_name(f"{base.name}-{k}")
    return run_dir


def point_latest(run_dir: Path) -> None:
    """Make ``<parent>/latest`` a symlink to ``run_dir`` (replaced atomically)."""
    link = run_dir.parent / "latest"
    tmp = run_dir.parent / f".latest.{os.getpid()}"
    try:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        tmp.symlink_to(run_dir.name, target_is_directory=True)
        if link.exists() and not link.is_symlink():
            tmp.unlink()  # a real folder called 'latest': leave it alone
            return
        os.replace(tmp, link)
    except OSError:
        pass  # filesystems without symlinks: predict then needs --run


def _seed(cfg: ExperimentConfig, rank: int) -> None:
    seed = cfg.train.seed + rank
    set_determinism(seed=seed, use_deterministic_algorithms=cfg.train.deterministic or None)
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


class _RunFiles:
    """metrics.csv, log.txt and curves.png of a run, rewritten atomically after each epoch."""

    def __init__(self, run_dir: Path, label_names: list[str], enabled: bool) -> None:
        self.run_dir = run_dir
        self.enabled = enabled
        self.fields = METRIC_FIELDS[:4] + [f"dice_{n}" for n in label_names] + METRIC_FIELDS[4:]
        self.rows: list[dict[str, Any]] = []
        self.log_lines: list[str] = []

    def load(self, upto_epoch: int) -> None:
        """On resume: keep the rows and log of completed epochs only."""
        path = self.run_dir / "metrics.csv"
        if path.is_file():
            with path.open(newline="", encoding="utf-8") as handle:
                for row in csv.DictReader(handle):
                    if int(row["epoch"]) <= upto_epoch:
                        self.rows.append({k: _num(v) for k, v in row.items()})
        log = self.run_dir / "log.txt"
        if log.is_file():
            self.log_lines = log.read_text(encoding="utf-8").splitlines()

    def log(self, line: str) -> None:
        self.log_lines.append(f"{datetime.now().isoformat(timespec='seconds')} {line}")
        if self.enabled:
            atomic_write_text(self.run_dir / "log.txt", "\n".join(self.log_lines) + "\n")

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if not self.enabled:
            return
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.run_dir / "metrics.csv", buffer.getvalue())
        from medseg.evaluation.figures import plot_curves

        plot_curves(self.rows, self.run_dir / "curves.png")


def _num(value: str) -> Any:
    if value == "":
        return ""
    try:
        return int(value)
    except ValueError:
        return float(value)


def _infinite(loader: DataLoader, sampler: DistributedSampler | None, epoch: int) -> Iterator[dict[str, Any]]:
    """Cycle the loader (for a fixed ``steps_per_epoch``), advancing the sampler epoch each pass."""
    k = 0
    while True:
        if sampler is not None:
            sampler.set_epoch(epoch * 1000 + k)
        yield from loader
        k += 1


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
    console = console or Console(stderr=False)
    device = runtime.resolve_device(cfg.train.device)
    dist_info = distributed.init_distributed(device.type)
    if dist_info.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
    main = dist_info.is_main
    say = console.print if (main and not quiet) else (lambda *a, **k: None)

    start_epoch, state = 1, None
    if resume is not None:
        run_dir = Path(resume)
        state = checkpoint.load_state(run_dir / "state.pt")
        remove_stale_temporaries(run_dir)  # what a write interrupted by the crash left behind
        start_epoch = int(state["epoch"]) + 1
    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(cfg)

    _seed(cfg, dist_info.rank)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.train.deterministic

    # Data (rank 0 makes the demo data and the split; the others wait and read them).
    if main:
        setup = resolve_data(cfg)
    distributed.barrier(dist_info)
    if not main:
        setup = resolve_data(cfg)
    spatial_dims = setup.info.spatial_dims
    precision = runtime.resolve_precision(cfg.train.precision, device)
    channels_last = runtime.resolve_channels_last(cfg.train.channels_last, spatial_dims, device)

    tkw = transform_kwargs(setup.preprocess)
    train_tf = transforms.build_transforms(
        "train", **tkw, elastic=cfg.data.elastic, num_samples=cfg.data.num_samples
    )
    val_tf = transforms.build_transforms("val", **tkw)
    cache_dir = run_dir / ".cache" if cfg.data.cache == "disk" else None
    train_ds = transforms.build_dataset(datasets.to_monai_dicts(setup.train_cases), train_tf, cfg.data.cache, cache_dir)
    val_cases = setup.val_cases[dist_info.rank :: dist_info.world_size]
    val_ds = transforms.build_dataset(datasets.to_monai_dicts(val_cases), val_tf, cfg.data.cache, cache_dir)
    sampler = DistributedSampler(train_ds, shuffle=True, seed=cfg.train.seed) if dist_info.enabled else None
    generator = torch.Generator().manual_seed(cfg.train.seed)
    loader = DataLoader(
        train_ds, batch_size=cfg.train.batch_size, shuffle=sampler is None, sampler=sampler,
        num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda", generator=generator,
        drop_last=len(train_ds) > cfg.train.batch_size * max(1, dist_info.world_size),
    )
    val_loader = DataLoader(val_ds, batch_size=1, num_workers=cfg.data.num_workers)
    steps = cfg.train.steps_per_epoch or max(1, len(loader))

    # Model, loss, optimiser, schedule.
    num_classes = len(setup.info.labels)
    model = build_model(
        cfg.model.name, spatial_dims=spatial_dims, in_channels=setup.info.num_channels,
        out_channels=num_classes, **cfg.model.options,
    )
    model = runtime.prepare_module(model, device, spatial_dims, channels_last)
    net: nn.Module = model
    if dist_info.enabled:
        if device.type == "cuda":  # statistics over the global batch; gloo on the CPU lacks SyncBatchNorm
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.train.compile:
        net = torch.compile(net)
    loss_fn = SegmentationLoss(cfg.train.loss, cfg.train.deep_supervision_weights)
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.train.optimizer == "adamw":
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    else:
        optimizer = torch.optim.SGD(
            params, lr=cfg.train.lr, momentum=cfg.train.momentum, nesterov=True, weight_decay=cfg.train.weight_decay
        )
    scheduler = build_scheduler(
        optimizer, cfg.train.schedule, cfg.train.epochs * steps, round(cfg.train.warmup_epochs * steps)
    )
    scaler = torch.amp.GradScaler(device.type, enabled=precision.grad_scaler)

    files = _RunFiles(run_dir, [setup.info.labels[k] for k in sorted(setup.info.labels) if k != 0], main)
    best_dice, best_epoch, since_best = -1.0, 0, 0
    if state is not None:
        meta = checkpoint.load_weights(run_dir / "last.safetensors", model)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        checkpoint.set_rng_state(state["rng"])
        best_dice, best_epoch = float(state["best_dice"]), int(state["best_epoch"])
        since_best = int(state.get("since_best", 0))
        files.load(start_epoch - 1)
        if int(meta.get("epoch", start_epoch - 1)) != start_epoch - 1:
            say(f"[yellow]warning:[/] last.safetensors is from epoch {meta.get('epoch')}, state.pt from {start_epoch - 1}")

    build_args = dict(getattr(model, "build_args", {"name": cfg.model.name}))
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
        split_src = setup.root / "splits.json"
        if split_src.is_file() and not (run_dir / "splits.json").exists():
            shutil.copyfile(split_src, run_dir / "splits.json")
        point_latest(run_dir)
    describe = runtime.describe(device, precision, channels_last, runtime.allocator_plan("while training runs"))
    say(f"[bold]medseg train[/] {cfg.model.name} on {setup.root} "
        f"({len(setup.train_cases)} train / {len(setup.val_cases)} val cases, {spatial_dims}D)")
    say(describe)
    files.log(f"{'resume at epoch ' + str(start_epoch) if state else 'start'}: {cfg.model.name}; {describe}")
    writer = _tensorboard(run_dir) if main else None

    progress = TrainProgress(console, cfg.train.epochs, start_epoch, enabled=main and not quiet)
    t_start = time.perf_counter()
    elapsed_before = float(state["wall_seconds"]) if state else 0.0
    epoch = start_epoch - 1
    labels_fg = [k for k in sorted(setup.info.labels) if k != 0]
    allocator = contextlib.ExitStack()  # freed activations reused while the epochs run (runtime.py)
    allocator.enter_context(runtime.network_allocator(device))
    try:
        for epoch in range(start_epoch, cfg.train.epochs + 1):
            t_epoch = time.perf_counter()
            train_tf.set_random_state(seed=cfg.train.seed * 100_003 + epoch * 7919 + dist_info.rank)
            generator.manual_seed(cfg.train.seed + epoch)
            net.train()
            batches = _infinite(loader, sampler, epoch)
            progress.start_epoch(epoch, steps)
            loss_sum, skipped, bad_steps = 0.0, 0, 0
            for _ in range(steps):
                batch = next(batches)
                x = runtime.prepare_batch(batch["image"], device, spatial_dims, channels_last)
                y = runtime.plain(batch["label"]).to(device, non_blocking=True)
                optimizer.zero_grad(set_to_none=True)
                with runtime.autocast(precision, device):
                    outputs = net(x)
                loss = loss_fn(outputs, y)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                grad_norm = nn.utils.clip_grad_norm_(params, cfg.train.grad_clip or float("inf"))
                if precision.grad_scaler or torch.isfinite(grad_norm):
                    scaler.step(optimizer)  # fp16: the GradScaler itself skips non-finite steps
                    scaler.update()
                    bad_steps = 0
                else:  # bf16 overflow in a gradient: skip this step, as AMP's GradScaler does for fp16
                    optimizer.zero_grad(set_to_none=True)
                    skipped += 1
                    bad_steps += 1
                scheduler.step()
                loss_value = float(loss.detach())
                if bad_steps > MAX_BAD_STEPS or not math.isfinite(loss_value):
                    raise MedsegError(
                        f"train loss {loss_value:.4g} with non-finite gradients in {bad_steps} steps in a row at "
                        f"epoch {epoch}; lower train.lr (now {cfg.train.lr}) or use --precision fp32"
                    )
                loss_sum += loss_value
                progress.step(loss_value, scheduler.get_last_lr()[0])
            if skipped:
                files.log(f"epoch {epoch}: skipped {skipped} of {steps} steps with non-finite gradients")
            distributed.sync_buffers(model, dist_info)
            train_loss = float(distributed.all_reduce_sum(torch.tensor([loss_sum / steps]), dist_info)) / dist_info.world_size

            row: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss, "val_loss": "", "val_dice": "",
                                   "lr": scheduler.get_last_lr()[0]}
            improved = False
            if epoch % cfg.train.val_every == 0 or epoch == cfg.train.epochs:
                val_loss, per_class = validate(
                    model, val_loader, loss_fn, device, precision, channels_last, spatial_dims,
                    cfg.data.patch_size, cfg.inference.sw_batch_size, cfg.inference.overlap,
                    cfg.inference.blend, num_classes, dist_info,
                )
                dice = float(np.nanmean(per_class)) if np.isfinite(per_class).any() else 0.0
                row.update(val_loss=val_loss, val_dice=dice)
                for k, value in zip(labels_fg, per_class):
                    row[f"dice_{setup.info.labels[k]}"] = float(value)
                if dice > best_dice:
                    best_dice, best_epoch, since_best, improved = dice, epoch, 0, True
                else:
                    since_best += 1
            wall = elapsed_before + time.perf_counter() - t_start
            row.update(epoch_seconds=time.perf_counter() - t_epoch, wall_seconds=wall)

            if main:
                meta = {"build_args": build_args, "preprocess": setup.preprocess, "epoch": epoch,
                        "val_dice": row["val_dice"], "precision": precision.name, "medseg_format": 1}
                checkpoint.save_weights(run_dir / "last.safetensors", model, meta)
                if improved:
                    checkpoint.save_weights(run_dir / "best.safetensors", model, meta)
                checkpoint.save_state(run_dir / "state.pt", {
                    "epoch": epoch, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(), "rng": checkpoint.rng_state(), "best_dice": best_dice,
                    "best_epoch": best_epoch, "since_best": since_best, "wall_seconds": wall,
                    "precision": precision.name,
                })
                files.add(row)
                files.log(format_row(row, cfg.train.epochs))
                if writer is not None:
                    for key in ("train_loss", "val_loss", "val_dice", "lr"):
                        if row.get(key) != "":
                            writer.add_scalar(key, row[key], epoch)
            progress.end_epoch(row, cfg.train.epochs)

            stop = False
            if cfg.train.early_stopping and since_best >= cfg.train.early_stopping:
                files.log(f"early stopping: no better validation Dice for {since_best} validations")
                stop = True
            if cfg.train.max_minutes and wall / 60.0 >= cfg.train.max_minutes:
                files.log(f"time budget of {cfg.train.max_minutes} min reached after epoch {epoch}")
                stop = True
            if distributed.broadcast_flag(stop, dist_info, device):
                break
    finally:
        allocator.close()
        progress.close()
        if writer is not None:
            writer.close()

    wall = elapsed_before + time.perf_counter() - t_start
    if main and not (run_dir / "best.safetensors").exists() and (run_dir / "last.safetensors").exists():
        shutil.copyfile(run_dir / "last.safetensors", run_dir / "best.safetensors")
    files.log(f"done: best val dice {best_dice:.4f} at epoch {best_epoch}, {wall:.1f}s")
    say(f"[bold green]done[/] best val Dice {best_dice:.4f} (epoch {best_epoch}) in {wall:.0f}s; run: {run_dir}")
    distributed.barrier(dist_info)
    return TrainResult(run_dir, best_dice, best_epoch, epoch, wall, precision.name, model)


def validate(
    model: nn.Module,
    loader: DataLoader,
    loss_fn: SegmentationLoss,
    device: torch.device,
    precision: runtime.Precision,
    channels_last: bool,
    spatial_dims: int,
    patch_size: list[int],
    sw_batch_size: int,
    overlap: float,
    blend: str,
    num_classes: int,
    dist_info: distributed.DistInfo,
) -> tuple[float, np.ndarray]:
    """Whole-image sliding-window validation: mean loss and per-foreground-class Dice over all ranks.

    Cases whose ground truth lacks a class do not count towards that class's mean.
    """
    model.eval()
    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
    sums = torch.zeros(num_classes - 1, dtype=torch.float64)
    counts = torch.zeros(num_classes - 1, dtype=torch.float64)
    loss_total = torch.zeros(2, dtype=torch.float64)

    def predictor(patch: torch.Tensor) -> torch.Tensor:
        with runtime.autocast(precision, device):
            return model(runtime.prepare_batch(patch, device, spatial_dims, channels_last)).float()

    with runtime.inference_context():
        for batch in loader:
            x = runtime.plain(batch["image"]).to(device)
            y = runtime.plain(batch["label"]).to(device)
            logits = sliding_window_inference(
                x, roi_size=patch_size, sw_batch_size=sw_batch_size, predictor=predictor,
                overlap=overlap, mode=blend,
            )
            logits = runtime.plain(logits).float()
            loss_total += torch.tensor([float(loss_fn(logits, y)), 1.0], dtype=torch.float64)
            pred = one_hot(logits.argmax(1, keepdim=True), num_classes)
            dice = metric(pred, one_hot(y.long(), num_classes)).cpu().double()[0]
            valid = torch.isfinite(dice)
            sums += torch.where(valid, dice, torch.zeros_like(dice))
            counts += valid.double()
    sums = distributed.all_reduce_sum(sums, dist_info)
    counts = distributed.all_reduce_sum(counts, dist_info)
    loss_total = distributed.all_reduce_sum(loss_total, dist_info)
    per_class = torch.where(counts > 0, sums / counts.clamp(min=1), torch.full_like(sums, float("nan")))
    return float(loss_total[0] / loss_total[1].clamp(min=1)), per_class.numpy()


def _tensorboard(run_dir: Path) -> Any:
    """A TensorBoard writer in ``run_dir/tb`` when the tensorboard package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(run_dir / "tb"))
