"""The classic U-Net (Ronneberger et al. 2015), in 2D and 3D.

Encoder: a double conv-norm-ReLU block per level, max-pooling between levels. Decoder: up-sample
(transposed conv or interpolation), concatenate the encoder's skip of the same level, double conv.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import torch
from monai.networks.layers.factories import Conv, Pool
from torch import nn

from medseg.errors import MedsegError
from medseg.models.base import SegmentationModel
from medseg.models.blocks import DECODER_NORMS, DoubleConv, UpSample, check_channels, check_choice
from medseg.models.registry import register_model


@register_model("unet", "Classic U-Net (Ronneberger 2015): double conv-norm-ReLU, max-pool, up-conv, skips")
class UNet(SegmentationModel):
    """Classic U-Net.

    Args (besides those of :class:`~medseg.models.base.SegmentationModel`):
        features: channels per level, shallowest first; ``len(features) - 1`` poolings, so inputs
            are padded to a multiple of ``2 ** (len(features) - 1)`` inside and cropped back.
        strides: the pooling factor below each level (``len(features) - 1`` entries), each a number or
            one per axis; default 2 everywhere. ``[[2, 2, 1], 2, 2]`` keeps the thick axis of
            anisotropic volumes at full resolution in the first level, as nnU-Net plans it.
        upsample: ``"deconv"`` (transposed conv) or ``"interp"`` (1x1 conv + bi/trilinear).
        norm: ``"batch"``, ``"instance"`` or ``"group"``.
    """

    def __init__(
        self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2, *,
        features: Sequence[int] = (32, 64, 128, 256, 512),
        strides: Sequence[int | Sequence[int]] | None = None,
        upsample: str = "deconv",
        norm: str = "batch",
    ) -> None:
        super().__init__()
        feats = check_channels("features", features, length=2)
        check_choice("upsample", upsample, UpSample.MODES)
        check_choice("norm", norm, DECODER_NORMS)
        self.spatial_dims = spatial_dims
        self.strides = _strides(strides, len(feats) - 1, spatial_dims)
        self.multiple = tuple(math.prod(s[d] for s in self.strides) for d in range(spatial_dims))
        self.pools = nn.ModuleList(Pool[Pool.MAX, spatial_dims](s) for s in self.strides)
        self.down = nn.ModuleList(
            DoubleConv(spatial_dims, c_in, c_out, norm=norm) for c_in, c_out in zip((in_channels, *feats[:-1]), feats)
        )
        deep = feats[::-1]  # deepest first
        self.up = nn.ModuleList(UpSample(spatial_dims, c_in, c_out, upsample, s)
                                for (c_in, c_out), s in zip(pairwise(deep), self.strides[::-1]))
        self.decode = nn.ModuleList(DoubleConv(spatial_dims, 2 * c, c, norm=norm) for c in deep[1:])
        self.head = Conv[Conv.CONV, spatial_dims](feats[0], out_channels, 1)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pools[i - 1](x))
            skips.append(x)
        x = skips.pop()
        for up, block in zip(self.up, self.decode):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)

    def resolved_options(self) -> dict[str, Any]:
        """Strides as given (``None`` stays ``None``, so runs from before the option rebuild as they were)."""
        return {}


def _strides(strides: Sequence[int | Sequence[int]] | None, levels: int, dims: int) -> list[tuple[int, ...]]:
    """One per-axis pooling factor tuple per level; a one-line error for a wrong count or value."""
    if strides is None:
        return [(2,) * dims] * levels
    if len(strides) != levels:
        raise MedsegError(f"model option strides={list(strides)}: give {levels} entries, one per pooling "
                          f"(len(features) - 1)")
    out = []
    for s in strides:
        axes = tuple(int(v) for v in s) if isinstance(s, Sequence) else (int(s),) * dims
        if len(axes) != dims or min(axes) < 1:
            raise MedsegError(f"model option strides: {s!r} must be a positive number or {dims} of them")
        out.append(axes)
    return out
