"""SeTa, EMP's `"window"` rule and UCB's visit bonus against hand-computed and numpy references.

The official code (github.com/mrazhou/SeTa, `seta.py`) fixes the conventions checked here: `w = round(G * ws)`
with Python's rounding, the window start `t mod (G - w + 1)`, every group at `t = 0`, and partial annealing once
`iterations > delta * num_epochs` (iterations counted from 1).
"""

from __future__ import annotations

import math
import random
from typing import NamedTuple

import numpy as np
import pytest
import torch

from emp_hf import EMPConfig
from emp_hf.core.sampler import EpochPlanner, epoch_generator
from emp_hf.core.schedule import EpochSchedule
from emp_hf.core.tracker import PruningState
from emp_hf.strategies import EpochContext, PruningOptions, PruningStrategy, SeTaOptions, build_strategy
from emp_hf.strategies.seta import (
    kmeans_band_edges,
    kmeans_window_selection,
    seta_partial_anneal,
    seta_subset_size,
    seta_window_size,
    seta_window_start,
    sliding_window_selection,
)
from emp_hf.strategies.ucb import visit_bonus


def tables_from(loss, entropy=None, frequency=None) -> dict[str, torch.Tensor]:
    loss = torch.as_tensor(loss, dtype=torch.float32)
    entropy = torch.zeros_like(loss) if entropy is None else torch.as_tensor(entropy, dtype=torch.float32)
    seen = ~torch.isnan(loss)
    return {
        "loss": loss,
        "entropy": entropy,
        "ema_mean": loss.clone(),
        "ema_var": torch.zeros_like(loss),
        "score": torch.full_like(loss, float("nan")),
        "weight": torch.ones_like(loss),
        "frequency": seen.long() if frequency is None else torch.as_tensor(frequency),
        "last_epoch": torch.where(seen, 0, -1),
    }


class AtEpoch(NamedTuple):
    """A strategy and the context of the epoch it is asked about."""

    strategy: PruningStrategy
    context: EpochContext


def at_epoch(strategy: PruningStrategy, epoch: int, schedule: EpochSchedule) -> AtEpoch:
    return AtEpoch(strategy, EpochContext.of(schedule, epoch))


def seta(epoch: int, schedule: EpochSchedule, **options) -> AtEpoch:
    return at_epoch(
        build_strategy("seta", PruningOptions(prune_ratio=schedule.prune_ratio, **options)), epoch, schedule
    )


def kept(asked: AtEpoch, tables, num_keep: int, seed: int = 0) -> list[int]:
    rows = asked.strategy.select(tables, num_keep, torch.Generator().manual_seed(seed), asked.context).rows
    assert rows.numel() == num_keep == rows.unique().numel()
    return sorted(rows.tolist())


# ---------------------------------------------------------------------------------------------- conventions
@pytest.mark.parametrize(
    ("groups", "scale", "window"), [(5, 0.9, 4), (5, 0.5, 2), (10, 0.5, 5), (4, 0.625, 2), (5, 1.0, 5)]
)
def test_window_size_rounds_half_to_even_like_the_official_code(groups, scale, window):
    assert seta_window_size(groups, scale) == window  # 4.5 -> 4, 2.5 -> 2 (Python round)


def test_window_start_slides_by_one_group_per_pruned_epoch():
    assert [seta_window_start(t, 5, 4) for t in range(6)] == [0, 1, 0, 1, 0, 1]
    assert [seta_window_start(t, 10, 5) for t in range(8)] == [0, 1, 2, 3, 4, 5, 0, 1]
    assert [seta_window_start(t, 5, 5) for t in range(3)] == [0, 0, 0]


def test_subset_size_is_the_official_keep_ratio_that_gives_the_budget():
    # the official CIFAR script (r = 0.1, G = 5, ws = 0.9) keeps 0.9 * 4/5 = 72% of the rows: prune_ratio 0.28
    assert seta_subset_size(1000, 720, 5, 4) == 900
    assert seta_subset_size(1000, 500, 5, 4) == 625  # 50% saving: a 62.5% subset, 4 of its 5 groups
    assert seta_subset_size(1000, 300, 5, 4) == 375
    assert seta_subset_size(1000, 900, 5, 4) == 1000  # w/G of all rows < K: the whole dataset is the subset
    assert seta_subset_size(7, 3, 5, 4) == 4  # ceil(3.75)


@pytest.mark.parametrize(("epochs", "delta", "first"), [(8, 0.875, 7), (200, 0.875, 175), (10, 0.5, 5), (3, 1.0, 3)])
def test_partial_annealing_starts_where_the_official_sampler_stops_pruning(epochs, delta, first):
    flags = [seta_partial_anneal(e, epochs, delta) for e in range(epochs)]
    assert flags == [e >= first for e in range(epochs)]


# ---------------------------------------------------------------------------------------------- selection
def test_window_by_hand_when_the_subset_is_every_row():
    # N = 10, K = 8, G = 5, w = 4 -> M = 10: groups {0,1} {2,3} ... {8,9} of the loss order
    loss = [5.0, 0.0, 9.0, 3.0, 1.0, 8.0, 2.0, 7.0, 4.0, 6.0]  # row -> loss; easy to hard: 1 4 6 3 8 0 9 7 5 2
    schedule = EpochSchedule(num_rows=10, num_epochs=20, prune_ratio=0.2, warmup_epochs=1)
    tables = tables_from(loss)
    easy_to_hard = list(np.argsort(loss))
    assert kept(seta(2, schedule), tables, 8) == sorted(easy_to_hard[2:])  # t = 1: start at group 1
    assert kept(seta(3, schedule), tables, 8) == sorted(easy_to_hard[:8])  # t = 2: start at group 0
    assert kept(seta(4, schedule), tables, 8) == sorted(easy_to_hard[2:])


@pytest.mark.parametrize("seed", range(6))
def test_window_matches_a_numpy_reference(seed):
    rng = random.Random(seed)
    n = rng.randint(20, 300)
    groups = rng.randint(1, 8)
    scale = rng.choice([0.3, 0.5, 0.6, 0.9, 1.0])
    window = seta_window_size(groups, scale)
    if window < 1:
        window, scale = 1, 1.0 / groups
    k = rng.randint(1, n)
    step = rng.randint(1, 30)
    loss = np.random.default_rng(seed).uniform(0, 3, n).astype(np.float32)
    rows = sliding_window_selection(
        torch.from_numpy(loss), k, step, groups, window, torch.Generator().manual_seed(seed)
    )
    # reference: the subset is the first M rows of the generator's permutation; quantile groups of its loss order
    size = min(n, math.ceil(k * groups / window))
    subset = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()[:size]
    order = subset[np.argsort(loss[subset].astype(np.float64), kind="stable")]
    start = min((step % (groups - window + 1)) * size // groups, size - k)
    assert sorted(rows.tolist()) == sorted(order[start : start + k].tolist())


def test_first_pruned_epoch_is_every_group_of_a_uniform_subset():
    schedule = EpochSchedule(num_rows=50, num_epochs=10, prune_ratio=0.6, warmup_epochs=2)
    expected = torch.randperm(50, generator=torch.Generator().manual_seed(3))[:20]
    assert kept(seta(2, schedule), tables_from(torch.arange(50.0)), 20, seed=3) == sorted(expected.tolist())


def test_partial_annealing_draws_a_uniform_subset():
    schedule = EpochSchedule(num_rows=50, num_epochs=8, prune_ratio=0.6, warmup_epochs=1)
    expected = torch.randperm(50, generator=torch.Generator().manual_seed(4))[:20]
    strategy = seta(7, schedule, seta_delta=0.875)  # 7 + 1 > 0.875 * 8
    assert kept(strategy, tables_from(torch.arange(50.0)), 20, seed=4) == sorted(expected.tolist())


def test_never_observed_rows_count_as_hardest():
    loss = [0.1, 0.2, float("nan"), 0.3, float("nan"), 0.4, 0.5, 0.6, 0.7, 0.8]
    schedule = EpochSchedule(num_rows=10, num_epochs=20, prune_ratio=0.2, warmup_epochs=0)
    assert kept(seta(2, schedule), tables_from(loss), 8) == [0, 1, 3, 5, 6, 7, 8, 9]  # t = 2: drop the 2 hardest
    assert {2, 4} <= set(kept(seta(1, schedule), tables_from(loss), 8))  # t = 1: drop the 2 easiest


@pytest.mark.parametrize("seed", range(8))
def test_plan_size_is_exactly_the_budget(seed):
    rng = random.Random(100 + seed)
    n = rng.randint(1, 400)
    ratio = rng.choice([0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95])
    schedule = EpochSchedule(num_rows=n, num_epochs=12, prune_ratio=ratio, warmup_epochs=rng.randint(0, 2))
    options = {"seta_num_groups": rng.randint(1, 10), "seta_window_scale": rng.choice([0.5, 0.9, 1.0])}
    if seta_window_size(options["seta_num_groups"], options["seta_window_scale"]) < 1:
        options["seta_window_scale"] = 1.0
    tables = tables_from(np.random.default_rng(seed).uniform(0, 3, n))
    for epoch in range(schedule.warmup_epochs, 12):
        kept(seta(epoch, schedule, **options), tables, schedule.num_keep, seed=epoch)


def test_planner_hands_the_epoch_to_the_strategy_and_plans_exactly_k():
    n = 40
    state = PruningState(num_rows=n)
    schedule = EpochSchedule(num_rows=n, num_epochs=6, prune_ratio=0.5, warmup_epochs=1)
    strategy = build_strategy("seta", PruningOptions(prune_ratio=0.5))
    planner = EpochPlanner(state, strategy, schedule, seed=0)
    loss = torch.arange(n, dtype=torch.float32)
    state.update(torch.arange(n), loss, torch.zeros(n), epoch=0)
    planner.plan(0)
    for epoch in range(1, 6):  # the window moves with the epoch: each plan is the one of its own epoch's context
        tables = state.device_tables()
        expected = strategy.select(tables, 20, epoch_generator(0, epoch), EpochContext.of(schedule, epoch)).rows
        assert sorted(planner.plan(epoch).tolist()) == sorted(expected.tolist())
    assert state.epoch_plan_sizes == [n] + [20] * 5


# ---------------------------------------------------------------------------------------------- emp window
def test_emp_window_slides_over_the_emp_score_not_the_loss():
    loss = np.arange(10, dtype=np.float64)
    entropy = 20.0 - 3 * loss  # score = loss + entropy = 20 - 2 * loss: the loss order reversed
    schedule = EpochSchedule(num_rows=10, num_epochs=20, prune_ratio=0.2, warmup_epochs=0)
    strategy = build_strategy("emp", PruningOptions(prune_ratio=0.2, emp_selection="window"))
    # t = 1: drop the 2 lowest scores, i.e. the 2 highest losses
    assert kept(at_epoch(strategy, 1, schedule), tables_from(loss, entropy), 8) == list(range(8))
    seta_strategy = seta(1, schedule)  # SeTa on the loss drops the 2 lowest losses
    assert kept(seta_strategy, tables_from(loss, entropy), 8) == list(range(2, 10))


# ---------------------------------------------------------------------------------------------- ucb visits
def test_visit_bonus_by_hand():
    bonus = visit_bonus(torch.tensor([0, 1, 4, 2], dtype=torch.int32), 4)
    assert math.isinf(bonus[0])
    assert bonus[1:].tolist() == pytest.approx(
        [math.sqrt(math.log(4)), math.sqrt(math.log(4) / 4), math.sqrt(math.log(4) / 2)]
    )


def test_ucb_visits_score_and_selection():
    tables = tables_from([1.0, 1.2, 0.5, 2.0], frequency=[3, 1, 1, 9])
    schedule = EpochSchedule(num_rows=4, num_epochs=10, prune_ratio=0.5)
    strategy = build_strategy("ucb", PruningOptions(ucb_c=0.5, ucb_exploration="visits"))
    context = EpochContext.of(schedule, 5)  # t = 6
    log_t = math.log(6)
    expected = [
        1.0 + 0.5 * math.sqrt(log_t / 3),
        1.2 + 0.5 * math.sqrt(log_t),
        0.5 + 0.5 * math.sqrt(log_t),
        2.0 + 0.5 * math.sqrt(log_t / 9),
    ]
    assert strategy.score(tables, context).tolist() == pytest.approx(expected, rel=1e-6)
    assert kept(AtEpoch(strategy, context), tables, 2) == [1, 3]  # 2.54, 2.22 beat 1.77, 1.67
    variance = build_strategy("ucb", PruningOptions(ucb_c=0.5))
    assert variance.score(tables, context).tolist() == pytest.approx([1.0, 1.2, 0.5, 2.0])  # ema_var = 0: no bonus


def test_ucb_visits_brings_back_rows_the_variance_rule_locks_out():
    n, k = 30, 10
    losses = torch.linspace(0.1, 1.0, n)  # UCB1 scale: rewards in [0, 1], c = sqrt(2)
    schedule = EpochSchedule(num_rows=n, num_epochs=12, prune_ratio=1 - k / n, warmup_epochs=1)
    for exploration, expect_all in (("visits", True), ("variance", False)):
        state = PruningState(num_rows=n)
        strategy = build_strategy(
            "ucb", PruningOptions(prune_ratio=1 - k / n, ucb_c=math.sqrt(2), ucb_exploration=exploration)
        )
        planner = EpochPlanner(state, strategy, schedule, seed=0)
        visited = torch.zeros(n, dtype=torch.bool)
        for epoch in range(12):
            plan = planner.plan(epoch)
            state.update(plan, losses[plan], torch.zeros(plan.numel()), epoch=epoch)
            if epoch >= 1:
                visited[plan] = True
        assert bool(visited.all()) is expect_all


# ---------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("seta_num_groups", 0, "seta_num_groups"),
        ("seta_num_groups", 2.5, "whole number"),
        ("seta_window_scale", 0.0, r"\(0, 1\]"),
        ("seta_window_scale", 1.5, r"\(0, 1\]"),
        ("seta_window_scale", 0.05, "0 groups"),
        ("seta_delta", 0.0, "seta_delta"),
        ("seta_grouping", "kmedians", r"seta_grouping='kmedians' is invalid: choose one of \['quantile', 'kmeans'\]"),
        ("ucb_exploration", "count", "variance"),
        ("emp_selection", "slide", "window"),
    ],
)
def test_config_rejects_bad_options(tmp_path, field, value, message):
    with pytest.raises(ValueError, match=message):
        EMPConfig(output_dir=str(tmp_path), num_train_epochs=3, pruning_method="seta", **{field: value})


def test_config_hands_the_options_to_the_strategy(tmp_path):
    config = EMPConfig(
        output_dir=str(tmp_path),
        num_train_epochs=3,
        pruning_method="seta",
        seta_num_groups=10,
        seta_window_scale=0.5,
        seta_delta=0.9,
        ucb_exploration="visits",
    )
    options = config.strategy_options
    assert type(options) is SeTaOptions
    assert (options.seta_num_groups, options.seta_window_scale, options.seta_delta) == (10, 0.5, 0.9)
    assert not hasattr(options, "ucb_exploration")  # UCB's option is not SeTa's
    assert config.ucb_exploration == "visits"
    assert config.pruning_anneal_fraction == 0.0  # SeTa anneals by its own partial annealing (seta_delta)


@pytest.mark.parametrize("seed", range(4))
def test_emp_window_equals_seta_for_two_classes(seed):
    # binary: loss = -log p and H(p) make loss + entropy decrease monotonically in p, so the ranks (and rows) agree
    p = np.random.default_rng(seed).uniform(0.01, 0.99, 200)
    loss, entropy = -np.log(p), -(p * np.log(p) + (1 - p) * np.log(1 - p))
    assert np.all(np.diff((loss + entropy)[np.argsort(p)]) < 0)
    schedule = EpochSchedule(num_rows=200, num_epochs=20, prune_ratio=0.5, warmup_epochs=0)
    emp = build_strategy("emp", PruningOptions(prune_ratio=0.5, emp_selection="window"))
    tables = tables_from(loss, entropy)
    assert kept(at_epoch(emp, 3, schedule), tables, 100, seed) == kept(seta(3, schedule), tables, 100, seed)


# ---------------------------------------------------------------------------------------------- k-means grouping
def lloyd_reference(values: np.ndarray, groups: int) -> np.ndarray:
    """Textbook Lloyd in numpy (argmin assignment over all centres, a tie to the lower one), started at the means
    of the quantile bands, as `kmeans_band_edges`; returns each value's cluster, clusters by increasing centre."""
    n = len(values)
    edges = [g * n // groups for g in range(groups + 1)]
    centres = np.array([values[edges[g] : edges[g + 1]].mean() if edges[g + 1] > edges[g] else 0.0
                        for g in range(groups)])  # fmt: skip
    labels = None
    for _ in range(300):
        new = np.argmin(np.abs(values[:, None] - centres[None, :]), axis=1)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        centres = np.array([values[labels == g].mean() if (labels == g).any() else centres[g] for g in range(groups)])
    return labels


@pytest.mark.parametrize("seed", range(8))
def test_kmeans_bands_equal_a_textbook_lloyd(seed):
    rng = np.random.default_rng(seed)
    groups = int(rng.integers(2, 7))
    values = np.sort(np.concatenate([rng.gamma(2.0, 0.3, 200), rng.normal(3.0, 0.4, 60), rng.exponential(1.0, 40)]))
    edges = kmeans_band_edges(torch.from_numpy(values), groups).tolist()
    labels = lloyd_reference(values, groups)
    assert edges[0] == 0 and edges[-1] == len(values) and edges == sorted(edges)
    assert np.array_equal(np.repeat(np.arange(groups), np.diff(edges)), labels)


def test_kmeans_finds_separated_clusters_and_chunks_equal_values():
    values = torch.cat([torch.full((50,), 0.1), torch.full((30,), 2.0), torch.full((20,), 9.0)])
    assert kmeans_band_edges(values, 3).tolist() == [0, 50, 80, 100]
    assert kmeans_band_edges(torch.ones(10), 3).tolist() == [0, 3, 6, 10]  # the official torch.chunk-like split
    assert kmeans_band_edges(values, 1).tolist() == [0, 100]


@pytest.mark.parametrize(("size", "groups"), [(1, 5), (3, 5), (4, 5), (7, 10), (9, 10)])
def test_kmeans_with_fewer_rows_than_bands_keeps_ordered_bands(size, groups):
    values = torch.sort(torch.rand(size, generator=torch.Generator().manual_seed(size), dtype=torch.float64)).values
    edges = kmeans_band_edges(values, groups)
    assert edges[0] == 0 and edges[-1] == size and torch.all(edges[1:] >= edges[:-1])
    for step in range(1, 4):
        rows = kmeans_window_selection(
            values.float(), size, step, groups, groups - 1, torch.Generator().manual_seed(step)
        )
        assert 1 <= rows.numel() == rows.unique().numel() <= size


def test_kmeans_window_keeps_whole_bands_of_a_uniform_subset():
    # three well-separated loss levels: bands of 50, 30 and 20 rows over 100 rows
    loss = torch.cat([torch.full((50,), 0.5), torch.full((30,), 2.0), torch.full((20,), 9.0)])
    n, groups, window = 100, 3, 2
    for step, dropped in ((0, None), (1, 0.5), (2, 9.0), (3, 0.5)):
        rows = kmeans_window_selection(loss, n, step, groups, window, torch.Generator().manual_seed(step))
        assert rows.unique().numel() == rows.numel()
        if dropped is None:  # t = 0: the whole subset
            assert rows.numel() == n
        else:  # the window of 2 of the 3 bands slides: t odd drops the easiest band, t even the hardest
            assert set(loss[rows].tolist()) == {0.5, 2.0, 9.0} - {dropped}
            assert rows.numel() == n - int((loss == dropped).sum())


@pytest.mark.parametrize("seed", range(4))
def test_kmeans_window_matches_the_official_procedure(seed):
    rng = np.random.default_rng(seed)
    n, keep, groups, window, step = 300, 210, 5, 4, int(rng.integers(1, 9))
    loss = rng.gamma(2.0, 0.5, n)
    rows = kmeans_window_selection(
        torch.from_numpy(loss), keep, step, groups, window, torch.Generator().manual_seed(seed)
    )
    # official: a uniform subset of (1 - r) N rows, k-means clusters sorted by centre, clusters [start, start + w)
    subset = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()[:keep]
    order = subset[np.argsort(loss[subset], kind="stable")]
    labels = lloyd_reference(loss[order], groups)
    start = step % (groups - window + 1)
    expected = order[(labels >= start) & (labels < start + window)]
    assert sorted(rows.tolist()) == sorted(expected.tolist())


def test_kmeans_never_observed_rows_join_the_hardest_band():
    loss = torch.cat([torch.full((40,), 0.1), torch.full((40,), 5.0), torch.full((20,), float("nan"))])
    rows = kmeans_window_selection(loss, 100, 1, 2, 1, torch.Generator().manual_seed(0))  # keeps the hard band
    assert sorted(rows.tolist()) == list(range(40, 100))


def test_kmeans_grouping_is_an_open_budget_and_refuses_what_it_cannot_honour(tmp_path):
    assert build_strategy("seta").traits.fixed_budget
    assert not build_strategy("seta", seta_grouping="kmeans").traits.fixed_budget
    assert not build_strategy("emp", emp_selection="window", seta_grouping="kmeans").traits.fixed_budget
    assert build_strategy("emp", seta_grouping="kmeans").traits.fixed_budget  # 'sample' does not read the grouping
    common = dict(output_dir=str(tmp_path), seta_grouping="kmeans")
    with pytest.raises(ValueError, match=r"EMPConfig.seta_grouping='kmeans' is invalid: with max_steps=50"):
        EMPConfig(**common, pruning_method="seta", max_steps=50)
    with pytest.raises(ValueError, match=r"seta_grouping='kmeans' is invalid: with dataloader_drop_last=True"):
        EMPConfig(
            **common, pruning_method="emp", emp_selection="window", num_train_epochs=3, dataloader_drop_last=True
        )
    EMPConfig(**common, pruning_method="emp", emp_selection="sample", max_steps=50)  # no window: nothing to refuse
