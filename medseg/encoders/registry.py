"""The encoder registry: names to builders, with a one-line description each.

A builder is ``fn(spatial_dims=2, in_channels=1, **options) -> nn.Module``. Register your own with
``@register_encoder("name", "one line")`` and every medseg model, and ``medseg models``, can use it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from medseg.errors import MedsegError

Builder = Callable[..., nn.Module]
B = TypeVar("B", bound=Builder)


@dataclass(frozen=True)
class EncoderEntry:
    """One registered encoder: its builder and the line ``medseg models`` shows."""

    name: str
    builder: Builder
    description: str


_REGISTRY: dict[str, EncoderEntry] = {}


def register_encoder(name: str, description: str | None = None) -> Callable[[B], B]:
    """Decorator registering ``builder`` under ``name``; ``description`` defaults to its docstring's first line."""

    def decorate(builder: B) -> B:
        if name in _REGISTRY:
            raise ValueError(f"encoder {name!r} is already registered")
        doc = (builder.__doc__ or "").strip().splitlines()
        line = description or (doc[0].strip() if doc else name)
        _REGISTRY[name] = EncoderEntry(name, builder, line)
        return builder

    return decorate


def _entry(name: str) -> EncoderEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise MedsegError(
            f"encoder {name!r} is unknown; choose one of: {', '.join(list_encoders())}"
        ) from None


def build_encoder(name: str, spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> nn.Module:
    """Build the registered encoder ``name``; ``options`` override its defaults (see ``ResNetEncoder``)."""
    return _entry(name).builder(spatial_dims=spatial_dims, in_channels=in_channels, **options)


def list_encoders() -> list[str]:
    """Names of every registered encoder, in registration order."""
    return list(_REGISTRY)


def encoder_description(name: str) -> str:
    """The one-line description of encoder ``name``."""
    return _entry(name).description
