"""Folding batch norms into convs for inference: same outputs, fewer layers, and only where it is exact."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from medseg.encoders import build_encoder
from medseg.models import build_model, fold_batch_norms, list_models
from tests.models.test_models import SMALL


def _randomise_norms(model: nn.Module) -> None:
    """Running statistics and affine parameters far from the identity, so a wrong fold shows."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=gen) - 0.5)


def _norms(model: nn.Module) -> int:
    return sum(isinstance(m, _BatchNorm) for m in model.modules())


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", list_models())
def test_folded_model_gives_the_same_logits_without_batch_norms(name: str, spatial_dims: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, spatial_dims=spatial_dims, in_channels=1, out_channels=3, **SMALL[name])
    _randomise_norms(model)
    model.eval()
    x = torch.randn(1, 1, *([24] * spatial_dims))
    with torch.no_grad():
        before = model(x)
        norms = _norms(model)
        assert fold_batch_norms(model) == norms > 0
        after = model(x)
    assert _norms(model) == 0
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5 * float(before.abs().max()))


def test_preactivation_keeps_the_norms_that_normalise_a_block_input() -> None:
    """In a pre-activation unit bn1 acts on the block's input (a sum), which no conv produced alone."""
    torch.manual_seed(0)
    encoder = build_encoder("preact_resnet18", spatial_dims=2, in_channels=1)
    _randomise_norms(encoder)
    encoder.eval()
    x = torch.randn(1, 1, 40, 40)
    with torch.no_grad():
        before = encoder(x)
        folded = fold_batch_norms(encoder)
        after = encoder(x)
    # stem + one conv1 -> bn2 per unit (8 units); the 8 bn1 and the final norm stay
    assert (folded, _norms(encoder)) == (9, 9)
    for a, b in zip(after, before, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))


def test_folding_a_training_model_is_refused() -> None:
    model = build_model("unet", spatial_dims=2, **SMALL["unet"])
    with pytest.raises(ValueError, match="eval"):
        fold_batch_norms(model)
