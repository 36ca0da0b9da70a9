"""`seta`: Scale Efficient Training (Zhou et al., CVPR 2025, arXiv 2503.13385), after the official code.

Reimplemented from the reading of `seta.py` in github.com/mrazhou/SeTa (commit 341df62); no code is copied.
Per pruned epoch, counted from the first one (`t = epoch - warm-up epochs`):

1. draw a uniform subset of `M` rows;
2. sort it by last-seen loss, easy to hard, and split it into `G = seta_num_groups` equal-size groups
   (quantiles; the official code runs scikit-learn's 1-D k-means, see `docs/methods.md` for why quantiles);
3. keep `K` rows from the start of group `t mod (G - w + 1)`, `w = round(G * seta_window_scale)`: the window of
   `w` consecutive groups sliding from easy to hard and back; at `t = 0` every group (a uniform sample);
4. no loss rescaling; in the epochs with `epoch + 1 > seta_delta * num_epochs` a uniform sample ("partial
   annealing").

`M = min(N, ceil(K * G / w))` is the official `(1 - r) * N`: it is chosen from `prune_ratio` so the window
holds exactly `K = N - floor(prune_ratio * N)` rows, the budget of every other method, so `prune_ratio` is the
saving of a pruned epoch, as everywhere else in the library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import ClassVar

import torch

from ..schedule import EpochSchedule
from .base import EpochAware, PruningStrategy, Selection, StrategyOptions, Tables, check_number, invalid_option
from .registry import register_strategy


@dataclass
class SeTaOptions(StrategyOptions):
    """SeTa's options (also read by `emp_selection="window"`, SeTa's window over the EMP score)."""

    seta_num_groups: int = field(
        default=5,
        metadata={"help": "SeTa (and emp_selection='window'): G, the loss groups of the uniform subset, >= 1."},
    )
    seta_window_scale: float = field(
        default=0.9,
        metadata={
            "help": "SeTa: the window keeps w = round(G * seta_window_scale) consecutive groups, easy to hard; "
            "1 <= w <= G. prune_ratio stays the saving of a pruned epoch (the subset size follows from it)."
        },
    )
    seta_delta: float = field(
        default=0.875,
        metadata={
            "help": "SeTa: epochs with epoch + 1 > seta_delta * num_epochs draw a uniform subset (partial "
            "annealing), in (0, 1]."
        },
    )

    def validate_options(self) -> None:
        super().validate_options()
        groups = self.seta_num_groups
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise invalid_option(self, "seta_num_groups", "it must be a whole number of groups >= 1.")
        check_number(self, "seta_window_scale", 0.0, 1.0, low_open=True)
        if not 1 <= seta_window_size(groups, self.seta_window_scale) <= groups:
            raise invalid_option(
                self,
                "seta_window_scale",
                f"round({groups} * {self.seta_window_scale}) = 0 groups; raise it or seta_num_groups.",
            )
        check_number(self, "seta_delta", 0.0, 1.0, low_open=True)


def seta_window_size(num_groups: int, window_scale: float) -> int:
    """`w = round(G * window_scale)`, Python's round-half-to-even as in the official code (G=5, 0.9 -> 4)."""
    return round(num_groups * window_scale)


def seta_subset_size(num_rows: int, num_keep: int, num_groups: int, window: int) -> int:
    """`M`, the uniform subset whose `window` of `num_groups` quantile groups hold `num_keep` rows (at most N)."""
    return min(num_rows, math.ceil(num_keep * num_groups / window))


def seta_window_start(step: int, num_groups: int, window: int) -> int:
    """First group of the window at pruned epoch `step`: `step mod (G - w + 1)`."""
    return step % (num_groups - window + 1)


def seta_partial_anneal(epoch: int, num_epochs: int, delta: float) -> bool:
    """Whether `epoch` (0-based) is past SeTa's pruning stop: `epoch + 1 > delta * num_epochs`, as the official
    sampler (`iterations > num_epochs * delta`, iterations counted from 1). `delta` is read as written."""
    return epoch + 1 > Fraction(repr(float(delta))) * num_epochs


def sliding_window_selection(
    score: torch.Tensor, num_keep: int, step: int, num_groups: int, window: int, generator: torch.Generator
) -> torch.Tensor:
    """SeTa's rows for pruned epoch `step`: `num_keep` consecutive rows, easy to hard, of a uniform subset.

    The subset (`seta_subset_size` rows) is sorted by ascending `score` (NaN, never observed, last: hardest),
    ties in random order, and the window starts at the first row of group `seta_window_start(step)`, the groups
    being the `num_groups` quantiles `[floor(g * M / G), floor((g + 1) * M / G))`. At `step == 0` the window
    spans every group: `num_keep` uniformly drawn rows.
    """
    n = score.numel()
    num_keep = min(num_keep, n)
    perm = torch.randperm(n, generator=generator, device=generator.device).to(score.device)
    if step == 0:
        return perm[:num_keep]
    size = seta_subset_size(n, num_keep, num_groups, window)
    subset = perm[:size]
    keyed = torch.nan_to_num(score[subset].double(), nan=math.inf)
    easy_to_hard = subset[torch.sort(keyed, stable=True).indices]
    start = min(seta_window_start(step, num_groups, window) * size // num_groups, size - num_keep)
    return easy_to_hard[start : start + num_keep]


def seta_rows(
    score: torch.Tensor,
    num_keep: int,
    epoch: int | None,
    schedule: EpochSchedule | None,
    options: SeTaOptions,
    generator: torch.Generator,
) -> torch.Tensor:
    """The rows of a pruned `epoch` under SeTa's rule (window, or uniform once partial annealing starts)."""
    if epoch is None or schedule is None:
        raise RuntimeError("SeTa's window moves with the epoch: call strategy.set_epoch(epoch, schedule) first.")
    if seta_partial_anneal(epoch, schedule.num_epochs, options.seta_delta):
        return torch.randperm(score.numel(), generator=generator, device=generator.device)[:num_keep].to(score.device)
    window = seta_window_size(options.seta_num_groups, options.seta_window_scale)
    step = epoch - schedule.warmup_epochs
    return sliding_window_selection(score, num_keep, step, options.seta_num_groups, window, generator)


@register_strategy
class ScaleEfficientTraining(EpochAware, PruningStrategy):
    """Score: the last observed loss. Keeps a sliding window of loss groups of a uniform subset (see module)."""

    name = "seta"
    options_class = SeTaOptions
    options: SeTaOptions
    required_tables: ClassVar[frozenset[str]] = frozenset({"loss", "entropy"})  # entropy: recorded for every method

    def select(self, tables: Tables, num_keep: int, generator: torch.Generator) -> Selection:
        rows = seta_rows(self.score(tables), num_keep, self._epoch, self._schedule, self.options, generator)
        return Selection(rows=rows)
