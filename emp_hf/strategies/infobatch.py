"""`infobatch` (Qin et al., ICLR 2024), faithful to the official code.

Score: the last observed loss. A uniform share `r` of the rows scored below the mean is pruned each epoch
and the kept below-mean rows are upweighted by `1 / (1 - r)`. With `infobatch_match_budget=True` the share
is chosen each epoch so the epoch visits `K = N - floor(p * N)` rows whenever the below-mean set allows.
"""

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
    invalid_option,
    soft_prune,
)
from .registry import register_strategy


@dataclass
class InfoBatchOptions(StrategyOptions):
    """InfoBatch's options; `prune_ratio` is the share of the below-mean rows pruned."""

    infobatch_match_budget: bool = field(
        default=False,
        metadata={
            "help": "InfoBatch: choose the pruned share each epoch so the epoch visits N - floor(p*N) rows "
            "(equal budget with the other methods) instead of pruning prune_ratio of the below-mean rows."
        },
    )

    def validate_options(self) -> None:
        super().validate_options()
        if not isinstance(self.infobatch_match_budget, bool):
            raise invalid_option(self, "infobatch_match_budget", "it must be True or False.")


@register_strategy
class InfoBatch(PruningStrategy):
    name = "infobatch"
    options_class = InfoBatchOptions
    options: InfoBatchOptions

    @classmethod
    def traits_for(cls, options: InfoBatchOptions) -> StrategyTraits:
        return StrategyTraits(
            fixed_budget=options.infobatch_match_budget,  # else at least `num_keep` rows: the below-mean share
            uses_weights=True,
            default_anneal_fraction=0.125,  # the official delta = 0.875
            required_tables=frozenset({"loss", "entropy", "weight"}),  # the score is the last loss
        )

    @classmethod
    def score_description(cls, options: Mapping[str, Any], *, derived: bool = False) -> str:
        if derived:  # the score is the last observed loss
            return f"last observed loss (what {cls.name} ranks by)"
        return super().score_description(options)

    def select(self, tables: Tables, num_keep: int, generator: torch.Generator, context: EpochContext) -> Selection:
        score = self.score(tables, context)
        if self.options.infobatch_match_budget:
            return soft_prune(score, generator, num_prune=score.numel() - num_keep)
        return soft_prune(score, generator, ratio=self.options.prune_ratio)
