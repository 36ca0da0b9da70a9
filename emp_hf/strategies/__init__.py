"""Pruning strategies: one module per method, looked up by name in `STRATEGIES`.

A new method is one new file: subclass `PruningStrategy` (with its options as a `StrategyOptions` dataclass in
`options_class`, if it has any), decorate it with `@register_strategy`, and import the module below.
"""

from __future__ import annotations

from . import emp, epsilon_greedy, infobatch, none, rs2, seta, small_loss, ucb, uniform  # noqa: F401  (registers them)
from .base import PruningStrategy, Selection, StrategyOptions
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
    "EpsilonGreedyOptions",
    "InfoBatchOptions",
    "PruningOptions",
    "PruningStrategy",
    "SeTaOptions",
    "Selection",
    "SmallLossOptions",
    "StrategyOptions",
    "UCBOptions",
    "build_strategy",
    "register_strategy",
]
