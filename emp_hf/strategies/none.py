"""`none`: the control arm. Every epoch trains on all rows; statistics are still tracked."""

from __future__ import annotations

import torch

from .base import EpochContext, PruningStrategy, Selection, StrategyTraits, Tables
from .registry import register_strategy


@register_strategy
class NoPruning(PruningStrategy):
    name = "none"

    @classmethod
    def traits_for(cls, options: object) -> StrategyTraits:
        return StrategyTraits(prunes=False, required_tables=frozenset({"loss", "entropy"}))

    def select(self, tables: Tables, num_keep: int, generator: torch.Generator, context: EpochContext) -> Selection:
        return Selection(rows=torch.arange(tables["frequency"].numel(), device=tables["frequency"].device))
