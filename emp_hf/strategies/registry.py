"""Name -> strategy class."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from .base import PruningStrategy, StrategyOptions

STRATEGIES: dict[str, type[PruningStrategy]] = {}

S = TypeVar("S", bound=type[PruningStrategy])


def register_strategy(cls: S) -> S:
    """Class decorator: make `cls` available as `pruning_method=cls.name`, with the options of `cls.options_class`."""
    if cls.name in STRATEGIES:
        raise ValueError(f"A pruning strategy named {cls.name!r} is already registered.")
    options = cls.options_class
    if not (isinstance(options, type) and issubclass(options, StrategyOptions) and dataclasses.is_dataclass(options)):
        raise TypeError(
            f"{cls.__name__}.options_class must be a @dataclass subclass of StrategyOptions, got {options!r}."
        )
    STRATEGIES[cls.name] = cls
    return cls


def build_strategy(name: str, options: object = None, /, **overrides: Any) -> PruningStrategy:
    """The strategy `name`, its options taken by name from `options` (a config, `PruningOptions`, ...) and
    `overrides` (see `StrategyOptions.from_values`)."""
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"Unknown pruning_method {name!r}; choose one of {sorted(STRATEGIES)}.") from None
    return cls(options, **overrides)
