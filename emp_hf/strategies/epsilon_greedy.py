"""`epsilon_greedy` (Raju et al., 2021): keep the highest EMA losses, explore the rest uniformly."""

from __future__ import annotations

import torch

from .base import PruningStrategy, Selection, Tables, greedy_with_exploration
from .registry import register_strategy


@register_strategy
class EpsilonGreedy(PruningStrategy):
    """Score: EMA of the loss. Keeps the `K - round(epsilon * K)` highest, the rest uniformly at random."""

    name = "epsilon_greedy"
    required_tables = frozenset({"loss", "entropy", "ema_mean", "score"})

    def score(self, tables: Tables) -> torch.Tensor:
        return tables["ema_mean"]

    def select(self, tables: Tables, num_keep: int, generator: torch.Generator) -> Selection:
        rows = greedy_with_exploration(self.score(tables), num_keep, self.options.epsilon, generator)
        return Selection(rows=rows)
