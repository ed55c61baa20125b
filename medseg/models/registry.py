"""The model registry: ``build_model(name, ...)``, ``list_models()``, ``model_description(name)``.

A model is registered by decorating its builder, a function
``(spatial_dims, in_channels, out_channels, **options) -> nn.Module``. The builder's keyword
parameters are the model's options: an unknown option is a one-line :class:`MedsegError` that
lists the valid ones, before anything is built.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from medseg.errors import MedsegError

Builder = Callable[..., nn.Module]
B = TypeVar("B", bound=Builder)

_FIXED = ("spatial_dims", "in_channels", "out_channels")


@dataclass(frozen=True)
class ModelEntry:
    """One registered model: its builder, one-line description and option names."""

    name: str
    builder: Builder
    description: str
    options: tuple[str, ...]


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, description: str | None = None) -> Callable[[B], B]:
    """Decorator: register ``builder`` under ``name`` (description defaults to its docstring's first line)."""

    def decorate(builder: B) -> B:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        params = inspect.signature(builder).parameters
        missing = [p for p in _FIXED if p not in params]
        if missing:
            raise TypeError(f"model builder {builder.__name__} lacks parameters {missing}")
        doc = description or (inspect.getdoc(builder) or name).splitlines()[0]
        options = tuple(p for p in params if p not in _FIXED and params[p].kind is inspect.Parameter.KEYWORD_ONLY)
        _MODELS[name] = ModelEntry(name, builder, doc, options)
        return builder

    return decorate


def list_models() -> list[str]:
    """The names of every registered model, sorted."""
    return sorted(_MODELS)


def _entry(name: str) -> ModelEntry:
    if name not in _MODELS:
        raise MedsegError(f"model {name!r} is not known; choose one of {', '.join(list_models())}")
    return _MODELS[name]


def model_description(name: str) -> str:
    """The one-line description of model ``name``."""
    return _entry(name).description


def model_options(name: str) -> tuple[str, ...]:
    """The option names model ``name`` accepts besides spatial_dims, in_channels and out_channels."""
    return _entry(name).options


def _positive_int(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MedsegError(f"model {field}={value!r}: give a positive integer")
    return value


def build_model(
    name: str, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2, **options: Any
) -> nn.Module:
    """Build registered model ``name``; ``out_channels`` counts classes, background included.

    The returned model has ``num_outputs`` and ``build_args`` (JSON-serialisable keyword arguments
    with every option resolved) such that ``build_model(**model.build_args)`` rebuilds it.
    """
    entry = _entry(name)
    if spatial_dims not in (2, 3):
        raise MedsegError(f"model spatial_dims={spatial_dims!r}: medseg models are 2D or 3D; give 2 or 3")
    _positive_int("in_channels", in_channels)
    _positive_int("out_channels", out_channels)
    unknown = [k for k in options if k not in entry.options]
    if unknown:
        valid = ", ".join(entry.options) or "none"
        raise MedsegError(f"model {name}: unknown option {unknown[0]!r}; valid options are {valid}")
    model = entry.builder(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **options)
    json.dumps(model.build_args)  # a programming error, not a user one, if this fails
    return model


def as_list(value: Any) -> Any:
    """Tuples to lists, recursively, so ``build_args`` survives a JSON round trip unchanged."""
    if isinstance(value, tuple | list):
        return [as_list(v) for v in value]
    if isinstance(value, dict):
        return {str(k): as_list(v) for k, v in value.items()}
    return value
