"""FCN (Long et al. 2015) on a registered encoder: the ``fcn32s`` / ``fcn16s`` / ``fcn8s`` baselines.

A 1x1 "score" conv maps each of the last one, two or three encoder stages to class logits. Starting
from the deepest, the coarse scores are up-sampled (bi/trilinear) to the next stage's size and added
to its scores; the fused scores are up-sampled to the input size. With ResNet reductions
(..., 8, 16, 32) that gives the paper's 32s, 16s and 8s output strides.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from medseg.errors import MedsegError
from medseg.models.base import EncoderModel
from medseg.models.blocks import check_choice, resize
from medseg.models.registry import register_model

#: Variant name -> number of encoder stages scored (deepest first).
VARIANTS = {"fcn32s": 1, "fcn16s": 2, "fcn8s": 3}


@register_model("fcn", "FCN baseline (Long 2015) on a registered encoder (default resnet34); fcn8s/16s/32s")
class FCN(EncoderModel):
    """Fully convolutional network with skip fusion by up-sample-and-add.

    Args (besides those of :class:`~medseg.models.base.EncoderModel`):
        variant: ``"fcn8s"`` (default; scores of the last three stages), ``"fcn16s"`` (two) or
            ``"fcn32s"`` (the deepest only).
    """

    def __init__(
        self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2, *,
        encoder: str = "resnet34",
        variant: str = "fcn8s",
        encoder_options: dict[str, Any] | None = None,
        encoder_weights: str | None = None,
    ) -> None:
        check_choice("variant", variant, list(VARIANTS))
        super().__init__(spatial_dims, in_channels, encoder, encoder_options, encoder_weights)
        stages = VARIANTS[variant]
        if len(self.encoder.out_channels) < stages:
            raise MedsegError(f"model option variant={variant}: encoder {encoder} has only "
                              f"{len(self.encoder.out_channels)} feature maps; use fcn32s or a deeper encoder")
        channels = list(self.encoder.out_channels)[::-1][:stages]  # deepest first
        self.scores = nn.ModuleList(Conv[Conv.CONV, spatial_dims](c, out_channels, 1) for c in channels)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)[::-1]  # deepest first
        out = self.scores[0](features[0])
        for score, feature in zip(self.scores[1:], features[1:]):
            out = resize(out, feature.shape[2:], "linear") + score(feature)
        return resize(out, x.shape[2:], "linear")
