"""load_pretrained: MONAI/MedicalNet equivalence, 2D->3D inflation, in_channels adaptation, errors."""

from __future__ import annotations

import pytest
import torch
from monai.networks import nets
from torch import nn

from medseg.encoders import build_encoder, load_pretrained, read_state_dict, resnet18, resnet20, resnet34
from medseg.encoders.weights import adapt_input_channels, inflate_2d_to_3d
from medseg.errors import MedsegError


def randomize_norms(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial batch-norm statistics and affine weights, so eval-mode comparisons mean something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.1 * torch.randn(c, generator=g))


def monai_features(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """MONAI ResNet's own intermediate activations: its submodules called in its forward's order."""
    with torch.no_grad():
        x = model.act(model.bn1(model.conv1(x)))
        features = [x.clone()]
        x = model.maxpool(x)
        for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
            x = layer(x)
            features.append(x.clone())
    return features


def assert_features_equal(
    ours: list[torch.Tensor], theirs: list[torch.Tensor], atol: float = 1e-5, rtol: float = 0.0
) -> None:
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


# --- MONAI and MedicalNet ----------------------------------------------------------------------------


def test_monai_resnet34_2d_loads_and_matches_every_feature_map() -> None:
    torch.manual_seed(0)
    monai_model = nets.resnet34(spatial_dims=2, n_input_channels=3, conv1_t_stride=2, bias_downsample=False).eval()
    randomize_norms(monai_model)
    encoder = resnet34(spatial_dims=2, in_channels=3).eval()
    report = load_pretrained(encoder, monai_model.state_dict())
    assert report.missing == [] and report.unexpected == [] and report.adapted == []
    assert [d.split()[0] for d in report.dropped] == ["fc.weight", "fc.bias"]  # MONAI's 400-class head
    x = torch.randn(1, 3, 97, 80)
    with torch.no_grad():
        ours = encoder(x)
    assert_features_equal(ours, monai_features(monai_model, x))


# MedicalNet settings in MONAI: 3D, one channel, stride-2 stem; resnet10 uses shortcut B without bias,
# resnet18/34 shortcut A. MONAI's own default (shortcut B *with* a downsample bias) is folded.
MEDICALNET_CASES = [
    ("resnet10", nets.resnet10, {"shortcut_type": "B", "bias_downsample": False}, {}),
    ("resnet18", nets.resnet18, {"shortcut_type": "A", "bias_downsample": True}, {"shortcut": "A"}),
    ("resnet10", nets.resnet10, {"shortcut_type": "B", "bias_downsample": True}, {}),
]


@pytest.mark.parametrize(("name", "factory", "monai_options", "options"), MEDICALNET_CASES)
def test_monai_3d_medicalnet_settings_match(name: str, factory, monai_options: dict, options: dict) -> None:
    torch.manual_seed(1)
    monai_model = factory(spatial_dims=3, n_input_channels=1, conv1_t_stride=2, feed_forward=False,
                          **monai_options).eval()  # fmt: skip
    randomize_norms(monai_model, seed=1)
    if monai_options["bias_downsample"] and monai_options["shortcut_type"] == "B":
        with torch.no_grad():
            for m in monai_model.modules():
                if isinstance(m, nn.Conv3d) and m.bias is not None:
                    m.bias.normal_(0, 0.5)  # a bias that matters
    encoder = build_encoder(name, spatial_dims=3, in_channels=1, **options).eval()
    report = load_pretrained(encoder, monai_model.state_dict())
    assert report.missing == [] and report.unexpected == []
    folded = [a for a in report.adapted if "folded" in a]
    assert len(folded) == (3 if monai_options["bias_downsample"] and monai_options["shortcut_type"] == "B" else 0)
    x = torch.randn(1, 1, 27, 25, 23)
    with torch.no_grad():
        ours = encoder(x)
    assert_features_equal(ours, monai_features(monai_model, x))


def test_medicalnet_checkpoint_file_is_unwrapped(tmp_path) -> None:
    """A MedicalNet .pth: {'state_dict': {'module.conv1.weight', ..., 'module.conv_seg.*'}} plus metadata."""
    torch.manual_seed(2)
    monai_model = nets.resnet10(spatial_dims=3, n_input_channels=1, conv1_t_stride=2, feed_forward=False,
                                shortcut_type="B", bias_downsample=False).eval()  # fmt: skip
    randomize_norms(monai_model, seed=2)
    state = {f"module.{k}": v for k, v in monai_model.state_dict().items()}
    state["module.conv_seg.0.weight"] = torch.randn(32, 512, 3, 3, 3)
    state["module.conv_seg.4.weight"] = torch.randn(2, 32, 1, 1, 1)
    path = tmp_path / "resnet_10_23dataset.pth"
    torch.save({"epoch": 200, "state_dict": state}, path)
    encoder = build_encoder("resnet10", spatial_dims=3, in_channels=1).eval()
    report = load_pretrained(encoder, path)
    assert report.layout == "medicalnet"
    assert report.missing == [] and report.unexpected == []
    assert sorted(d.split()[0] for d in report.dropped) == ["conv_seg.0.weight", "conv_seg.4.weight"]
    x = torch.randn(1, 1, 19, 21, 17)
    with torch.no_grad():
        assert_features_equal(encoder(x), monai_features(monai_model, x))


# --- file formats, prefixes, heads, reports ----------------------------------------------------------


def test_safetensors_file_with_encoder_prefix(tmp_path) -> None:
    from safetensors.torch import save_file

    source = resnet20(in_channels=1)
    state = {f"encoder.{k}": v.contiguous() for k, v in source.state_dict().items()}
    state["decoder.block.weight"] = torch.zeros(3)
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    target = resnet20(in_channels=1)
    report = load_pretrained(target, path)
    assert report.missing == [] and report.unexpected == ["decoder.block.weight"]
    for k, v in source.state_dict().items():
        assert torch.equal(target.state_dict()[k], v)


def test_head_kept_only_when_shapes_agree() -> None:
    source = resnet20(in_channels=3, num_classes=10).state_dict()
    same = resnet20(in_channels=3, num_classes=10)
    assert load_pretrained(same, source).dropped == []
    assert torch.equal(same.fc.weight, source["fc.weight"])
    other = resnet20(in_channels=3, num_classes=4)
    report = load_pretrained(other, source)
    assert [d.split()[0] for d in report.dropped] == ["fc.weight", "fc.bias"]
    assert report.missing == ["fc.weight", "fc.bias"]


def test_report_lists_missing_and_unexpected_keys() -> None:
    source = resnet20(in_channels=1).state_dict()
    partial = {k: v for k, v in source.items() if not k.startswith("layer3.")}
    partial["extra.weight"] = torch.zeros(1)
    report = load_pretrained(resnet20(in_channels=1), {"model": partial, "optimizer": {}})
    assert report.unexpected == ["extra.weight"]
    assert report.missing and all(k.startswith("layer3.") for k in report.missing)
    with pytest.raises(MedsegError, match="strict"):
        load_pretrained(resnet20(in_channels=1), partial, strict=True)


# --- in_channels adaptation --------------------------------------------------------------------------


def test_three_channel_weights_adapt_to_one_and_four_channels() -> None:
    torch.manual_seed(3)
    rgb = resnet20(in_channels=3).eval()
    randomize_norms(rgb, seed=3)
    w = rgb.conv1.weight.detach()

    grey = resnet20(in_channels=1).eval()
    report = load_pretrained(grey, rgb.state_dict())
    assert report.adapted == ["conv1.weight: input channels 3 -> 1"]
    torch.testing.assert_close(grey.conv1.weight, w.sum(1, keepdim=True))
    x = torch.randn(1, 1, 17, 15)
    with torch.no_grad():  # a grey image replicated to RGB gives the same features (up to summation order)
        assert_features_equal(grey(x), rgb(x.repeat(1, 3, 1, 1)), rtol=1e-5)

    four = resnet20(in_channels=4)
    load_pretrained(four, rgb.state_dict())
    expected = torch.cat([w, w[:, :1]], dim=1) * 3 / 4
    torch.testing.assert_close(four.conv1.weight, expected)
    torch.testing.assert_close(adapt_input_channels(w, 3), w)


# --- 2D -> 3D inflation ------------------------------------------------------------------------------


def test_inflate_kernel_sums_to_the_2d_kernel() -> None:
    w = torch.randn(4, 2, 3, 5)
    for axis in (0, 1, 2, -1):
        inflated = inflate_2d_to_3d(w, 7, axis)
        assert inflated.shape[2 + axis % 3] == 7
        torch.testing.assert_close(inflated.sum(2 + axis % 3), w)


def test_inflated_encoder_on_constant_depth_equals_2d_encoder_on_a_slice() -> None:
    """In float64, so that the only differences left are border effects (none in the interior)."""
    torch.manual_seed(4)
    widths = (8, 16, 16, 32)
    enc2d = resnet18(spatial_dims=2, in_channels=3, widths=widths).double().eval()
    randomize_norms(enc2d, seed=4)
    enc3d = resnet18(spatial_dims=3, in_channels=3, widths=widths).double().eval()
    report = load_pretrained(enc3d, enc2d.state_dict())  # depth_axis=-1: slices along the last axis
    assert report.missing == [] and report.unexpected == []
    assert sum("inflated" in a for a in report.adapted) == sum(p.dim() == 4 for p in enc2d.state_dict().values())

    image = torch.randn(1, 3, 37, 29, dtype=torch.float64)
    with torch.no_grad():
        # Zero padding along depth: compare the interior slices whose receptive field stays inside the
        # volume. Map 0 (7-tap conv, stride 2) at depth j sees slices 2j-3..2j+3; map 1 (after the
        # 3-tap stride-2 max-pool and four 3-tap convs) at j sees 4j-21..4j+21. Depth 48: j = 6 is inside.
        depth = 48
        flat, deep = enc2d(image), enc3d(image[..., None].expand(-1, -1, -1, -1, depth).contiguous())
        torch.testing.assert_close(deep[0][..., 12], flat[0], rtol=0, atol=1e-9)
        torch.testing.assert_close(deep[1][..., 6], flat[1], rtol=0, atol=1e-9)
        assert not torch.allclose(deep[0][..., 0], flat[0], atol=1e-3)  # the borders really differ
        assert not torch.allclose(deep[1][..., 5], flat[1], atol=1e-6)

        # Circular padding on both encoders removes the depth border altogether (a constant stays
        # constant), so every map matches on every slice; the in-plane padding changes identically.
        for model in (enc2d, enc3d):
            for m in model.modules():
                if isinstance(m, nn.Conv2d | nn.Conv3d):
                    m.padding_mode = "circular"
        flat, deep = enc2d(image), enc3d(image[..., None].expand(-1, -1, -1, -1, 8).contiguous())
        for f2, f3 in zip(flat, deep, strict=True):
            torch.testing.assert_close(f3, f2[..., None].expand_as(f3), rtol=0, atol=1e-9)


# --- errors ------------------------------------------------------------------------------------------


def test_shape_mismatch_names_key_shapes_and_fix() -> None:
    source = resnet18(in_channels=1, widths=(8, 16, 32, 64)).state_dict()
    with pytest.raises(MedsegError) as err:
        load_pretrained(resnet18(in_channels=1, widths=(8, 16, 32, 32)), source)
    message = str(err.value)
    assert "layer4.0.conv1.weight" in message and "(64, 32, 3, 3)" in message and "(32, 32, 3, 3)" in message
    assert "widths" in message and "\n" not in message


class NotATensor:
    pass


def test_file_errors(tmp_path) -> None:
    with pytest.raises(MedsegError, match="not found"):
        load_pretrained(resnet20(), tmp_path / "missing.pth")
    (tmp_path / "weights.npz").write_bytes(b"x")
    with pytest.raises(MedsegError, match="unknown suffix"):
        load_pretrained(resnet20(), tmp_path / "weights.npz")
    torch.save({"state_dict": resnet20().state_dict(), "extra": NotATensor()}, tmp_path / "unsafe.pt")
    with pytest.raises(MedsegError, match="cannot be read safely"):
        load_pretrained(resnet20(), tmp_path / "unsafe.pt")
    (tmp_path / "broken.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(MedsegError, match="safetensors"):
        load_pretrained(resnet20(), tmp_path / "broken.safetensors")
    with pytest.raises(MedsegError, match="none of its"):
        load_pretrained(resnet20(), {"stem.conv.weight": torch.zeros(1)})
    with pytest.raises(MedsegError, match="layout='caffe'"):
        load_pretrained(resnet20(), {}, layout="caffe")


def test_read_state_dict_unwraps_nested_containers() -> None:
    state = resnet20().state_dict()
    nested = {"model": {"state_dict": state}, "epoch": 3}
    assert read_state_dict(nested).keys() == state.keys()
