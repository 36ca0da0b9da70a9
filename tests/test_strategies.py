"""Every strategy against references computed independently with numpy or by hand (docs/methods.md).

Expected scores, top sets, below-mean sets, prune counts, weights and inclusion probabilities are computed
here from the raw tables in float64; the code under test is only asked to score and select.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from emp_hf.strategies import STRATEGIES, PruningOptions, build_strategy
from emp_hf_dev.fixtures import context_for

SELECTIONS = ("sample", "topk", "epsilon_greedy", "soft")
TOL = 1e-5  # float32 (library) vs float64 (reference) scores: near-ties within TOL may go either way


# ---------------------------------------------------------------------------------------------- helpers
def make_tables(n: int, seed: int, nan_rows=()) -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray]]:
    """Random tracker tables (float32, as the tracker stores them) and their float64 numpy copies."""
    rng = np.random.default_rng(seed)
    raw = {
        "loss": rng.uniform(0.05, 3.0, n),
        "entropy": rng.uniform(0.0, 2.0, n),
        "ema_mean": rng.uniform(0.05, 3.0, n),
        "ema_var": rng.uniform(0.0, 1.0, n),
    }
    raw = {k: v.astype(np.float32) for k, v in raw.items()}
    nan_rows = list(nan_rows)
    for k in ("loss", "entropy", "ema_mean"):
        raw[k][nan_rows] = np.nan
    raw["ema_var"][nan_rows] = 0.0
    frequency = np.where(np.isnan(raw["loss"]), 0, 1)
    tables = {k: torch.from_numpy(v.copy()) for k, v in raw.items()}
    tables["score"] = torch.full((n,), float("nan"))
    tables["weight"] = torch.ones(n)
    tables["frequency"] = torch.from_numpy(frequency.astype(np.int64))
    tables["last_epoch"] = torch.from_numpy(np.where(frequency > 0, 0, -1).astype(np.int64))
    ref = {k: v.astype(np.float64) for k, v in raw.items()}
    return tables, ref


def tables_from(loss, entropy=None) -> dict[str, torch.Tensor]:
    loss = torch.as_tensor(loss, dtype=torch.float32)
    entropy = torch.zeros_like(loss) if entropy is None else torch.as_tensor(entropy, dtype=torch.float32)
    return {
        "loss": loss,
        "entropy": entropy,
        "ema_mean": loss.clone(),
        "ema_var": torch.zeros_like(loss),
        "score": torch.full_like(loss, float("nan")),
        "weight": torch.ones_like(loss),
        "frequency": (~torch.isnan(loss)).long(),
        "last_epoch": torch.where(torch.isnan(loss), -1, 0),
    }


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rows_of(selection) -> np.ndarray:
    rows = selection.rows
    assert rows.dtype == torch.int64
    rows = rows.numpy()
    assert len(np.unique(rows)) == len(rows), "selected rows must be distinct"
    return rows


def nan_first(score: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(score), np.inf, score)


def assert_contains_top(rows: np.ndarray, ref_score: np.ndarray, m: int) -> None:
    """`rows` contains the `m` highest reference scores (NaN counted highest), up to near-ties at the cut."""
    if m == 0:
        return
    s = nan_first(ref_score)
    cut = np.sort(s)[::-1][m - 1]
    must = np.flatnonzero(s > cut + TOL)
    assert set(must) <= set(rows.tolist())
    assert np.sum(s[rows] >= cut - TOL) >= m


def assert_is_top(rows: np.ndarray, ref_score: np.ndarray, k: int) -> None:
    """`rows` is exactly the `k` highest reference scores, up to near-ties at the cut."""
    assert len(rows) == k
    assert_contains_top(rows, ref_score, k)
    s = nan_first(ref_score)
    cut = np.sort(s)[::-1][k - 1]
    assert np.all(s[rows] >= cut - TOL)


def num_keep(n: int, ratio_percent: int) -> int:
    """K = N - floor(p N) with p = ratio_percent / 100, in exact integer arithmetic."""
    return n - (ratio_percent * n) // 100


def emp(selection: str, **kw) -> object:
    return build_strategy("emp", PruningOptions(emp_selection=selection, **kw))


# ---------------------------------------------------------------------------------------------- registry
def test_registry_and_flags():
    assert {"none", "random", "epsilon_greedy", "ucb", "infobatch", "emp"} <= set(STRATEGIES)
    with pytest.raises(ValueError):
        build_strategy("no-such-method", PruningOptions())
    for name in ("random", "epsilon_greedy", "ucb"):
        s = build_strategy(name, PruningOptions())
        assert s.traits.fixed_budget and not s.traits.uses_weights and s.traits.default_anneal_fraction == 0.0
    ib = build_strategy("infobatch", PruningOptions())
    assert not ib.traits.fixed_budget and ib.traits.uses_weights and ib.traits.default_anneal_fraction == 0.125
    assert build_strategy("infobatch", PruningOptions(infobatch_match_budget=True)).traits.fixed_budget
    for sel in SELECTIONS:
        s = emp(sel)
        assert (
            s.traits.fixed_budget
            and s.traits.uses_weights == (sel == "soft")
            and s.traits.default_anneal_fraction == 0.0
        )


def test_default_options_match_spec():
    o = PruningOptions()
    assert (o.memory_weight, o.epsilon, o.ucb_c, o.emp_selection, o.infobatch_match_budget) == (
        1.0,
        0.1,
        1.0,
        "sample",
        False,
    )


def test_unknown_emp_selection_raises():
    tables, _ = make_tables(10, 0)
    with pytest.raises(ValueError):
        emp("bogus").select(tables, 5, gen(0), context_for(tables, 5))


def test_none_keeps_everything():
    tables, _ = make_tables(13, 0)
    rows = rows_of(build_strategy("none", PruningOptions()).select(tables, 5, gen(0), context_for(tables, 5)))
    assert sorted(rows.tolist()) == list(range(13))


# ---------------------------------------------------------------------------------------------- fixed budgets
ALL_FIXED = [
    ("random", {}),
    ("epsilon_greedy", {}),
    ("ucb", {}),
    ("infobatch", {"infobatch_match_budget": True}),
]
ALL_FIXED += [("emp", {"emp_selection": sel}) for sel in SELECTIONS]


@pytest.mark.parametrize("name,kw", ALL_FIXED, ids=[f"{n}-{k}" for n, k in ALL_FIXED])
@pytest.mark.parametrize("n,ratio_percent", [(200, 30), (200, 70), (199, 50), (10, 95), (50, 0), (1, 50)])
def test_fixed_budget_size_is_exactly_k(name, kw, n, ratio_percent):
    k = num_keep(n, ratio_percent)
    tables, _ = make_tables(n, seed=n + ratio_percent, nan_rows=range(0, n, 17))
    strategy = build_strategy(name, PruningOptions(prune_ratio=ratio_percent / 100, **kw))
    for seed in range(3):
        rows = rows_of(strategy.select(tables, k, gen(seed), context_for(tables, k)))
        assert len(rows) == k
        assert rows.min() >= 0 and rows.max() < n


@pytest.mark.parametrize("name,kw", ALL_FIXED + [("infobatch", {})], ids=lambda x: str(x))
def test_select_is_deterministic_and_leaves_global_rng_alone(name, kw):
    tables, _ = make_tables(60, 3, nan_rows=[4, 9])
    strategy = build_strategy(name, PruningOptions(prune_ratio=0.6, **kw))
    torch_state, np_state, py_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    a = strategy.select(tables, 24, gen(11), context_for(tables, 24))
    b = strategy.select(tables, 24, gen(11), context_for(tables, 24))
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert random.getstate() == py_state
    np_after = np.random.get_state()
    assert np_after[0] == np_state[0] and np.array_equal(np_after[1], np_state[1]) and np_after[2:] == np_state[2:]
    assert torch.equal(a.rows, b.rows)
    assert (a.weight is None) == (b.weight is None)
    if a.weight is not None:
        assert torch.equal(a.weight, b.weight)


# ---------------------------------------------------------------------------------------------- random
def test_random_is_uniform_and_ignores_scores():
    n, k, trials = 20, 5, 2000
    strategy = build_strategy("random", PruningOptions())
    t1, _ = make_tables(n, 0)
    t2, _ = make_tables(n, 1, nan_rows=[3])
    counts = np.zeros(n)
    for seed in range(trials):
        rows = rows_of(strategy.select(t1, k, gen(seed), context_for(t1, k)))
        assert rows.tolist() == strategy.select(t2, k, gen(seed), context_for(t2, k)).rows.tolist()
        counts[rows] += 1
    expected = trials * k / n
    chi2 = np.sum((counts - expected) ** 2 / expected)
    assert chi2 < 55.0  # df = 19; P(chi2 > 55) ~ 2e-5 under uniform inclusion


# ------------------------------------------------------------------------------------------- epsilon-greedy
def test_epsilon_greedy_score_is_ema_mean():
    tables, ref = make_tables(30, 0, nan_rows=[2])
    score = build_strategy("epsilon_greedy", PruningOptions()).score(tables, context_for(tables)).double().numpy()
    np.testing.assert_array_equal(score, ref["ema_mean"])


@pytest.mark.parametrize(
    "n,k,eps,num_greedy",  # num_greedy = K - round(eps K), worked out by hand (no .5 cases)
    [
        (200, 60, 0.1, 54),
        (200, 140, 0.1, 126),
        (50, 20, 0.5, 10),
        (50, 20, 0.0, 20),
        (50, 20, 1.0, 0),
        (30, 7, 0.3, 5),
    ],
)
def test_epsilon_greedy_keeps_top_and_explores(n, k, eps, num_greedy):
    tables, ref = make_tables(n, seed=k, nan_rows=[1])
    strategy = build_strategy("epsilon_greedy", PruningOptions(epsilon=eps))
    for seed in range(5):
        rows = rows_of(strategy.select(tables, k, gen(seed), context_for(tables, k)))
        assert len(rows) == k
        assert_contains_top(rows, ref["ema_mean"], num_greedy)
        if num_greedy:
            assert 1 in rows  # never observed: ranked first


def test_epsilon_greedy_exploration_is_uniform_over_the_rest():
    n, k, eps, trials = 30, 10, 0.3, 1000  # 7 greedy, 3 explored among the other 23
    tables, ref = make_tables(n, 5)
    top7 = np.argsort(-ref["ema_mean"])[:7]
    rest = np.setdiff1d(np.arange(n), top7)
    strategy = build_strategy("epsilon_greedy", PruningOptions(epsilon=eps))
    counts = np.zeros(n)
    for seed in range(trials):
        counts[rows_of(strategy.select(tables, k, gen(seed), context_for(tables, k)))] += 1
    assert np.all(counts[top7] == trials)
    expected = trials * 3 / 23
    chi2 = np.sum((counts[rest] - expected) ** 2 / expected)
    assert chi2 < 60.0  # df = 22; P(chi2 > 60) ~ 2e-5


# ---------------------------------------------------------------------------------------------- ucb
@pytest.mark.parametrize("c", [0.0, 1.0, 2.5])
def test_ucb_score_and_top_k(c):
    n, k = 120, 40
    tables, ref = make_tables(n, seed=int(10 * c), nan_rows=[0, 50])
    strategy = build_strategy("ucb", PruningOptions(ucb_c=c))
    want = ref["ema_mean"] + c * np.sqrt(ref["ema_var"])
    got = strategy.score(tables, context_for(tables)).double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, equal_nan=True)
    assert np.isnan(got[[0, 50]]).all()
    for seed in range(3):
        rows = rows_of(strategy.select(tables, k, gen(seed), context_for(tables, k)))
        assert_is_top(rows, want, k)
        assert {0, 50} <= set(rows.tolist())


def test_ucb_prefers_uncertain_rows_by_hand():
    # means 1.0, 1.0, 1.2 ; variances 0.25, 0.0, 0.0 ; c = 1 -> scores 1.5, 1.0, 1.2
    tables = tables_from([1.0, 1.0, 1.2])
    tables["ema_var"] = torch.tensor([0.25, 0.0, 0.0])
    rows = build_strategy("ucb", PruningOptions(ucb_c=1.0)).select(tables, 2, gen(0), context_for(tables, 2)).rows
    assert sorted(rows.tolist()) == [0, 2]
    rows = build_strategy("ucb", PruningOptions(ucb_c=0.0)).select(tables, 1, gen(0), context_for(tables, 1)).rows
    assert rows.tolist() == [2]


# ---------------------------------------------------------------------------------------------- ties
@pytest.mark.parametrize("name,kw", [("ucb", {}), ("emp", {"emp_selection": "topk"})], ids=["ucb", "emp-topk"])
def test_ties_broken_by_generator(name, kw):
    n, k, trials = 20, 5, 400
    tables = tables_from([1.0] * n, [0.5] * n)
    strategy = build_strategy(name, PruningOptions(**kw))
    picks = [
        tuple(sorted(rows_of(strategy.select(tables, k, gen(s), context_for(tables, k))).tolist()))
        for s in range(trials)
    ]
    assert picks[:10] == [
        tuple(sorted(strategy.select(tables, k, gen(s), context_for(tables, k)).rows.tolist())) for s in range(10)
    ]
    assert len(set(picks[:10])) > 1  # different seeds, different tie orders
    counts = np.bincount(np.concatenate(picks), minlength=n)
    expected = trials * k / n
    assert np.sum((counts - expected) ** 2 / expected) < 55.0  # uniform over tied rows (df = 19)


def test_partial_tie_at_the_cut():
    # scores 5, 4, 3, 3, 3, 1: K = 3 keeps rows 0, 1 and one of the tied rows 2, 3, 4
    tables = tables_from([5.0, 4.0, 3.0, 3.0, 3.0, 1.0])
    strategy = build_strategy("ucb", PruningOptions())
    third = set()
    for seed in range(60):
        rows = set(strategy.select(tables, 3, gen(seed), context_for(tables, 3)).rows.tolist())
        assert {0, 1} <= rows and len(rows & {2, 3, 4}) == 1
        third |= rows & {2, 3, 4}
    assert third == {2, 3, 4}


# ---------------------------------------------------------------------------------------------- emp
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 3.0])
def test_emp_score_is_loss_plus_beta_entropy(beta):
    tables, ref = make_tables(50, 2, nan_rows=[7])
    got = emp("sample", memory_weight=beta).score(tables, context_for(tables)).double().numpy()
    np.testing.assert_allclose(got, ref["loss"] + beta * ref["entropy"], rtol=1e-6, atol=1e-6, equal_nan=True)
    assert np.isnan(got[7])


@pytest.mark.parametrize("beta", [0.0, 1.0])
@pytest.mark.parametrize("n,k", [(150, 45), (150, 120), (40, 1)])
def test_emp_topk_is_exact_top_set(beta, n, k):
    tables, ref = make_tables(n, seed=n + k, nan_rows=[3, 11])
    want = ref["loss"] + beta * ref["entropy"]
    strategy = emp("topk", memory_weight=beta)
    for seed in range(3):
        rows = rows_of(strategy.select(tables, k, gen(seed), context_for(tables, k)))
        assert_is_top(rows, want, k)
        assert strategy.select(tables, k, gen(seed), context_for(tables, k)).weight is None


def test_emp_topk_by_hand():
    # loss + entropy = 1.5, 0.9, 2.0, 1.1, nan -> K = 3 keeps the unobserved row 4, then rows 2 and 0
    tables = tables_from([1.0, 0.8, 0.5, 1.0, float("nan")], [0.5, 0.1, 1.5, 0.1, float("nan")])
    rows = emp("topk").select(tables, 3, gen(0), context_for(tables, 3)).rows
    assert sorted(rows.tolist()) == [0, 2, 4]
    # beta = 0: loss only -> 1.0, 0.8, 0.5, 1.0, nan; K = 3 -> rows 4, 0, 3
    rows = emp("topk", memory_weight=0.0).select(tables, 3, gen(0), context_for(tables, 3)).rows
    assert sorted(rows.tolist()) == [0, 3, 4]


@pytest.mark.parametrize("eps,num_greedy", [(0.5, 20), (0.1, 36), (0.25, 30)])  # K = 40
def test_emp_epsilon_greedy(eps, num_greedy):
    n, k = 100, 40
    tables, ref = make_tables(n, seed=9, nan_rows=[5])
    want = ref["loss"] + ref["entropy"]
    strategy = emp("epsilon_greedy", epsilon=eps)
    counts = np.zeros(n)
    for seed in range(200):
        rows = rows_of(strategy.select(tables, k, gen(seed), context_for(tables, k)))
        assert len(rows) == k
        assert_contains_top(rows, want, num_greedy)
        counts[rows] += 1
    order = np.argsort(-nan_first(want))
    explored = order[num_greedy:]
    assert np.all(counts[order[:num_greedy]] == 200)
    assert np.all(counts[explored] < 200)  # the rest is explored, not greedy
    assert counts[explored].sum() == 200 * (k - num_greedy)


def test_emp_sample_k1_frequencies_match_score_share():
    # scores (beta = 0.5): 1 + 0.5*0, 1 + 0.5*2, 1.5 + 0.5*1, 2 + 0, 5 + 0.5*2 = 1, 2, 2, 2, 6 -> p = s / 13
    tables = tables_from([1.0, 1.0, 1.5, 2.0, 5.0], [0.0, 2.0, 1.0, 0.0, 2.0])
    p = np.array([1, 2, 2, 2, 6]) / 13
    strategy = emp("sample", memory_weight=0.5)
    trials = 4000
    counts = np.zeros(5)
    for seed in range(trials):
        rows = rows_of(strategy.select(tables, 1, gen(seed), context_for(tables, 1)))
        assert len(rows) == 1
        counts[rows] += 1
    chi2 = np.sum((counts - trials * p) ** 2 / (trials * p))
    assert chi2 < 23.5  # df = 4; P(chi2 > 23.5) ~ 1e-4
    uniform_chi2 = np.sum((counts - trials / 5) ** 2 / (trials / 5))
    assert uniform_chi2 > 500  # clearly not uniform


def test_emp_sample_k2_inclusion_matches_successive_sampling():
    """K=2 without replacement, proportional to the score: P(i in S) = p_i + sum_j p_j p_i / (1 - p_j)."""
    s = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    p = s / s.sum()
    incl = np.array([p[i] + sum(p[j] * p[i] / (1 - p[j]) for j in range(5) if j != i) for i in range(5)])
    assert incl.sum() == pytest.approx(2.0)
    strategy = emp("sample", memory_weight=0.0)
    tables = tables_from(s)
    trials = 4000
    counts = np.zeros(5)
    for seed in range(trials):
        counts[rows_of(strategy.select(tables, 2, gen(seed), context_for(tables, 2)))] += 1
    sigma = np.sqrt(trials * incl * (1 - incl))
    assert np.all(np.abs(counts - trials * incl) < 4.5 * sigma), (counts, trials * incl)


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_emp_sample_temperature_k1_frequencies_match_tempered_share(temperature):
    """`emp_temperature=T`: P(row i) = s_i ** (1/T) / sum_j s_j ** (1/T) (K=1, numpy reference)."""
    s = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    p = s ** (1 / temperature) / np.sum(s ** (1 / temperature))
    strategy = emp("sample", memory_weight=0.0, emp_temperature=temperature)
    tables = tables_from(s)
    trials = 4000
    counts = np.zeros(5)
    for seed in range(trials):
        counts[rows_of(strategy.select(tables, 1, gen(seed), context_for(tables, 1)))] += 1
    chi2 = np.sum((counts - trials * p) ** 2 / (trials * p))
    assert chi2 < 23.5  # df = 4; P(chi2 > 23.5) ~ 1e-4
    untempered = s / s.sum()
    assert np.sum((counts - trials * untempered) ** 2 / (trials * untempered)) > 100  # T changes the draw


def test_emp_sample_higher_scores_more_often():
    s = np.array([0.5, 1.0, 2.0, 4.0, 8.0, 16.0])
    strategy = emp("sample", memory_weight=0.0)
    counts = np.zeros(6)
    tables = tables_from(s)
    for seed in range(1500):
        counts[rows_of(strategy.select(tables, 3, gen(seed), context_for(tables, 3)))] += 1
    assert np.all(np.diff(counts) > 0), counts
    assert counts.sum() == 1500 * 3


def test_emp_sample_unobserved_first_zero_scores_last():
    # rows 0, 1: never observed; rows 2, 3: score 0; rows 4, 5: positive
    tables = tables_from([float("nan"), float("nan"), 0.0, 0.0, 0.3, 2.0])
    strategy = emp("sample")
    seen_zero = set()
    for seed in range(50):
        rows = set(rows_of(strategy.select(tables, 5, gen(seed), context_for(tables, 5))).tolist())
        assert {0, 1, 4, 5} <= rows
        seen_zero |= rows & {2, 3}
        assert {0, 1} <= set(strategy.select(tables, 2, gen(seed), context_for(tables, 2)).rows.tolist())
    assert seen_zero == {2, 3}  # the zero-score tie is broken by the generator


# ---------------------------------------------------------------------------------------------- soft rules
def below_mean_tables(n_low: int, n_high: int, n_nan: int, seed: int):
    """Scores with a known below-mean set: low rows in [0.1, 0.5], high rows in [3, 4], unobserved rows."""
    rng = np.random.default_rng(seed)
    loss = np.concatenate(
        [rng.uniform(0.1, 0.5, n_low), rng.uniform(3.0, 4.0, n_high), np.full(n_nan, np.nan)]
    ).astype(np.float32)
    perm = rng.permutation(len(loss))
    loss = loss[perm]
    seen = ~np.isnan(loss)
    mean = loss[seen].astype(np.float64).mean()
    w = seen & (loss.astype(np.float64) < mean)
    assert w.sum() == n_low
    return tables_from(loss), loss.astype(np.float64), w


@pytest.mark.parametrize(
    "ratio,pruned_by_hand",  # |W| = 40: floor(r * 40)
    [(0.3, 12), (0.5, 20), (0.7, 28), (0.0, 0), (0.99, 39), (0.01, 0)],
)
def test_infobatch_prunes_floor_r_of_below_mean(ratio, pruned_by_hand):
    n = 40 + 55 + 5
    tables, loss, w = below_mean_tables(40, 55, 5, seed=1)
    strategy = build_strategy("infobatch", PruningOptions(prune_ratio=ratio))
    np.testing.assert_array_equal(strategy.score(tables, context_for(tables)).double().numpy(), loss)
    for seed in range(5):
        sel = strategy.select(
            tables, n - int(ratio * n), gen(seed), context_for(tables, n - int(ratio * n))
        )  # num_keep is ignored without matching
        rows = rows_of(sel)
        pruned = np.setdiff1d(np.arange(n), rows)
        assert len(pruned) == pruned_by_hand
        assert w[pruned].all()  # only below-mean rows are pruned; never the unobserved ones
        weight = sel.weight.double().numpy()
        kept_w = rows[w[rows]]
        np.testing.assert_allclose(weight[kept_w], 1.0 / (1.0 - ratio), rtol=1e-6)
        np.testing.assert_array_equal(weight[rows[~w[rows]]], 1.0)


def test_infobatch_prunes_below_mean_uniformly():
    n, ratio, trials = 30, 0.5, 1000
    tables, _, w = below_mean_tables(10, 20, 0, seed=2)  # floor(0.5 * 10) = 5 pruned of 10
    strategy = build_strategy("infobatch", PruningOptions(prune_ratio=ratio))
    pruned_counts = np.zeros(n)
    for seed in range(trials):
        rows = rows_of(strategy.select(tables, 15, gen(seed), context_for(tables, 15)))
        pruned_counts[np.setdiff1d(np.arange(n), rows)] += 1
    assert np.all(pruned_counts[~w] == 0)
    expected = trials * 0.5
    assert np.sum((pruned_counts[w] - expected) ** 2 / expected) < 35.0  # df = 9


def test_infobatch_by_hand():
    # losses 1, 2, 3, 10 -> mean 4 -> W = {0, 1, 2}; r = 0.5 -> floor(1.5) = 1 pruned, kept W weight 2
    tables = tables_from([1.0, 2.0, 3.0, 10.0])
    sel = build_strategy("infobatch", PruningOptions(prune_ratio=0.5)).select(
        tables, 2, gen(0), context_for(tables, 2)
    )
    rows = sorted(rows_of(sel).tolist())
    assert len(rows) == 3 and 3 in rows
    for r in rows:
        assert sel.weight[r].item() == (1.0 if r == 3 else 2.0)


def test_infobatch_unobserved_rows_do_not_enter_the_mean():
    # observed 1, 2, 9 -> mean 4 -> W = {0, 1}; r = 0.5 -> 1 pruned; the unobserved row 3 is never pruned
    tables = tables_from([1.0, 2.0, 9.0, float("nan")])
    strategy = build_strategy("infobatch", PruningOptions(prune_ratio=0.5))
    for seed in range(20):
        rows = set(rows_of(strategy.select(tables, 2, gen(seed), context_for(tables, 2))).tolist())
        assert {2, 3} <= rows and len(rows & {0, 1}) == 1


def test_infobatch_nothing_pruned_before_first_observation():
    # docs/methods.md, `infobatch`. (With infobatch_match_budget the spec is ambiguous here: "K whenever |W| allows"
    # versus fixed_budget=True; see test_emp_soft_budget_holds_before_first_observation.)
    tables = tables_from([float("nan")] * 9)
    sel = build_strategy("infobatch", PruningOptions(prune_ratio=0.5)).select(
        tables, 5, gen(0), context_for(tables, 5)
    )
    assert sorted(sel.rows.tolist()) == list(range(9))
    assert (sel.weight == 1).all()


@pytest.mark.parametrize("value", [0.5, 2.0, 0.0])
def test_infobatch_equal_scores_prune_nothing(value):
    tables = tables_from([value] * 10)
    sel = build_strategy("infobatch", PruningOptions(prune_ratio=0.5)).select(
        tables, 5, gen(0), context_for(tables, 5)
    )
    assert sorted(sel.rows.tolist()) == list(range(10))
    assert (sel.weight == 1).all()


@pytest.mark.parametrize("value", [0.1, 1.1])
def test_infobatch_equal_inexact_scores_prune_nothing(value):
    tables = tables_from([value] * 10)
    sel = build_strategy("infobatch", PruningOptions(prune_ratio=0.5)).select(
        tables, 5, gen(0), context_for(tables, 5)
    )
    assert sorted(sel.rows.tolist()) == list(range(10))


SOFT = [("infobatch", {"infobatch_match_budget": True}), ("emp", {"emp_selection": "soft"})]


@pytest.mark.parametrize("name,kw", SOFT, ids=["infobatch-matched", "emp-soft"])
def test_soft_budget_matched_within_below_mean(name, kw):
    # |W| = 40 >= N - K = 30: prune 30 of W uniformly, kept W weight 1 / (1 - 30/40) = 4
    n, k = 100, 70
    tables, score, w = below_mean_tables(40, 55, 5, seed=3)
    strategy = build_strategy(name, PruningOptions(prune_ratio=0.3, **kw))
    pruned_counts = np.zeros(n)
    for seed in range(40):
        sel = strategy.select(tables, k, gen(seed), context_for(tables, k))
        rows = rows_of(sel)
        assert len(rows) == k
        pruned = np.setdiff1d(np.arange(n), rows)
        pruned_counts[pruned] += 1
        assert w[pruned].all()
        weight = sel.weight.double().numpy()
        np.testing.assert_allclose(weight[rows[w[rows]]], 4.0, rtol=1e-6)
        np.testing.assert_array_equal(weight[rows[~w[rows]]], 1.0)
    assert np.all(pruned_counts[w] > 0)  # uniform over W, not the lowest scores of W


@pytest.mark.parametrize("name,kw", SOFT, ids=["infobatch-matched", "emp-soft"])
def test_soft_budget_matched_beyond_below_mean(name, kw):
    # |W| = 20 < N - K = 50: all of W plus the 30 lowest-scored other observed rows are pruned
    n, k = 100, 50
    tables, score, w = below_mean_tables(20, 75, 5, seed=4)
    others = np.flatnonzero(~w & ~np.isnan(score))
    lowest_others = others[np.argsort(score[others])[:30]]
    strategy = build_strategy(name, PruningOptions(prune_ratio=0.5, **kw))
    for seed in range(5):
        sel = strategy.select(tables, k, gen(seed), context_for(tables, k))
        rows = rows_of(sel)
        pruned = np.setdiff1d(np.arange(n), rows)
        assert len(pruned) == n - k
        assert set(np.flatnonzero(w)) <= set(pruned.tolist())
        assert set(pruned.tolist()) == set(np.flatnonzero(w)) | set(lowest_others.tolist())
        np.testing.assert_array_equal(sel.weight.double().numpy()[rows], 1.0)  # no below-mean row is kept


def test_emp_soft_uses_emp_score_by_hand():
    # loss 1, 1, 1, 1 ; entropy 0, 0, 2, 2 ; beta = 1 -> scores 1, 1, 3, 3, mean 2 -> W = {0, 1}
    # K = 3 -> prune 1 row of W, kept W row weight 1 / (1 - 1/2) = 2
    tables = tables_from([1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0])
    for seed in range(10):
        sel = emp("soft").select(tables, 3, gen(seed), context_for(tables, 3))
        rows = sorted(rows_of(sel).tolist())
        assert {2, 3} <= set(rows) and len(rows) == 3
        kept_w = ({0, 1} & set(rows)).pop()
        assert sel.weight[kept_w].item() == 2.0 and sel.weight[2].item() == 1.0 and sel.weight[3].item() == 1.0
    # beta = 0: every score is 1 -> W empty -> the N - K = 1 pruned row is a tie broken by the generator
    pruned = set()
    for seed in range(30):
        sel = emp("soft", memory_weight=0.0).select(tables, 3, gen(seed), context_for(tables, 3))
        rows = rows_of(sel)
        assert len(rows) == 3 and (sel.weight == 1).all()
        pruned |= set(range(4)) - set(rows.tolist())
    assert pruned == {0, 1, 2, 3}


def test_soft_unobserved_rows_kept_when_observed_rows_suffice():
    tables, score, w = below_mean_tables(10, 30, 20, seed=5)
    unobserved = np.flatnonzero(np.isnan(score))
    for name, kw in SOFT:
        sel = build_strategy(name, PruningOptions(**kw)).select(
            tables, 25, gen(0), context_for(tables, 25)
        )  # prune 35 of 40 seen
        rows = rows_of(sel)
        assert len(rows) == 25 and set(unobserved) <= set(rows.tolist())


def test_emp_soft_budget_holds_before_first_observation():
    tables = tables_from([float("nan")] * 10)
    assert len(emp("soft").select(tables, 4, gen(0), context_for(tables, 4)).rows) == 4
