"""`infobatch` (Qin et al., ICLR 2024), faithful to the official code.

Score: the last observed loss. A uniform share `r` of the rows scored below the mean is pruned each epoch
and the kept below-mean rows are upweighted by `1 / (1 - r)`. With `infobatch_match_budget=True` the share
is chosen each epoch so the epoch visits `K = N - floor(p * N)` rows whenever the below-mean set allows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import PruningStrategy, Selection, StrategyOptions, Tables, invalid_option, soft_prune
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
    uses_weights = True
    required_tables = frozenset({"loss", "entropy", "weight"})  # the score is the last loss
    default_anneal_fraction = 0.125

    @property
    def fixed_budget(self) -> bool:  # type: ignore[override]
        return self.options.infobatch_match_budget

    def select(self, tables: Tables, num_keep: int, generator: torch.Generator) -> Selection:
        score = self.score(tables)
        if self.options.infobatch_match_budget:
            return soft_prune(score, generator, num_prune=score.numel() - num_keep)
        return soft_prune(score, generator, ratio=self.options.prune_ratio)
