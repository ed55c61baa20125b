"""Learning-rate schedules stepped once per optimizer step: linear warm-up, then cosine or poly."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) of ``total`` steps."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if kind == "poly":  # nnU-Net's polynomial decay
        return (1.0 - progress) ** 0.9
    raise ValueError(f"unknown schedule {kind!r}")


def build_scheduler(optimizer: Optimizer, kind: str, total_steps: int, warmup_steps: int) -> LambdaLR:
    """A per-step LambdaLR; its state dict resumes exactly."""
    return LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, warmup_steps, kind))
