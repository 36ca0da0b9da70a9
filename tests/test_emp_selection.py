"""`emp_selection="spaced"`: exact budget, reproducibility, and its revisit guarantee."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from emp_hf import EMPTrainer
from emp_hf.strategies import PruningOptions, build_strategy
from emp_hf.strategies.emp import (
    EMP_SELECTIONS,
    SPACED_COVERAGE_SHARE,
    spaced_revisit_interval,
    spaced_selection,
)
from emp_hf_dev.fixtures import context_for, make_args, make_bert, make_text_dataset


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tables(n: int, seed: int = 0, nan_rows=(), last_epoch=None) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    loss = torch.from_numpy(rng.uniform(0.01, 3.0, n).astype(np.float32))
    entropy = torch.from_numpy(rng.uniform(0.0, 2.0, n).astype(np.float32))
    nan_rows = list(nan_rows)
    loss[nan_rows] = float("nan")
    entropy[nan_rows] = float("nan")
    seen = ~torch.isnan(loss)
    if last_epoch is None:
        last_epoch = torch.where(seen, 0, -1).to(torch.int64)
    return {
        "loss": loss,
        "entropy": entropy,
        "ema_mean": loss.clone(),
        "ema_var": torch.zeros(n),
        "score": torch.full((n,), float("nan")),
        "weight": torch.ones(n),
        "frequency": seen.to(torch.int64),
        "last_epoch": torch.as_tensor(last_epoch, dtype=torch.int64),
    }


def spaced(**kw):
    return build_strategy("emp", PruningOptions(emp_selection="spaced", **kw))


def test_spaced_is_a_selection_and_the_default_is_unchanged():
    assert "spaced" in EMP_SELECTIONS
    assert EMP_SELECTIONS[:4] == ("sample", "topk", "epsilon_greedy", "soft")
    assert PruningOptions().emp_selection == "sample"
    s = spaced()
    assert s.traits.fixed_budget and not s.traits.uses_weights and s.traits.default_anneal_fraction == 0.0


@pytest.mark.parametrize("n,keep", [(200, 60), (200, 140), (199, 100), (10, 1), (1, 1), (50, 50), (7, 6)])
def test_exactly_k_unique_rows(n, keep):
    t = tables(n, seed=n, nan_rows=range(0, n, 13))
    for seed in range(4):
        rows = spaced().select(t, keep, gen(seed), context_for(t, keep)).rows
        assert rows.dtype == torch.int64
        assert rows.numel() == keep
        assert torch.unique(rows).numel() == keep
        assert int(rows.min()) >= 0 and int(rows.max()) < n


def test_reproducible_and_leaves_global_rng_alone():
    t = tables(300, seed=3, nan_rows=[5, 17])
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    before = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    a = spaced().select(t, 90, gen(7), context_for(t, 90)).rows
    b = spaced().select(t, 90, gen(7), context_for(t, 90)).rows
    c = spaced().select(t, 90, gen(8), context_for(t, 90)).rows
    assert torch.equal(a, b)
    assert not torch.equal(torch.sort(a).values, torch.sort(c).values)
    assert torch.equal(before[0], torch.get_rng_state())
    assert before[1] == random.getstate()
    assert np.array_equal(before[2], np.random.get_state()[1])


def test_least_recently_visited_rows_are_always_kept():
    n, keep = 100, 30
    slots = math.ceil(SPACED_COVERAGE_SHARE * keep)
    last = torch.arange(n) % 10 + 5  # 10 rows each visited last in epochs 5..14
    oldest = torch.argsort(last, stable=True)[:slots]  # rows last visited in epochs 5 and 6 (20 rows >= 15)
    t = tables(n, last_epoch=last)
    t["loss"][oldest] = 0.0  # even with the lowest scores
    t["entropy"][oldest] = 0.0
    for seed in range(5):
        rows = set(spaced().select(t, keep, gen(seed), context_for(t, keep)).rows.tolist())
        assert set(torch.nonzero(last <= 5).flatten().tolist()) <= rows  # the 10 oldest: all due


def test_never_visited_rows_come_first():
    n = 40
    t = tables(n, nan_rows=[3, 11, 29])
    rows = set(spaced().select(t, 4, gen(0), context_for(t, 4)).rows.tolist())
    assert {3, 11, 29} <= rows


def test_score_part_prefers_high_scores():
    n, keep = 400, 120
    t = tables(n)
    t["loss"][:] = 0.01
    t["entropy"][:] = 0.0
    hard = torch.arange(0, n, 4)  # 100 rows with 100x the score of the others
    t["loss"][hard] = 1.0
    counts = torch.zeros(n)
    for seed in range(20):
        counts[spaced().select(t, keep, gen(seed), context_for(t, keep)).rows] += 1
    easy = torch.ones(n, dtype=torch.bool)
    easy[hard] = False
    assert counts[hard].mean() > 2 * counts[easy].mean()


def simulate(n: int, keep: int, epochs: int, scores_of, seed: int = 0, **options) -> np.ndarray:
    """Run the rule for `epochs` pruned epochs after one full warm-up; return the visit matrix."""
    last = torch.zeros(n, dtype=torch.int64)
    visits = np.zeros((epochs, n), dtype=bool)
    strategy = spaced(**options)
    for epoch in range(1, epochs + 1):
        t = tables(n, seed=epoch, last_epoch=last)
        t["loss"] = scores_of(epoch)
        t["entropy"] = torch.zeros(n)
        rows = strategy.select(t, keep, gen(seed * 1000 + epoch), context_for(t, keep)).rows
        assert rows.numel() == keep
        last[rows] = epoch
        visits[epoch - 1, rows.numpy()] = True
    return visits


def longest_gap(visits: np.ndarray) -> int:
    """The most consecutive epochs any row went without a visit (the warm-up counts as a visit)."""
    gap = np.zeros(visits.shape[1], dtype=int)
    worst = 0
    for row in visits:
        gap = np.where(row, 0, gap + 1)
        worst = max(worst, int(gap.max()))
    return worst


@pytest.mark.parametrize(
    "n,ratio,share",
    [(1000, 0.7, None), (1000, 0.9, None), (999, 0.5, None), (37, 0.3, None), (500, 0.95, None)]
    + [(1000, 0.7, 1.0), (999, 0.5, 0.25), (37, 0.3, 0.8)],
)
def test_revisit_guarantee_against_adversarial_scores(n, ratio, share):
    keep = n - math.floor(ratio * n)
    options = {} if share is None else {"emp_revisit_share": share}
    share = SPACED_COVERAGE_SHARE if share is None else share
    interval = spaced_revisit_interval(n, keep, share)
    assert interval == math.ceil(n / math.ceil(share * keep))

    favoured = torch.zeros(n)
    favoured[: keep // 2 + 1] = 1000.0  # a fixed set that a greedy rule would take every epoch

    def fixed(epoch):
        return favoured.clone() + 1e-6

    def shifting(epoch):  # scores that change every epoch
        return torch.from_numpy(np.random.default_rng(epoch).pareto(1.0, n).astype(np.float32)) + 1e-6

    for scores_of in (fixed, shifting):
        visits = simulate(n, keep, epochs=4 * interval, scores_of=scores_of, **options)
        assert longest_gap(visits) < interval  # at most interval - 1 pruned epochs between visits...
        assert visits.sum(0).min() >= 3  # ...so every row comes back again and again


def test_topk_starves_where_spaced_does_not():
    n, keep, epochs = 600, 180, 8
    favoured = torch.zeros(n)
    favoured[:keep] = 5.0
    topk = build_strategy("emp", PruningOptions(emp_selection="topk"))
    starved = torch.ones(n, dtype=torch.bool)
    for epoch in range(epochs):
        t = tables(n)
        t["loss"], t["entropy"] = favoured.clone(), torch.zeros(n)
        starved[topk.select(t, keep, gen(epoch), context_for(t, keep)).rows] = False
    assert int(starved.sum()) == n - keep  # greedy: 70% of the rows never come back
    visits = simulate(n, keep, epochs, scores_of=lambda e: favoured.clone())
    assert visits.any(0).all()


def test_trainer_keeps_the_revisit_guarantee(tmp_path):
    n = 32
    args = make_args(tmp_path, pruning_method="emp", emp_selection="spaced", prune_ratio=0.5, num_train_epochs=8)
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset(n=n))
    trainer.train()
    state = trainer.pruning_state
    assert state.epoch_plan_sizes == [n] + [16] * 7
    visits = state.kept_in_epoch()[1:].numpy()  # the 7 pruned epochs
    assert longest_gap(visits) < spaced_revisit_interval(n, 16) == 4
    assert int(state.frequency.min()) >= 1 + 7 // 4


def test_revisit_share_and_temperature_reach_the_rule():
    n, keep = 400, 100
    t = tables(n, last_epoch=torch.arange(n) % 4)  # rows 0, 4, 8, ... were visited longest ago
    due = set(range(0, n, 4))
    rows = set(spaced(emp_revisit_share=1.0).select(t, keep, gen(0), context_for(t, keep)).rows.tolist())
    assert rows == due  # the whole epoch is the revisit queue
    rows = set(spaced(emp_revisit_share=0.25).select(t, keep, gen(0), context_for(t, keep)).rows.tolist())
    assert len(rows & due) < 75  # a quarter from the queue, the rest by score
    t["loss"][:] = 0.01
    t["entropy"][:] = 0.0
    t["loss"][1::4] = 1.0  # 100 hard rows, none of them due
    hard = set(range(1, n, 4))
    sharp = [
        len(set(spaced(emp_temperature=0.2).select(t, keep, gen(s), context_for(t, keep)).rows.tolist()) & hard)
        for s in range(5)
    ]
    flat = [
        len(set(spaced(emp_temperature=50.0).select(t, keep, gen(s), context_for(t, keep)).rows.tolist()) & hard)
        for s in range(5)
    ]
    assert min(sharp) == keep // 2  # T -> 0: the sampled half is the top of the scores
    assert max(flat) < keep // 4  # T -> inf: nearly uniform over the 300 rows that are not due


def test_full_coverage_share_is_a_round_robin():
    n, keep = 30, 10
    last = torch.zeros(n, dtype=torch.int64)
    score = torch.rand(n, generator=gen(0))
    seen = []
    for epoch in range(1, 4):
        rows = spaced_selection(score, last, keep, gen(epoch), coverage_share=1.0)
        last[rows] = epoch
        seen.append(set(rows.tolist()))
    assert set().union(*seen) == set(range(n))  # three epochs of 10 cover all 30 rows exactly once
