"""Dual U-Net specifics: the ablation switches, the gate network 2 really receives, the skip mapping."""

from __future__ import annotations

import torch

from medseg.models import build_model
from medseg.models.dual_unet import _nearest_map, foreground_probability
from medseg.models.summary import count_parameters

SMALL = {
    "encoder": "resnet18", "encoder_options": {"widths": [8, 8, 16, 16]},
    "decoder_channels": [16, 8, 8, 8, 8], "features2": [8, 8, 8, 16], "aspp_channels": 8,
}


def small(**extra) -> torch.nn.Module:
    return build_model("dual_unet_resnet", **{**SMALL, **extra})


def test_ablations_have_fewer_parameters_than_the_default():
    full = count_parameters(small())
    no_aspp = count_parameters(small(aspp=False))
    no_se = count_parameters(small(se=False))
    neither = count_parameters(small(aspp=False, se=False))
    print(f"dual_unet_resnet params: full {full}, aspp=False {no_aspp}, se=False {no_se}, both off {neither}")
    assert neither < no_aspp < full and neither < no_se < full
    assert not any(isinstance(m, torch.nn.Linear) for m in small(se=False).modules())  # SE is gone


def test_default_ablation_has_fewer_parameters_at_full_size():
    with torch.device("meta"):
        assert count_parameters(build_model("dual_unet_resnet", aspp=False, se=False)) < count_parameters(
            build_model("dual_unet_resnet")
        )


def test_foreground_probability():
    z = torch.randn(2, 2, 5, 5)
    torch.testing.assert_close(foreground_probability(z), torch.sigmoid(z[:, 1:] - z[:, :1]))
    z4 = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(foreground_probability(z4), torch.softmax(z4, 1)[:, 1:].sum(1, keepdim=True))
    z1 = torch.randn(2, 1, 5, 5)
    torch.testing.assert_close(foreground_probability(z1), torch.sigmoid(z1))


def test_network2_receives_the_input_gated_by_output1():
    torch.manual_seed(0)
    model = small(out_channels=3).eval()
    x = torch.randn(2, 1, 64, 64)
    seen: dict[str, torch.Tensor] = {}
    out1: dict[str, torch.Tensor] = {}
    model.head1.register_forward_hook(lambda m, i, o: out1.setdefault("logits", o))
    model.encoder2[0].register_forward_pre_hook(lambda m, i: seen.setdefault("input", i[0]))
    with torch.no_grad():
        model(x)
    expected = x * (1 - torch.softmax(out1["logits"], 1)[:, :1])
    torch.testing.assert_close(seen["input"], expected)


def test_zeroing_output1_changes_output2():
    torch.manual_seed(0)
    model = small().eval()
    x = torch.randn(1, 1, 48, 40)
    with torch.no_grad():
        normal = model(x)
        handle = model.head1.register_forward_hook(lambda m, i, o: torch.zeros_like(o))
        zeroed = model(x)
        handle.remove()
        again = model(x)
    assert not torch.allclose(normal, zeroed, atol=1e-5)
    torch.testing.assert_close(again, normal)


def test_training_returns_out2_then_out1():
    torch.manual_seed(0)
    model = small().train()
    x = torch.randn(2, 1, 40, 40)
    out1: dict[str, torch.Tensor] = {}
    model.head1.register_forward_hook(lambda m, i, o: out1.setdefault("logits", o))
    final, aux = model(x)
    torch.testing.assert_close(aux, out1["logits"][..., :40, :40])  # the padded network-1 logits, cropped
    assert not torch.equal(final, aux)


def test_encoder1_skip_for_each_network2_level():
    # ResNet reductions (2, 4, 8, 16, 32) for network-2 levels at 1, 2, 4, 8: nearest map, ties to the finer
    assert [_nearest_map((2, 4, 8, 16, 32), 2**level) for level in range(4)] == [0, 0, 1, 2]
    assert [_nearest_map((1, 1, 2, 4), 2**level) for level in range(4)] == [0, 2, 3, 3]
