"""Whole-image validation with the same sliding window that prediction uses."""

from __future__ import annotations

import numpy as np
import torch
from monai.data import DataLoader
from monai.metrics import DiceMetric
from monai.networks.utils import one_hot

from medseg import runtime
from medseg.inferer import SlidingWindow
from medseg.training import distributed
from medseg.training.losses import SegmentationLoss


def validate(
    window: SlidingWindow,
    loader: DataLoader,
    loss_fn: SegmentationLoss,
    num_classes: int,
    dist_info: distributed.DistInfo,
) -> tuple[float, np.ndarray]:
    """Mean loss and per-foreground-class Dice over all ranks' cases.

    Cases whose ground truth lacks a class do not count towards that class's mean.
    """
    window.model.eval()
    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
    sums = torch.zeros(num_classes - 1, dtype=torch.float64)
    counts = torch.zeros(num_classes - 1, dtype=torch.float64)
    loss_total = torch.zeros(2, dtype=torch.float64)
    with torch.inference_mode():
        for batch in loader:
            x = runtime.plain(batch["image"]).to(window.device)
            y = runtime.plain(batch["label"]).to(window.device)
            logits = window(x)
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
