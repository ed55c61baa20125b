"""Building blocks shared by the decoders: conv-norm-act, squeeze-and-excite, ASPP, up-sampling, padding.

Every block takes ``spatial_dims`` and builds its layers through MONAI's factories
(``Conv[Conv.CONV, spatial_dims]``, ``Pool[...]``; norms from :mod:`medseg.encoders.norms`, shared with the
encoders), so one code path serves 2D and 3D.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Pool
from torch import nn

from medseg.encoders.norms import make_norm
from medseg.errors import MedsegError

#: How inputs are padded up to the multiple a network needs. ``replicate`` repeats the edge
#: voxels, so the network never sees an artificial step at the border (zero is not "background"
#: for every normalisation); the padded voxels are cropped from the logits afterwards.
PAD_MODE = "replicate"

#: The linear interpolation mode per number of spatial dimensions.
LINEAR_MODE = {1: "linear", 2: "bilinear", 3: "trilinear"}


#: The decoders' ``norm=`` choices, built by the encoders' factory (:func:`medseg.encoders.norms.make_norm`).
#: ``"none"`` is left out: the decoder convolutions have no bias, a norm supplies it.
DECODER_NORMS = ("batch", "instance", "group")

#: The ``groups`` the decoders give the factory: ``norm="group"`` has ``gcd(8, channels)`` groups.
DECODER_NORM_GROUPS = 8


def check_choice(field: str, value: object, choices: Sequence[object]) -> None:
    """Raise a one-line :class:`MedsegError` when ``value`` is not one of ``choices``."""
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise MedsegError(f"model option {field}={value!r} is not valid; choose one of {listed}")


def check_channels(field: str, values: Sequence[int], length: int | None = None) -> tuple[int, ...]:
    """Validate a sequence of positive channel counts (optionally of at least ``length`` entries)."""
    try:
        out = tuple(int(v) for v in values)
    except (TypeError, ValueError):
        raise MedsegError(f"model option {field}={values!r}: give a list of positive integers") from None
    if not out or any(v <= 0 for v in out) or any(int(v) != v for v in values):
        raise MedsegError(f"model option {field}={values!r}: give a list of positive integers")
    if length is not None and len(out) < length:
        raise MedsegError(f"model option {field}={list(out)}: needs at least {length} entries for this encoder")
    return out


class ConvNormAct(nn.Sequential):
    """Convolution (no bias), normalisation, in-place ReLU; ``padding`` keeps the size at stride 1."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        dilation: int = 1,
        norm: str = "batch",
        act: bool = True,
    ) -> None:
        conv = Conv[Conv.CONV, spatial_dims](
            in_channels, out_channels, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation, bias=False
        )
        check_choice("norm", norm, DECODER_NORMS)
        layers: list[nn.Module] = [conv, make_norm(norm, spatial_dims, out_channels, DECODER_NORM_GROUPS)]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): global average, bottleneck MLP, sigmoid channel gate.

    ``ratio`` is the channel reduction of the bottleneck (8 in DoubleU-Net). Dimension-agnostic: the
    squeeze is a mean over every spatial axis.
    """

    def __init__(self, channels: int, ratio: int = 8) -> None:
        super().__init__()
        hidden = max(channels // ratio, 1)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = x.mean(dim=tuple(range(2, x.dim())))
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(squeezed), inplace=True)))
        return x * gate.view(*gate.shape, *([1] * (x.dim() - 2)))


class DoubleConv(nn.Sequential):
    """Two 3x3 conv-norm-ReLU layers, optionally followed by squeeze-and-excite (the U-Net block)."""

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, norm: str = "batch", se: bool = False
    ) -> None:
        layers: list[nn.Module] = [
            ConvNormAct(spatial_dims, in_channels, out_channels, norm=norm),
            ConvNormAct(spatial_dims, out_channels, out_channels, norm=norm),
        ]
        if se:
            layers.append(SqueezeExcite(out_channels))
        super().__init__(*layers)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLab v3): a 1x1 branch, dilated 3x3 branches and image pooling.

    The branches are concatenated and projected by a 1x1 conv-norm-ReLU to ``out_channels``. The image
    pooling branch has a biased conv and no normalisation, so it also works with a batch of one.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        rates: Sequence[int] = (6, 12, 18),
        norm: str = "batch",
    ) -> None:
        super().__init__()
        branches: list[nn.Module] = [ConvNormAct(spatial_dims, in_channels, out_channels, 1, norm=norm)]
        branches += [ConvNormAct(spatial_dims, in_channels, out_channels, 3, dilation=r, norm=norm) for r in rates]
        self.branches = nn.ModuleList(branches)
        self.pool = nn.Sequential(
            Pool[Pool.ADAPTIVEAVG, spatial_dims](1),
            Conv[Conv.CONV, spatial_dims](in_channels, out_channels, 1),
            nn.ReLU(inplace=True),
        )
        self.project = ConvNormAct(spatial_dims, out_channels * (len(rates) + 2), out_channels, 1, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [branch(x) for branch in self.branches]
        outs.append(self.pool(x).expand(-1, -1, *x.shape[2:]))
        return self.project(torch.cat(outs, dim=1))


class UpSample(nn.Module):
    """Multiply the spatial size by ``scale`` (2, or one factor per axis) and map ``in_channels`` to
    ``out_channels``.

    ``mode="deconv"``: a learnable transposed conv, kernel and stride ``scale``. ``mode="interp"``: a
    1x1 conv then bi/trilinear interpolation (the two commute, so the conv runs at the low resolution).
    """

    MODES = ("deconv", "interp")

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, mode: str = "deconv",
        scale: int | Sequence[int] = 2,
    ) -> None:
        super().__init__()
        check_choice("upsample", mode, self.MODES)
        self.mode = mode
        self.linear = LINEAR_MODE[spatial_dims]
        self.scale = tuple(scale) if isinstance(scale, Sequence) else (int(scale),) * spatial_dims
        if mode == "deconv":
            self.conv = Conv[Conv.CONVTRANS, spatial_dims](in_channels, out_channels, self.scale, stride=self.scale)
        else:
            self.conv = Conv[Conv.CONV, spatial_dims](in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.mode == "deconv":
            return x
        return F.interpolate(x, scale_factor=[float(s) for s in self.scale], mode=self.linear, align_corners=False)


def resize(x: torch.Tensor, size: Sequence[int], mode: str = "nearest") -> torch.Tensor:
    """Resample ``x`` to the spatial ``size``; returns ``x`` itself when it already has that size.

    ``mode="linear"`` picks bi- or trilinear from the number of spatial axes.
    """
    size = tuple(int(s) for s in size)
    if tuple(x.shape[2:]) == size:
        return x
    if mode == "linear":
        return F.interpolate(x, size=size, mode=LINEAR_MODE[x.dim() - 2], align_corners=False)
    return F.interpolate(x, size=size, mode=mode)


def pad_to_multiple(
    x: torch.Tensor, multiple: int | Sequence[int], mode: str = PAD_MODE
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Pad the spatial axes of ``x`` at their far end up to a multiple of ``multiple`` (one per axis, or all).

    Returns the padded tensor and the original spatial size, for :func:`crop_to`. Nothing is copied
    when the size already fits.
    """
    size = tuple(int(s) for s in x.shape[2:])
    multiples = tuple(multiple) if isinstance(multiple, Sequence) else (int(multiple),) * len(size)
    extra = [(-s) % m for s, m in zip(size, multiples, strict=True)]
    if not any(extra):
        return x, size
    pads: list[int] = []
    for e in reversed(extra):  # F.pad lists the last axis first
        pads += [0, e]
    return F.pad(x, pads, mode=mode), size


def crop_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Crop the spatial axes of ``x`` back to ``size`` (the far-end padding of :func:`pad_to_multiple`)."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return x[(slice(None), slice(None), *(slice(0, int(s)) for s in size))]
