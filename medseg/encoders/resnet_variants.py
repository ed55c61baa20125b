"""The ResNet evolution as medical segmentation uses it: ResNeXt, Wide ResNet, SE-ResNet(X), ResNet-D.

Each is :class:`~medseg.encoders.resnet.ResNetEncoder` with other options, so 2D and 3D share one
code path and the module names stay torchvision's (ResNeXt, Wide ResNet) and timm's (SE modules
``se.fc1``/``se.fc2``, the deep stem ``conv1.0 … conv1.6``, average-pool shortcuts ``downsample.1``/``.2``):
their state dicts load 1:1 and inflate to 3D like the plain ResNets' (:mod:`medseg.encoders.weights`).

- ResNeXt (Xie et al. 2017): grouped 3x3 convs in the bottleneck; ``32x4d`` = 32 groups of width 4.
- Wide ResNet-50/101-2 (Zagoruyko & Komodakis 2016, ImageNet form): the bottleneck twice as wide.
- SE-ResNet / SE-ResNeXt (Hu et al. 2018): channel gates after each bottleneck's last norm.
- ResNet-50-D (He et al. 2019): a deep 3x3 stem and average-pooled shortcuts.
"""

from __future__ import annotations

from typing import Any

from medseg.encoders.resnet import _IMAGENET, ResNetEncoder, _build, _register

_BOTTLENECK_50 = {"block": "bottleneck", "layers": (3, 4, 6, 3), **_IMAGENET}
_BOTTLENECK_101 = {"block": "bottleneck", "layers": (3, 4, 23, 3), **_IMAGENET}


@_register("resnext50_32x4d", "ResNeXt-50 32x4d: bottlenecks 3-4-6-3 with 32 groups of width 4 (torchvision)")
def resnext50_32x4d(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> ResNetEncoder:
    """ResNeXt-50 (32x4d); 5 maps, reductions 2..32, channels (64, 256, 512, 1024, 2048)."""
    return _build(spatial_dims, in_channels, options, groups=32, base_width=4, **_BOTTLENECK_50)


@_register("resnext101_32x8d", "ResNeXt-101 32x8d: bottlenecks 3-4-23-3, 32 groups of width 8 (torchvision)")
def resnext101_32x8d(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> ResNetEncoder:
    """ResNeXt-101 (32x8d); channels (64, 256, 512, 1024, 2048)."""
    return _build(spatial_dims, in_channels, options, groups=32, base_width=8, **_BOTTLENECK_101)


@_register("resnext101_64x4d", "ResNeXt-101 64x4d: bottlenecks 3-4-23-3, 64 groups of width 4 (torchvision)")
def resnext101_64x4d(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> ResNetEncoder:
    """ResNeXt-101 (64x4d); channels (64, 256, 512, 1024, 2048)."""
    return _build(spatial_dims, in_channels, options, groups=64, base_width=4, **_BOTTLENECK_101)


@_register("wide_resnet50_2", "Wide ResNet-50-2: ResNet-50 with bottlenecks twice as wide (torchvision)")
def wide_resnet50_2(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> ResNetEncoder:
    """Wide ResNet-50-2; channels (64, 256, 512, 1024, 2048)."""
    return _build(spatial_dims, in_channels, options, base_width=128, **_BOTTLENECK_50)


@_register("wide_resnet101_2", "Wide ResNet-101-2: ResNet-101 with bottlenecks twice as wide (torchvision)")
def wide_resnet101_2(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> ResNetEncoder:
    """Wide ResNet-101-2; channels (64, 256, 512, 1024, 2048)."""
    return _build(spatial_dims, in_channels, options, base_width=128, **_BOTTLENECK_101)


@_register("seresnet50", "SE-ResNet-50: ResNet-50 with squeeze-excitation (ratio 1/16) in every bottleneck (timm)")
def seresnet50(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> ResNetEncoder:
    """SE-ResNet-50; channels (64, 256, 512, 1024, 2048)."""
    return _build(spatial_dims, in_channels, options, se_ratio=1 / 16, **_BOTTLENECK_50)


@_register("seresnext50_32x4d", "SE-ResNeXt-50 32x4d: ResNeXt-50 with squeeze-excitation (timm)")
def seresnext50_32x4d(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> ResNetEncoder:
    """SE-ResNeXt-50 (32x4d); channels (64, 256, 512, 1024, 2048)."""
    return _build(spatial_dims, in_channels, options, groups=32, base_width=4, se_ratio=1 / 16, **_BOTTLENECK_50)


@_register("resnet50d", "ResNet-50-D: deep 3x3 stem (32-32-64) and average-pooled shortcuts (timm)")
def resnet50d(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> ResNetEncoder:
    """ResNet-50-D; channels (64, 256, 512, 1024, 2048)."""
    defaults = {**_BOTTLENECK_50, "stem": "deep", "stem_width": 32, "shortcut": "D"}
    return _build(spatial_dims, in_channels, options, **defaults)
