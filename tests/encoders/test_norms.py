"""One normalisation factory for encoders and decoders: the same group-norm rule in both."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from medseg.encoders import norms
from medseg.encoders.norms import group_count, make_norm
from medseg.errors import MedsegError
from medseg.models import build_model
from medseg.models.blocks import DECODER_NORM_GROUPS, ConvNormAct


@pytest.mark.parametrize("groups", [8, 32, 6])
def test_group_norm_has_gcd_of_groups_and_channels_groups(groups: int) -> None:
    for channels in range(1, 97):
        layer = make_norm("group", 2, channels, groups)
        assert isinstance(layer, nn.GroupNorm) and layer.num_channels == channels
        assert layer.num_groups == math.gcd(groups, channels) == group_count(groups, channels)


def test_decoder_groups_keep_the_former_decoder_rule() -> None:
    """The decoders used the first of 8, 4, 2, 1 that divides the channels: gcd(8, channels)."""
    for channels in range(1, 129):
        former = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        assert ConvNormAct(2, 3, channels, norm="group")[1].num_groups == former


@pytest.mark.parametrize("dims", [2, 3])
def test_factory_layers_by_name(dims: int) -> None:
    assert isinstance(make_norm("batch", dims, 6), nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d)
    instance = make_norm("instance", dims, 6)
    assert isinstance(instance, nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm3d) and instance.affine
    assert isinstance(make_norm("none", dims, 6), nn.Identity)
    with pytest.raises(MedsegError, match=r"norm='layer' is not valid; choose one of 'batch'"):
        make_norm("layer", dims, 6)


def test_encoder_and_decoder_group_norms_follow_one_rule() -> None:
    """unet_resnet with group norm in both: every GroupNorm has gcd(8, channels) groups."""
    with torch.device("meta"):
        model = build_model("unet_resnet", norm="group", encoder="resnet18",
                            encoder_options={"norm": "group", "norm_groups": DECODER_NORM_GROUPS})  # fmt: skip
    encoder = {id(m) for m in model.encoder.modules()}
    layers = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert any(id(m) in encoder for m in layers) and any(id(m) not in encoder for m in layers)
    assert all(m.num_groups == math.gcd(DECODER_NORM_GROUPS, m.num_channels) for m in layers)


def test_encoder_and_decoder_build_every_norm_through_the_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    original = norms.NORMS["instance"]

    def recording(dims: int, channels: int, groups: int) -> nn.Module:
        calls.append((channels, groups))
        return original(dims, channels, groups)

    monkeypatch.setitem(norms.NORMS, "instance", recording)
    with torch.device("meta"):
        model = build_model("unet_resnet", norm="instance", encoder="resnet18", encoder_options={"norm": "instance"})
    built = [m for m in model.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert len(calls) == len(built) > 0
    assert {g for _, g in calls} == {32, DECODER_NORM_GROUPS}  # the encoder's norm_groups, the decoders'
