"""`small_loss`: the small-loss trick for noisy labels (Co-teaching, Han et al., NeurIPS 2018), dealt as RS2 rounds.

Under label noise a network learns the clean rows before it memorises the mislabelled ones, so the rows it
disagrees with most are the likely mislabelled ones. Co-teaching (official code: github.com/bhanML/Co-teaching,
`loss_coteaching`) drops the `forget_rate` share of each mini-batch with the largest loss. Here the same trick
decides an epoch: the `floor(small_loss_forget_rate * N)` observed rows with the largest key are left out, and
the `K` rows of the epoch are the least visited of the others (RS2's rounds, `emp_hf.strategies.rs2`), so the
rest of the data is covered evenly, as full data trained for fewer steps.

The key is `loss - small_loss_memory_weight * entropy`: EMP's memory term, turned to protect rows. A mislabelled
row the model has learnt the true class of is a confident disagreement (high loss, low entropy); a hard or rare
clean row is one it is unsure of (high entropy), and keeps its place. `small_loss_memory_weight=0` is Co-teaching's
key, the loss alone.

Where it differs from Co-teaching: one network, not two cross-updating ones; the drop is per epoch over the whole
dataset (from each row's last loss), not per mini-batch; no ramp of the forget rate (the first epoch, without any
observation, drops nothing, and the earliest losses, before memorisation, are the most telling).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..core.schedule import floor_share
from .base import EpochContext, PruningStrategy, Selection, StrategyOptions, StrategyTraits, Tables, check_number
from .registry import register_strategy


@dataclass
class SmallLossOptions(StrategyOptions):
    """The options of `small_loss`."""

    small_loss_forget_rate: float = field(
        default=0.2,
        metadata={
            "help": "small_loss: share of the rows left out of each pruned epoch, those with the largest "
            "loss - small_loss_memory_weight * entropy (Co-teaching's forget rate; about the share of wrong labels), "
            "in [0, 1)."
        },
    )
    small_loss_memory_weight: float = field(
        default=1.0,
        metadata={
            "help": "small_loss: weight of the predictive entropy subtracted from the loss in the key that decides "
            "which rows are left out (0: the loss alone, as Co-teaching), >= 0."
        },
    )

    def validate_options(self) -> None:
        super().validate_options()
        check_number(self, "small_loss_forget_rate", 0.0, 1.0, high_open=True)
        check_number(self, "small_loss_memory_weight", 0.0, float("inf"), high_open=True)


def small_loss_selection(
    key: torch.Tensor, frequency: torch.Tensor, k: int, forget: int, generator: torch.Generator
) -> torch.Tensor:
    """`k` rows: the least visited (ties by `generator`) outside the `forget` observed rows of largest `key`.

    Rows never observed (NaN key) are never left out. If fewer than `k` rows remain, the left-out rows fill the
    rest, least visited first.
    """
    n = key.numel()
    k = min(k, n)
    perm = torch.randperm(n, generator=generator, device=generator.device).to(key.device)
    keyed = torch.nan_to_num(key[perm].double(), nan=float("-inf"))
    largest = torch.sort(keyed, descending=True, stable=True).indices[:forget]
    left_out = torch.zeros(n, dtype=torch.bool, device=key.device)
    left_out[largest] = True
    left_out &= torch.isfinite(keyed)
    order = torch.sort(frequency[perm], stable=True).indices  # least visited first
    order = order[torch.sort(left_out[order].to(torch.uint8), stable=True).indices]  # kept rows before left-out
    return perm[order[:k]]


@register_strategy
class SmallLoss(PruningStrategy):
    """Leaves out the rows of largest `loss - beta * entropy`, deals the others in RS2 rounds (see the module)."""

    name = "small_loss"
    options_class = SmallLossOptions
    options: SmallLossOptions

    @classmethod
    def traits_for(cls, options: SmallLossOptions) -> StrategyTraits:
        return StrategyTraits(
            required_tables=frozenset({"loss", "entropy", "score"}),
            ranks_by_entropy=options.small_loss_memory_weight > 0,
        )

    def score(self, tables: Tables, context: EpochContext) -> torch.Tensor:
        """The key a row is left out by: `loss - small_loss_memory_weight * entropy` (largest first)."""
        return tables["loss"] - self.options.small_loss_memory_weight * tables["entropy"]

    def select(self, tables: Tables, num_keep: int, generator: torch.Generator, context: EpochContext) -> Selection:
        key = self.score(tables, context)
        forget = floor_share(self.options.small_loss_forget_rate, key.numel())
        return Selection(rows=small_loss_selection(key, tables["frequency"], num_keep, forget, generator))
