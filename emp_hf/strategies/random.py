"""`random`: uniform dynamic pruning, a fresh uniform sample of the rows every pruned epoch."""

from __future__ import annotations

import torch

from .base import EpochContext, PruningStrategy, Selection, StrategyTraits, Tables, uniform_subset
from .registry import register_strategy


@register_strategy
class UniformRandom(PruningStrategy):
    name = "random"

    @classmethod
    def traits_for(cls, options: object) -> StrategyTraits:
        return StrategyTraits(required_tables=frozenset({"loss", "entropy"}))

    def select(self, tables: Tables, num_keep: int, generator: torch.Generator, context: EpochContext) -> Selection:
        n = tables["frequency"].numel()  # a uniform subset: a Bernoulli keep, its size corrected uniformly
        return Selection(rows=torch.nonzero(uniform_subset(n, num_keep, generator)).flatten())
