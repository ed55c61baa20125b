"""The building blocks of medseg's ResNets, for 2D and 3D: layers, shortcuts, residual units, stems.

MONAI's layer factories pick the 2D or 3D layer from ``spatial_dims``; module names follow
torchvision (``conv1``, ``bn1``, ``downsample.0``) so pretrained state dicts load 1:1.
:mod:`medseg.encoders.resnet` assembles them into encoders; Highway and FractalNet reuse :func:`conv`.

References: He et al. 2015 (ResNet, shortcut options A/B/C), He et al. 2016 (pre-activation units),
Huang et al. 2016 (stochastic depth), Hu et al. 2018 (squeeze-and-excitation), He et al. 2019 (ResNet-D).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from monai.networks.layers.factories import Conv, Pool
from torch import nn

from medseg.encoders.norms import make_norm
from medseg.errors import MedsegError

# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------


def conv(spatial_dims: int, cin: int, cout: int, kernel_size: int, stride: int = 1, groups: int = 1) -> nn.Module:
    """A bias-free convolution padded by ``kernel_size // 2``, so output size is ``ceil(size / stride)``."""
    return Conv[Conv.CONV, spatial_dims](
        cin, cout, kernel_size=kernel_size, stride=stride, padding=kernel_size // 2, bias=False, groups=groups
    )


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018) as timm's ``SEModule``: global average pool, 1x1 conv
    down to ``channels * ratio`` (rounded to a multiple of 8), ReLU, 1x1 conv back, sigmoid gate.
    Keys ``fc1`` and ``fc2``, so timm's SE-ResNet weights load."""

    def __init__(self, spatial_dims: int, channels: int, ratio: float = 1 / 16) -> None:
        super().__init__()
        reduced = max(8, int(channels * ratio + 4) // 8 * 8)
        self.fc1 = Conv[Conv.CONV, spatial_dims](channels, reduced, kernel_size=1, bias=True)
        self.fc2 = Conv[Conv.CONV, spatial_dims](reduced, channels, kernel_size=1, bias=True)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean(dim=tuple(range(2, x.dim())), keepdim=True)
        return x * torch.sigmoid(self.fc2(self.relu(self.fc1(scale))))


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a sample's residual branch with probability ``p``.

    Kept branches are scaled by ``1 / (1 - p)`` so that eval mode (identity) has the same expectation.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ZeroPadShortcut(nn.Module):
    """Shortcut option A: strided subsampling, then zero channels appended. No parameters.

    Zeros go after the input channels, as in MONAI's and MedicalNet's ``shortcut_type='A'``, so their
    weights load unchanged. Output size is ``ceil(size / stride)``, the same as the padded convs.
    """

    def __init__(self, spatial_dims: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.index = (slice(None), slice(None)) + (slice(None, None, stride),) * spatial_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[self.index]
        extra = self.out_channels - x.shape[1]
        if extra == 0:
            return x
        return torch.cat([x, x.new_zeros((x.shape[0], extra, *x.shape[2:]))], dim=1)

    def extra_repr(self) -> str:
        return f"out_channels={self.out_channels}"


@dataclass(frozen=True)
class BlockSpec:
    """What every block needs besides its channel counts and stride."""

    spatial_dims: int
    norm: str
    norm_groups: int
    residual: bool
    groups: int = 1  # bottleneck 3x3 conv groups (ResNeXt cardinality)
    base_width: int = 64  # bottleneck width per group at planes=64 (ResNeXt 4, Wide ResNet 128)
    se_ratio: float = 0.0  # squeeze-excitation after the last norm of a bottleneck (0: none)

    def norm_layer(self, channels: int) -> nn.Module:
        return make_norm(self.norm, self.spatial_dims, channels, self.norm_groups)


# ---------------------------------------------------------------------------------------------
# Shortcuts: ``fn(spec, cin, cout, stride, preact) -> module or None (identity)``
# ---------------------------------------------------------------------------------------------


def _projection(spec: BlockSpec, cin: int, cout: int, stride: int, preact: bool) -> nn.Module:
    """1x1 conv + norm (torchvision's ``downsample.0/1``); pre-activation units use the conv alone,
    because the next unit normalises its input anyway (He et al. 2016)."""
    layers = [conv(spec.spatial_dims, cin, cout, 1, stride)]
    if not preact:
        layers.append(spec.norm_layer(cout))
    return nn.Sequential(*layers)


def _shortcut_a(spec: BlockSpec, cin: int, cout: int, stride: int, preact: bool) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    if cout < cin:
        raise MedsegError(
            f"shortcut='A' cannot reduce channels ({cin} -> {cout}); use shortcut='B' or non-decreasing widths"
        )
    return ZeroPadShortcut(spec.spatial_dims, cout, stride)


def _shortcut_b(spec: BlockSpec, cin: int, cout: int, stride: int, preact: bool) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    return _projection(spec, cin, cout, stride, preact)


def _shortcut_c(spec: BlockSpec, cin: int, cout: int, stride: int, preact: bool) -> nn.Module | None:
    return _projection(spec, cin, cout, stride, preact)


def _shortcut_d(spec: BlockSpec, cin: int, cout: int, stride: int, preact: bool) -> nn.Module | None:
    """ResNet-D (He et al. 2019, "Bag of tricks"): average-pool, then a stride-1 1x1 projection, so the
    shortcut sees every input voxel (timm's ``avg_down``; keys ``downsample.1`` / ``.2``)."""
    if stride == 1 and cin == cout:
        return None
    d = spec.spatial_dims
    pool = (Pool[Pool.AVG, d](kernel_size=stride, stride=stride, ceil_mode=True, count_include_pad=False)
            if stride > 1 else nn.Identity())
    layers = [pool, conv(d, cin, cout, 1)]
    if not preact:
        layers.append(spec.norm_layer(cout))
    return nn.Sequential(*layers)


#: ``shortcut=`` choices (He et al. 2015, section 4.1).
SHORTCUTS: dict[str, Callable[[BlockSpec, int, int, int, bool], nn.Module | None]] = {
    "A": _shortcut_a,
    "B": _shortcut_b,
    "C": _shortcut_c,
    "D": _shortcut_d,
}


# ---------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """conv3x3-norm-ReLU-conv3x3-norm, plus the shortcut, then ReLU (torchvision's ``BasicBlock``).

    With ``residual=False`` there is no shortcut: the output is ``relu(branch(x))``.
    """

    expansion = 1
    preact = False

    def __init__(
        self, spec: BlockSpec, cin: int, planes: int, stride: int, shortcut: str, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        d, cout = spec.spatial_dims, planes * self.expansion
        self.residual = spec.residual
        self.conv1 = conv(d, cin, planes, 3, stride)
        self.bn1 = spec.norm_layer(planes)
        self.conv2 = conv(d, planes, cout, 3)
        self.bn2 = spec.norm_layer(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = SHORTCUTS[shortcut](spec, cin, cout, stride, False) if spec.residual else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch alone, before the addition."""
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))

    def last_layers(self) -> tuple[nn.Module, nn.Module]:
        """(last conv, last norm) of the branch, for ``zero_init_residual``."""
        return self.conv2, self.bn2

    def conv_norm_pairs(self) -> list[tuple[str, str]]:
        """(conv, norm) attribute names where the norm takes the conv's output and nothing else does
        (what :func:`medseg.models.fold_batch_norms` may fold for inference)."""
        return [("conv1", "bn1"), ("conv2", "bn2")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch(x)
        if self.residual:
            identity = x if self.downsample is None else self.downsample(x)
            out = self.drop_path(out) + identity
        return self.relu(out)


class Bottleneck(BasicBlock):
    """conv1x1-norm-ReLU-conv3x3(stride)-norm-ReLU-conv1x1-norm, shortcut, ReLU (torchvision v1.5)."""

    expansion = 4

    def __init__(
        self, spec: BlockSpec, cin: int, planes: int, stride: int, shortcut: str, drop_path: float = 0.0
    ) -> None:
        nn.Module.__init__(self)
        d, cout = spec.spatial_dims, planes * self.expansion
        width = int(planes * spec.base_width / 64) * spec.groups  # torchvision's ResNeXt / Wide ResNet rule
        self.residual = spec.residual
        self.conv1 = conv(d, cin, width, 1)
        self.bn1 = spec.norm_layer(width)
        self.conv2 = conv(d, width, width, 3, stride, groups=spec.groups)
        self.bn2 = spec.norm_layer(width)
        self.conv3 = conv(d, width, cout, 1)
        self.bn3 = spec.norm_layer(cout)
        self.se = SqueezeExcite(d, cout, spec.se_ratio) if spec.se_ratio > 0 else None
        self.relu = nn.ReLU(inplace=True)
        self.downsample = SHORTCUTS[shortcut](spec, cin, cout, stride, False) if spec.residual else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out if self.se is None else self.se(out)

    def last_layers(self) -> tuple[nn.Module, nn.Module]:
        return self.conv3, self.bn3

    def conv_norm_pairs(self) -> list[tuple[str, str]]:
        return [("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")]


class PreActBasicBlock(nn.Module):
    """Pre-activation unit (He et al. 2016): norm-ReLU-conv3x3-norm-ReLU-conv3x3, plus the shortcut.

    No ReLU after the addition. A projection or option-A shortcut takes the pre-activated input
    ``relu(bn1(x))``; the identity takes ``x``. Keys: ``bn1`` (on the input), ``conv1``, ``bn2``,
    ``conv2``, ``downsample.0`` (conv only).
    """

    expansion = 1
    preact = True

    def __init__(
        self, spec: BlockSpec, cin: int, planes: int, stride: int, shortcut: str, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        d, cout = spec.spatial_dims, planes * self.expansion
        self.residual = spec.residual
        self.bn1 = spec.norm_layer(cin)
        self.conv1 = conv(d, cin, planes, 3, stride)
        self.bn2 = spec.norm_layer(planes)
        self.conv2 = conv(d, planes, cout, 3)
        self.relu = nn.ReLU(inplace=False)
        self.downsample = SHORTCUTS[shortcut](spec, cin, cout, stride, True) if spec.residual else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def branch_from(self, pre: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.relu(self.bn2(self.conv1(pre))))

    def last_layers(self) -> tuple[nn.Module, nn.Module | None]:
        return self.conv2, None

    def conv_norm_pairs(self) -> list[tuple[str, str]]:
        """Only conv1 → bn2: bn1 normalises the block's input, and conv2's output joins the sum."""
        return [("conv1", "bn2")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu(self.bn1(x))
        out = self.branch_from(pre)
        if not self.residual:
            return out
        identity = x if self.downsample is None else self.downsample(pre)
        return self.drop_path(out) + identity


class PreActBottleneck(PreActBasicBlock):
    """Pre-activation bottleneck: norm-ReLU-conv1x1-norm-ReLU-conv3x3(stride)-norm-ReLU-conv1x1.

    Keys: ``bn1`` (input), ``conv1``, ``bn2``, ``conv2``, ``bn3``, ``conv3``, ``downsample.0``.
    """

    expansion = 4

    def __init__(
        self, spec: BlockSpec, cin: int, planes: int, stride: int, shortcut: str, drop_path: float = 0.0
    ) -> None:
        nn.Module.__init__(self)
        d, cout = spec.spatial_dims, planes * self.expansion
        self.residual = spec.residual
        self.bn1 = spec.norm_layer(cin)
        self.conv1 = conv(d, cin, planes, 1)
        self.bn2 = spec.norm_layer(planes)
        self.conv2 = conv(d, planes, planes, 3, stride)
        self.bn3 = spec.norm_layer(planes)
        self.conv3 = conv(d, planes, cout, 1)
        self.relu = nn.ReLU(inplace=False)
        self.downsample = SHORTCUTS[shortcut](spec, cin, cout, stride, True) if spec.residual else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def branch_from(self, pre: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn2(self.conv1(pre)))
        out = self.relu(self.bn3(self.conv2(out)))
        return self.conv3(out)

    def last_layers(self) -> tuple[nn.Module, nn.Module | None]:
        return self.conv3, None

    def conv_norm_pairs(self) -> list[tuple[str, str]]:
        return [("conv1", "bn2"), ("conv2", "bn3")]


#: ``block=`` choices: (post-activation class, pre-activation class).
BLOCKS: dict[str, tuple[type[nn.Module], type[nn.Module]]] = {
    "basic": (BasicBlock, PreActBasicBlock),
    "bottleneck": (Bottleneck, PreActBottleneck),
}


@dataclass(frozen=True)
class StemSpec:
    """The first conv's kernel and stride, and whether a 3x3 stride-2 max-pool follows."""

    kernel_size: int
    stride: int
    max_pool: bool
    deep: bool = False  # three 3x3 convs (stem_width, stem_width, 2 * stem_width) instead of one


#: ``stem=`` choices.
STEMS: dict[str, StemSpec] = {
    "imagenet": StemSpec(kernel_size=7, stride=2, max_pool=True),
    "cifar": StemSpec(kernel_size=3, stride=1, max_pool=False),
    "deep": StemSpec(kernel_size=3, stride=2, max_pool=True, deep=True),  # ResNet-C/D (timm's "deep")
}


def stem_conv(spec: BlockSpec, stem: StemSpec, cin: int, width: int) -> tuple[nn.Module, int]:
    """The stem's conv(s) and their output channels: one conv, or timm's deep stem
    (``conv1.0``, ``.1``, ``.3``, ``.4``, ``.6``) ending at ``2 * width`` channels."""
    d = spec.spatial_dims
    if not stem.deep:
        return conv(d, cin, width, stem.kernel_size, stem.stride), width
    layers = [conv(d, cin, width, 3, stem.stride), spec.norm_layer(width), nn.ReLU(inplace=True),
              conv(d, width, width, 3), spec.norm_layer(width), nn.ReLU(inplace=True), conv(d, width, 2 * width, 3)]
    return nn.Sequential(*layers), 2 * width
