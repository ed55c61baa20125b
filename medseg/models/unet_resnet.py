"""U-Net decoder on any registered encoder (``unet_resnet``), as smp's ``Unet`` and MONAI's ``FlexibleUNet``.

The decoder reads only the encoder's ``out_channels`` and ``reductions``: a block per skip (the
deeper map is mapped to the block's width by a 1x1 conv, up-sampled by nearest neighbour to the
skip's size, concatenated with it, then two conv-norm-ReLU),
and, when the shallowest map is below input resolution (``reductions[0] > 1``), a last block that
up-samples to the input size without a skip.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from medseg.errors import MedsegError
from medseg.models.blocks import (
    NORMS,
    DoubleConv,
    check_channels,
    check_choice,
    crop_to,
    pad_to_multiple,
    resize,
)
from medseg.models.registry import as_list, register_model

#: ``attention=`` choices for the decoder blocks.
ATTENTIONS = (None, "se")


def make_encoder(
    name: str,
    spatial_dims: int,
    in_channels: int,
    options: dict[str, Any] | None = None,
    weights: str | Path | None = None,
) -> nn.Module:
    """Build encoder ``name`` from :mod:`medseg.encoders` and optionally load local pretrained weights.

    ``options`` go to ``build_encoder``; ``weights`` is a local file given to ``load_pretrained``
    (torchvision, timm, MONAI or MedicalNet layout; adapted to ``in_channels`` and inflated to 3D there).
    """
    from medseg.encoders import build_encoder, list_encoders

    check_choice("encoder", name, list_encoders())
    if options is not None and not isinstance(options, dict):
        raise MedsegError(f"model option encoder_options={options!r}: give a mapping of encoder options")
    encoder = build_encoder(name, spatial_dims=spatial_dims, in_channels=in_channels, **dict(options or {}))
    if weights is not None:
        from medseg.encoders.weights import load_pretrained

        if not Path(weights).is_file():
            raise MedsegError(f"model option encoder_weights={weights}: no such file; give a local state-dict file")
        load_pretrained(encoder, weights)
    return encoder


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
class UNetResNet(nn.Module):
    """U-Net decoder on a registered encoder.

    Inputs are padded inside (replicate, far end) to a multiple of the encoder's largest reduction
    and the logits are cropped back, so any input size works.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: classes, background included.
        encoder: a name from ``medseg.encoders.list_encoders()``.
        decoder_channels: decoder block channels, deepest first (one per encoder skip, plus one for
            the final up-sampling when the encoder's first map is below input resolution).
        attention: ``"se"`` adds squeeze-and-excite to every decoder block; ``None`` does not.
        norm: decoder normalisation, ``"batch"``, ``"instance"`` or ``"group"``.
        encoder_options: keyword options for ``build_encoder`` (e.g. widths, stem).
        encoder_weights: a local pretrained state-dict file, loaded with ``load_pretrained``. It is an
            initialisation, not architecture, so ``build_args`` records it as ``None``.
    """

    num_outputs = 1

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        *,
        encoder: str = "resnet34",
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        attention: str | None = None,
        norm: str = "batch",
        encoder_options: dict[str, Any] | None = None,
        encoder_weights: str | None = None,
    ) -> None:
        super().__init__()
        check_choice("attention", attention, ATTENTIONS)
        check_choice("norm", norm, list(NORMS))
        self.encoder = make_encoder(encoder, spatial_dims, in_channels, encoder_options, encoder_weights)
        self.decoder = UNetDecoder(
            spatial_dims, self.encoder.out_channels, self.encoder.reductions, decoder_channels, norm, attention == "se"
        )
        self.head = Conv[Conv.CONV, spatial_dims](self.decoder.out_channels, out_channels, 1)
        self.multiple = max(self.encoder.reductions)
        self.encoder_frozen = False
        self.build_args = as_list({
            "name": "unet_resnet", "spatial_dims": spatial_dims, "in_channels": in_channels,
            "out_channels": out_channels, "encoder": encoder,
            "decoder_channels": [int(c) for c in decoder_channels][: len(self.decoder.blocks)], "attention": attention,
            "norm": norm, "encoder_options": dict(encoder_options or {}), "encoder_weights": None,
        })

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(N, out_channels, *x.shape[2:])`` for any input size."""
        x, size = pad_to_multiple(x, self.multiple)
        features = self.encoder(x)
        return crop_to(self.head(self.decoder(features, x.shape[2:])), size)

    def freeze_encoder(self, freeze: bool = True) -> None:
        """Stop training the encoder: no gradients, and its norm layers stay in eval mode (running
        statistics frozen) even when ``model.train()`` is called. ``freeze=False`` undoes it."""
        self.encoder_frozen = freeze
        for p in self.encoder.parameters():
            p.requires_grad_(not freeze)
        self.train(self.training)

    def train(self, mode: bool = True) -> UNetResNet:
        """As ``nn.Module.train``, but a frozen encoder's norm layers stay in eval mode."""
        super().train(mode)
        if getattr(self, "encoder_frozen", False):
            for module in self.encoder.modules():
                if isinstance(module, nn.modules.batchnorm._NormBase | nn.GroupNorm | nn.LayerNorm):
                    module.eval()
        return self
