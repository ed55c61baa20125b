"""Highway networks (Srivastava, Greff & Schmidhuber 2015) as a 2D/3D encoder and a CIFAR-style family.

A highway layer carries its input through a learned gate instead of ResNet's fixed identity:
``y = H(x) · T(x) + x · (1 − T(x))`` with ``H = relu(norm(conv3x3(x)))`` and the transform gate
``T = σ(conv3x3(x) + b_T)``. ``b_T`` starts negative, so at initialisation every layer mostly
carries its input and a deep stack trains (the paper suggests −1, −2 and −3 for depths of about
10, 20 and 30; :func:`gate_bias_for` follows that). Where the width or resolution changes a plain
layer (``relu(norm(conv3x3, stride 2))``) does it, as in the paper.

The family mirrors the CIFAR ResNets layer for layer: ``highway<6n+2>`` has a 3x3 stem, three stages
of ``2n`` layers (16, 32 and 64 channels; each later stage's first layer the plain stride-2 one) and
the classifier, so depth counts the same convs a ResNet-(6n+2) has. Feature maps, ``out_channels``
``(16, 16, 32, 64)`` and ``reductions`` ``(1, 1, 2, 4)`` are the CIFAR ResNets', so every decoder
takes a highway encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from medseg.encoders.base import EncoderBase
from medseg.encoders.norms import NORMS, make_norm
from medseg.encoders.registry import register_encoder
from medseg.encoders.resnet_blocks import conv
from medseg.errors import MedsegError
from medseg.registry import check_options, keyword_options


def gate_bias_for(depth: int) -> float:
    """The paper's gate-bias rule of thumb: −1 near 10 layers, −2 near 20, −3 from 30 on."""
    return -float(min(3, max(1, round(depth / 10))))


class HighwayLayer(nn.Module):
    """``y = H(x)·T(x) + x·(1 − T(x))``; ``H`` a 3x3 conv-norm-ReLU, ``T`` a sigmoid-gated 3x3 conv."""

    def __init__(self, spatial_dims: int, channels: int, gate_bias: float, norm: str = "batch") -> None:
        super().__init__()
        self.conv = conv(spatial_dims, channels, channels, 3)
        self.bn = make_norm(norm, spatial_dims, channels, 8)
        self.relu = nn.ReLU(inplace=True)
        self.gate = Conv[Conv.CONV, spatial_dims](channels, channels, kernel_size=3, padding=1, bias=True)
        nn.init.constant_(self.gate.bias, gate_bias)

    def transform_gate(self, x: torch.Tensor) -> torch.Tensor:
        """``T(x)`` in (0, 1), one value per channel and voxel."""
        return torch.sigmoid(self.gate(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.transform_gate(x)
        h = self.relu(self.bn(self.conv(x)))
        return x + t * (h - x)  # = h·t + x·(1 − t), with x kept exactly where t = 0

    def conv_norm_pairs(self) -> list[tuple[str, str]]:
        return [("conv", "bn")]


def _plain(spatial_dims: int, cin: int, cout: int, stride: int, norm: str) -> nn.Sequential:
    """The layer that changes width or resolution: conv3x3-norm-ReLU, no gate."""
    return nn.Sequential(conv(spatial_dims, cin, cout, 3, stride), make_norm(norm, spatial_dims, cout, 8),
                         nn.ReLU(inplace=True))


class HighwayEncoder(EncoderBase):
    """A 2D or 3D highway network returning ``[stem, stage1, stage2, stage3]`` (CIFAR ResNet shapes).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        layers: highway layers per stage (a later stage's plain stride-2 layer comes first and counts).
        widths: channels per stage.
        gate_bias: initial ``b_T``; default :func:`gate_bias_for` the network's depth.
        norm: ``batch``, ``instance``, ``group`` or ``none``.
        num_classes: add ``fc`` for ``classify(x)`` (global average pool + linear).
    """

    def __init__(
        self, spatial_dims: int = 2, in_channels: int = 1, *, layers: Sequence[int] = (6, 6, 6),
        widths: Sequence[int] = (16, 32, 64), gate_bias: float | None = None, norm: str = "batch",
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        layers, widths = [int(n) for n in layers], [int(w) for w in widths]
        _check(spatial_dims, in_channels, layers, widths, norm)
        self.spatial_dims, self.in_channels, self.num_classes = spatial_dims, in_channels, num_classes
        self.depth = sum(layers) + 2
        bias = gate_bias_for(self.depth) if gate_bias is None else float(gate_bias)
        self.stem = _plain(spatial_dims, in_channels, widths[0], 1, norm)
        stages, cin = [], widths[0]
        for i, (n, width) in enumerate(zip(layers, widths, strict=True)):
            blocks: list[nn.Module] = [] if i == 0 and cin == width else [_plain(spatial_dims, cin, width, 1 if i == 0 else 2, norm)]
            blocks += [HighwayLayer(spatial_dims, width, bias, norm) for _ in range(n - len(blocks))]
            stages.append(nn.Sequential(*blocks))
            cin = width
        self.stages = nn.ModuleList(stages)
        self.out_channels = (widths[0], *widths)
        self.reductions = (1, 1, *(2 ** i for i in range(1, len(widths))))
        self.fc = nn.Linear(cin, num_classes) if num_classes else None
        for m in self.modules():
            if isinstance(m, nn.modules.conv._ConvNd) and m.bias is None:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.check_input(x)
        features = [self.stem(x)]
        for stage in self.stages:
            features.append(stage(features[-1]))
        return features

    def gates(self) -> list[HighwayLayer]:
        """Every highway layer, input first."""
        return [m for m in self.modules() if isinstance(m, HighwayLayer)]

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)``: global average pool of the last map, then ``fc``."""
        if self.fc is None:
            raise MedsegError("encoder has no classifier: build it with num_classes=N to use classify()")
        return self.fc(self(x)[-1].flatten(2).mean(-1))


def _check(spatial_dims: int, in_channels: int, layers: list[int], widths: list[int], norm: str) -> None:
    if spatial_dims not in (2, 3):
        raise MedsegError(f"encoder option spatial_dims={spatial_dims} is invalid; choose one of: 2, 3")
    if norm not in NORMS:
        raise MedsegError(f"encoder option norm={norm!r} is invalid; choose one of: {', '.join(NORMS)}")
    if not layers or len(layers) != len(widths) or min(layers) < 1 or min(widths) < 1 or in_channels < 1:
        raise MedsegError(f"encoder options layers={layers} widths={widths} in_channels={in_channels}: give "
                          "one positive layer count and width per stage, and at least 1 input channel")


HIGHWAY_OPTIONS = keyword_options(HighwayEncoder)


def _highway(depth: int, spatial_dims: int, in_channels: int, options: dict[str, Any]) -> HighwayEncoder:
    check_options("HighwayEncoder", options, HIGHWAY_OPTIONS)
    n = (depth - 2) // 6
    return HighwayEncoder(spatial_dims, in_channels, **{"layers": (2 * n, 2 * n, 2 * n), **options})


@register_encoder("highway20", "Highway network, 20 layers (Srivastava 2015): CIFAR layout 16/32/64, gate bias -2",
                  options=HIGHWAY_OPTIONS)
def highway20(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> HighwayEncoder:
    """Highway-20: three stages of 6 layers; 4 maps, reductions (1, 1, 2, 4), channels (16, 16, 32, 64)."""
    return _highway(20, spatial_dims, in_channels, options)


@register_encoder("highway32", "Highway network, 32 layers (Srivastava 2015): CIFAR layout 16/32/64, gate bias -3",
                  options=HIGHWAY_OPTIONS)
def highway32(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> HighwayEncoder:
    """Highway-32: three stages of 10 layers; 4 maps, reductions (1, 1, 2, 4), channels (16, 16, 32, 64)."""
    return _highway(32, spatial_dims, in_channels, options)


@register_encoder("highway44", "Highway network, 44 layers (Srivastava 2015): CIFAR layout 16/32/64, gate bias -3",
                  options=HIGHWAY_OPTIONS)
def highway44(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> HighwayEncoder:
    """Highway-44: three stages of 14 layers; 4 maps, reductions (1, 1, 2, 4), channels (16, 16, 32, 64)."""
    return _highway(44, spatial_dims, in_channels, options)


@register_encoder("highway56", "Highway network, 56 layers (Srivastava 2015): CIFAR layout 16/32/64, gate bias -3",
                  options=HIGHWAY_OPTIONS)
def highway56(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> HighwayEncoder:
    """Highway-56: three stages of 18 layers; 4 maps, reductions (1, 1, 2, 4), channels (16, 16, 32, 64)."""
    return _highway(56, spatial_dims, in_channels, options)


@register_encoder("highway110", "Highway network, 110 layers (Srivastava 2015): CIFAR layout 16/32/64, gate bias -3",
                  options=HIGHWAY_OPTIONS)
def highway110(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> HighwayEncoder:
    """Highway-110: three stages of 36 layers; 4 maps, reductions (1, 1, 2, 4), channels (16, 16, 32, 64)."""
    return _highway(110, spatial_dims, in_channels, options)
