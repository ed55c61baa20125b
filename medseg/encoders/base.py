"""The encoder contract every medseg decoder relies on.

An encoder maps ``(N, in_channels, *spatial)`` to a list of feature maps, highest resolution first.
Decoders read only ``out_channels`` and ``reductions``, so any module that honours this contract
(a medseg ResNet, or your own) can sit under a medseg decoder.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

from medseg.errors import MedsegError


@runtime_checkable
class Encoder(Protocol):
    """What a decoder may assume about an encoder (structural: no inheritance needed).

    Attributes:
        spatial_dims: 2 or 3.
        in_channels: channels of the input.
        out_channels: channels of each returned feature map, highest resolution first.
        reductions: nominal input-to-map size ratio of each map. On sizes that are not a multiple,
            a map has ``ceil(size / reduction)`` voxels along each axis (every strided layer pads).
    """

    spatial_dims: int
    in_channels: int
    out_channels: tuple[int, ...]
    reductions: tuple[int, ...]

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]: ...


class EncoderBase(nn.Module):
    """Base class holding the contract's attributes and the shape helpers shared by encoders."""

    spatial_dims: int
    in_channels: int
    out_channels: tuple[int, ...]
    reductions: tuple[int, ...]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def feature_shapes(self, spatial_size: tuple[int, ...]) -> list[tuple[int, ...]]:
        """The ``(channels, *spatial)`` shape of each feature map for an input of ``spatial_size``."""
        if len(spatial_size) != self.spatial_dims:
            raise MedsegError(
                f"input size {tuple(spatial_size)}: give {self.spatial_dims} spatial sizes for a "
                f"{self.spatial_dims}D encoder"
            )
        return [
            (c, *(-(-s // r) for s in spatial_size))
            for c, r in zip(self.out_channels, self.reductions, strict=True)
        ]

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a one-line MedsegError when ``x`` is not ``(N, in_channels, *spatial)``."""
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise MedsegError(
                f"encoder input of shape {tuple(x.shape)}: expected (N, {self.in_channels}, "
                f"{', '.join(f'S{i + 1}' for i in range(self.spatial_dims))}); pass a batched "
                f"{self.spatial_dims}D tensor with {self.in_channels} channel(s) or rebuild the encoder "
                "with matching spatial_dims/in_channels"
            )
