"""`EpochSchedule`, `StepCounter`, `retarget_lr_scheduler`, `EpochPlanner` and `PruningSampler`.

Phases and budgets are checked against values worked out by hand from docs/methods.md (the schedule table and
the step budget); batch counts against the real length of a `torch` DataLoader (one process) and of Accelerate's
`BatchSamplerShard` with `even_batches=True` (several processes).
"""

from __future__ import annotations

import copy
import math
import random

import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader

from emp_hf.core.sampler import EpochPlanner, PruningSampler, epoch_generator
from emp_hf.core.schedule import EpochSchedule, StepCounter
from emp_hf.core.tracker import PruningState
from emp_hf.integration.compat import retarget_lr_scheduler
from emp_hf.strategies import PruningOptions, build_strategy
from emp_hf_dev.fixtures import PRUNING_CASES


# ---------------------------------------------------------------------------------------------- EpochSchedule
@pytest.mark.parametrize(
    "n,ratio,k",  # K = N - floor(p N), by hand
    [
        (100, 0.5, 50),
        (101, 0.5, 51),
        (10, 0.3, 7),
        (10, 0.7, 3),
        (1000, 0.9, 100),
        (7, 0.99, 1),
        (100, 0.0, 100),
        (3, 0.5, 2),
        (1, 0.9, 1),
        (50000, 0.7, 15000),
        (60000, 0.3, 42000),
    ],
)
def test_num_keep(n, ratio, k):
    assert EpochSchedule(num_rows=n, num_epochs=3, prune_ratio=ratio).num_keep == k


@pytest.mark.parametrize("n,ratio,k", [(100, 0.29, 71), (100, 0.57, 43), (100, 0.58, 42), (50000, 0.29, 35500)])
def test_num_keep_decimal_ratios(n, ratio, k):
    assert EpochSchedule(num_rows=n, num_epochs=3, prune_ratio=ratio).num_keep == k


@pytest.mark.parametrize(
    "epochs,fraction,anneal",  # ceil(fraction * E), by hand
    [(10, 0.125, 2), (8, 0.125, 1), (16, 0.125, 2), (10, 0.3, 3), (10, 0.7, 7), (20, 0.15, 3), (20, 0.35, 7)]
    + [(10, 0.0, 0), (3, 0.01, 1), (1, 0.5, 1)],
)
def test_anneal_epochs(epochs, fraction, anneal):
    assert EpochSchedule(num_rows=10, num_epochs=epochs, prune_ratio=0.5, anneal_fraction=fraction).anneal_epochs == (
        anneal
    )


def test_phases_and_plan_sizes():
    s = EpochSchedule(num_rows=100, num_epochs=10, prune_ratio=0.7, warmup_epochs=2, anneal_fraction=0.125)
    assert [s.phase(e) for e in range(10)] == ["warmup"] * 2 + ["pruned"] * 6 + ["anneal"] * 2
    assert [s.nominal_plan_size(e) for e in range(10)] == [100] * 2 + [30] * 6 + [100] * 2


def test_default_phases_one_warmup_no_anneal():
    s = EpochSchedule(num_rows=9, num_epochs=4, prune_ratio=0.5)
    assert [s.phase(e) for e in range(4)] == ["warmup", "pruned", "pruned", "pruned"]
    assert [s.nominal_plan_size(e) for e in range(4)] == [9, 5, 5, 5]


def test_zero_warmup_and_zero_ratio():
    s = EpochSchedule(num_rows=9, num_epochs=3, prune_ratio=0.5, warmup_epochs=0)
    assert [s.phase(e) for e in range(3)] == ["pruned"] * 3
    s = EpochSchedule(num_rows=9, num_epochs=3, prune_ratio=0.0, warmup_epochs=0, anneal_fraction=0.4)
    assert [s.nominal_plan_size(e) for e in range(3)] == [9, 9, 9]


# ---------------------------------------------------------------------------------------------- StepCounter
@pytest.mark.parametrize("drop_last", [False, True])
def test_micro_batches_single_process_match_dataloader(drop_last):
    for n in range(1, 41):
        for b in range(1, 8):
            want = len(DataLoader(range(n), batch_size=b, drop_last=drop_last))
            assert StepCounter(batch_size=b, drop_last=drop_last).micro_batches(n) == want, (n, b)


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("num_processes", [2, 3, 4])
def test_micro_batches_sharded_match_accelerate(num_processes, drop_last):
    from accelerate.data_loader import BatchSamplerShard

    for n in range(1, 31):
        for b in range(1, 6):
            counter = StepCounter(batch_size=b, num_processes=num_processes, drop_last=drop_last)
            for rank in range(num_processes):
                shard = BatchSamplerShard(BatchSampler(range(n), b, drop_last), num_processes, rank, even_batches=True)
                assert counter.micro_batches(n) == len(shard), (n, b, rank)
                assert len(shard) == sum(1 for _ in shard), (n, b, rank)  # __len__ is what it yields


@pytest.mark.parametrize("accumulation", [1, 2, 3, 4])
def test_update_steps_count_trainer_optimizer_steps(accumulation):
    """The Trainer steps the optimizer every `accumulation` micro-batches and at the end of the epoch."""
    for n in range(1, 41):
        counter = StepCounter(batch_size=3, num_processes=2, gradient_accumulation_steps=accumulation)
        micro = counter.micro_batches(n)
        steps = sum(1 for i in range(micro) if (i + 1) % accumulation == 0 or i + 1 == micro)
        assert counter.update_steps(n) == steps, n
    dropped = StepCounter(batch_size=8, drop_last=True, gradient_accumulation_steps=accumulation)
    assert dropped.micro_batches(5) == 0 and dropped.update_steps(5) == 1  # as the Trainer's max(..., 1)


# ---------------------------------------------------------------------------------------------- LR schedule
def test_retarget_linear_schedule_keeps_position():
    from transformers import get_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = get_scheduler("linear", opt, num_warmup_steps=0, num_training_steps=100)
    for _ in range(10):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.9)
    assert retarget_lr_scheduler(sched, 20)
    # from step 11 of 20 on: lr = (20 - step) / 20, reaching 0 at the new end
    lrs = []
    for _ in range(10):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    np.testing.assert_allclose(lrs, [(20 - s) / 20 for s in range(11, 21)], atol=1e-12)
    assert lrs[-1] == 0.0


def test_retarget_constant_and_foreign_schedulers():
    from transformers import get_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    constant = get_scheduler("constant", opt)
    assert retarget_lr_scheduler(constant, 7)
    for _ in range(3):
        opt.step()
        constant.step()
    assert opt.param_groups[0]["lr"] == 0.5
    step_lr = torch.optim.lr_scheduler.StepLR(opt, step_size=1)
    assert not retarget_lr_scheduler(step_lr, 7)


# ------------------------------------------------------------------------------------------ planner / sampler
N = 40


def observed_state(n: int = N, seed: int = 0) -> PruningState:
    """A tracker after one full epoch with distinct losses and entropies."""
    state = PruningState(num_rows=n)
    g = torch.Generator().manual_seed(seed)
    state.update(torch.arange(n), torch.rand(n, generator=g) * 3, torch.rand(n, generator=g), epoch=0)
    return state


def make_planner(state: PruningState, seed: int = 0, method: str = "emp", epochs: int = 5, **kw) -> EpochPlanner:
    options = PruningOptions(prune_ratio=0.5, **kw)
    schedule = EpochSchedule(num_rows=state.num_rows, num_epochs=epochs, prune_ratio=0.5, warmup_epochs=1)
    return EpochPlanner(state, build_strategy(method, options), schedule, seed)


def feed(state: PruningState, plan: torch.Tensor, epoch: int) -> None:
    """Train on a plan: deterministic per-row losses that depend on the epoch."""
    rows = plan.long()
    loss = (rows.double() * 0.37 + epoch * 1.3).remainder(2.9).float() + 0.1
    state.update(rows, loss, (rows.float() % 5) * 0.1, epoch)


METHODS = PRUNING_CASES
IDS = [f"{m}-{'-'.join(map(str, kw.values())) or 'default'}" for m, kw in METHODS]


@pytest.mark.parametrize("method,kw", METHODS, ids=IDS)
def test_plans_reproducible_from_state_seed_epoch(method, kw):
    """Two runs with the same history and seed plan every epoch identically; a third seed differs."""
    runs = [make_planner(PruningState(num_rows=N), seed=s, method=method, **kw) for s in (3, 3, 4)]
    plans = [[], [], []]
    for epoch in range(5):
        for planner, out in zip(runs, plans, strict=True):
            plan = planner.plan(epoch)
            out.append(plan.tolist())
            feed(planner.state, plan, epoch)
    assert plans[0] == plans[1]
    assert plans[0] != plans[2]
    for epoch, plan in enumerate(plans[0]):
        assert len(set(plan)) == len(plan) and all(0 <= r < N for r in plan)
        if epoch == 0:
            assert sorted(plan) == list(range(N))  # warm-up: every row once
        elif build_strategy(method, PruningOptions(**kw)).traits.fixed_budget:
            assert len(plan) == N - math.floor(0.5 * N)


@pytest.mark.parametrize("method,kw", METHODS, ids=IDS)
def test_plan_depends_only_on_state_seed_epoch(method, kw):
    """A copy of the tracker state planned by a fresh planner gives the same plan."""
    state = observed_state()
    planner = make_planner(state, seed=9, method=method, **kw)
    planner.plan(0)
    twin = copy.deepcopy(state)
    a = planner.plan(1)
    b = make_planner(twin, seed=9, method=method, **kw).plan(1)
    assert a.tolist() == b.tolist()
    assert torch.equal(state.weight, twin.weight)
    np.testing.assert_array_equal(state.score.numpy(), twin.score.numpy())


def test_warmup_epochs_are_full_shuffles_that_differ():
    state = PruningState(num_rows=N)
    schedule = EpochSchedule(num_rows=N, num_epochs=4, prune_ratio=0.5, warmup_epochs=3)
    planner = EpochPlanner(state, build_strategy("emp", PruningOptions()), schedule, seed=0)
    plans = [planner.plan(e).tolist() for e in range(3)]
    for p in plans:
        assert sorted(p) == list(range(N))
    assert plans[0] != plans[1] != plans[2] and plans[0] != plans[2]
    other = EpochPlanner(PruningState(num_rows=N), build_strategy("emp", PruningOptions()), schedule, seed=1)
    assert other.plan(0).tolist() != plans[0]
    assert (state.weight == 1).all()


def test_plan_is_decided_once():
    state = observed_state()
    sampler = PruningSampler(make_planner(state, seed=1, method="ucb"))
    sampler.set_epoch(0)
    sampler.set_epoch(1)
    first = list(sampler)
    assert len(sampler) == len(first) == N - N // 2
    feed(state, torch.arange(N), 1)  # new observations must not change a plan already decided
    sampler.set_epoch(1)
    assert list(sampler) == first
    assert list(sampler) == state.plans[1].tolist()
    assert state.epoch_plan_sizes == [N, N // 2]


def test_sampler_refuses_to_skip_an_epoch():
    sampler = PruningSampler(make_planner(PruningState(num_rows=N)))
    with pytest.raises(RuntimeError):
        sampler.set_epoch(1)


def test_sampler_resumes_at_last_planned_epoch():
    state = observed_state()
    planner = make_planner(state, seed=2)
    planner.plan(0)
    planner.plan(1)
    sampler = PruningSampler(planner)
    assert list(sampler) == state.plans[1].tolist()


def test_planning_leaves_global_rng_alone():
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    torch_state, np_state, py_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    for method, kw in METHODS:
        state = PruningState(num_rows=N)
        planner = make_planner(state, seed=5, method=method, **kw)
        sampler = PruningSampler(planner)
        for epoch in range(4):
            sampler.set_epoch(epoch)
            feed(state, torch.tensor(list(sampler)), epoch)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert random.getstate() == py_state
    np_after = np.random.get_state()
    assert np.array_equal(np_after[1], np_state[1]) and np_after[2:] == np_state[2:]
    g1, g2 = epoch_generator(5, 2), epoch_generator(5, 2)
    assert torch.equal(torch.randperm(50, generator=g1), torch.randperm(50, generator=g2))


def test_infobatch_weights_follow_the_plan_and_reset_in_anneal():
    n = 40
    state = PruningState(num_rows=n)
    # 10 low losses, 30 high: W = the 10 low rows; r = 0.5 -> 5 pruned, 5 kept with weight 2
    loss = torch.cat([torch.full((10,), 0.2), torch.full((30,), 3.0)])
    state.update(torch.arange(n), loss, torch.zeros(n), epoch=0)
    schedule = EpochSchedule(num_rows=n, num_epochs=3, prune_ratio=0.5, anneal_fraction=0.3)
    assert [schedule.phase(e) for e in range(3)] == ["warmup", "pruned", "anneal"]
    planner = EpochPlanner(state, build_strategy("infobatch", PruningOptions(prune_ratio=0.5)), schedule, seed=0)
    planner.plan(0)
    plan = planner.plan(1)
    assert len(plan) == 35
    kept_low = [r for r in plan.tolist() if r < 10]
    assert len(kept_low) == 5
    want = torch.ones(n)
    want[kept_low] = 2.0
    assert torch.equal(state.weight, want)
    np.testing.assert_allclose(state.score.numpy(), loss.numpy())
    assert sorted(planner.plan(2).tolist()) == list(range(n))
    assert (state.weight == 1).all()
    assert state.realized_saving() == pytest.approx(1 - (40 + 35 + 40) / 120)
