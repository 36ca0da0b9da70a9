"""Pruning strategies: one module per method, looked up by name in `STRATEGIES`.

A new method is one new file: subclass `PruningStrategy`, decorate it with `@register_strategy`, and
import the module below.
"""

from __future__ import annotations

from . import emp, epsilon_greedy, infobatch, none, seta, ucb, uniform  # noqa: E402, F401  (registers them)
from .base import PruningOptions, PruningStrategy, Selection
from .registry import STRATEGIES, build_strategy, register_strategy

__all__ = [
    "STRATEGIES",
    "PruningOptions",
    "PruningStrategy",
    "Selection",
    "build_strategy",
    "register_strategy",
]
