"""The encoder registry: names to builders, with a one-line description each.

A builder is ``fn(spatial_dims=2, in_channels=1, **options) -> nn.Module``. Register your own with
``@register_encoder("name", "one line")`` and every medseg model, and ``medseg models``, can use it.
Its keyword-only parameters are its options; a builder taking ``**options`` may declare them with
``options=`` (the ResNets do), or else checks them itself. This is :class:`medseg.registry.Registry`,
the class the model registry uses too: names list in registration order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from medseg.registry import B, Registry

ENCODERS = Registry("encoder", fixed=("spatial_dims", "in_channels"))


def register_encoder(
    name: str, description: str | None = None, options: Sequence[str] | None = None
) -> Callable[[B], B]:
    """Decorator registering a builder under ``name``; ``description`` defaults to its docstring's first line."""
    return ENCODERS.register(name, description, options)


def build_encoder(name: str, spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> nn.Module:
    """Build the registered encoder ``name``; ``options`` override its defaults (see ``ResNetEncoder``)."""
    encoder: nn.Module = ENCODERS.build(name, spatial_dims=spatial_dims, in_channels=in_channels, **options)
    return encoder


def list_encoders() -> list[str]:
    """Names of every registered encoder, in registration order."""
    return ENCODERS.names()


def encoder_description(name: str) -> str:
    """The one-line description of encoder ``name``."""
    return ENCODERS.description(name)
