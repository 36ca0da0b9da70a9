"""`infobatch` (Qin et al., ICLR 2024), faithful to the official code.

Score: the last observed loss. A uniform share `r` of the rows scored below the mean is pruned each epoch
and the kept below-mean rows are upweighted by `1 / (1 - r)`. With `infobatch_match_budget=True` the share
is chosen each epoch so the epoch visits `K = N - floor(p * N)` rows whenever the below-mean set allows.
"""

from __future__ import annotations

import torch

from .base import PruningStrategy, Selection, Tables, soft_prune
from .registry import register_strategy


@register_strategy
class InfoBatch(PruningStrategy):
    name = "infobatch"
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
