"""The shared test base every registered model passes (as smp's model tests).

Each model runs in 2D and 3D, with 1 and 3 input channels and 2 and 4 classes (every combination of
channels and classes appears once per model), on odd input sizes: output shape, finite gradients on
every trainable parameter, train/eval output structure, and a save/load round trip through
``build_args`` giving identical eval outputs. Configurations are tiny so the file runs in seconds.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from medseg.errors import MedsegError
from medseg.models import build_model, list_models, model_description, model_options
from medseg.models.blocks import ASPP, SqueezeExcite, UpSample, crop_to, pad_to_multiple

#: A small ResNet for the encoder-based models (same code path as resnet34). No layer is narrower than
#: 8 channels: below that PyTorch falls back to its slow reference convolutions, which cost more time.
SMALL_ENCODER = {"encoder": "resnet18", "encoder_options": {"widths": [8, 8, 16, 16]}}

#: The smallest sensible configuration of every registered model.
SMALL = {
    "unet": {"features": [8, 8, 16, 16]},
    "unet_resnet": {**SMALL_ENCODER, "decoder_channels": [16, 8, 8, 8, 8], "attention": "se"},
    "dual_unet_resnet": {
        **SMALL_ENCODER, "decoder_channels": [16, 8, 8, 8, 8], "features2": [8, 8, 8, 16], "aspp_channels": 8,
    },
    "fcn": {**SMALL_ENCODER},
}

#: (spatial_dims, in_channels, classes, input shape): both dims, each channels x classes pair once.
CASES = [
    (2, 1, 2, (2, 1, 75, 91)),
    (2, 3, 4, (2, 3, 75, 91)),
    (3, 1, 4, (1, 1, 37, 45, 29)),
    (3, 3, 2, (1, 3, 37, 45, 29)),
]


def small_model(name: str, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2, **extra):
    return build_model(name, spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                       **{**SMALL[name], **extra})


def as_tuple(out) -> tuple[torch.Tensor, ...]:
    return out if isinstance(out, tuple) else (out,)


def test_every_registered_model_is_covered_by_the_base():
    assert set(list_models()) == set(SMALL)
    for name in list_models():
        assert model_description(name)
        assert "\n" not in model_description(name)


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize(("dims", "in_ch", "classes", "shape"), CASES, ids=lambda v: str(v).replace(" ", ""))
def test_model_contract(name, dims, in_ch, classes, shape, tmp_path):
    torch.manual_seed(0)
    model = small_model(name, dims, in_ch, classes)
    x = torch.randn(shape)
    expected = (shape[0], classes, *shape[2:])

    # training mode: every output has the input's spatial size; aux outputs only here
    model.train()
    out = model(x)
    assert isinstance(out, tuple) == (model.num_outputs > 1)
    outs = as_tuple(out)
    assert len(outs) == model.num_outputs
    for out in outs:
        assert out.shape == expected
    sum(o.float().pow(2).mean() for o in outs).backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name}: {pname} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{name}: {pname} has non-finite gradients"

    # eval mode: one tensor
    model.eval()
    with torch.no_grad():
        reference = model(x)
    assert isinstance(reference, torch.Tensor)
    assert reference.shape == expected
    assert torch.isfinite(reference).all()

    # build_args through JSON, weights through a file: the rebuilt model gives the same logits
    args = json.loads(json.dumps(model.build_args))
    assert args["name"] == name
    assert (args["spatial_dims"], args["in_channels"], args["out_channels"]) == (dims, in_ch, classes)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    torch.manual_seed(1)
    rebuilt = build_model(**args)
    rebuilt.load_state_dict(torch.load(tmp_path / "weights.pt", weights_only=True))
    rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), reference, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["unet_resnet", "dual_unet_resnet", "fcn"])
def test_cifar_stem_encoder_reductions_1_1_2_4(name):
    """Decoders use only out_channels and reductions: a CIFAR-stem encoder (no final up-sampling) works."""
    model = build_model(name, encoder="resnet20", out_channels=3)
    assert tuple(model.encoder.reductions) == (1, 1, 2, 4)
    x = torch.randn(2, 1, 30, 21)
    outs = as_tuple(model(x))
    assert [o.shape for o in outs] == [(2, 3, 30, 21)] * model.num_outputs
    if name != "fcn":
        assert len(model.build_args["decoder_channels"]) == 3  # three skips, no final up-sampling


@pytest.mark.parametrize("name", sorted(SMALL))
def test_build_args_record_every_option(name):
    model = small_model(name)
    assert set(model.build_args) == {"name", "spatial_dims", "in_channels", "out_channels", *model_options(name)}
    again = build_model(**model.build_args)
    assert again.build_args == model.build_args
    assert [p.shape for p in again.parameters()] == [p.shape for p in model.parameters()]


@pytest.mark.parametrize("name", sorted(SMALL))
def test_input_sizes_that_need_no_padding_and_batch_of_one(name):
    model = small_model(name).eval()
    for shape in [(1, 1, 64, 64), (1, 1, 33, 17)]:
        with torch.no_grad():
            assert model(torch.randn(shape)).shape == (1, 2, *shape[2:])


@pytest.mark.parametrize(
    ("name", "options", "named"),
    [
        ("unet", {"upsample": "pixelshuffle"}, "upsample"),
        ("unet", {"norm": "layer"}, "norm"),
        ("unet", {"features": [8]}, "features"),
        ("unet", {"featurs": [8, 16]}, "featurs"),
        ("unet_resnet", {"encoder": "resnet9000"}, "encoder"),
        ("unet_resnet", {"attention": "cbam"}, "attention"),
        ("unet_resnet", {"decoder_channels": [16, 8]}, "decoder_channels"),
        ("fcn", {"variant": "fcn4s"}, "variant"),
        ("dual_unet_resnet", {"aspp": "yes"}, "aspp"),
    ],
)
def test_bad_options_name_the_option_and_the_choices(name, options, named):
    with pytest.raises(MedsegError, match=named) as info:
        build_model(name, **{**SMALL[name], **options})
    assert "\n" not in str(info.value)


def test_unknown_model_and_bad_dims_are_user_errors():
    with pytest.raises(MedsegError, match=r"unknown model 'resunet'; choose one of unet, unet_resnet, dual_unet_resnet, fcn$"):
        build_model("resunet")
    with pytest.raises(MedsegError, match="spatial_dims"):
        build_model("unet", spatial_dims=1)
    with pytest.raises(MedsegError, match="out_channels"):
        build_model("unet", out_channels=0)


def test_unet_upsampling_modes_and_norms():
    for upsample, norm in [("deconv", "instance"), ("interp", "group"), ("interp", "batch")]:
        model = small_model("unet", 3, upsample=upsample, norm=norm)
        assert model(torch.randn(2, 1, 9, 10, 11)).shape == (2, 2, 9, 10, 11)
        assert model.build_args["upsample"] == upsample and model.build_args["norm"] == norm


def test_unet_resnet_freeze_encoder_keeps_norm_statistics():
    model = small_model("unet_resnet")
    model.freeze_encoder()
    model.train()
    enc_norms = [m for m in model.encoder.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    dec_norms = [m for m in model.decoder.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert enc_norms and dec_norms
    assert not any(m.training for m in enc_norms) and all(m.training for m in dec_norms)
    before = [m.running_mean.clone() for m in enc_norms]
    dec_before = dec_norms[0].running_mean.clone()
    model(torch.randn(2, 1, 40, 40)).mean().backward()
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, enc_norms))
    assert not torch.equal(dec_before, dec_norms[0].running_mean)
    assert all(p.grad is None and not p.requires_grad for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.decoder.parameters())
    model.freeze_encoder(False)
    model.train()
    assert all(m.training for m in enc_norms) and all(p.requires_grad for p in model.encoder.parameters())


def test_encoder_weights_are_loaded_and_not_recorded(tmp_path):
    from safetensors.torch import save_file

    donor = small_model("unet_resnet")
    path = tmp_path / "encoder.safetensors"
    save_file({k: v.contiguous() for k, v in donor.encoder.state_dict().items()}, str(path))
    model = small_model("unet_resnet", encoder_weights=str(path))
    for key, value in donor.encoder.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[key], value), key
    assert model.build_args["encoder_weights"] is None
    with pytest.raises(MedsegError, match="encoder_weights"):
        small_model("fcn", encoder_weights=str(tmp_path / "missing.pt"))


def test_fcn_fuses_scores_by_upsample_and_add():
    counts = {v: len(small_model("fcn", variant=v).scores) for v in ("fcn32s", "fcn16s", "fcn8s")}
    assert counts == {"fcn32s": 1, "fcn16s": 2, "fcn8s": 3}
    model = small_model("fcn", variant="fcn16s", out_channels=3).eval()
    x = torch.randn(1, 1, 64, 96)
    with torch.no_grad():
        feats = model.encoder(x)
        coarse = F.interpolate(model.scores[0](feats[-1]), size=feats[-2].shape[2:], mode="bilinear")
        expected = F.interpolate(coarse + model.scores[1](feats[-2]), size=(64, 96), mode="bilinear")
        torch.testing.assert_close(model(x), expected)


def test_blocks_pad_crop_and_shapes():
    x = torch.arange(2 * 5 * 7, dtype=torch.float32).view(1, 2, 5, 7)
    padded, size = pad_to_multiple(x, 4)
    assert padded.shape == (1, 2, 8, 8) and size == (5, 7)
    assert torch.equal(padded[..., 7, :7], x[..., 4, :])  # replicate at the far end
    assert torch.equal(crop_to(padded, size), x)
    same, _ = pad_to_multiple(padded, 4)
    assert same is padded
    v = torch.randn(2, 6, 5, 6, 7)
    assert ASPP(3, 6, 4)(v).shape == (2, 4, 5, 6, 7)
    assert ASPP(2, 6, 4)(torch.randn(1, 6, 3, 3)).shape == (1, 4, 3, 3)  # batch of one, training mode
    assert SqueezeExcite(6, ratio=2)(v).shape == v.shape
    for mode in UpSample.MODES:
        assert UpSample(3, 6, 3, mode)(v).shape == (2, 3, 10, 12, 14)
