"""Highway networks: the gate's algebra, its initial bias, the layer count, and the encoder contract."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medseg.encoders import HighwayEncoder, HighwayLayer, build_encoder
from medseg.encoders.highway import gate_bias_for
from medseg.errors import MedsegError
from medseg.models import build_model


def _layer(spatial_dims: int = 2) -> HighwayLayer:
    torch.manual_seed(0)
    return HighwayLayer(spatial_dims, 8, gate_bias=-2.0).eval()


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_a_closed_gate_is_exactly_the_identity(spatial_dims: int) -> None:
    layer = _layer(spatial_dims)
    with torch.no_grad():
        layer.gate.weight.zero_()
        layer.gate.bias.fill_(-1e4)  # T = sigmoid(-1e4) = 0 in float32
        x = torch.randn(2, 8, *([9] * spatial_dims))
        assert torch.equal(layer(x), x)


def test_an_open_gate_is_the_transform_and_in_between_the_mix() -> None:
    layer = _layer()
    x = torch.randn(2, 8, 7, 6)
    with torch.no_grad():
        h = layer.relu(layer.bn(layer.conv(x)))
        t = layer.transform_gate(x)
        torch.testing.assert_close(layer(x), h * t + x * (1 - t))
        layer.gate.weight.zero_()
        layer.gate.bias.fill_(1e4)
        torch.testing.assert_close(layer(x), h)


@pytest.mark.parametrize(("name", "bias"), [("highway20", -2.0), ("highway56", -3.0), ("highway110", -3.0)])
def test_gates_start_mostly_closed(name: str, bias: float) -> None:
    torch.manual_seed(0)
    encoder = build_encoder(name, spatial_dims=2, in_channels=3)
    assert all(float(g.gate.bias.detach().mean()) == bias for g in encoder.gates())
    x = torch.randn(4, 3, 16, 16)
    means = []
    hooks = [g.register_forward_hook(lambda m, i, o: means.append(float(m.transform_gate(i[0]).mean())))
             for g in encoder.gates()]
    with torch.no_grad():
        encoder(x)
    for h in hooks:
        h.remove()
    assert len(means) == len(encoder.gates()) and max(means) < 0.5


def test_the_paper_rule_for_the_gate_bias() -> None:
    assert [gate_bias_for(d) for d in (10, 20, 30, 56)] == [-1.0, -2.0, -3.0, -3.0]


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_depth_counts_the_convs_of_the_resnet_of_that_depth(depth: int) -> None:
    with torch.device("meta"):
        encoder = build_encoder(f"highway{depth}", num_classes=10)
    convs = [m for m in encoder.modules() if isinstance(m, nn.Conv2d) and m.bias is None]  # gates have a bias
    assert encoder.depth == depth and len(convs) + 1 == depth  # + the classifier
    n = (depth - 2) // 6
    assert len(encoder.gates()) == 6 * n - 2  # the two later stages open with a plain stride-2 layer


@pytest.mark.parametrize("decoder", ["unet_resnet", "dual_unet_resnet", "fcn"])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_every_decoder_takes_a_highway_encoder(decoder: str, spatial_dims: int) -> None:
    torch.manual_seed(0)
    model = build_model(decoder, spatial_dims=spatial_dims, in_channels=2, out_channels=3, encoder="highway20")
    shape = (2, 2, *((21, 19) if spatial_dims == 2 else (13, 11, 9)))  # batch 2: the deepest maps are 1 voxel
    outputs = model(torch.randn(shape))
    outputs = outputs if isinstance(outputs, tuple | list) else (outputs,)
    assert all(tuple(o.shape) == (2, 3, *shape[2:]) for o in outputs)
    sum(o.mean() for o in outputs).backward()
    assert model.encoder.stem[0].weight.grad.abs().sum() > 0


def test_classify_and_one_line_errors() -> None:
    encoder = HighwayEncoder(layers=(2, 2, 2), num_classes=4)
    assert encoder.classify(torch.randn(3, 1, 12, 12)).shape == (3, 4)
    with pytest.raises(MedsegError, match="num_classes"):
        HighwayEncoder().classify(torch.randn(1, 1, 8, 8))
    for bad in ({"layers": (2, 2)}, {"norm": "layer"}, {"spatial_dims": 4}):
        with pytest.raises(MedsegError) as err:
            HighwayEncoder(**bad)
        assert "\n" not in str(err.value)
    with pytest.raises(MedsegError, match="unknown option"):
        build_encoder("highway20", depth=3)
