"""The strategy interface, the options every strategy reads, and the selection helpers they share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..schedule import EpochSchedule, floor_share

Tables = dict[str, torch.Tensor]

#: Every per-row table a `PruningState` can keep (see `emp_hf.tracker.TABLE_SPECS`).
ALL_TABLES = frozenset({"loss", "entropy", "ema_mean", "ema_var", "score", "weight", "frequency", "last_epoch"})


@dataclass(frozen=True)
class PruningOptions:
    """The strategy-facing subset of `EMPConfig` (see `docs/methods.md` for each option)."""

    prune_ratio: float = 0.5
    memory_weight: float = 1.0
    epsilon: float = 0.1
    ucb_c: float = 1.0
    emp_selection: str = "sample"
    emp_temperature: float = 1.0
    emp_revisit_share: float = 0.5
    infobatch_match_budget: bool = False
    seta_num_groups: int = 5
    seta_window_scale: float = 0.9
    seta_delta: float = 0.875
    ucb_exploration: str = "variance"


@dataclass
class Selection:
    """What a strategy decides for one pruned epoch: the rows to train on and, optionally, loss weights."""

    rows: torch.Tensor  # int64, unique, unordered
    weight: torch.Tensor | None = None  # float32 per row (length N), or None for all ones


class PruningStrategy(ABC):
    """Decides the rows of a pruned epoch from the per-row tables of a `PruningState`.

    Subclasses set `name`, implement `score` and `select`, and register themselves with
    `@register_strategy`. `select` must draw every random number from `generator`.

    `select` and `score` receive the tables on the training device, in their stored dtypes (`frequency` and
    `last_epoch` are int16 or int32), with `generator` on that device: create tensors on `score.device` and draw
    with `torch.randperm(n, generator=generator, device=generator.device)`.
    """

    name: ClassVar[str]
    #: Whether `select` may return loss weights (the trainer then reweights the per-example loss).
    uses_weights: ClassVar[bool] = False
    #: Whether the number of rows a pruned epoch visits is known before the epoch (exactly `num_keep`).
    fixed_budget: ClassVar[bool] = True
    #: Nominal anneal fraction when the user leaves `pruning_anneal_fraction` unset.
    default_anneal_fraction: ClassVar[float] = 0.0
    #: The per-row tables the strategy reads or records ("score": what it ranked by; "weight": its loss weights).
    #: Only these are kept (at 4 bytes per row each), plus "frequency" and "last_epoch" (2 bytes each), always.
    required_tables: ClassVar[frozenset[str]] = ALL_TABLES

    def __init__(self, options: PruningOptions) -> None:
        self.options = options

    def set_epoch(self, epoch: int, schedule: EpochSchedule) -> None:  # noqa: B027  (optional hook)
        """Called by the planner right before `score`/`select` of `epoch`; a no-op unless a rule needs the epoch."""

    def score(self, tables: Tables) -> torch.Tensor:
        """The per-row score this strategy ranks by (NaN for rows without an observation)."""
        return tables["loss"]

    @abstractmethod
    def select(self, tables: Tables, num_keep: int, generator: torch.Generator) -> Selection:
        """Choose the rows of a pruned epoch that visits `num_keep` of the `N` rows."""


def rank_descending(score: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Row indices by descending score, NaN (never observed) first, ties broken by `generator`."""
    perm = torch.randperm(score.numel(), generator=generator, device=generator.device)
    keyed = torch.nan_to_num(score[perm].double(), nan=float("inf"))
    return perm[torch.sort(keyed, descending=True, stable=True).indices]


def top_k(score: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """The `k` highest-scored rows (NaN first, ties broken by `generator`)."""
    return rank_descending(score, generator)[:k]


def greedy_with_exploration(score: torch.Tensor, k: int, epsilon: float, generator: torch.Generator) -> torch.Tensor:
    """The `k - round(epsilon * k)` highest-scored rows plus a uniform sample of the other rows."""
    num_greedy = k - round(epsilon * k)
    ranked = rank_descending(score, generator)
    rest = ranked[num_greedy:]
    explore = rest[torch.randperm(rest.numel(), generator=generator, device=generator.device)[: k - num_greedy]]
    return torch.cat([ranked[:num_greedy], explore])


def soft_prune(
    score: torch.Tensor,
    generator: torch.Generator,
    *,
    ratio: float | None = None,
    num_prune: int | None = None,
) -> Selection:
    """InfoBatch's rule: prune a uniform share of the below-mean ("well-learned") rows, upweight the rest.

    Give either `ratio` (prune `floor(ratio * |W|)` of the below-mean set `W`, kept members weighted
    `1 / (1 - ratio)`, as in the official InfoBatch code) or `num_prune` (prune exactly that many rows:
    uniformly from `W`, then, if `W` is too small, the lowest-scored other rows; kept members of `W` are
    weighted `1 / (1 - r_eff)` with `r_eff` the share of `W` pruned). Rows never observed (NaN) are
    never pruned and do not enter the mean.
    """
    n = score.numel()
    seen = ~torch.isnan(score)
    device = score.device
    weight = torch.ones(n, dtype=torch.float32, device=device)
    if not bool(seen.any()):  # nothing observed yet: nothing to rank by
        if not num_prune:
            return Selection(rows=torch.arange(n, device=device), weight=weight)
        return Selection(rows=torch.randperm(n, generator=generator, device=device)[: n - num_prune], weight=weight)
    well_learned = seen & (score.double() < score[seen].double().mean())
    candidates = torch.nonzero(well_learned).flatten()
    candidates = candidates[torch.randperm(candidates.numel(), generator=generator, device=device)]
    size = candidates.numel()
    if num_prune is None:
        assert ratio is not None
        pruned = candidates[: floor_share(ratio, size)]
        upweight = 1.0 / (1.0 - ratio)
    else:
        pruned = candidates[: min(num_prune, size)]
        extra = num_prune - pruned.numel()
        if extra > 0:  # the below-mean set is too small: also drop the lowest-scored other rows
            others = torch.nonzero(~well_learned).flatten()
            keyed = torch.nan_to_num(-score[others].double(), nan=float("-inf"))
            perm = torch.randperm(others.numel(), generator=generator, device=device)
            order = perm[torch.sort(keyed[perm], descending=True, stable=True).indices]
            pruned = torch.cat([pruned, others[order[:extra]]])
        r_eff = min(num_prune, size) / size if size else 0.0
        upweight = 1.0 / (1.0 - r_eff) if r_eff < 1.0 else 1.0
    keep = torch.ones(n, dtype=torch.bool, device=device)
    keep[pruned] = False
    weight[well_learned & keep] = upweight
    return Selection(rows=torch.nonzero(keep).flatten(), weight=weight)
