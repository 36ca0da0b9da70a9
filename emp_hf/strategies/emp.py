"""`emp`: Enhance Memory Pruning (EMP, arXiv 2408.16031).

Score: `loss + memory_weight * entropy` from each row's last visit. The entropy of the predictive
distribution is the memory term: rows the model has not memorised (high entropy) come back more often,
which counters the low-frequency learning of high prune ratios. `emp_selection` picks the rule that turns
scores into the `K` rows of an epoch (see `docs/methods.md` for the evidence behind the default).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .base import (
    CHUNK_ROWS,
    EpochContext,
    PruningStrategy,
    Selection,
    StrategyTraits,
    Tables,
    check_choice,
    check_number,
    chunks,
    greedy_with_exploration,
    invalid_option,
    soft_prune,
    top_k,
    top_k_mask,
)
from .epsilon_greedy import EpsilonGreedyOptions
from .registry import register_strategy
from .seta import SeTaOptions, seta_rows

EMP_SELECTIONS = ("sample", "topk", "epsilon_greedy", "soft", "spaced", "window")

#: Default share of a `"spaced"` epoch given to the least recently visited rows (`EMPConfig.emp_revisit_share`).
SPACED_COVERAGE_SHARE = 0.5


@dataclass
class EMPOptions(SeTaOptions, EpsilonGreedyOptions):
    """EMP's options; `emp_selection="epsilon_greedy"` reads `epsilon` and `"window"` SeTa's options too."""

    memory_weight: float = field(
        default=1.0, metadata={"help": "EMP's beta: score = loss + memory_weight * predictive entropy."}
    )
    emp_selection: str = field(
        default="sample",
        metadata={
            "help": "How EMP turns scores into an epoch's rows: 'sample' (proportional to score), 'spaced' (half "
            "the longest-unvisited rows, half sampled by score), 'topk', 'epsilon_greedy' or 'soft' (InfoBatch's "
            "rule on the EMP score, budget-matched) or 'window' (SeTa's sliding window over EMP-score groups).",
            "choices": list(EMP_SELECTIONS),
        },
    )
    emp_temperature: float = field(
        default=1.0,
        metadata={
            "help": "Temperature of EMP's score sampling ('sample' and the sampled part of 'spaced'): a row is drawn "
            "with probability proportional to score ** (1 / emp_temperature). Below 1 sharpens toward top-k, above 1 "
            "flattens toward uniform. Must be > 0."
        },
    )
    emp_revisit_share: float = field(
        default=SPACED_COVERAGE_SHARE,
        metadata={
            "help": "'spaced' only: share of a pruned epoch given to the least recently visited rows, in (0, 1]. "
            "Every row is revisited at least once in any ceil(N / ceil(share * K)) pruned epochs."
        },
    )

    def validate_options(self) -> None:
        super().validate_options()
        check_number(self, "memory_weight", 0.0, math.inf, high_open=True)
        check_choice(self, "emp_selection", EMP_SELECTIONS)
        check_number(self, "emp_temperature", 0.0, math.inf, low_open=True, high_open=True)
        if self.emp_revisit_share == 0:
            raise invalid_option(
                self, "emp_revisit_share", "it must be > 0 (use emp_selection='sample' for no revisit queue)."
            )
        check_number(self, "emp_revisit_share", 0.0, 1.0, low_open=True)


def gumbel_top_k(score: torch.Tensor, k: int, generator: torch.Generator, temperature: float = 1.0) -> torch.Tensor:
    """`k` rows without replacement, with probability proportional to `score ** (1 / temperature)` (Gumbel-top-k),
    ascending.

    Rows never observed (NaN) come first; rows scored 0 only fill places no positive score can. The float64 keys
    `log(score) / temperature + Gumbel noise` are computed a chunk at a time into one buffer and cut at the
    `k`-th largest (`top_k_mask`: no sort, the rows of a full descending sort of the keys).
    """
    n = score.numel()
    keys = torch.empty(n, dtype=torch.float64, device=score.device)
    size = CHUNK_ROWS if generator.device.type == "cpu" else max(n, 1)  # a GPU draws its noise in one call
    for start in chunks(n, size):
        stop = min(start + size, n)
        part = score[start:stop]
        gumbel = torch.rand(stop - start, generator=generator, dtype=torch.float64, device=generator.device)
        gumbel.clamp_(1e-300, 1.0 - 1e-16).log_().neg_().log_().neg_()
        out = keys[start:stop]
        torch.log(part.double().clamp_min_(0.0), out=out)
        out.div_(temperature).add_(gumbel.to(out.device)).masked_fill_(torch.isnan(part), float("inf"))
    mask = top_k_mask(keys, k, generator)
    del keys
    return torch.nonzero(mask).flatten()


def spaced_revisit_interval(num_rows: int, k: int, coverage_share: float = SPACED_COVERAGE_SHARE) -> int:
    """Under `spaced_selection`, every row is visited at least once in any this many consecutive pruned epochs."""
    return math.ceil(num_rows / max(_coverage_slots(k, coverage_share), 1))


def _coverage_slots(k: int, coverage_share: float) -> int:
    return min(k, max(1, math.ceil(coverage_share * k))) if k > 0 else 0


def spaced_selection(
    score: torch.Tensor,
    last_epoch: torch.Tensor,
    k: int,
    generator: torch.Generator,
    coverage_share: float = SPACED_COVERAGE_SHARE,
    temperature: float = 1.0,
) -> torch.Tensor:
    """`k` rows: the `ceil(coverage_share * k)` least recently visited, the rest sampled by score.

    The coverage part is a spaced-repetition queue: rows come back oldest last visit first (ties broken by
    `generator`, never-visited rows first), so every row is visited at least once in any
    `ceil(N / ceil(coverage_share * k))` consecutive pruned epochs (`spaced_revisit_interval`), whatever the
    scores: the rows ahead of a row in the queue were last visited no later than it, each epoch that skips it
    takes `ceil(coverage_share * k)` of them, and none of them gets ahead of it again. The other
    rows are drawn from the remaining ones without replacement with probability proportional to
    `score ** (1 / temperature)` (Gumbel-top-k, as `"sample"`), so hard, un-memorised rows are revisited
    more often than the others.
    """
    n = score.numel()
    k = min(k, n)
    slots = _coverage_slots(k, coverage_share)
    perm = torch.randperm(n, generator=generator, device=generator.device)
    oldest_first = perm[torch.sort(last_epoch[perm], stable=True).indices]
    due = oldest_first[:slots]
    rest = oldest_first[slots:]
    sampled = rest[gumbel_top_k(score[rest], k - slots, generator, temperature)]
    return torch.cat([due, sampled])


def _window_by_kmeans(options: EMPOptions) -> bool:
    """SeTa's window over k-means bands of the EMP score: an open budget."""
    return options.emp_selection == "window" and options.seta_grouping == "kmeans"


@register_strategy
class EnhanceMemoryPruning(PruningStrategy):
    name = "emp"
    options_class = EMPOptions
    options: EMPOptions

    @classmethod
    def traits_for(cls, options: EMPOptions) -> StrategyTraits:
        soft = options.emp_selection == "soft"
        return StrategyTraits(
            fixed_budget=not _window_by_kmeans(options),
            budget_at_most_num_keep=True,  # a k-means window: whole bands of a `num_keep`-row subset
            uses_weights=soft,
            required_tables=frozenset({"loss", "entropy", "score"} | ({"weight"} if soft else set())),
            ranks_by_entropy=options.memory_weight > 0,
        )

    @classmethod
    def score_description(cls, options: Mapping[str, Any], *, derived: bool = False) -> str:
        if derived:
            return super().score_description(options, derived=True)
        return f"EMP score: loss + {options.get('memory_weight', 1.0)} x predictive entropy"

    def check_arguments(self, args: Any) -> None:
        if _window_by_kmeans(self.options):
            self.options.check_open_window(args)

    def score(self, tables: Tables, context: EpochContext) -> torch.Tensor:
        # `loss + memory_weight * entropy`, the sum taken in place (the same float32 values, one temporary)
        return torch.mul(tables["entropy"], self.options.memory_weight).add_(tables["loss"])

    def select(self, tables: Tables, num_keep: int, generator: torch.Generator, context: EpochContext) -> Selection:
        score = self.score(tables, context)
        rule = self.options.emp_selection
        if rule == "sample":
            return Selection(rows=gumbel_top_k(score, num_keep, generator, self.options.emp_temperature))
        if rule == "topk":
            return Selection(rows=top_k(score, num_keep, generator))
        if rule == "epsilon_greedy":
            return Selection(rows=greedy_with_exploration(score, num_keep, self.options.epsilon, generator))
        if rule == "soft":
            return soft_prune(score, generator, num_prune=score.numel() - num_keep)
        if rule == "spaced":
            last_epoch = tables.get("last_epoch")
            if last_epoch is None:  # tables without visit history: every row is equally due
                last_epoch = torch.zeros(score.numel(), dtype=torch.int64, device=score.device)
            rows = spaced_selection(
                score,
                last_epoch,
                num_keep,
                generator,
                coverage_share=self.options.emp_revisit_share,
                temperature=self.options.emp_temperature,
            )
            return Selection(rows=rows)
        if rule == "window":  # SeTa's sliding window, over groups of the EMP score instead of the loss
            return Selection(rows=seta_rows(score, num_keep, context, self.options, generator))
        raise invalid_option(self.options, "emp_selection", f"choose one of {list(EMP_SELECTIONS)}.")
