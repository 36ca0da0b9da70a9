"""`ucb` (Raju et al., 2021): upper confidence bound of the loss, `mean + c * std` of its EMA."""

from __future__ import annotations

import torch

from .base import PruningStrategy, Selection, Tables, top_k
from .registry import register_strategy


@register_strategy
class UpperConfidenceBound(PruningStrategy):
    """Score: `ema_mean + ucb_c * sqrt(ema_var)`. Keeps the `K` highest."""

    name = "ucb"
    required_tables = frozenset({"loss", "entropy", "ema_mean", "ema_var", "score"})

    def score(self, tables: Tables) -> torch.Tensor:
        return tables["ema_mean"] + self.options.ucb_c * tables["ema_var"].sqrt()

    def select(self, tables: Tables, num_keep: int, generator: torch.Generator) -> Selection:
        return Selection(rows=top_k(self.score(tables), num_keep, generator))
