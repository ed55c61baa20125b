"""Losses: MONAI's DiceCE (default) or Dice+Focal, wrapped in MONAI's DeepSupervisionLoss."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss, DiceFocalLoss
from torch import nn

LOSSES = {
    "dice_ce": lambda: DiceCELoss(to_onehot_y=True, softmax=True, smooth_nr=1e-5, smooth_dr=1e-5),
    "dice_focal": lambda: DiceFocalLoss(to_onehot_y=True, softmax=True, smooth_nr=1e-5, smooth_dr=1e-5),
}


class SegmentationLoss(nn.Module):
    """The base loss summed over a model's outputs ``(main, aux1, ...)`` with ``weights``.

    For ``dual_unet_resnet`` the outputs are ``(output 2, output 1)`` and the default weights
    ``(1.0, 0.5)``. Weights are normalised to sum to one over the outputs present, so the loss scale
    does not depend on how many outputs a model has. Logits are cast to fp32 first: losses never
    run in reduced precision.
    """

    def __init__(self, name: str = "dice_ce", weights: Sequence[float] = (1.0, 0.5)) -> None:
        super().__init__()
        if name not in LOSSES:
            raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
        self.weights = [float(w) for w in weights]
        self.loss = DeepSupervisionLoss(LOSSES[name](), weights=self.weights)

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return self.loss(outputs.float(), target)
        outs = [o.float() for o in outputs]
        norm = sum(self.loss.get_weights(len(outs)))
        return self.loss(outs, target) / norm
