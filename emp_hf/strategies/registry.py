"""Name -> strategy class."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, TypeVar

from .base import PruningStrategy, StrategyOptions

STRATEGIES: dict[str, type[PruningStrategy]] = {}

S = TypeVar("S", bound=type[PruningStrategy])

#: What a strategy declared as class attributes before `StrategyTraits`; each is now a field of its traits.
_FORMER_FLAGS = (
    "uses_weights",
    "fixed_budget",
    "budget_at_most_num_keep",
    "default_anneal_fraction",
    "required_tables",
)
#: The parameters of each contract method after `self`, as `PruningStrategy` declares them.
_CONTRACT = {"select": ("tables", "num_keep", "generator", "context"), "score": ("tables", "context")}


def _check_contract(cls: type[PruningStrategy]) -> None:
    """Refuse, in one line that says what to change, a strategy written to the contract before `EpochContext` and
    `StrategyTraits` (class flags, `set_epoch`, `select`/`score` without `context`), which would be
    misread in silence or fail mid-training."""
    flags = [name for name in _FORMER_FLAGS if any(name in vars(base) for base in cls.__mro__)]
    if flags:
        fields = ", ".join(f"{name}=..." for name in flags)
        raise TypeError(
            f"{cls.__name__} declares {', '.join(flags)} as attributes: a strategy's traits are one value now; "
            f"remove them and override `traits_for(cls, options)` to return StrategyTraits({fields})."
        )
    if any("set_epoch" in vars(base) for base in cls.__mro__):
        raise TypeError(
            f"{cls.__name__}.set_epoch is no longer called: `select` and `score` receive the epoch's "
            "EpochContext (context.epoch, context.num_epochs, ...) as their last argument; read it there."
        )
    for method, parameters in _CONTRACT.items():
        try:
            inspect.signature(getattr(cls, method)).bind(None, *parameters)
        except TypeError:
            raise TypeError(
                f"{cls.__name__}.{method} must take ({', '.join(parameters)}) after self: the epoch's "
                "EpochContext comes as `context`."
            ) from None
    if not isinstance(inspect.getattr_static(cls, "traits_for"), classmethod):
        raise TypeError(
            f"{cls.__name__}.traits_for must be a @classmethod: the config asks it before the strategy is built."
        )


def register_strategy(cls: S) -> S:
    """Class decorator: make `cls` available as `pruning_method=cls.name`, with the options of `cls.options_class`."""
    if cls.name in STRATEGIES:
        raise ValueError(f"A pruning strategy named {cls.name!r} is already registered.")
    options = cls.options_class
    if not (isinstance(options, type) and issubclass(options, StrategyOptions) and dataclasses.is_dataclass(options)):
        raise TypeError(
            f"{cls.__name__}.options_class must be a @dataclass subclass of StrategyOptions, got {options!r}."
        )
    _check_contract(cls)
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
