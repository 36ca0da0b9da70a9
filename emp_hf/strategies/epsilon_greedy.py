"""`epsilon_greedy` (Raju et al., 2021): keep the highest EMA losses, explore the rest uniformly."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import PruningStrategy, Selection, StrategyOptions, Tables, check_number, greedy_with_exploration
from .registry import register_strategy


@dataclass
class EpsilonGreedyOptions(StrategyOptions):
    """The exploration share of the epsilon-greedy rules (`epsilon_greedy`, and `emp_selection="epsilon_greedy"`)."""

    epsilon: float = field(
        default=0.1,
        metadata={"help": "Share of an epoch filled uniformly at random by the epsilon-greedy rules, in [0, 1]."},
    )

    def validate_options(self) -> None:
        super().validate_options()
        check_number(self, "epsilon", 0.0, 1.0)


@register_strategy
class EpsilonGreedy(PruningStrategy):
    """Score: EMA of the loss. Keeps the `K - round(epsilon * K)` highest, the rest uniformly at random."""

    name = "epsilon_greedy"
    options_class = EpsilonGreedyOptions
    options: EpsilonGreedyOptions
    required_tables = frozenset({"loss", "entropy", "ema_mean", "score"})

    def score(self, tables: Tables) -> torch.Tensor:
        return tables["ema_mean"]

    def select(self, tables: Tables, num_keep: int, generator: torch.Generator) -> Selection:
        rows = greedy_with_exploration(self.score(tables), num_keep, self.options.epsilon, generator)
        return Selection(rows=rows)
