"""U-Net decoder on any registered encoder (``unet_resnet``), as smp's ``Unet`` and MONAI's ``FlexibleUNet``.

The decoder reads only the encoder's ``out_channels`` and ``reductions``: a block per skip (the
deeper map is mapped to the block's width by a 1x1 conv, up-sampled by nearest neighbour to the
skip's size, concatenated with it, then two conv-norm-ReLU),
and, when the shallowest map is below input resolution (``reductions[0] > 1``), a last block that
up-samples to the input size without a skip.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from medseg.models.base import EncoderModel
from medseg.models.blocks import DECODER_NORMS, DoubleConv, check_channels, check_choice, resize
from medseg.models.registry import register_model

#: ``attention=`` choices for the decoder blocks.
ATTENTIONS = (None, "se")


class UNetDecoder(nn.Module):
    """U-Net decoder over a feature pyramid described by ``encoder_channels`` and ``reductions``.

    Args:
        spatial_dims: 2 or 3.
        encoder_channels: channels of each encoder map, highest resolution first.
        reductions: the input-to-map size ratio of each map, highest resolution first.
        decoder_channels: output channels of the blocks, deepest first; the first
            ``len(encoder_channels) - 1 + (reductions[0] > 1)`` entries are used.
        norm: normalisation of the conv blocks.
        se: squeeze-and-excite after each block.
        bottleneck_channels: channels of the deepest map as given to ``forward`` when a block (ASPP)
            sits between encoder and decoder; defaults to ``encoder_channels[-1]``.
    """

    def __init__(
        self,
        spatial_dims: int,
        encoder_channels: Sequence[int],
        reductions: Sequence[int],
        decoder_channels: Sequence[int],
        norm: str = "batch",
        se: bool = False,
        bottleneck_channels: int | None = None,
    ) -> None:
        super().__init__()
        skips = list(encoder_channels[:-1])[::-1]  # deepest skip first
        self.final_up = reductions[0] > 1
        n_blocks = len(skips) + int(self.final_up)
        channels = check_channels("decoder_channels", decoder_channels, length=n_blocks)[:n_blocks]
        ins = [bottleneck_channels or encoder_channels[-1], *channels[:-1]]
        skips += [0] * int(self.final_up)
        self.channels = channels
        self.out_channels = channels[-1]
        conv = Conv[Conv.CONV, spatial_dims]
        # before up-sampling to a skip, a 1x1 conv (at the low resolution, where it is cheap) maps the
        # deeper map to the block's width, as MONAI's UpCat does; the 3x3 convs then see fewer channels
        self.reduce = nn.ModuleList(
            conv(c_in, c_out, 1) if c_skip and c_in != c_out else nn.Identity()
            for c_in, c_skip, c_out in zip(ins, skips, channels)
        )
        self.blocks = nn.ModuleList(
            DoubleConv(spatial_dims, (c_out if c_skip else c_in) + c_skip, c_out, norm=norm, se=se)
            for c_in, c_skip, c_out in zip(ins, skips, channels)
        )

    def forward(self, features: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
        """``features`` highest resolution first (the deepest possibly replaced); ``size`` the input's."""
        x = features[-1]
        skips = list(features[:-1])[::-1]
        for i, (reduce, block) in enumerate(zip(self.reduce, self.blocks)):
            if i < len(skips):
                x = torch.cat([resize(reduce(x), skips[i].shape[2:]), skips[i]], dim=1)
            else:  # the final block: up to the input resolution, no skip
                x = resize(x, size)
            x = block(x)
        return x


@register_model("unet_resnet", "U-Net decoder on a registered encoder (default resnet34), a skip from every stage")
class UNetResNet(EncoderModel):
    """U-Net decoder on a registered encoder.

    Args (besides those of :class:`~medseg.models.base.EncoderModel`):
        decoder_channels: decoder block channels, deepest first (one per encoder skip, plus one for
            the final up-sampling when the encoder's first map is below input resolution).
        attention: ``"se"`` adds squeeze-and-excite to every decoder block; ``None`` does not.
        norm: decoder normalisation, ``"batch"``, ``"instance"`` or ``"group"``.
    """

    def __init__(
        self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2, *,
        encoder: str = "resnet34",
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        attention: str | None = None,
        norm: str = "batch",
        encoder_options: dict[str, Any] | None = None,
        encoder_weights: str | None = None,
    ) -> None:
        check_choice("attention", attention, ATTENTIONS)
        check_choice("norm", norm, DECODER_NORMS)
        super().__init__(spatial_dims, in_channels, encoder, encoder_options, encoder_weights)
        self.decoder = UNetDecoder(
            spatial_dims, self.encoder.out_channels, self.encoder.reductions, decoder_channels, norm, attention == "se"
        )
        self.head = Conv[Conv.CONV, spatial_dims](self.decoder.out_channels, out_channels, 1)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.decoder(self.encoder(x), x.shape[2:]))

    def resolved_options(self) -> dict[str, Any]:
        """The decoder channels the decoder uses, as ints; ``encoder_options`` as a mapping."""
        return {**super().resolved_options(), "decoder_channels": list(self.decoder.channels)}
