"""The operator registry: ``build(name, **kwargs)`` and ``available()``."""

from __future__ import annotations

import difflib
from typing import Any

from pdeforge.operators.base import Operator, OperatorConfigError

_REGISTRY: dict[str, type[Operator]] = {}


def register(cls: type[Operator]) -> type[Operator]:
    """Add an :class:`Operator` subclass under its ``name``."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no registry name")
    _REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    """Names accepted by :func:`build`."""
    return sorted(_REGISTRY)


def get(name: str) -> type[Operator]:
    """The operator class registered as ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), _REGISTRY, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise OperatorConfigError(
            f"unknown operator {name!r}{hint}; available: {', '.join(available())}"
        ) from None


def build(name: str, **kwargs: Any) -> Operator:
    """Construct the operator ``name``; ``build(m.name, **m.config)`` rebuilds ``m``."""
    return get(name)(**kwargs)
