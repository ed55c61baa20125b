"""Parameter counts: unet_resnet against MONAI FlexibleUNet, unet against MONAI BasicUNet, and exact
counts from the architecture, so the benchmark compares like with like."""

from __future__ import annotations

import itertools

import pytest
import torch
from monai.networks.nets import BasicUNet, FlexibleUNet

from medseg.encoders import build_encoder
from medseg.models import build_model
from medseg.models.summary import count_parameters


def _double_conv(c_in: int, c_out: int, k: int = 9) -> int:
    """Two bias-free kxk convs with batch norm (weight and bias per channel)."""
    return c_in * c_out * k + 2 * c_out + c_out * c_out * k + 2 * c_out


def _meta(build):
    with torch.device("meta"):
        return count_parameters(build())


@pytest.mark.parametrize(("backbone", "dims"), [("resnet34", 2), ("resnet18", 3)])
def test_unet_resnet_matches_flexible_unet_within_5_percent(backbone, dims):
    ours = _meta(lambda: build_model("unet_resnet", spatial_dims=dims, in_channels=1, out_channels=2, encoder=backbone))
    monai = _meta(lambda: FlexibleUNet(in_channels=1, out_channels=2, backbone=backbone, pretrained=False,
                                       spatial_dims=dims))
    print(f"unet_resnet({backbone}, {dims}D): {ours:,} params; MONAI FlexibleUNet: {monai:,}; "
          f"ratio {ours / monai:.4f}")
    assert abs(ours / monai - 1) < 0.05


def test_unet_resnet34_exact_count():
    """Encoder (no fc) + per skip a biased 1x1 reduce conv and a double conv on [reduced, skip] + a last
    double conv without skip + 1x1 head, for decoder channels (256, 128, 64, 32, 16)."""
    encoder = _meta(lambda: build_encoder("resnet34", spatial_dims=2, in_channels=1))
    reduce = sum(c_in * c_out + c_out for c_in, c_out in [(512, 256), (256, 128), (128, 64), (64, 32)])
    blocks = sum(_double_conv(c_in, c_out) for c_in, c_out in
                 [(256 + 256, 256), (128 + 128, 128), (64 + 64, 64), (32 + 64, 32), (32, 16)])
    expected = encoder + reduce + blocks + 16 * 2 + 2
    ours = _meta(lambda: build_model("unet_resnet"))
    print(f"unet_resnet(resnet34, 2D, 1 in, 2 classes): {ours:,} params (encoder {encoder:,})")
    assert ours == expected


def test_unet_matches_basic_unet_and_exact_count():
    feats = (32, 64, 128, 256, 512)
    ours = _meta(lambda: build_model("unet", features=feats))
    monai = _meta(lambda: BasicUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(*feats, 32),
                                    norm="batch", act="relu"))
    encoder = sum(_double_conv(c_in, c_out) for c_in, c_out in zip((1, *feats[:-1]), feats))
    deep = feats[::-1]
    up = sum(c_in * c_out * 4 + c_out for c_in, c_out in itertools.pairwise(deep))
    decoder = sum(_double_conv(2 * c, c) for c in deep[1:])
    print(f"unet{feats}: {ours:,} params; MONAI BasicUNet: {monai:,}; ratio {ours / monai:.4f}")
    assert ours == encoder + up + decoder + 32 * 2 + 2
    assert abs(ours / monai - 1) < 0.05
