"""`epsilon_greedy` (Raju et al., 2021): keep the highest EMA losses, explore the rest uniformly."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .base import (
    EpochContext,
    PruningStrategy,
    Selection,
    StrategyOptions,
    StrategyTraits,
    Tables,
    check_number,
    greedy_with_exploration,
)
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

    @classmethod
    def traits_for(cls, options: EpsilonGreedyOptions) -> StrategyTraits:
        return StrategyTraits(required_tables=frozenset({"loss", "entropy", "ema_mean", "score"}))

    @classmethod
    def score_description(cls, options: Mapping[str, Any], *, derived: bool = False) -> str:
        return super().score_description(options, derived=True) if derived else "EMA of the loss"

    def score(self, tables: Tables, context: EpochContext) -> torch.Tensor:
        return tables["ema_mean"]

    def select(self, tables: Tables, num_keep: int, generator: torch.Generator, context: EpochContext) -> Selection:
        rows = greedy_with_exploration(self.score(tables, context), num_keep, self.options.epsilon, generator)
        return Selection(rows=rows)
