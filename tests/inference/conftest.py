"""Fixtures of the inference tests; the helpers live in ``inference_helpers``."""

from __future__ import annotations

from typing import Any

import pytest
from inference_helpers import ThresholdNet
from torch import nn


@pytest.fixture
def threshold_model(monkeypatch: pytest.MonkeyPatch):
    """Make run checkpoints build :class:`ThresholdNet` for runs whose build_args name it."""
    import medseg.models as models

    real = models.build_model

    def build(name: str, **kwargs: Any) -> nn.Module:
        if name == "threshold":
            return ThresholdNet(kwargs.get("spatial_dims", 3))
        return real(name, **kwargs)

    monkeypatch.setattr(models, "build_model", build)
    return ThresholdNet
