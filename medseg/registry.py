"""One registry class for medseg's named builders: the encoders and the models use it alike.

A builder is registered by decorating it, ``@registry.register("name", "one line")``. Its options
are its keyword-only parameters, less the fixed ones every builder of the registry takes (a builder
that takes ``**options`` declares them with ``options=``). Unknown names and options are one-line
:class:`MedsegError` messages that list the valid choices.

Names list in **registration order**: the order the modules register them in, which medseg keeps
readable (encoders by family and depth; models from the classic U-Net to the FCN baseline). A
user's own builders come after medseg's.

This module is a leaf: it imports only the standard library and :mod:`medseg.errors`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from medseg.errors import MedsegError

Builder = Callable[..., Any]
B = TypeVar("B", bound=Builder)


@dataclass(frozen=True)
class Entry:
    """One registered builder: its description line and option names.

    ``checked`` is False for a builder that takes ``**options`` and declared none: it checks its
    options itself.
    """

    name: str
    builder: Builder
    description: str
    options: tuple[str, ...]
    checked: bool = True


def keyword_options(builder: Builder, fixed: Sequence[str] = ()) -> tuple[str, ...]:
    """The keyword-only parameter names of ``builder`` (a function or class), less ``fixed``."""
    params = inspect.signature(builder).parameters.values()
    return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in fixed)


def check_options(owner: str, given: Iterable[str], valid: Sequence[str]) -> None:
    """Raise a one-line :class:`MedsegError` naming the first of ``given`` not in ``valid``."""
    unknown = [k for k in given if k not in valid]
    if unknown:
        listed = ", ".join(valid) or "none"
        raise MedsegError(f"{owner}: unknown option {unknown[0]!r}; valid options are {listed}")


def to_json(value: Any) -> Any:
    """Tuples to lists and mappings to dicts, recursively, so ``value`` survives a JSON round trip."""
    if isinstance(value, tuple | list):
        return [to_json(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    return value


class Registry:
    """Names to builders of one ``kind`` ("encoder", "model"), each builder taking the ``fixed`` parameters."""

    def __init__(self, kind: str, fixed: Sequence[str]) -> None:
        self.kind = kind
        self.fixed = tuple(fixed)
        self._entries: dict[str, Entry] = {}

    def register(
        self, name: str, description: str | None = None, options: Sequence[str] | None = None
    ) -> Callable[[B], B]:
        """Decorator: register a builder under ``name``; the description defaults to its docstring's first line."""

        def decorate(builder: B) -> B:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            params = inspect.signature(builder).parameters
            missing = [p for p in self.fixed if p not in params]
            if missing:
                raise TypeError(f"{self.kind} builder {builder.__name__} lacks parameters {missing}")
            line = description or (inspect.getdoc(builder) or name).splitlines()[0]
            takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
            found = tuple(options) if options is not None else keyword_options(builder, self.fixed)
            self._entries[name] = Entry(name, builder, line, found, checked=options is not None or not takes_any)
            return builder

        return decorate

    def names(self) -> list[str]:
        """Every registered name, in registration order."""
        return list(self._entries)

    def entry(self, name: str) -> Entry:
        """The entry of ``name``; an unknown name is a one-line :class:`MedsegError` listing the known ones."""
        if name not in self._entries:
            raise MedsegError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self.names())}")
        return self._entries[name]

    def description(self, name: str) -> str:
        """The one-line description of ``name``."""
        return self.entry(name).description

    def options(self, name: str) -> tuple[str, ...]:
        """The option names ``name`` accepts besides the fixed parameters."""
        return self.entry(name).options

    def check(self, name: str, options: Iterable[str]) -> Entry:
        """The entry of ``name`` once every one of ``options`` is known to it."""
        entry = self.entry(name)
        if entry.checked:
            check_options(f"{self.kind} {name}", options, entry.options)
        return entry

    def bind(self, name: str, **kwargs: Any) -> dict[str, Any]:
        """The keyword arguments of a call to ``name``'s builder, options checked, every default filled in."""
        entry = self.check(name, [k for k in kwargs if k not in self.fixed])
        signature = inspect.signature(entry.builder)
        bound = signature.bind(**kwargs)
        bound.apply_defaults()
        args: dict[str, Any] = {}
        for param, value in bound.arguments.items():  # a ``**options`` parameter is spread out
            spread = signature.parameters[param].kind is inspect.Parameter.VAR_KEYWORD
            args.update(value if spread else {param: value})
        return args

    def build(self, name: str, **kwargs: Any) -> Any:
        """Call ``name``'s builder with ``kwargs`` once its options are checked."""
        return self.check(name, [k for k in kwargs if k not in self.fixed]).builder(**kwargs)
