"""`emp`: Enhance Memory Pruning (EMP, arXiv 2408.16031).

Score: `loss + memory_weight * entropy` from each row's last visit. The entropy of the predictive
distribution is the memory term: rows the model has not memorised (high entropy) come back more often,
which counters the low-frequency learning of high prune ratios. `emp_selection` picks the rule that turns
scores into the `K` rows of an epoch (see `docs/methods.md` for the evidence behind the default).
"""

from __future__ import annotations

import torch

from .base import (
    PruningStrategy,
    Selection,
    Tables,
    greedy_with_exploration,
    rank_descending,
    soft_prune,
    top_k,
)
from .registry import register_strategy

EMP_SELECTIONS = ("sample", "topk", "epsilon_greedy", "soft")


def gumbel_top_k(score: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """`k` rows without replacement, with probability proportional to `score` (Gumbel-top-k).

    Rows never observed (NaN) come first; rows scored 0 only fill places no positive score can.
    """
    uniform = torch.rand(score.numel(), generator=generator, dtype=torch.float64)
    gumbel = -torch.log(-torch.log(uniform.clamp(1e-300, 1.0 - 1e-16)))
    keys = torch.log(score.double().clamp_min(0.0)) + gumbel
    keys = torch.where(torch.isnan(score), float("inf"), keys)
    return rank_descending(keys, generator)[:k]


@register_strategy
class EnhanceMemoryPruning(PruningStrategy):
    name = "emp"

    @property
    def uses_weights(self) -> bool:  # type: ignore[override]
        return self.options.emp_selection == "soft"

    def score(self, tables: Tables) -> torch.Tensor:
        return tables["loss"] + self.options.memory_weight * tables["entropy"]

    def select(self, tables: Tables, num_keep: int, generator: torch.Generator) -> Selection:
        score = self.score(tables)
        rule = self.options.emp_selection
        if rule == "sample":
            return Selection(rows=gumbel_top_k(score, num_keep, generator))
        if rule == "topk":
            return Selection(rows=top_k(score, num_keep, generator))
        if rule == "epsilon_greedy":
            return Selection(rows=greedy_with_exploration(score, num_keep, self.options.epsilon, generator))
        if rule == "soft":
            return soft_prune(score, generator, num_prune=score.numel() - num_keep)
        raise ValueError(f"Unknown emp_selection {rule!r}; choose one of {EMP_SELECTIONS}.")
