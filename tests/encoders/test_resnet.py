"""ResNetEncoder: exact parameter counts, the feature contract on odd 2D/3D sizes, options, registry."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from medseg.encoders import (
    ResNetEncoder,
    build_encoder,
    encoder_description,
    list_encoders,
    plain_resnet18,
    preact_resnet18,
    resnet18,
    resnet20,
    resnet34,
)
from medseg.encoders.resnet_blocks import DropPath
from medseg.errors import MedsegError


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- exact parameter counts (structure only: built on the meta device, nothing allocated) -----------

TORCHVISION = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
               "resnet101": 44_549_160, "resnet152": 60_192_808}  # fmt: skip
CIFAR = {"resnet20": 269_722, "resnet32": 464_154, "resnet44": 658_586, "resnet56": 853_018,
         "resnet110": 1_727_962}  # fmt: skip
CIFAR_DEPTHS = (20, 32, 44, 56, 110)


@pytest.mark.parametrize(("name", "expected"), TORCHVISION.items())
def test_imagenet_counts_equal_torchvision(name: str, expected: int) -> None:
    with torch.device("meta"):
        encoder = build_encoder(name, spatial_dims=2, in_channels=3, num_classes=1000)
    assert count(encoder) == expected


@pytest.mark.parametrize(("shortcut", "expected"), [("A", 11_515_688), ("B", 11_689_512), ("C", 12_043_816)])
def test_resnet18_shortcut_option_counts(shortcut: str, expected: int) -> None:
    with torch.device("meta"):
        encoder = resnet18(in_channels=3, num_classes=1000, shortcut=shortcut)
    assert count(encoder) == expected


@pytest.mark.parametrize(("name", "expected"), CIFAR.items())
def test_cifar_counts(name: str, expected: int) -> None:
    with torch.device("meta"):
        encoder = build_encoder(name, spatial_dims=2, in_channels=3, num_classes=10)
    assert count(encoder) == expected


@pytest.mark.parametrize("depth", [18, 34, 20, 32, 44, 56, 110])
def test_plain_twin_count_equals_option_a(depth: int) -> None:
    classes = 10 if depth in CIFAR_DEPTHS else 1000
    with torch.device("meta"):
        plain = build_encoder(f"plain_resnet{depth}", in_channels=3, num_classes=classes)
        option_a = build_encoder(f"resnet{depth}", in_channels=3, num_classes=classes, shortcut="A")
    assert count(plain) == count(option_a)
    assert all(block.downsample is None for block in _blocks(plain))


def _blocks(encoder: ResNetEncoder) -> list[nn.Module]:
    return [block for stage in encoder.stages() for block in stage]


def test_state_dict_keys_and_shapes_follow_torchvision() -> None:
    """MONAI's ResNet mirrors torchvision's names; with shortcut B and no downsample bias they must agree."""
    from monai.networks.nets import resnet50 as monai_resnet50

    with torch.device("meta"):
        ours = build_encoder("resnet50", spatial_dims=2, in_channels=3, num_classes=1000).state_dict()
        theirs = monai_resnet50(spatial_dims=2, n_input_channels=3, conv1_t_stride=2, bias_downsample=False,
                                num_classes=1000).state_dict()  # fmt: skip
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    assert "layer2.0.downsample.0.weight" in ours and "layer1.0.conv3.weight" in ours and "fc.weight" in ours


# --- the feature contract on odd sizes, every registered encoder, 2D and 3D --------------------------

BIG = {"resnet50", "resnet101", "resnet152", "preact_resnet50", "resnext50_32x4d", "resnext101_32x8d",
       "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2", "seresnet50", "seresnext50_32x4d", "resnet50d"}


def _input_size(name: str, spatial_dims: int) -> tuple[int, ...]:
    """Odd sizes; smaller where an encoder is costly (full-resolution CIFAR stems, deep 3D bottlenecks).
    Every size keeps at least 2 voxels in the deepest map so batch norm trains on batch 1."""
    cifar = name.replace("plain_", "").replace("preact_", "").replace("highway", "resnet") in {
        f"resnet{d}" for d in CIFAR_DEPTHS}
    if name.startswith("fractal"):  # full-resolution first block, 512 channels at 1/16
        return (37, 29) if spatial_dims == 2 else (17, 19, 18)
    if spatial_dims == 2:
        return (37, 29) if cifar and name not in {"resnet20", "plain_resnet20"} else (97, 80)
    if cifar:
        return (13, 11, 9)
    if name in BIG:
        return (33, 35, 31)
    return (40, 48, 36)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", list_encoders())
def test_every_encoder_forward_backward_on_odd_sizes(name: str, spatial_dims: int) -> None:
    torch.manual_seed(0)
    encoder = build_encoder(name, spatial_dims=spatial_dims, in_channels=1)
    size = _input_size(name, spatial_dims)
    features = encoder(torch.randn(1, 1, *size))
    assert len(features) == len(encoder.out_channels) == len(encoder.reductions)
    expected_reductions = (2, 4, 8, 16, 32) if len(features) == 5 else (1, 1, 2, 4)
    if name.startswith("fractal"):  # no strided stem: the first block runs at full resolution
        expected_reductions = (1, 2, 4, 8, 16)
    assert encoder.reductions == expected_reductions
    for f, c, r in zip(features, encoder.out_channels, encoder.reductions, strict=True):
        assert tuple(f.shape) == (1, c, *(math.ceil(s / r) for s in size))
    assert [tuple(f.shape[1:]) for f in features] == encoder.feature_shapes(size)
    loss = sum((f * torch.randn_like(f)).sum() for f in features)
    loss.backward()
    # the convs that read the input (FractalNet: one per column, and drop-path may train only one)
    grads = [m.weight.grad for m in encoder.modules() if isinstance(m, nn.modules.conv._ConvNd) and m.in_channels == 1]
    grads = [g for g in grads if g is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_documented_channels() -> None:
    with torch.device("meta"):
        assert build_encoder("resnet34").out_channels == (64, 64, 128, 256, 512)
        assert build_encoder("resnet50").out_channels == (64, 256, 512, 1024, 2048)
        assert build_encoder("resnet110").out_channels == (16, 16, 32, 64)
        three = ResNetEncoder(layers=(1, 1, 1), widths=(8, 16, 32))
    assert three.reductions == (2, 4, 8, 16) and three.out_channels == (8, 8, 16, 32)


# --- residual=False, pre-activation, drop path, zero init ---------------------------------------------


def _block_io(encoder: nn.Module, x: torch.Tensor) -> list[tuple[nn.Module, torch.Tensor, torch.Tensor]]:
    records: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []
    hooks = [
        b.register_forward_hook(lambda m, i, o: records.append((m, i[0].detach().clone(), o.detach().clone())))
        for b in _blocks(encoder)
    ]
    with torch.no_grad():
        encoder(x)
    for h in hooks:
        h.remove()
    return records


@pytest.mark.parametrize(("residual_name", "plain_name"), [("resnet20", "plain_resnet20"), ("resnet18", "plain_resnet18")])
def test_plain_twin_block_is_relu_of_branch(residual_name: str, plain_name: str) -> None:
    torch.manual_seed(0)
    options = {"widths": (8, 16, 16, 32)} if residual_name == "resnet18" else {}
    residual = build_encoder(residual_name, in_channels=1, shortcut="A", **options).eval()
    plain = build_encoder(plain_name, in_channels=1, **options).eval()
    plain.load_state_dict(residual.state_dict(), strict=True)  # same weights: option A has no extra ones
    x = torch.randn(1, 1, 37, 29)
    with torch.no_grad():
        for block, inp, out in _block_io(plain, x):
            assert block.downsample is None
            torch.testing.assert_close(out, torch.relu(block.branch(inp)), rtol=0, atol=1e-6)
        differs = 0
        for block, inp, out in _block_io(residual, x):
            shortcut = inp if block.downsample is None else block.downsample(inp)
            torch.testing.assert_close(out, torch.relu(block.branch(inp) + shortcut), rtol=0, atol=1e-5)
            differs += not torch.allclose(out, torch.relu(block.branch(inp)), atol=1e-3)
    assert differs == len(_blocks(residual))  # every residual block really adds its shortcut


def test_preact_units_have_no_relu_after_addition() -> None:
    torch.manual_seed(0)
    encoder = preact_resnet18(in_channels=2, widths=(8, 16, 16, 32)).eval()
    assert all(b.downsample is None or len(b.downsample) == 1 for b in _blocks(encoder))  # conv-only projection
    with torch.no_grad():
        for block, inp, out in _block_io(encoder, torch.randn(1, 2, 45, 39)):
            pre = torch.relu(block.bn1(inp))
            shortcut = inp if block.downsample is None else block.downsample(pre)
            torch.testing.assert_close(out, block.branch_from(pre) + shortcut, rtol=0, atol=1e-5)
        features = encoder(torch.randn(1, 2, 45, 39))
    assert (features[1] < 0).any()  # a raw sum, no activation after the addition
    assert (features[-1] >= 0).all()  # final norm + ReLU


def test_drop_path_drops_whole_branches_in_training_only() -> None:
    torch.manual_seed(0)
    encoder = resnet20(in_channels=1, drop_path=0.5)
    rates = [b.drop_path.p if isinstance(b.drop_path, DropPath) else 0.0 for b in _blocks(encoder)]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.5) and rates == sorted(rates)
    reference = resnet20(in_channels=1).eval()
    reference.load_state_dict(encoder.state_dict())
    x = torch.randn(2, 1, 15, 13)
    with torch.no_grad():
        for a, b in zip(encoder.eval()(x), reference(x), strict=True):
            torch.testing.assert_close(a, b)  # identity in eval mode
        block = _blocks(encoder)[-1].train()
        inp = torch.randn(64, 64, 5, 5)
        out = block(inp)
        branch = block.branch(inp)
        kept = torch.relu(branch / 0.5 + inp)
        dropped = torch.relu(inp)
        is_kept = [torch.allclose(o, k, atol=1e-5) for o, k in zip(out, kept, strict=True)]
        is_dropped = [torch.allclose(o, d) for o, d in zip(out, dropped, strict=True)]
    assert all(k or d for k, d in zip(is_kept, is_dropped, strict=True))
    assert any(is_kept) and any(is_dropped)


@pytest.mark.parametrize("name", ["resnet18", "preact_resnet18", "resnet20"])
def test_zero_init_residual_starts_every_block_as_its_shortcut(name: str) -> None:
    encoder = build_encoder(name, in_channels=1, zero_init_residual=True, widths=(8, 8, 16, 16)[: 3 if name == "resnet20" else 4]).eval()
    with torch.no_grad():
        for block, inp, out in _block_io(encoder, torch.randn(1, 1, 33, 31)):
            if block.preact:
                shortcut = inp if block.downsample is None else block.downsample(torch.relu(block.bn1(inp)))
                torch.testing.assert_close(out, shortcut)
            else:
                shortcut = inp if block.downsample is None else block.downsample(inp)
                torch.testing.assert_close(out, torch.relu(shortcut))


@pytest.mark.parametrize("norm", ["instance", "group", "none"])
def test_norm_choices_run_in_3d(norm: str) -> None:
    encoder = build_encoder("resnet10", spatial_dims=3, in_channels=2, norm=norm, widths=(16, 16, 32, 64),
                            norm_groups=8)  # fmt: skip
    features = encoder(torch.randn(2, 2, 35, 33, 31))
    assert [f.shape[1] for f in features] == list(encoder.out_channels)
    kinds = {type(m).__name__ for m in encoder.modules()} & {"BatchNorm3d", "GroupNorm", "InstanceNorm3d"}
    assert kinds == {"instance": {"InstanceNorm3d"}, "group": {"GroupNorm"}, "none": set()}[norm]
    if norm == "group":
        assert encoder.bn1.num_groups == 8


# --- classification head, registry, errors -----------------------------------------------------------


def test_classify_uses_fc_and_leaves_forward_unchanged() -> None:
    torch.manual_seed(0)
    with_head = resnet20(in_channels=3, num_classes=10).eval()
    without = resnet20(in_channels=3).eval()
    without.load_state_dict({k: v for k, v in with_head.state_dict().items() if not k.startswith("fc.")})
    x = torch.randn(2, 3, 17, 15)
    with torch.no_grad():
        logits = with_head.classify(x)
        for a, b in zip(with_head(x), without(x), strict=True):
            torch.testing.assert_close(a, b)
        expected = with_head.fc(with_head(x)[-1].mean(dim=(2, 3)))
    assert logits.shape == (2, 10)
    torch.testing.assert_close(logits, expected)
    with pytest.raises(MedsegError, match="num_classes"):
        without.classify(x)


def test_registry_lists_required_encoders_with_descriptions() -> None:
    names = list_encoders()
    required = [f"resnet{d}" for d in (18, 34, 50, 101, 152, 20, 32, 44, 56, 110)]
    required += ["plain_resnet18", "plain_resnet34"] + [f"plain_resnet{d}" for d in CIFAR_DEPTHS]
    required += ["preact_resnet18", "preact_resnet34", "preact_resnet50"]
    assert set(required) <= set(names)
    for name in names:
        line = encoder_description(name)
        assert line and "\n" not in line
    assert isinstance(resnet34(), ResNetEncoder)


def test_user_errors_are_one_line_medseg_errors() -> None:
    with pytest.raises(MedsegError, match=r"unknown.*resnet18.*resnet34"):
        build_encoder("resnet999")
    with pytest.raises(MedsegError, match=r"encoder resnet18: unknown option 'num_classses'; valid options are .*num_classes"):
        build_encoder("resnet18", num_classses=3)
    with pytest.raises(MedsegError, match="shortcut='E'"):
        build_encoder("resnet18", shortcut="E")
    with pytest.raises(MedsegError, match="spatial_dims"):
        build_encoder("resnet18", spatial_dims=4)
    with pytest.raises(MedsegError, match="layers"):
        ResNetEncoder(layers=(2, 2), widths=(8, 16, 32))
    with pytest.raises(MedsegError, match="residual=False"):
        plain_resnet18(drop_path=0.1)
    with pytest.raises(MedsegError, match=r"\(N, 1, S1, S2\)"):
        resnet20(in_channels=1)(torch.randn(1, 3, 8, 8))


def test_encoders_import_nothing_else_from_medseg() -> None:
    """The package must stay usable on its own: only torch, MONAI's factories and medseg's leaf modules."""
    import subprocess
    import sys

    code = "import sys, medseg.encoders; print(' '.join(m for m in sys.modules if m.startswith('medseg')))"
    loaded = set(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split())
    assert loaded == {"medseg", "medseg.errors", "medseg.registry", "medseg.encoders", "medseg.encoders.base",
                      "medseg.encoders.norms", "medseg.encoders.registry", "medseg.encoders.resnet",
                      "medseg.encoders.resnet_blocks",
                      "medseg.encoders.resnet_variants", "medseg.encoders.weights",
                      "medseg.encoders.highway", "medseg.encoders.fractal"}  # fmt: skip
