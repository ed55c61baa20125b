"""Reusable 2D/3D ResNet, Highway and FractalNet encoders: import them into any PyTorch pipeline.

This package imports only torch, MONAI's layer factories and the leaf modules ``medseg.errors`` and
``medseg.registry``::

    from medseg.encoders import resnet34, build_encoder, list_encoders, load_pretrained

    encoder = resnet34(spatial_dims=3, in_channels=1)
    features = encoder(volume)          # 5 maps, highest resolution first
    encoder.out_channels, encoder.reductions   # (64, 64, 128, 256, 512), (2, 4, 8, 16, 32)
"""

from medseg.encoders import resnet, resnet_variants  # noqa: F401  (registers the ResNets first: the listing order)
from medseg.encoders.base import Encoder, EncoderBase
from medseg.encoders.fractal import FractalBlock, FractalEncoder, fractal20, fractal40
from medseg.encoders.highway import (
    HighwayEncoder,
    HighwayLayer,
    highway20,
    highway32,
    highway44,
    highway56,
    highway110,
)
from medseg.encoders.registry import build_encoder, encoder_description, list_encoders, register_encoder
from medseg.encoders.resnet import (
    ResNetEncoder,
    plain_resnet18,
    plain_resnet20,
    plain_resnet32,
    plain_resnet34,
    plain_resnet44,
    plain_resnet56,
    plain_resnet110,
    preact_resnet18,
    preact_resnet34,
    preact_resnet50,
    preact_resnet110,
    resnet10,
    resnet18,
    resnet20,
    resnet32,
    resnet34,
    resnet44,
    resnet50,
    resnet56,
    resnet101,
    resnet110,
    resnet152,
)
from medseg.encoders.resnet_blocks import (
    BasicBlock,
    Bottleneck,
    PreActBasicBlock,
    PreActBottleneck,
    SqueezeExcite,
)
from medseg.encoders.resnet_variants import (
    resnet50d,
    resnext50_32x4d,
    resnext101_32x8d,
    resnext101_64x4d,
    seresnet50,
    seresnext50_32x4d,
    wide_resnet50_2,
    wide_resnet101_2,
)
from medseg.encoders.weights import LoadReport, inflate_2d_to_3d, load_pretrained, read_state_dict

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "Encoder",
    "EncoderBase",
    "FractalBlock",
    "FractalEncoder",
    "HighwayEncoder",
    "HighwayLayer",
    "LoadReport",
    "PreActBasicBlock",
    "PreActBottleneck",
    "ResNetEncoder",
    "SqueezeExcite",
    "build_encoder",
    "encoder_description",
    "fractal20",
    "fractal40",
    "highway20",
    "highway32",
    "highway44",
    "highway56",
    "highway110",
    "inflate_2d_to_3d",
    "list_encoders",
    "load_pretrained",
    "plain_resnet18",
    "plain_resnet20",
    "plain_resnet32",
    "plain_resnet34",
    "plain_resnet44",
    "plain_resnet56",
    "plain_resnet110",
    "preact_resnet18",
    "preact_resnet34",
    "preact_resnet50",
    "preact_resnet110",
    "read_state_dict",
    "register_encoder",
    "resnet10",
    "resnet18",
    "resnet20",
    "resnet32",
    "resnet34",
    "resnet44",
    "resnet50",
    "resnet50d",
    "resnet56",
    "resnet101",
    "resnet110",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "seresnet50",
    "seresnext50_32x4d",
    "wide_resnet50_2",
    "wide_resnet101_2",
]
