"""Learning-rate schedules stepped once per optimizer step: linear warm-up, then cosine or poly.

With a time budget the schedule runs on whichever ends first, the steps or the time: its progress
is the larger of the step fraction and the budget's time fraction, so the learning rate reaches its
end when the time does instead of being cut off mid-schedule. The warm-up, too, ends at whichever
comes first: its steps or :data:`WARMUP_TIME_SHARE` of the steps' time.
"""

from __future__ import annotations

import math
import time

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

#: The warm-up takes at most this share of a time budget's step time. Planned runs count epochs as
#: 3× what the measured speed fits (the time ends them), so one epoch of warm-up was half of a
#: 5-minute 3D run on a slow CPU (163 of 326 steps), which then never trained at its full rate.
WARMUP_TIME_SHARE = 0.05


class Budget:
    """A wall-clock budget for the optimiser steps: the run's minutes less a reserve.

    ``reserve`` is what must be left when the steps stop (the last validation and saving); the
    loop updates it from what the validations took. ``spent`` counts time before this object
    existed (planning, a run's earlier sessions before a resume).
    """

    def __init__(self, seconds: float | None, spent: float = 0.0) -> None:
        self.seconds = seconds
        self.spent = spent
        self.reserve = 0.0
        self._start = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds used so far, ``spent`` included."""
        return self.spent + time.perf_counter() - self._start

    def step_seconds(self) -> float:
        """Seconds the optimiser steps may use in all: the budget less the reserve (0 without a budget)."""
        return max(1e-6, self.seconds - self.reserve) if self.seconds else 0.0

    def fraction(self) -> float:
        """Share of the step budget used (0 without a budget); the steps end at 1."""
        if not self.seconds:
            return 0.0
        return self.elapsed() / self.step_seconds()


def lr_factor(
    step: int, total: int, warmup: int, kind: str, time_fraction: float = 0.0, warmup_time: float = 0.0
) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) of ``total`` steps.

    ``time_fraction`` (0..1, see :class:`Budget`) moves the schedule on when time runs out first;
    ``warmup_time`` (0..1) is how far the warm-up's share of the time has run, and ends it at 1.
    """
    if warmup > 0 and step < warmup and warmup_time < 1.0:
        return max((step + 1) / warmup, warmup_time)
    if kind == "constant":
        return 1.0
    progress = min(1.0, max((step - warmup) / max(1, total - warmup), time_fraction))
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if kind == "poly":  # nnU-Net's polynomial decay
        return (1.0 - progress) ** 0.9
    raise ValueError(f"unknown schedule {kind!r}")


def build_scheduler(
    optimizer: Optimizer, kind: str, total_steps: int, warmup_steps: int, budget: Budget | None = None
) -> LambdaLR:
    """A per-step LambdaLR; its state dict resumes exactly (with a budget, as far as the clock allows).

    With a budget, the warm-up's time share counts from when the scheduler is built (after planning
    and caching, which the budget's fraction includes)."""
    if budget is None:
        return LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, warmup_steps, kind))
    start = min(1.0, budget.fraction())

    def factor(step: int) -> float:
        fraction = min(1.0, budget.fraction())
        warmed = (fraction - start) / max(1e-9, WARMUP_TIME_SHARE * (1.0 - start))
        return lr_factor(step, total_steps, warmup_steps, kind, fraction, warmed)

    return LambdaLR(optimizer, factor)
