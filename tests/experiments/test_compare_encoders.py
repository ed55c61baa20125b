"""``medseg compare --encoders``: one config per model and encoder, checked before anything trains."""

from __future__ import annotations

import pytest

from medseg.errors import MedsegError
from medseg.experiments.compare import variant_configs


def test_one_config_per_model_and_encoder_with_the_encoder_set() -> None:
    configs = variant_configs(["unet_resnet", "fcn"], ["resnet18", "resnext50_32x4d"], None, None, [])
    assert list(configs) == ["unet_resnet+resnet18", "unet_resnet+resnext50_32x4d", "fcn+resnet18", "fcn+resnext50_32x4d"]
    for name, cfg in configs.items():
        model, encoder = name.split("+")
        assert cfg.model.name == model and cfg.model.options["encoder"] == encoder


def test_one_model_names_its_rows_by_encoder_and_without_encoders_by_model() -> None:
    assert list(variant_configs(["unet_resnet"], ["seresnet50", "resnet50d"], None, None, [])) == ["seresnet50", "resnet50d"]
    assert list(variant_configs(["unet", "fcn"], [], None, None, [])) == ["unet", "fcn"]


@pytest.mark.parametrize(("models", "encoders", "message"), [
    (["unet"], ["resnet18"], "model unet has no encoder option"),
    (["unet_resnet"], ["resnet999"], "unknown encoder"),
])
def test_bad_requests_are_one_line_errors(models, encoders, message) -> None:
    with pytest.raises(MedsegError, match=message) as err:
        variant_configs(models, encoders, None, None, [])
    assert "\n" not in str(err.value)
