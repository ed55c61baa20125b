"""Dual U-Net with a ResNet encoder, in the DoubleU-Net design (Jha et al. 2020).

```
x ─► encoder 1 (ResNet) ─► ASPP ─► decoder 1 (2x conv-BN-ReLU + SE, skips from encoder 1) ─► output 1
│        │ skips                                                                              │
│        └───────────────────────────────────────────────┐              gate = P(foreground) ◄┘
└──────────────────────────────────────────► x * gate ─► encoder 2 (VGG-style, SE) ─► ASPP ─►
                                                         decoder 2 (skips from encoder 2 AND encoder 1) ─► output 2
```

Differences from the paper, and why: network 1's encoder is a registered ResNet instead of VGG-19,
so its skips sit at reductions (2, 4, 8, 16, 32); decoder 2 takes, for each of its levels, the
encoder-1 map of the nearest reduction, resampled (bi/trilinear) to the level's size. The paper
concatenates its two sigmoid masks as the output; here the outputs are multi-class logits, so the
final prediction is output 2 (network 2 already sees output 1 through the gate), and output 1 is
returned in training mode for deep supervision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.layers.factories import Conv, Pool
from torch import nn

from medseg.models.base import EncoderModel
from medseg.models.blocks import ASPP, DECODER_NORMS, DoubleConv, check_channels, check_choice, resize
from medseg.models.registry import register_model
from medseg.models.unet_resnet import UNetDecoder


def foreground_probability(logits: torch.Tensor) -> torch.Tensor:
    """P(any foreground class) per voxel, shape ``(N, 1, ...)``, from class logits.

    One channel (a binary logit): its sigmoid. Several channels (background first): one minus the
    softmax probability of background, which for two classes equals ``sigmoid(z1 - z0)``.
    """
    if logits.shape[1] == 1:
        return torch.sigmoid(logits)
    return 1.0 - torch.softmax(logits, dim=1)[:, :1]


def _nearest_map(reductions: Sequence[int], target: int) -> int:
    """Index of the map whose reduction is closest to ``target`` on a log scale (ties: the finer)."""
    return min(range(len(reductions)), key=lambda j: (abs(math.log2(reductions[j] / target)), reductions[j]))


@register_model("dual_unet_resnet", "Dual U-Net (DoubleU-Net, Jha 2020): ResNet net 1 + ASPP + SE, gated net 2")
class DualUNetResNet(EncoderModel):
    """Two stacked U-Nets; the second sees the input gated by the first one's foreground probability.

    Network 1: a registered encoder (default ``resnet34``), ASPP (rates 6, 12, 18 and image pooling),
    a decoder of 2x(conv-BN-ReLU) + squeeze-and-excite (ratio 8) blocks, a 1x1 head: ``out1``.
    Network 2: takes ``x * P_fg(out1)`` (see :func:`foreground_probability`); a VGG-style encoder of
    2x(conv-BN-ReLU) + SE blocks with ``features2`` channels and max-pooling, ASPP on the pooled
    deepest block, a decoder whose skips are encoder 2's block outputs AND encoder 1's maps of the
    nearest reduction, a 1x1 head: ``out2``.

    Returns: in training mode the tuple ``(out2, out1)`` (final first, for deep supervision); in eval
    mode ``out2`` alone, which is the prediction.

    Args (besides those of :class:`~medseg.models.base.EncoderModel`, which builds network 1's encoder):
        decoder_channels: network 1's decoder channels, deepest first (as ``unet_resnet``).
        features2: network 2's encoder channels per level, shallowest first; decoder 2 mirrors them.
            The paper's are (32, 64, 128, 256); the default halves them, which halves the model's
            FLOPs at a given input, so the demo trains on a small CPU.
        aspp: put ASPP between encoder and decoder in both networks (``False`` for the ablation).
        aspp_channels: ASPP output channels (64 in DoubleU-Net).
        se: squeeze-and-excite in decoder 1, encoder 2 and decoder 2 (``False`` for the ablation).
        norm: normalisation of the decoder and network-2 blocks.
    """

    num_outputs = 2

    def __init__(
        self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2, *,
        encoder: str = "resnet34",
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        features2: Sequence[int] = (16, 32, 64, 128),
        aspp: bool = True,
        aspp_channels: int = 64,
        se: bool = True,
        norm: str = "batch",
        encoder_options: dict[str, Any] | None = None,
        encoder_weights: str | None = None,
    ) -> None:
        check_choice("aspp", aspp, [True, False])
        check_choice("se", se, [True, False])
        check_choice("norm", norm, DECODER_NORMS)
        feats2 = check_channels("features2", features2, length=1)
        (aspp_ch,) = check_channels("aspp_channels", [aspp_channels])
        conv = Conv[Conv.CONV, spatial_dims]

        # network 1
        super().__init__(spatial_dims, in_channels, encoder, encoder_options, encoder_weights)
        enc_ch, red = list(self.encoder.out_channels), list(self.encoder.reductions)
        self.aspp1 = ASPP(spatial_dims, enc_ch[-1], aspp_ch, norm=norm) if aspp else nn.Identity()
        self.decoder1 = UNetDecoder(
            spatial_dims, enc_ch, red, decoder_channels, norm, se, bottleneck_channels=aspp_ch if aspp else None
        )
        self.head1 = conv(self.decoder1.out_channels, out_channels, 1)

        # network 2
        self.pool = Pool[Pool.MAX, spatial_dims](2)
        self.encoder2 = nn.ModuleList(
            DoubleConv(spatial_dims, c_in, c_out, norm=norm, se=se) for c_in, c_out in zip((in_channels, *feats2), feats2)
        )
        self.aspp2 = ASPP(spatial_dims, feats2[-1], aspp_ch, norm=norm) if aspp else nn.Identity()
        self.skip1 = [_nearest_map(red, 2**level) for level in range(len(feats2))]  # encoder-1 map per level
        ins = [aspp_ch if aspp else feats2[-1], *feats2[::-1][:-1]]
        self.decoder2 = nn.ModuleList(
            DoubleConv(spatial_dims, c_in + c_out + enc_ch[self.skip1[level]], c_out, norm=norm, se=se)
            for c_in, c_out, level in zip(ins, feats2[::-1], reversed(range(len(feats2))))
        )
        self.head2 = conv(feats2[0], out_channels, 1)

        self.multiple = max(*red, 2 ** len(feats2))

    def _forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Training: ``(out2, out1)``; eval: ``out2``."""
        # network 1
        feats1 = self.encoder(x)
        out1 = self.head1(self.decoder1([*feats1[:-1], self.aspp1(feats1[-1])], x.shape[2:]))
        # network 2 on the gated input
        h = x * foreground_probability(out1)
        skips2: list[torch.Tensor] = []
        for i, block in enumerate(self.encoder2):
            h = block(h if i == 0 else self.pool(h))
            skips2.append(h)
        h = self.aspp2(self.pool(h))
        for block, skip2, j in zip(self.decoder2, reversed(skips2), reversed(self.skip1)):
            size_l = skip2.shape[2:]
            h = block(torch.cat([resize(h, size_l), skip2, resize(feats1[j], size_l, "linear")], dim=1))
        out2 = self.head2(h)
        return (out2, out1) if self.training else out2

    def resolved_options(self) -> dict[str, Any]:
        """Network 1's decoder channels as its decoder uses them, as ints; ``encoder_options`` as a mapping."""
        return {**super().resolved_options(), "decoder_channels": list(self.decoder1.channels)}
