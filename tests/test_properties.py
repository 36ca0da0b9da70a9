"""Property-based checks (hypothesis): the contract of every strategy and of the epoch planner.

For any tracker tables (unobserved rows are NaN, ties allowed), any ratio in [0, 1), any seed and every
method / EMP selection rule: a plan is a set of distinct row indices in range, of exactly the promised size
for the fixed-budget methods, and it is reproducible from (state, seed, epoch).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from emp_hf.core.sampler import EpochPlanner
from emp_hf.core.schedule import EpochSchedule, floor_share
from emp_hf.core.tracker import PruningState
from emp_hf.strategies import PruningOptions, build_strategy
from emp_hf_dev.fixtures import context_for

METHODS = [
    ("random", {}),
    ("epsilon_greedy", {}),
    ("ucb", {}),
    ("infobatch", {"infobatch_match_budget": False}),
    ("infobatch", {"infobatch_match_budget": True}),
    ("emp", {"emp_selection": "sample"}),
    ("emp", {"emp_selection": "topk"}),
    ("emp", {"emp_selection": "epsilon_greedy"}),
    ("emp", {"emp_selection": "soft"}),
    ("rs2", {}),
    ("small_loss", {}),
    ("small_loss", {"small_loss_forget_rate": 0.7, "small_loss_memory_weight": 0.0}),
]
SOFT_RULES = {("infobatch", True), ("emp", "soft")}

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# loss-like values: a few exact ones (many ties), and arbitrary float32 values
VALUES = st.one_of(
    st.sampled_from([0.0, 0.1, 0.5, 1.0, 2.0]),
    st.floats(0.0, 50.0, allow_nan=False, allow_infinity=False, width=32),
)


@st.composite
def tracker_state(draw) -> PruningState:
    """A `PruningState` whose per-row tables look like a tracker's after some training."""
    n = draw(st.integers(1, 40))
    observed = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    loss = np.array(draw(st.lists(VALUES, min_size=n, max_size=n)), dtype=np.float32)
    entropy = np.array(draw(st.lists(VALUES, min_size=n, max_size=n)), dtype=np.float32)
    mean = np.array(draw(st.lists(VALUES, min_size=n, max_size=n)), dtype=np.float32)
    var = np.array(draw(st.lists(VALUES, min_size=n, max_size=n)), dtype=np.float32)
    loss[~observed] = entropy[~observed] = mean[~observed] = np.nan
    var[~observed] = 0.0
    state = PruningState(num_rows=n)
    for name, values in (("loss", loss), ("entropy", entropy), ("ema_mean", mean), ("ema_var", var)):
        state.tables[name][:-1] = torch.from_numpy(values)
    state.tables["frequency"][:-1] = torch.from_numpy(observed.astype(np.int64))
    state.tables["last_epoch"][:-1] = torch.from_numpy(np.where(observed, 0, -1).astype(np.int64))
    return state


def options(kw: dict, ratio: float, data) -> PruningOptions:
    return PruningOptions(
        prune_ratio=ratio,
        memory_weight=data.draw(st.sampled_from([0.0, 0.5, 1.0, 3.0]), label="memory_weight"),
        epsilon=data.draw(st.sampled_from([0.0, 0.1, 0.3, 0.5, 1.0]), label="epsilon"),
        ucb_c=data.draw(st.sampled_from([0.0, 1.0, 2.0]), label="ucb_c"),
        **kw,
    )


def is_soft(method: str, kw: dict) -> bool:
    return (method, kw.get("infobatch_match_budget", kw.get("emp_selection"))) in SOFT_RULES


@SETTINGS
@given(
    state=tracker_state(),
    ratio=st.floats(0.0, 1.0, exclude_max=True),
    seed=st.integers(0, 2**32),
    method=st.sampled_from(METHODS),
    data=st.data(),
)
def test_selection_contract(state, ratio, seed, method, data):
    name, kw = method
    n = state.num_rows
    tables = state.cpu_tables()
    seen = ~torch.isnan(tables["loss"])
    strategy = build_strategy(name, options(kw, ratio, data))
    k = n - floor_share(ratio, n)
    sel = strategy.select(tables, k, torch.Generator().manual_seed(seed), context_for(tables, k))
    rows = sel.rows
    assert rows.dtype == torch.int64 and rows.dim() == 1
    assert len(set(rows.tolist())) == rows.numel()
    assert rows.numel() == 0 or (int(rows.min()) >= 0 and int(rows.max()) < n)
    if strategy.traits.fixed_budget:
        assert rows.numel() == k
    else:  # InfoBatch without budget matching: only observed rows, at most floor(r * #observed), are pruned
        kept = torch.zeros(n, dtype=torch.bool)
        kept[rows] = True
        assert kept[~seen].all()
        assert n - rows.numel() <= math.floor(ratio * int(seen.sum()) + 1e-9)
    if sel.weight is not None:
        assert strategy.traits.uses_weights
        assert sel.weight.shape == (n,)
        assert torch.isfinite(sel.weight).all() and (sel.weight >= 1).all()
        if not kw.get("infobatch_match_budget") and name == "infobatch":
            assert torch.isin(sel.weight, torch.tensor([1.0, 1.0 / (1.0 - ratio)], dtype=torch.float32)).all()
    again = strategy.select(tables, k, torch.Generator().manual_seed(seed), context_for(tables, k))
    assert torch.equal(again.rows, rows)
    assert (again.weight is None) == (sel.weight is None)
    if sel.weight is not None:
        assert torch.equal(again.weight, sel.weight)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    state=tracker_state(),
    ratio=st.floats(0.0, 1.0, exclude_max=True),
    seed=st.integers(0, 2**62),
    method=st.sampled_from(METHODS),
    data=st.data(),
)
def test_planner_contract(state, ratio, seed, method, data):
    name, kw = method
    n = state.num_rows
    if is_soft(name, kw):
        assume(bool(state.seen.any()))
    opts = options(kw, ratio, data)
    schedule = EpochSchedule(num_rows=n, num_epochs=3, prune_ratio=ratio, warmup_epochs=1)
    twin = copy.deepcopy(state)
    planner = EpochPlanner(state, build_strategy(name, opts), schedule, seed)
    other = EpochPlanner(twin, build_strategy(name, opts), schedule, seed)

    warmup = planner.plan(0)
    assert sorted(warmup.tolist()) == list(range(n))
    assert other.plan(0).tolist() == warmup.tolist()

    pruned = planner.plan(1)
    assert pruned.tolist() == other.plan(1).tolist()
    assert torch.equal(state.weight, twin.weight)
    rows = pruned.tolist()
    assert len(set(rows)) == len(rows) and all(0 <= r < n for r in rows)
    k = n - math.floor(ratio * n)
    if planner.strategy.traits.fixed_budget:
        assert len(rows) == k
    assert planner.plan(1).tolist() == rows  # decided once
