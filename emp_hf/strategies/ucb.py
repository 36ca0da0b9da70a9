"""`ucb` (Raju et al., 2021): upper confidence bound of the loss.

`ucb_exploration="variance"` (the specification): `ema_mean + ucb_c * sqrt(ema_var)`. A row that is not
picked is never observed again, so its bound never moves and the first picks are locked in.
`ucb_exploration="visits"` (UCB1's bonus): `ema_mean + ucb_c * sqrt(ln t / f)` with `f` the row's visits and
`t = epoch + 1` the round being decided, so rows left out gain a growing bonus until they are picked.
"""

from __future__ import annotations

import math
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
    check_choice,
    check_number,
    invalid_option,
    top_k,
)
from .registry import register_strategy

UCB_EXPLORATIONS = ("variance", "visits")


@dataclass
class UCBOptions(StrategyOptions):
    """UCB's exploration weight and term."""

    ucb_c: float = field(
        default=1.0, metadata={"help": "UCB exploration weight: score = mean + ucb_c * exploration term."}
    )
    ucb_exploration: str = field(
        default="variance",
        metadata={
            "help": "UCB's exploration term: 'variance' (ucb_c * EMA std, the specification) or 'visits' "
            "(ucb_c * sqrt(ln t / visits), UCB1: rows left out come back).",
            "choices": list(UCB_EXPLORATIONS),
        },
    )

    def validate_options(self) -> None:
        super().validate_options()
        check_number(self, "ucb_c", 0.0, math.inf, high_open=True)
        check_choice(self, "ucb_exploration", UCB_EXPLORATIONS)


def visit_bonus(frequency: torch.Tensor, round_index: int) -> torch.Tensor:
    """`sqrt(ln(round_index) / frequency)` in float32, `inf` for rows never visited."""
    visits = frequency.to(torch.float32)
    bonus = torch.sqrt(math.log(max(round_index, 1)) / visits.clamp_min(1.0))
    return torch.where(visits > 0, bonus, torch.full_like(bonus, math.inf))


@register_strategy
class UpperConfidenceBound(PruningStrategy):
    """Score: `ema_mean` plus `ucb_c` times the exploration term of `ucb_exploration`. Keeps the `K` highest."""

    name = "ucb"
    options_class = UCBOptions
    options: UCBOptions

    @classmethod
    def traits_for(cls, options: UCBOptions) -> StrategyTraits:
        return StrategyTraits(required_tables=frozenset({"loss", "entropy", "ema_mean", "ema_var", "score"}))

    @classmethod
    def score_description(cls, options: Mapping[str, Any], *, derived: bool = False) -> str:
        if derived:
            return super().score_description(options, derived=True)
        bonus = "sqrt(EMA variance)" if options.get("ucb_exploration", "variance") == "variance" else "visit bonus"
        return f"UCB score: EMA loss + {options.get('ucb_c', 1.0)} x {bonus}"

    def score(self, tables: Tables, context: EpochContext) -> torch.Tensor:
        mean = tables["ema_mean"]
        if self.options.ucb_exploration == "visits":
            bonus = visit_bonus(tables["frequency"], context.epoch + 1)
            return mean + self.options.ucb_c * bonus.to(mean.dtype)
        if self.options.ucb_exploration != "variance":
            raise invalid_option(self.options, "ucb_exploration", f"choose one of {list(UCB_EXPLORATIONS)}.")
        return mean + self.options.ucb_c * tables["ema_var"].sqrt()

    def select(self, tables: Tables, num_keep: int, generator: torch.Generator, context: EpochContext) -> Selection:
        return Selection(rows=top_k(self.score(tables, context), num_keep, generator))
