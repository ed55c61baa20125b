"""The pieces a training run is built from: preprocessing contract, loaders, network, optimiser.

Each builder takes the resolved config and returns one thing, so :func:`medseg.training.train`
reads as the list of its steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.data import DataLoader
from monai.transforms import Compose
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from medseg import runtime
from medseg.config import ExperimentConfig, TrainConfig
from medseg.data import datasets
from medseg.data.cache import build_dataset
from medseg.data.resolve import DataSetup, infer_preset
from medseg.errors import MedsegError
from medseg.models import build_model
from medseg.planning import Fingerprint
from medseg.planning.envelope import envelope
from medseg.planning.plan import Plan
from medseg.run import DEFAULT_CT_WINDOW, Preprocess
from medseg.training.distributed import DistInfo

Params = list[nn.Parameter]

#: Optimisers by ``train.optimizer``; each takes the trainable parameters and the train section.
OPTIMIZERS: dict[str, Callable[[Params, TrainConfig], torch.optim.Optimizer]] = {
    "adamw": lambda params, t: torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay),
    "sgd": lambda params, t: torch.optim.SGD(
        params, lr=t.learning_rate, momentum=t.momentum, nesterov=True, weight_decay=t.weight_decay
    ),
}


def build_optimizer(params: Params, train_cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser ``train.optimizer`` names, over ``params``."""
    return OPTIMIZERS[train_cfg.optimizer](params, train_cfg)


def preprocess_for(
    cfg: ExperimentConfig, setup: DataSetup, plan: Plan | None = None, fingerprint: Fingerprint | None = None
) -> Preprocess:
    """The preprocessing contract of this run: the config's data section on this dataset, with the
    plan's reasons and the training data's envelope (for ``predict``'s warnings) when there are."""
    info = setup.info
    assert cfg.data.patch_size is not None, "plan the config first (medseg.planning)"
    if len(cfg.data.patch_size) != info.spatial_dims:
        raise MedsegError(
            f"data.patch_size {cfg.data.patch_size} is {len(cfg.data.patch_size)}D but {setup.root} holds "
            f"{info.spatial_dims}D images; set --set data.patch_size=[...] with {info.spatial_dims} sizes"
        )
    return Preprocess(
        preset=cfg.data.preset or infer_preset(info), spatial_dims=info.spatial_dims,
        patch_size=tuple(cfg.data.patch_size), in_channels=info.num_channels, labels=dict(info.labels),
        spacing=tuple(cfg.data.spacing) if cfg.data.spacing is not None else None,
        ct_window=tuple(cfg.data.ct_window) if cfg.data.ct_window is not None else DEFAULT_CT_WINDOW,  # type: ignore[arg-type]
        intensity=cfg.data.intensity if cfg.data.ct_window is None else None,
        plan=plan.to_dict() if plan is not None else None,
        fingerprint=envelope(fingerprint) if fingerprint is not None else None, colours=dict(info.colours),
    )


@dataclass
class Loaders:
    """The training and validation loaders, and what re-seeding them each epoch needs."""

    train_transform: Compose
    train: DataLoader
    val: DataLoader
    sampler: DistributedSampler | None
    generator: torch.Generator
    steps_per_epoch: int


def build_loaders(
    cfg: ExperimentConfig, setup: DataSetup, preprocess: Preprocess, dist_info: DistInfo, device: torch.device,
    run_dir: Path,
) -> Loaders:
    """Cached datasets, the (distributed) sampler and loaders; validation cases sharded by rank."""
    train_tf = preprocess.transforms("train", elastic=cfg.data.elastic, num_samples=cfg.data.num_samples or 2,
                                     class_ratios=cfg.data.class_ratios)
    val_tf = preprocess.transforms("val")
    cache_dir = run_dir / ".cache" if cfg.data.cache == "disk" else None
    train_ds = build_dataset(datasets.to_monai_dicts(setup.train_cases), train_tf, cfg.data.cache, cache_dir)
    val_cases = setup.val_cases[dist_info.rank :: dist_info.world_size]
    val_ds = build_dataset(datasets.to_monai_dicts(val_cases), val_tf, cfg.data.cache, cache_dir)
    sampler = DistributedSampler(train_ds, shuffle=True, seed=cfg.train.seed) if dist_info.enabled else None
    generator = torch.Generator().manual_seed(cfg.train.seed)
    loader = DataLoader(
        train_ds, batch_size=cfg.train.batch_size, shuffle=sampler is None, sampler=sampler,
        num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda", generator=generator,
        drop_last=len(train_ds) > cfg.train.batch_size * max(1, dist_info.world_size),
    )
    val_loader = DataLoader(val_ds, batch_size=1, num_workers=cfg.data.num_workers)
    steps = cfg.train.steps_per_epoch or max(1, len(loader))
    return Loaders(train_tf, loader, val_loader, sampler, generator, steps)


def network_args(cfg: ExperimentConfig, preprocess: Preprocess) -> dict[str, Any]:
    """The keyword arguments of :func:`~medseg.models.build_model` for this run's network."""
    return {"name": cfg.model.name, "spatial_dims": preprocess.spatial_dims, "in_channels": preprocess.in_channels,
            "out_channels": preprocess.num_classes, **cfg.model.options}


def step_shape(cfg: ExperimentConfig, preprocess: Preprocess) -> tuple[int, ...]:
    """The shape of one training batch: cases × patches per case, channels, the patch."""
    patches = (cfg.train.batch_size or 1) * (cfg.data.num_samples or 2)
    return (patches, preprocess.in_channels, *preprocess.patch_size)


def build_network(
    cfg: ExperimentConfig, preprocess: Preprocess, device: torch.device, dist_info: DistInfo, channels_last: bool
) -> tuple[nn.Module, nn.Module]:
    """``(model, net)``: the model on its device, and what the steps call (DDP- and compile-wrapped)."""
    model = build_model(**network_args(cfg, preprocess))
    model = runtime.prepare_module(model, device, preprocess.spatial_dims, channels_last)
    net: nn.Module = model
    if dist_info.enabled:
        if device.type == "cuda":  # statistics over the global batch; gloo on the CPU lacks SyncBatchNorm
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.train.compile:
        net = torch.compile(net)
    return model, net
