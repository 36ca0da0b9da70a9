"""`rs2`: Repeated Random Sampling without replacement (Okanovic et al., ICLR 2024, arXiv 2305.18424).

The coverage baseline inside the trainer: full data trained for fewer steps, with the epoch boundaries of a
pruned run. Rows are dealt in rounds: each pruned epoch takes `K` rows uniformly from those not yet visited in the
current round; when fewer than `K` remain it takes all of them and the rest uniformly from the others, which opens
the next round. No loss weights.

The round is read from the visit counts (`frequency`, kept by every pruning state and checkpoint): the rows not yet
visited in the current round are exactly the least visited rows, since a round visits every row once (full epochs,
warm-up and anneal, add one to every row). So a pruned epoch is the `K` least visited rows, ties in the order of the
epoch's generator, and a resumed run deals exactly the rows the uninterrupted one would have. A row in an epoch's plan
that was not trained on (`dataloader_drop_last`, a non-finite loss still counts as a visit) stays due for the next one.

The official code (github.com/PatrikOkanovic/RS2, `UniformNoReplacement`) wraps a short last slice around to the
start of the same permutation and reshuffles after it (one row fewer at each wrap, from `% (N + 1)`); here the rows
that complete a short epoch open the next round, so every row's count stays within one of every other
(`docs/methods.md`).
"""

from __future__ import annotations

import torch

from .base import EpochContext, PruningStrategy, Selection, StrategyTraits, Tables
from .registry import register_strategy


def least_visited(frequency: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """The `k` least visited rows (visit count ascending, ties broken by `generator`): RS2's next `k` of the round."""
    n = frequency.numel()
    perm = torch.randperm(n, generator=generator, device=generator.device).to(frequency.device)
    return perm[torch.sort(frequency[perm], stable=True).indices[: min(k, n)]]


@register_strategy
class RepeatedRandomSampling(PruningStrategy):
    """Each pruned epoch: `K` rows uniformly from those not yet visited in the current round (RS2 w/o replacement)."""

    name = "rs2"

    @classmethod
    def traits_for(cls, options: object) -> StrategyTraits:
        # loss and entropy: recorded for every method; the rule reads `frequency`, kept always
        return StrategyTraits(required_tables=frozenset({"loss", "entropy"}))

    def select(self, tables: Tables, num_keep: int, generator: torch.Generator, context: EpochContext) -> Selection:
        return Selection(rows=least_visited(tables["frequency"], num_keep, generator))
