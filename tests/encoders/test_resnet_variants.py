"""ResNeXt, Wide ResNet, SE-ResNet(X) and ResNet-D: exact sizes, torchvision/timm key layouts, 2D → 3D
inflation, and every decoder on top of each."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medseg.encoders import SqueezeExcite, build_encoder, load_pretrained
from medseg.errors import MedsegError
from medseg.models import build_model

#: Parameters with the 1000-class head and 3 input channels (torchvision and timm report the same).
COUNTS = {
    "resnext50_32x4d": 25_028_904, "resnext101_32x8d": 88_791_336, "resnext101_64x4d": 83_455_272,
    "wide_resnet50_2": 68_883_240, "wide_resnet101_2": 126_886_696, "seresnet50": 28_088_024,
    "seresnext50_32x4d": 27_559_896, "resnet50d": 25_576_264,
}


@pytest.mark.parametrize(("name", "expected"), COUNTS.items())
def test_parameter_counts_equal_torchvision_and_timm(name: str, expected: int) -> None:
    with torch.device("meta"):
        encoder = build_encoder(name, spatial_dims=2, in_channels=3, num_classes=1000)
    assert sum(p.numel() for p in encoder.parameters()) == expected


#: Keys and shapes as torchvision (ResNeXt, Wide ResNet) and timm (SE, ResNet-D) name them.
KEYS = {
    "resnext50_32x4d": {"layer1.0.conv2.weight": (128, 4, 3, 3), "layer4.2.conv3.weight": (2048, 1024, 1, 1)},
    "resnext101_64x4d": {"layer1.0.conv2.weight": (256, 4, 3, 3), "layer3.22.bn2.weight": (1024,)},
    "wide_resnet50_2": {"layer1.0.conv1.weight": (128, 64, 1, 1), "layer1.0.conv2.weight": (128, 128, 3, 3)},
    "seresnet50": {"layer1.0.se.fc1.weight": (16, 256, 1, 1), "layer1.0.se.fc1.bias": (16,),
                   "layer4.0.se.fc2.weight": (2048, 128, 1, 1), "layer4.0.se.fc2.bias": (2048,)},
    "seresnext50_32x4d": {"layer2.0.conv2.weight": (256, 8, 3, 3), "layer2.0.se.fc1.weight": (32, 512, 1, 1)},
    "resnet50d": {"conv1.0.weight": (32, 3, 3, 3), "conv1.1.weight": (32,), "conv1.3.weight": (32, 32, 3, 3),
                  "conv1.4.running_var": (32,), "conv1.6.weight": (64, 32, 3, 3), "bn1.weight": (64,),
                  "layer1.0.downsample.1.weight": (256, 64, 1, 1), "layer1.0.downsample.2.weight": (256,),
                  "layer2.0.downsample.1.weight": (512, 256, 1, 1)},
}


@pytest.mark.parametrize("name", KEYS)
def test_state_dict_keys_follow_torchvision_and_timm(name: str) -> None:
    with torch.device("meta"):
        state = build_encoder(name, spatial_dims=2, in_channels=3, num_classes=1000).state_dict()
    for key, shape in KEYS[name].items():
        assert tuple(state[key].shape) == shape, key
    assert tuple(state["fc.weight"].shape) == (1000, 2048)


@pytest.mark.parametrize("name", ["resnext50_32x4d", "seresnext50_32x4d", "resnet50d", "wide_resnet50_2"])
def test_a_2d_state_dict_loads_strictly_and_inflates_to_3d(tmp_path, name: str) -> None:
    torch.manual_seed(0)
    source = build_encoder(name, spatial_dims=2, in_channels=3, num_classes=1000)
    path = tmp_path / f"{name}.pth"
    torch.save(source.state_dict(), path)  # the file a user downloaded from torchvision or timm
    again = build_encoder(name, spatial_dims=2, in_channels=3)
    report = load_pretrained(again, path, strict=True)
    assert report.missing == [] and report.unexpected == []
    for key, value in again.state_dict().items():
        torch.testing.assert_close(value, source.state_dict()[key])
    deep = build_encoder(name, spatial_dims=3, in_channels=1)
    report = load_pretrained(deep, path, strict=True)
    assert report.missing == [] and report.unexpected == []
    kernel = deep.state_dict()["layer1.0.conv2.weight"]
    assert kernel.dim() == 5
    summed = kernel.sum(-1)  # inflation spreads each 2D kernel over depth: the sum is the 2D kernel
    torch.testing.assert_close(summed, source.state_dict()["layer1.0.conv2.weight"])


def test_squeeze_excite_gates_each_channel_by_its_mean() -> None:
    torch.manual_seed(0)
    se = SqueezeExcite(2, 32)
    assert se.fc1.out_channels == 8  # 32 / 16 = 2, rounded up to a multiple of 8 as timm does
    x = torch.randn(2, 32, 5, 7)
    gate = torch.sigmoid(se.fc2(torch.relu(se.fc1(x.mean((2, 3), keepdim=True)))))
    torch.testing.assert_close(se(x), x * gate)
    assert SqueezeExcite(3, 256).fc1.out_channels == 16


def test_resnet_d_shortcut_averages_before_projecting() -> None:
    encoder = build_encoder("resnet50d", spatial_dims=2, in_channels=1)
    down = encoder.layer2[0].downsample
    assert isinstance(down[0], nn.AvgPool2d) and down[1].stride == (1, 1)
    assert isinstance(encoder.layer1[0].downsample[0], nn.Identity)  # stride 1: nothing to pool


def test_bottleneck_options_on_basic_blocks_are_a_one_line_error() -> None:
    with pytest.raises(MedsegError, match="groups/base_width/se_ratio") as err:
        build_encoder("resnet18", groups=32)
    assert "\n" not in str(err.value)


NEW = sorted(COUNTS)


@pytest.mark.parametrize("decoder", ["unet_resnet", "dual_unet_resnet", "fcn"])
@pytest.mark.parametrize("encoder", NEW)
def test_every_decoder_takes_every_new_encoder_2d(decoder: str, encoder: str) -> None:
    torch.manual_seed(0)
    model = build_model(decoder, spatial_dims=2, in_channels=1, out_channels=2, encoder=encoder)
    _forward_backward(model, (1, 1, 67, 45))


@pytest.mark.parametrize("decoder", ["unet_resnet", "dual_unet_resnet", "fcn"])
@pytest.mark.parametrize("encoder", NEW)
def test_every_decoder_takes_every_new_encoder_3d(decoder: str, encoder: str) -> None:
    """One block a stage keeps 3D affordable; groups, SE, stem and shortcuts are those of the full encoder."""
    torch.manual_seed(0)
    model = build_model(decoder, spatial_dims=3, in_channels=1, out_channels=2, encoder=encoder,
                        encoder_options={"layers": [1, 1, 1, 1]})
    _forward_backward(model, (1, 1, 33, 35, 37))


def _forward_backward(model: nn.Module, shape: tuple[int, ...]) -> None:
    outputs = model(torch.randn(shape))
    outputs = outputs if isinstance(outputs, tuple | list) else (outputs,)
    assert all(tuple(o.shape) == (1, 2, *shape[2:]) for o in outputs)
    sum(o.mean() for o in outputs).backward()
    stem = model.encoder.conv1
    weight = stem[0].weight if isinstance(stem, nn.Sequential) else stem.weight
    assert weight.grad is not None and torch.isfinite(weight.grad).all() and weight.grad.abs().sum() > 0
