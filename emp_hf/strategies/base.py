"""The strategy interface, the base of every strategy's options, and the selection helpers strategies share."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, TypeVar

import torch

from ..core.schedule import EpochContext, floor_share
from ..core.tracker import ALL_TABLES  # every per-row table a `PruningState` can keep

Tables = dict[str, torch.Tensor]


OptionsT = TypeVar("OptionsT", bound="StrategyOptions")
#: The share of the rows a pruned epoch skips unless `prune_ratio` says otherwise.
DEFAULT_PRUNE_RATIO = 0.5


@dataclass
class StrategyOptions:
    """The options a strategy reads, as a dataclass: each strategy declares its own subclass as `options_class`.

    Fields carry their `help` (and `choices`) in `field(metadata=...)`, as `TrainingArguments` does: the built-in
    strategies' options are inherited by `PruningArguments`, so each is defined once and is a command-line flag.
    A subclass checks its fields in `validate_options` (calling `super().validate_options()`), which runs when
    the options are built, and raises `invalid_option(self, name, message)` for a bad value.
    """

    prune_ratio: float = field(
        default=DEFAULT_PRUNE_RATIO, metadata={"help": "Fraction of the rows a pruned epoch skips, in [0, 1)."}
    )

    def __post_init__(self) -> None:
        self.validate_options()
        base_post_init = getattr(super(), "__post_init__", None)
        if base_post_init is not None:  # cooperative: a TrainingArguments class that inherits the options
            base_post_init()

    def validate_options(self) -> None:
        """Raise a one-line `ValueError` naming the first invalid field."""
        check_number(self, "prune_ratio", 0.0, 1.0, high_open=True)

    @classmethod
    def from_values(cls: type[OptionsT], source: object = None, /, **overrides: Any) -> OptionsT:
        """These options, each field taken by name from `source` (a config or other options) unless overridden.

        Fields `source` lacks keep their defaults; `overrides` must name fields of `cls`.
        """
        if type(source) is cls and not overrides:
            return source
        names = [option.name for option in fields(cls) if option.init]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise TypeError(f"{cls.__name__} has no option {', '.join(unknown)}; its options are {names}.")
        values = {name: getattr(source, name) for name in names if source is not None and hasattr(source, name)}
        return cls(**{**values, **overrides})


def option_defaults(options_class: type[StrategyOptions]) -> dict[str, Any]:
    """The default of each field of `options_class` that has one."""
    defaults = {}
    for option in fields(options_class):
        if option.default is not MISSING:
            defaults[option.name] = option.default
        elif option.default_factory is not MISSING:
            defaults[option.name] = option.default_factory()
    return defaults


def invalid_option(options: object, name: str, message: str) -> ValueError:
    """`ValueError("<Class>.<name>=<value> is invalid: <message>")`, the one-line form of every option error."""
    return ValueError(f"{type(options).__name__}.{name}={getattr(options, name)!r} is invalid: {message}")


def is_number(value: object) -> bool:
    """A real number (an int or float, not a bool), NaN excluded."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def check_number(
    options: object, name: str, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> None:
    """Raise `invalid_option` unless `options.<name>` is a number in the interval from `low` to `high`."""
    value = getattr(options, name)
    above = is_number(value) and (value > low if low_open else value >= low)
    below = is_number(value) and (value < high if high_open else value <= high)
    if not (above and below):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise invalid_option(options, name, f"it must be a number in {interval}.")


def check_choice(options: object, name: str, choices: Sequence[str]) -> None:
    """Raise `invalid_option` unless `options.<name>` is one of `choices`."""
    if getattr(options, name) not in choices:
        raise invalid_option(options, name, f"choose one of {list(choices)}.")


@dataclass
class Selection:
    """What a strategy decides for one pruned epoch: the rows to train on and, optionally, loss weights."""

    rows: torch.Tensor  # int64, unique, unordered
    weight: torch.Tensor | None = None  # float32 per row (length N), or None for all ones


@dataclass(frozen=True)
class StrategyTraits:
    """What a strategy asks of the trainer, as values: the trainer, the step budget, the pruning state and the
    config read these, never the method's name.

    Each strategy instance has one (`strategy.traits`), computed once from its options by the classmethod
    `traits_for(options)`; the config asks `STRATEGIES[name].traits_for(options)` before a strategy is built.
    The defaults are those of a method that visits exactly `num_keep` rows per pruned epoch, without weights.
    """

    #: Whether the method prunes at all. False (`none`, the control arm): every epoch trains on all rows with
    #: Trainer's own sampler, epochs and step counts, bit-identical to `transformers.Trainer`; the statistics are
    #: still recorded. Such a method takes `prune_ratio=0` by default and refuses any other.
    prunes: bool = True
    #: Whether the number of rows a pruned epoch visits is known before the epoch (exactly `num_keep`). False (an
    #: open budget: InfoBatch, SeTa's k-means bands): known once the epoch is planned, so the step budget is
    #: re-estimated epoch by epoch.
    fixed_budget: bool = True
    #: For an open budget: whether a pruned epoch visits at most `num_keep` rows. Its undecided epochs then count
    #: as `num_keep` rows, an upper bound, so the LR schedule only ever shortens; otherwise (InfoBatch: at least
    #: `num_keep`) as many rows as the latest pruned epoch.
    budget_at_most_num_keep: bool = False
    #: Whether `select` may return loss weights (the trainer then reweights the per-example loss).
    uses_weights: bool = False
    #: The anneal fraction when the user leaves `pruning_anneal_fraction` unset.
    default_anneal_fraction: float = 0.0
    #: The per-row tables the strategy reads or records ("score": what it ranked by; "weight": its loss weights).
    #: Only these are kept (at 4 bytes per row each), plus "frequency" and "last_epoch" (2 bytes each), always.
    required_tables: frozenset[str] = ALL_TABLES
    #: Whether the score weighs the predictive entropy (a regression head has none: the trainer warns that such a
    #: score reduces to the loss).
    ranks_by_entropy: bool = False

    def __post_init__(self) -> None:
        tables = frozenset(self.required_tables)
        unknown = sorted(tables - ALL_TABLES)
        if unknown:
            raise ValueError(
                f"StrategyTraits.required_tables names unknown tables {unknown}; choose from {sorted(ALL_TABLES)}."
            )
        object.__setattr__(self, "required_tables", tables)


class PruningStrategy(ABC):
    """Decides the rows of a pruned epoch from the per-row tables of a `PruningState`.

    The contract, in full:

    - `name` (class attribute): the `pruning_method` it is registered as (`@register_strategy`).
    - `options_class` (class attribute): the `StrategyOptions` dataclass of its options; `self.options` is one,
      fixed once the strategy is built.
    - `traits_for(options)` (classmethod): its `StrategyTraits` for those options (budget, weights, tables, ...);
      `self.traits` is the value for `self.options`. The default: `StrategyTraits()`.
    - `score(tables, context)`: the per-row score it ranks by; the planner records it every epoch.
    - `select(tables, num_keep, generator, context)`: the rows (and optional weights) of a pruned epoch.
    - `check_arguments(args)` (optional): refuse training arguments it cannot honour, when the config is built.
    - `score_description(options, derived=...)` (classmethod, optional): its score in words, for records.

    `context` is the epoch's `EpochContext` (epoch, phase, number of epochs, ...): a rule that moves with the
    epoch reads it there. `select` must draw every random number from `generator`. `select` and `score` receive
    the tables on the training device, in their stored dtypes (`frequency` and `last_epoch` are int16 or int32),
    with `generator` on that device: create tensors on `score.device` and draw with
    `torch.randperm(n, generator=generator, device=generator.device)`.
    """

    name: ClassVar[str]
    #: The dataclass of the options this strategy reads (`self.options` is one).
    options_class: ClassVar[type[StrategyOptions]] = StrategyOptions

    def __init__(self, options: object = None, /, **overrides: Any) -> None:
        """`options`: an `options_class` instance, or any object (a config, `PruningOptions`) to take its fields
        from by name; `overrides`: field values that win over both."""
        self.options = self.options_class.from_values(options, **overrides)
        #: What this strategy asks of the trainer, for `self.options` (see `StrategyTraits`).
        self.traits: StrategyTraits = self.traits_for(self.options)

    @classmethod
    def traits_for(cls, options: Any) -> StrategyTraits:
        """The traits of this strategy with `options` (an `options_class` instance); override to declare them."""
        return StrategyTraits()

    @classmethod
    def score_description(cls, options: Mapping[str, Any], *, derived: bool = False) -> str:
        """What a record's `score` column holds, in words (`emp-hf inspect`, the plots' y-label), from the
        record's `options`; `derived`: the state kept no score table, so the column is the last observed loss."""
        if derived:
            return f"last observed loss ({cls.name} keeps no score of its own)"
        return f"what {cls.name} ranked by at its last plan"

    def check_arguments(self, args: Any) -> None:  # noqa: B027  (optional hook)
        """Called when the config is built: raise a one-line `ValueError` for training arguments (a
        `PruningArguments` config) this strategy cannot honour; a no-op unless a strategy has such limits."""

    def score(self, tables: Tables, context: EpochContext) -> torch.Tensor:
        """The per-row score this strategy ranks by at the epoch of `context` (NaN for rows without an observation)."""
        return tables["loss"]

    @abstractmethod
    def select(self, tables: Tables, num_keep: int, generator: torch.Generator, context: EpochContext) -> Selection:
        """Choose the rows of the pruned epoch of `context`, which visits `num_keep` of the `N` rows.

        `num_keep` is the budget to meet (the planner passes `context.num_keep`); it stays an argument so a rule
        can be asked for any budget on any tables, as the tests and benchmarks do.
        """


#: Rows per chunk of the chunked passes of planning (bounded temporaries; a multiple of every SIMD width, so a
#: chunked elementwise op gives the values of the one-shot op).
CHUNK_ROWS = 1 << 20


def chunks(n: int, size: int = CHUNK_ROWS) -> range:
    """The starts of the `size`-row chunks of `range(n)`."""
    return range(0, n, size)


def rank_descending(score: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Row indices by descending score, NaN (never observed) first, ties broken by `generator`."""
    perm = torch.randperm(score.numel(), generator=generator, device=generator.device)
    keyed = torch.nan_to_num(score[perm].double(), nan=float("inf"))
    return perm[torch.sort(keyed, descending=True, stable=True).indices]


def randperm_index(n: int, generator: torch.Generator) -> torch.Tensor:
    """`torch.randperm(n)` of `generator`, as int32 on the CPU below 2**31 rows (the same permutation as int64
    there, at half the memory traffic)."""
    small = generator.device.type == "cpu" and n < 2**31
    return torch.randperm(n, generator=generator, device=generator.device, dtype=torch.int32 if small else torch.int64)


def kth_largest(keys: torch.Tensor, k: int) -> torch.Tensor:
    """The `k`-th largest of `keys` (no NaN, `1 <= k <= N`), as a 0-d tensor, without a copy of `keys`.

    A strided sample brackets the threshold; the keys inside the bracket (a few per thousand) are gathered in
    chunked passes and the exact order statistic taken among them. If the bracket misses (keys far from
    exchangeable), `torch.kthvalue` on all of them.
    """
    n = keys.numel()
    if n <= 4 * CHUNK_ROWS:
        return torch.kthvalue(keys, n - k + 1).values
    stride = max(n // (1 << 16), 1)
    sample = keys[::stride].sort().values
    s = sample.numel()
    q = (n - k + 0.5) / n * s  # the threshold's rank in the sample, from below
    margin = 6.0 * math.sqrt(max(q * (s - q) / s, 1.0)) + 2
    lo_i, hi_i = math.floor(q - margin), math.ceil(q + margin)
    inf = torch.tensor(float("inf"), dtype=keys.dtype, device=keys.device)
    lo = sample[lo_i] if lo_i >= 0 else -inf
    hi = sample[hi_i] if hi_i < s else inf
    above, band = 0, []
    for start in chunks(n):
        chunk = keys[start : start + CHUNK_ROWS]
        above += int((chunk > hi).sum())
        band.append(chunk[(chunk > lo) & (chunk <= hi)])
    inside = torch.cat(band)
    if above < k <= above + inside.numel():
        return torch.kthvalue(inside, inside.numel() - (k - above) + 1).values
    return torch.kthvalue(keys, n - k + 1).values


def top_k_mask(keys: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Bool mask of the rows of `rank_descending(keys, generator)[:k]`, for `keys` without NaN, without sorting.

    The rows above the `k`-th largest key are in; ties at it are broken as `rank_descending` breaks them, by the
    position of each tied row in the same `randperm(N)` of `generator`, drawn only when the threshold is tied
    (so the generator is left where `rank_descending` leaves it only in that case: call it last).
    """
    n = keys.numel()
    k = max(min(k, n), 0)
    if k in (0, n):
        return torch.full((n,), k == n, dtype=torch.bool, device=keys.device)
    threshold = kth_largest(keys, k)
    mask = keys > threshold
    need = k - int(torch.count_nonzero(mask))
    tied = keys == threshold
    if int(torch.count_nonzero(tied)) == need:
        return mask.logical_or_(tied)
    perm = randperm_index(n, generator).to(keys.device)
    tied_in_perm_order = perm[tied[perm]]
    mask[tied_in_perm_order[:need]] = True
    return mask


def top_k(score: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """The `k` highest-scored rows (NaN first, ties broken by `generator`), ascending: the rows of
    `rank_descending(score, generator)[:k]`."""
    keyed = torch.nan_to_num(score, nan=float("inf"))  # float32 orders as its float64 cast does
    return torch.nonzero(top_k_mask(keyed, k, generator)).flatten()


def _first_distinct(
    pool: int, count: int, generator: torch.Generator, accept: torch.Tensor | None = None
) -> torch.Tensor:
    """The first `count` distinct values of an i.i.d. uniform sequence over `range(pool)` (only values `v` with
    `accept[v]`, if given): a uniform sample of `count` of them without replacement. Expects enough of them."""
    device = generator.device
    picked = torch.empty(0, dtype=torch.int64, device=device)
    while picked.numel() < count:
        draws = torch.randint(pool, (2 * (count - picked.numel()) + 64,), generator=generator, device=device)
        if accept is not None:
            draws = draws[accept[draws]]
        sequence = torch.cat([picked, draws])
        values, order = torch.sort(sequence, stable=True)
        first = torch.ones_like(values, dtype=torch.bool)
        first[1:] = values[1:] != values[:-1]
        picked = sequence[torch.sort(order[first]).values][:count]
    return picked


def bernoulli_mask(n: int, p: float, generator: torch.Generator) -> torch.Tensor:
    """A bool mask of `n` independent Bernoulli(`p`) draws, from float32 uniforms drawn a chunk at a time."""
    mask = torch.empty(n, dtype=torch.bool, device=generator.device)
    for start in chunks(n):
        stop = min(start + CHUNK_ROWS, n)
        torch.lt(torch.rand(stop - start, generator=generator, device=generator.device), p, out=mask[start:stop])
    return mask


def uniform_subset(n: int, k: int, generator: torch.Generator, within: torch.Tensor | None = None) -> torch.Tensor:
    """Bool mask of `k` rows drawn uniformly without replacement from `range(n)` (from the rows of the bool mask
    `within`, if given, which must hold at least `k`).

    A Bernoulli keep of each row (probability `k / |pool|`), then the excess dropped or the shortfall added
    uniformly (`_first_distinct`): given its size a Bernoulli set is a uniform subset of that size, so the result
    is a uniform `k`-subset, with no permutation of the pool.
    """
    device = generator.device
    size = n if within is None else int(torch.count_nonzero(within))
    k = max(min(k, size), 0)
    if k in (0, size):
        full = torch.full((n,), k > 0, dtype=torch.bool, device=device)
        return full if within is None or k == 0 else within.clone()
    keep = bernoulli_mask(n, k / size, generator)
    if within is not None:
        keep.logical_and_(within)
    excess = int(torch.count_nonzero(keep)) - k
    if excess > 0:  # drop `excess` of the kept rows
        kept = torch.nonzero(keep).flatten()
        keep[kept[_first_distinct(kept.numel(), excess, generator)]] = False
    elif excess < 0:  # add `-excess` of the pool's other rows
        others = ~keep if within is None else within & ~keep
        if 4 * (size - k - excess) >= n:  # rejection from range(n) accepts often enough
            keep[_first_distinct(n, -excess, generator, accept=others)] = True
        else:
            rest = torch.nonzero(others).flatten()
            keep[rest[_first_distinct(rest.numel(), -excess, generator)]] = True
    return keep


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
    unseen = int(torch.count_nonzero(torch.isnan(score)))
    device = score.device
    if unseen == n:  # nothing observed yet: nothing to rank by
        weight = torch.ones(n, dtype=torch.float32, device=device)
        if not num_prune:
            return Selection(rows=torch.arange(n, device=device), weight=weight)
        return Selection(rows=torch.randperm(n, generator=generator, device=device)[: n - num_prune], weight=weight)
    observed = score if unseen == 0 else score[~torch.isnan(score)]
    mean = observed.mean(dtype=torch.float64)  # the float64 mean of the observed scores, without a float64 copy
    del observed
    well_learned = torch.empty(n, dtype=torch.bool, device=device)
    for start in chunks(n):  # `score < mean` in float64 (NaN compares False), a chunk at a time
        torch.lt(score[start : start + CHUNK_ROWS].double(), mean, out=well_learned[start : start + CHUNK_ROWS])
    size = int(torch.count_nonzero(well_learned))
    if num_prune is None:
        assert ratio is not None
        share = floor_share(ratio, size)
        upweight = 1.0 / (1.0 - ratio)
    else:
        share = min(num_prune, size)
        r_eff = share / size if size else 0.0
        upweight = 1.0 / (1.0 - r_eff) if r_eff < 1.0 else 1.0
    # the pruned share: a uniform subset of the below-mean rows (a Bernoulli draw trimmed to size, no permutation)
    keep = uniform_subset(n, share, generator, within=well_learned).logical_not_()
    if num_prune is not None and num_prune > share:  # the below-mean set is too small: also drop the lowest-scored
        others = torch.nonzero(~well_learned).flatten()  # other rows (never observed last), ties drawn uniformly
        lowest = torch.nan_to_num(score[others].neg(), nan=float("-inf"))
        extra = num_prune - share
        threshold = kth_largest(lowest, extra)
        dropped = lowest > threshold
        tied = lowest == threshold
        dropped |= uniform_subset(others.numel(), extra - int(torch.count_nonzero(dropped)), generator, within=tied)
        keep[others[dropped]] = False
        del others, lowest, dropped, tied
    rows = torch.nonzero(keep).flatten()
    weight = torch.ones(n, dtype=torch.float32, device=device).masked_fill_(well_learned.logical_and_(keep), upweight)
    return Selection(rows=rows, weight=weight)
