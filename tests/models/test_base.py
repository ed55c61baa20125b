"""The model base classes and build_args: pad → _forward → crop, freezing the encoder of every
encoder-based model, and build_args recorded by the registry from the bound signature."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from medseg.models import EncoderModel, SegmentationModel, build_model, list_models, model_options
from medseg.models import registry as model_registry
from medseg.models.base import NORM_LAYERS
from medseg.registry import to_json
from tests.models.test_models import SMALL

ENCODER_MODELS = ["unet_resnet", "dual_unet_resnet", "fcn"]


def _small(name: str, **extra) -> nn.Module:
    return build_model(name, **{**SMALL[name], **extra})


def _encoder_norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.encoder.modules() if isinstance(m, NORM_LAYERS)]


def _other_norms(model: nn.Module) -> list[nn.Module]:
    encoder = {id(m) for m in model.encoder.modules()}
    return [m for m in model.modules() if isinstance(m, NORM_LAYERS) and id(m) not in encoder]


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return sum(o.float().mean() for o in (out if isinstance(out, tuple) else (out,)))


# --- the base forward: pad, _forward, crop ------------------------------------------------------------


class _Probe(SegmentationModel):
    """Records the size ``_forward`` sees; two outputs in training, one in eval."""

    num_outputs = 2
    multiple = 8

    def __init__(self) -> None:
        super().__init__()
        self.seen: tuple[int, ...] = ()

    def _forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        self.seen = tuple(x.shape[2:])
        return (x * 2, x * 3) if self.training else x * 2


def test_forward_pads_to_the_multiple_and_crops_every_output_back() -> None:
    probe = _Probe()
    x = torch.randn(1, 2, 13, 17)
    main, aux = probe.train()(x)
    assert probe.seen == (16, 24)
    torch.testing.assert_close(main, x * 2)
    torch.testing.assert_close(aux, x * 3)
    out = probe.eval()(x)
    assert isinstance(out, torch.Tensor)
    torch.testing.assert_close(out, x * 2)


def test_every_registered_model_is_a_segmentation_model_and_encoder_models_are_the_expected_ones() -> None:
    with torch.device("meta"):
        models = {name: build_model(name) for name in list_models()}
    assert all(isinstance(m, SegmentationModel) for m in models.values())
    assert [name for name, m in models.items() if isinstance(m, EncoderModel)] == ENCODER_MODELS


# --- freezing the encoder -----------------------------------------------------------------------------


def _frozen(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = _small(name)
    model.freeze_encoder()
    return model


@pytest.mark.parametrize("name", ENCODER_MODELS)
def test_freeze_encoder_stops_gradients_and_keeps_encoder_norms_in_eval(name: str) -> None:
    model = _frozen(name).train()
    enc_norms, other_norms = _encoder_norms(model), _other_norms(model)
    assert enc_norms
    assert not any(m.training for m in enc_norms) and all(m.training for m in other_norms)
    assert all(not p.requires_grad for p in model.encoder.parameters())
    before = [m.running_mean.clone() for m in enc_norms]
    _outputs(model, torch.randn(2, 1, 40, 40)).backward()
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, enc_norms))
    assert all(p.grad is None for p in model.encoder.parameters())
    encoder = {id(p) for p in model.encoder.parameters()}
    assert all(p.grad is not None for p in model.parameters() if id(p) not in encoder)


@pytest.mark.parametrize("name", ENCODER_MODELS)
def test_unfreeze_encoder_restores_gradients_and_training_norms(name: str) -> None:
    model = _frozen(name)
    model.unfreeze_encoder()
    assert all(m.training for m in _encoder_norms(model))  # the model is in training mode: norms follow now
    model.eval()
    model.train()
    assert all(m.training for m in _encoder_norms(model))
    assert all(p.requires_grad for p in model.encoder.parameters())
    before = _encoder_norms(model)[0].running_mean.clone()
    _outputs(model, torch.randn(2, 1, 40, 40)).backward()
    assert not torch.equal(before, _encoder_norms(model)[0].running_mean)
    assert all(p.grad is not None for p in model.encoder.parameters())


def test_freezing_an_eval_model_leaves_it_in_eval() -> None:
    model = _small("fcn").eval()
    model.freeze_encoder()
    assert not model.training and not any(m.training for m in model.modules())


# --- build_args from the bound signature -----------------------------------------------------------------


def _signature_defaults(name: str) -> dict:
    params = inspect.signature(model_registry.MODELS.entry(name).builder).parameters
    return {p: to_json(params[p].default) for p in model_options(name)}


@pytest.mark.parametrize("name", list_models())
def test_build_args_are_the_bound_signature_with_defaults_filled_in(name: str) -> None:
    with torch.device("meta"):
        model = build_model(name, in_channels=3)
    expected = {"name": name, "spatial_dims": 2, "in_channels": 3, "out_channels": 2, **_signature_defaults(name)}
    if "encoder_options" in expected:
        expected["encoder_options"] = {}  # recorded as the mapping the encoder was built with
    assert model.build_args == expected
    assert list(model.build_args) == list(expected)  # in the signature's order


@pytest.mark.parametrize("name", list_models())
def test_build_args_round_trip_gives_identical_state_dict_keys_and_shapes(name: str) -> None:
    for options in ({}, SMALL[name]):
        with torch.device("meta"):
            model = build_model(name, spatial_dims=3, out_channels=4, **options)
            rebuilt = build_model(**model.build_args)
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
            k: v.shape for k, v in model.state_dict().items()
        }
        assert rebuilt.build_args == model.build_args


def test_a_registered_builder_gets_build_args_from_its_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tuples become lists, defaults are filled in, encoder_weights is recorded as None."""
    monkeypatch.setattr(model_registry.MODELS, "_entries", dict(model_registry.MODELS._entries))

    @model_registry.register_model("probe", "a probe")
    def probe(spatial_dims, in_channels, out_channels, *, widths=(4, 8), encoder_weights=None, extra=None):
        return nn.Conv2d(in_channels, out_channels, 1)

    model = build_model("probe", in_channels=2, encoder_weights="/somewhere/weights.pt", extra=(1, (2, 3)))
    assert model.build_args == {
        "name": "probe", "spatial_dims": 2, "in_channels": 2, "out_channels": 2,
        "widths": [4, 8], "encoder_weights": None, "extra": [1, [2, 3]],
    }  # fmt: skip


def test_decoder_channels_are_recorded_as_the_ints_the_decoder_uses() -> None:
    with torch.device("meta"):
        model = build_model("unet_resnet", encoder="resnet20", decoder_channels=(64, 32, 16, 8, 4))
    assert model.build_args["decoder_channels"] == [64, 32, 16]
    assert all(type(c) is int for c in model.build_args["decoder_channels"])
