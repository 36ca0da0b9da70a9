"""`ucb` (Raju et al., 2021): upper confidence bound of the loss.

`ucb_exploration="variance"` (the specification): `ema_mean + ucb_c * sqrt(ema_var)`. A row that is not
picked is never observed again, so its bound never moves and the first picks are locked in.
`ucb_exploration="visits"` (UCB1's bonus): `ema_mean + ucb_c * sqrt(ln t / f)` with `f` the row's visits and
`t = epoch + 1` the round being decided, so rows left out gain a growing bonus until they are picked.
"""

from __future__ import annotations

import math

import torch

from .base import PruningStrategy, Selection, Tables, top_k
from .registry import register_strategy
from .seta import EpochAware

UCB_EXPLORATIONS = ("variance", "visits")


def visit_bonus(frequency: torch.Tensor, round_index: int) -> torch.Tensor:
    """`sqrt(ln(round_index) / frequency)` in float32, `inf` for rows never visited."""
    visits = frequency.to(torch.float32)
    bonus = torch.sqrt(math.log(max(round_index, 1)) / visits.clamp_min(1.0))
    return torch.where(visits > 0, bonus, torch.full_like(bonus, math.inf))


@register_strategy
class UpperConfidenceBound(EpochAware, PruningStrategy):
    """Score: `ema_mean` plus `ucb_c` times the exploration term of `ucb_exploration`. Keeps the `K` highest."""

    name = "ucb"
    required_tables = frozenset({"loss", "entropy", "ema_mean", "ema_var", "score"})

    def score(self, tables: Tables) -> torch.Tensor:
        mean = tables["ema_mean"]
        if self.options.ucb_exploration == "visits":
            if self._epoch is None:
                raise RuntimeError("ucb_exploration='visits' reads the epoch: call strategy.set_epoch(...) first.")
            bonus = visit_bonus(tables["frequency"], self._epoch + 1)
            return mean + self.options.ucb_c * bonus.to(mean.dtype)
        if self.options.ucb_exploration != "variance":
            choice = self.options.ucb_exploration
            raise ValueError(f"Unknown ucb_exploration {choice!r}; choose one of {UCB_EXPLORATIONS}.")
        return mean + self.options.ucb_c * tables["ema_var"].sqrt()

    def select(self, tables: Tables, num_keep: int, generator: torch.Generator) -> Selection:
        return Selection(rows=top_k(self.score(tables), num_keep, generator))
