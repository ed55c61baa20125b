"""The model registry: ``build_model(name, ...)``, ``list_models()``, ``model_description(name)``.

A model is registered by decorating its class (or builder), whose signature is
``(spatial_dims, in_channels, out_channels, *, option=default, ...)``: its keyword-only parameters
are its options, and an unknown option is a one-line :class:`MedsegError` that lists the valid ones,
before anything is built. It is :class:`medseg.registry.Registry`, the class the encoder registry
uses too, so models list in registration order (``medseg.models`` imports them in that order).

``build_model`` records ``model.build_args`` from the call's bound signature, every default filled
in, JSON-normalised (tuples to lists), with two rules: what the model reports from
``resolved_options()`` replaces the argument (the decoder channels it uses, as ints;
``encoder_options`` as a mapping), and :data:`INITIALISATION_OPTIONS` are recorded as ``None``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from torch import nn

from medseg.errors import MedsegError
from medseg.models.base import SegmentationModel
from medseg.registry import B, Registry, to_json

MODELS = Registry("model", fixed=("spatial_dims", "in_channels", "out_channels"))

#: Options that initialise weights rather than define the architecture: ``build_args`` records them as
#: ``None``, since the checkpoint holds the trained weights and a rebuild must not need the file.
INITIALISATION_OPTIONS = ("encoder_weights",)


def register_model(name: str, description: str | None = None) -> Callable[[B], B]:
    """Decorator: register a model under ``name`` (description defaults to its docstring's first line)."""
    return MODELS.register(name, description)


def list_models() -> list[str]:
    """The names of every registered model, in registration order."""
    return MODELS.names()


def model_description(name: str) -> str:
    """The one-line description of model ``name``."""
    return MODELS.description(name)


def model_options(name: str) -> tuple[str, ...]:
    """The option names model ``name`` accepts besides spatial_dims, in_channels and out_channels."""
    return MODELS.options(name)


def _positive_int(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MedsegError(f"model {field}={value!r}: give a positive integer")
    return value


def record_build_args(name: str, model: nn.Module, args: dict[str, Any]) -> dict[str, Any]:
    """The ``build_args`` of ``model``, built as ``name`` from the bound arguments ``args``."""
    recorded = {**args, **(model.resolved_options() if isinstance(model, SegmentationModel) else {})}
    recorded.update({option: None for option in INITIALISATION_OPTIONS if option in recorded})
    build_args: dict[str, Any] = to_json({"name": name, **recorded})
    json.dumps(build_args)  # a programming error, not a user one, if this fails
    return build_args


def build_model(
    name: str, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2, **options: Any
) -> nn.Module:
    """Build registered model ``name``; ``out_channels`` counts classes, background included.

    The returned model has ``num_outputs`` and ``build_args`` (JSON-serialisable keyword arguments
    with every option resolved) such that ``build_model(**model.build_args)`` rebuilds it.
    """
    entry = MODELS.entry(name)
    if spatial_dims not in (2, 3):
        raise MedsegError(f"model spatial_dims={spatial_dims!r}: medseg models are 2D or 3D; give 2 or 3")
    _positive_int("in_channels", in_channels)
    _positive_int("out_channels", out_channels)
    args = MODELS.bind(name, spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **options)
    model: nn.Module = entry.builder(**args)
    model.build_args = record_build_args(name, model, args)
    return model
