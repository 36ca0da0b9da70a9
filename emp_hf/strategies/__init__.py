"""Pruning strategies: one module per method, looked up by name in `STRATEGIES`.

A new method is one new file: subclass `PruningStrategy` (with its options as a `StrategyOptions` dataclass in
`options_class`, if it has any, and its `StrategyTraits` from `traits_for(options)`), decorate it with
`@register_strategy`, and import the module below. `select` and `score` get each epoch's `EpochContext`.
"""

from __future__ import annotations

from . import emp, epsilon_greedy, infobatch, none, random, rs2, seta, small_loss, ucb  # noqa: F401  (registers them)
from .base import EpochContext, PruningStrategy, Selection, StrategyOptions, StrategyTraits
from .emp import EMPOptions
from .epsilon_greedy import EpsilonGreedyOptions
from .infobatch import InfoBatchOptions
from .options import PruningOptions
from .registry import STRATEGIES, build_strategy, register_strategy
from .seta import SeTaOptions
from .small_loss import SmallLossOptions
from .ucb import UCBOptions

__all__ = [
    "STRATEGIES",
    "EMPOptions",
    "EpochContext",
    "EpsilonGreedyOptions",
    "InfoBatchOptions",
    "PruningOptions",
    "PruningStrategy",
    "SeTaOptions",
    "Selection",
    "SmallLossOptions",
    "StrategyOptions",
    "StrategyTraits",
    "UCBOptions",
    "build_strategy",
    "register_strategy",
]
