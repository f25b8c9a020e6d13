"""The operator registry: ``build(name, **kwargs)`` and ``available()``."""

from __future__ import annotations

import difflib
from typing import Any

from pdeforge.operators.base import Operator, OperatorConfigError

_REGISTRY: dict[str, type[Operator]] = {}
_BY_KEY: dict[str, type[Operator]] = {}  # the same classes under _key(name)


def register(cls: type[Operator]) -> type[Operator]:
    """Add an :class:`Operator` subclass under its ``name``."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no registry name")
    _REGISTRY[cls.name] = _BY_KEY[_key(cls.name)] = cls
    return cls


def available() -> list[str]:
    """Names accepted by :func:`build`."""
    return sorted(_REGISTRY)


def _key(name: str) -> str:
    """Names match whatever their case and separators: "MG-TFNO" is "mgtfno"."""
    return str(name).lower().replace("-", "").replace("_", "")


def get(name: str) -> type[Operator]:
    """The operator class registered as ``name`` (any case, with or without - and _)."""
    found = _BY_KEY.get(_key(name))
    if found is None:
        close = difflib.get_close_matches(_key(name), _REGISTRY, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise OperatorConfigError(
            f"unknown operator {name!r}{hint}; available: {', '.join(available())}"
        )
    return found


def build(name: str, **kwargs: Any) -> Operator:
    """Construct the operator ``name``; ``build(m.name, **m.config)`` rebuilds ``m``.

    Sizes and counts must be positive (checked by :func:`records_config`); a
    constructor's own ValueError (e.g. neuraloperator's for an unknown factorization)
    becomes an OperatorConfigError that names the operator.
    """
    cls = get(name)
    try:
        return cls(**kwargs)
    except ValueError as exc:
        if isinstance(exc, OperatorConfigError):
            raise
        raise OperatorConfigError(f"{cls.name}: {exc}") from exc
