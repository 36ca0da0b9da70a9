"""Name -> strategy class."""

from __future__ import annotations

from typing import TypeVar

from .base import PruningOptions, PruningStrategy

STRATEGIES: dict[str, type[PruningStrategy]] = {}

S = TypeVar("S", bound=type[PruningStrategy])


def register_strategy(cls: S) -> S:
    """Class decorator: make `cls` available as `pruning_method=cls.name`."""
    if cls.name in STRATEGIES:
        raise ValueError(f"A pruning strategy named {cls.name!r} is already registered.")
    STRATEGIES[cls.name] = cls
    return cls


def build_strategy(name: str, options: PruningOptions) -> PruningStrategy:
    try:
        return STRATEGIES[name](options)
    except KeyError:
        raise ValueError(f"Unknown pruning_method {name!r}; choose one of {sorted(STRATEGIES)}.") from None
