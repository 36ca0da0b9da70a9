"""`rs2`: sampling without replacement across epochs (RS2), checked by hand, against a numpy model, in training."""

import math

import numpy as np
import pytest
import torch

from emp_hf import EMPTrainer
from emp_hf.core.sampler import EpochPlanner, epoch_generator
from emp_hf.core.schedule import EpochSchedule
from emp_hf.core.tracker import PruningState
from emp_hf.strategies import build_strategy
from emp_hf.strategies.rs2 import least_visited
from emp_hf_dev.fixtures import context_for, make_args, make_bert


def test_an_epoch_takes_the_rows_not_yet_visited_in_the_round():
    frequency = torch.tensor([1, 0, 2, 0, 1], dtype=torch.int16)
    g = torch.Generator().manual_seed(0)
    assert sorted(least_visited(frequency, 2, g).tolist()) == [1, 3]
    for seed in range(20):  # the round's last two rows, then one of the next least visited (0 or 4), never 2
        rows = least_visited(frequency, 3, torch.Generator().manual_seed(seed)).tolist()
        assert len(set(rows)) == 3 and {1, 3} < set(rows) and 2 not in rows


def test_ties_are_uniform():
    counts = np.zeros(6)
    for seed in range(3000):
        rows = least_visited(torch.zeros(6, dtype=torch.int16), 2, torch.Generator().manual_seed(seed))
        counts[rows.numpy()] += 1
    np.testing.assert_allclose(counts / 3000, 2 / 6, atol=0.03)  # binomial std ~0.009


def deal_rounds_numpy(n: int, k: int, epochs: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The spec's rounds (METHOD.md 3.10): the next `k` rows of a permutation; when fewer remain, them and the first
    rows of a fresh permutation that are not among them (those rows of the fresh round stay for later in it)."""
    plans, remaining = [], rng.permutation(n)
    for _ in range(epochs):
        if len(remaining) >= k:
            plan, remaining = remaining[:k], remaining[k:]
        else:
            fresh = rng.permutation(n)
            overflow = fresh[~np.isin(fresh, remaining)][: k - len(remaining)]
            plan, remaining = np.concatenate([remaining, overflow]), fresh[~np.isin(fresh, overflow)]
        plans.append(plan)
    return plans


@pytest.mark.parametrize(("n", "ratio"), [(10, 0.6), (23, 0.3), (50, 0.5), (7, 0.9)])
def test_plans_visit_every_row_floor_or_ceil_times_as_the_numpy_rounds(n, ratio):
    epochs = 9
    schedule = EpochSchedule(num_rows=n, num_epochs=epochs, prune_ratio=ratio, warmup_epochs=1)
    k = schedule.num_keep
    strategy = build_strategy("rs2", prune_ratio=ratio)
    state = PruningState(num_rows=n, track=strategy.traits.required_tables)
    planner = EpochPlanner(state, strategy, schedule, seed=3)
    reference = deal_rounds_numpy(n, k, epochs - 1, np.random.default_rng(0))
    ref_counts = np.zeros(n, dtype=int)
    for epoch in range(epochs):
        plan = planner.plan(epoch)
        state.update(plan.long(), torch.rand(len(plan)), torch.rand(len(plan)), epoch)
        if epoch == 0:
            assert len(plan) == n  # warm-up
            continue
        assert len(plan) == k and len(set(plan.tolist())) == k
        t = epoch  # pruned epochs so far
        counts = state.frequency.numpy().astype(int) - 1  # less the warm-up visit
        assert counts.min() == math.floor(k * t / n) and counts.max() == math.ceil(k * t / n), epoch
        np.add.at(ref_counts, reference[epoch - 1], 1)
        assert np.bincount(counts, minlength=epochs).tolist() == np.bincount(ref_counts, minlength=epochs).tolist()


def test_rows_left_untrained_come_first_in_the_next_epoch():
    strategy = build_strategy("rs2", prune_ratio=0.5)
    state = PruningState(num_rows=8, track=strategy.traits.required_tables)
    state.update(torch.tensor([0, 1, 2]), torch.ones(3), torch.ones(3), 0)  # rows 3..7 not trained (drop_last)
    tables = state.device_tables()
    rows = strategy.select(tables, 4, epoch_generator(0, 1), context_for(tables, 4)).rows
    assert set(rows.tolist()) < {3, 4, 5, 6, 7}


def test_rs2_trains_in_rounds_and_resumes_exactly(tmp_path, text_dataset):
    from test_trainer import StopAt

    def run(out, callbacks=(), resume=None):
        args = make_args(
            tmp_path,
            output_dir=str(tmp_path / out),
            pruning_method="rs2",
            prune_ratio=0.7,
            num_train_epochs=5,
            save_strategy="steps",
            save_steps=1000,
            dataloader_drop_last=False,
        )
        trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=text_dataset, callbacks=list(callbacks))
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    full = run("full")
    n, k = len(text_dataset), len(text_dataset) - math.floor(0.7 * len(text_dataset))
    counts = full.pruning_state.frequency - 1  # less the warm-up epoch
    assert int(counts.min()) == math.floor(4 * k / n) and int(counts.max()) == math.ceil(4 * k / n)
    run("split", callbacks=[StopAt(16)])  # epoch 0 has 12 steps, epoch 1 four: stop inside epoch 2
    resumed = run("split", resume=True)
    a, b = full.pruning_state, resumed.pruning_state
    assert [p.tolist() for p in a.plans] == [p.tolist() for p in b.plans]
    assert torch.equal(a.frequency, b.frequency)
    assert resumed.state.global_step == full.state.global_step
