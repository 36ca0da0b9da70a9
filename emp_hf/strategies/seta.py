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

`seta_grouping="kmeans"` follows the official code instead: the subset is `K` rows, the groups are 1-D k-means
bands of its losses, and the window keeps whole bands, so an epoch's size varies (at most `K`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import torch

from .base import (
    EpochContext,
    PruningStrategy,
    Selection,
    StrategyOptions,
    StrategyTraits,
    Tables,
    check_choice,
    check_number,
    invalid_option,
    randperm_index,
)
from .registry import register_strategy

SETA_GROUPINGS = ("quantile", "kmeans")


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
    seta_grouping: str = field(
        default="quantile",
        metadata={
            "help": "How SeTa cuts its subset into G groups: 'quantile' (equal-size bands; the subset is sized so "
            "the window holds exactly K rows, and prune_ratio is the saving of a pruned epoch) or 'kmeans' (the "
            "official code: 1-D k-means bands of a uniform subset of K rows, the window keeping whole bands, so an "
            "epoch's size varies and prune_ratio is the official r). 'kmeans' needs num_train_epochs (not "
            "max_steps) and dataloader_drop_last=False.",
            "choices": list(SETA_GROUPINGS),
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
        check_choice(self, "seta_grouping", SETA_GROUPINGS)

    def check_open_window(self, args: Any) -> None:
        """Refuse the training arguments that a `"kmeans"` window (an epoch size known only once it is planned,
        possibly below one global batch) cannot honour exactly."""
        if self.seta_grouping != "kmeans":
            return
        if args.max_steps > 0:
            raise invalid_option(
                args,
                "seta_grouping",
                f"with max_steps={args.max_steps}: k-means bands make an epoch's size known only once it is "
                "planned (and it can be below K), so max_steps cannot be met exactly; set num_train_epochs "
                "instead, or use seta_grouping='quantile'.",
            )
        if args.dataloader_drop_last:
            raise invalid_option(
                args,
                "seta_grouping",
                "with dataloader_drop_last=True: a k-means window can be smaller than one batch and would train "
                "on nothing; set dataloader_drop_last=False, or use seta_grouping='quantile'.",
            )


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
    perm = randperm_index(n, generator).to(score.device)
    if step == 0:
        return perm[:num_keep].long()
    size = seta_subset_size(n, num_keep, num_groups, window)
    subset = perm[:size]
    del perm
    keyed = score[subset]
    if bool(torch.isposinf(keyed).any()):  # NaN must tie with +inf, as the float64 `nan_to_num` makes them
        keyed = torch.nan_to_num(keyed, nan=math.inf)
    easy_to_hard = subset[torch.sort(keyed, stable=True).indices]  # a stable sort puts NaN last, as +inf
    start = min(seta_window_start(step, num_groups, window) * size // num_groups, size - num_keep)
    return easy_to_hard[start : start + num_keep].long()


def kmeans_band_edges(values: torch.Tensor, num_groups: int, max_iterations: int = 300) -> torch.Tensor:
    """Lloyd's k-means of sorted 1-D `values` into `num_groups` bands: the `G + 1` edges of the bands.

    In 1-D every k-means cluster is a band of consecutive sorted values, so a clustering is its edges: band `g` is
    `values[edges[g]:edges[g + 1]]`, bands in increasing order of centre. The centres start at the means of the `G`
    quantile bands; each iteration moves every value to its nearest centre (a tie to the lower one, as an argmin
    does) and every centre to its band's mean (an empty band keeps its centre, the centres kept in order), until no
    value moves. All values equal: the `G` quantile bands (the official code's `torch.chunk`); fewer values than
    bands leave some bands empty.
    """
    n = values.numel()
    quantile_edges = torch.div(
        torch.arange(num_groups + 1, device=values.device) * n, num_groups, rounding_mode="floor"
    )
    if n == 0 or num_groups == 1 or bool(values[0] == values[-1]):
        return quantile_edges
    values = values.double()
    cumulative = torch.cat([values.new_zeros(1), values.cumsum(0)])

    def band_means(edges: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
        sizes = edges[1:] - edges[:-1]
        sums = cumulative[edges[1:]] - cumulative[edges[:-1]]
        return torch.where(sizes > 0, sums / sizes.clamp_min(1), fallback)

    edges = quantile_edges
    centres = band_means(edges, values[edges[:-1].clamp(max=n - 1)])  # an empty band (n < G): its edge's value
    for _ in range(max_iterations):
        midpoints = (centres[:-1] + centres[1:]) / 2
        inner = torch.searchsorted(values, midpoints, right=True)  # a value on a midpoint joins the lower band
        moved = torch.cat([edges.new_zeros(1), inner, edges.new_full((1,), n)])
        if torch.equal(moved, edges):
            break
        edges = moved
        centres = torch.cummax(band_means(edges, centres), 0).values  # an empty band's kept centre stays in order
    return edges


def kmeans_window_selection(
    score: torch.Tensor, num_keep: int, step: int, num_groups: int, window: int, generator: torch.Generator
) -> torch.Tensor:
    """The official SeTa rows for pruned epoch `step`: a uniform subset of `num_keep` rows cut into `num_groups`
    k-means bands of `score` (`kmeans_band_edges`), and the whole bands `seta_window_start(step)` to that
    plus `window` kept. Rows never observed (NaN) join the hardest band. At `step == 0` the whole subset; an
    empty window keeps one row of the subset, as the official code keeps one."""
    n = score.numel()
    perm = torch.randperm(n, generator=generator, device=generator.device).to(score.device)
    subset = perm[: min(num_keep, n)]
    if step == 0 or subset.numel() == 0:
        return subset
    keyed = torch.nan_to_num(score[subset].double(), nan=math.inf)
    order = torch.sort(keyed, stable=True)
    observed = int(torch.isfinite(order.values).sum())
    edges = kmeans_band_edges(order.values[:observed], num_groups)
    edges[-1] = subset.numel()  # the never-observed rows, sorted last, join the hardest band
    start = seta_window_start(step, num_groups, window)
    rows = subset[order.indices[int(edges[start]) : int(edges[start + window])]]
    return rows if rows.numel() else subset[:1]


def seta_rows(
    score: torch.Tensor,
    num_keep: int,
    context: EpochContext,
    options: SeTaOptions,
    generator: torch.Generator,
) -> torch.Tensor:
    """The rows of the pruned epoch of `context` under SeTa's rule (window, or uniform once partial annealing
    starts)."""
    if seta_partial_anneal(context.epoch, context.num_epochs, options.seta_delta):
        return torch.randperm(score.numel(), generator=generator, device=generator.device)[:num_keep].to(score.device)
    window = seta_window_size(options.seta_num_groups, options.seta_window_scale)
    step = context.epochs_since_warmup
    select = kmeans_window_selection if options.seta_grouping == "kmeans" else sliding_window_selection
    return select(score, num_keep, step, options.seta_num_groups, window, generator)


@register_strategy
class ScaleEfficientTraining(PruningStrategy):
    """Score: the last observed loss. Keeps a sliding window of loss groups of a uniform subset (see module)."""

    name = "seta"
    options_class = SeTaOptions
    options: SeTaOptions

    @classmethod
    def traits_for(cls, options: SeTaOptions) -> StrategyTraits:
        return StrategyTraits(
            fixed_budget=options.seta_grouping == "quantile",
            budget_at_most_num_keep=True,  # "kmeans": whole bands of a `num_keep`-row subset
            required_tables=frozenset({"loss", "entropy"}),  # entropy: recorded for every method
        )

    @classmethod
    def score_description(cls, options: Mapping[str, Any], *, derived: bool = False) -> str:
        if derived:  # the score is the last observed loss
            return f"last observed loss (what {cls.name} ranks by)"
        return super().score_description(options)

    def check_arguments(self, args: Any) -> None:
        self.options.check_open_window(args)

    def select(self, tables: Tables, num_keep: int, generator: torch.Generator, context: EpochContext) -> Selection:
        rows = seta_rows(self.score(tables, context), num_keep, context, self.options, generator)
        return Selection(rows=rows)
