"""The operator registry: ``build(name, **kwargs)`` and ``available()``."""

from __future__ import annotations

import difflib
from typing import Any

from pdeforge.operators.base import Operator, OperatorConfigError, as_int

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


#: constructor arguments that are sizes or counts: positive integers (or tuples of them)
POSITIVE = {"in_channels", "out_channels", "dim", "n_modes", "hidden_channels", "n_layers",
            "width", "n_stages",
            "num_tokens", "num_basis", "heads", "patch_size", "channels", "basis",
            "bias_resolution", "branch_layers", "cnn_channels", "trunk_layers", "pod_modes"}


def build(name: str, **kwargs: Any) -> Operator:
    """Construct the operator ``name``; ``build(m.name, **m.config)`` rebuilds ``m``.

    Sizes and counts must be positive (a zero-width layer builds and predicts zeros);
    a constructor's own ValueError (e.g. neuraloperator's for an unknown factorization)
    becomes an OperatorConfigError that names the operator.
    """
    cls = get(name)
    # sizes given as integral floats (64.0, from a YAML or JSON sweep) or numpy numbers
    # are sizes: as ints
    kwargs = {k: _positive_ints(cls.name, k, v) if k in POSITIVE and v is not None else v
              for k, v in kwargs.items()}
    try:
        return cls(**kwargs)
    except ValueError as exc:
        if isinstance(exc, OperatorConfigError):
            raise
        raise OperatorConfigError(f"{cls.name}: {exc}") from exc


def _positive_ints(model: str, key: str, value: Any) -> Any:
    """A size or count (or a list of them) as ints >= 1 (:func:`as_int`), or an
    :class:`OperatorConfigError` naming the operator and the argument."""
    try:
        if isinstance(value, list | tuple):
            return type(value)(as_int(v, key) for v in value)
        return as_int(value, key)
    except OperatorConfigError:
        raise OperatorConfigError(
            f"{model}: {key} must be a positive integer (or a list of them), got {value!r}"
        ) from None
