"""`small_loss`: Co-teaching's small-loss trick per epoch, over RS2 rounds; by hand, against numpy, in training."""

import math

import numpy as np
import pytest
import torch

from emp_hf import EMPConfig, EMPTrainer
from emp_hf.core.sampler import epoch_generator
from emp_hf.strategies import build_strategy
from emp_hf_dev.fixtures import context_for, make_args, make_bert


def tables(loss, entropy, frequency):
    return {
        "loss": torch.tensor(loss, dtype=torch.float32),
        "entropy": torch.tensor(entropy, dtype=torch.float32),
        "frequency": torch.tensor(frequency, dtype=torch.int16),
    }


LOSS = [5.0, 1.0, 4.0, 0.5, 3.0, math.nan]
ENTROPY = [0.1, 0.2, 2.0, 0.1, 0.5, math.nan]


@pytest.mark.parametrize(("beta", "left_out"), [(1.0, {0, 4}), (0.0, {0, 2})])
def test_the_rows_of_largest_loss_minus_entropy_are_left_out(beta, left_out):
    # keys with beta = 1: [4.9, 0.8, 2.0, 0.4, 2.5, nan]; beta = 0: the losses. floor(0.34 * 6) = 2 rows left out.
    strategy = build_strategy("small_loss", small_loss_forget_rate=0.34, small_loss_memory_weight=beta)
    t = tables(LOSS, ENTROPY, [1] * 6)
    for seed in range(10):
        rows = strategy.select(t, 4, epoch_generator(seed, 1), context_for(t, 4)).rows.tolist()
        assert len(rows) == 4 and set(rows) == set(range(6)) - left_out  # the never-observed row 5 is kept
    torch.testing.assert_close(
        strategy.score(t, context_for(t))[:5], torch.tensor(LOSS[:5]) - beta * torch.tensor(ENTROPY[:5])
    )


def test_the_kept_rows_are_dealt_least_visited_first_and_the_left_out_fill_a_short_epoch():
    strategy = build_strategy("small_loss", small_loss_forget_rate=0.34, small_loss_memory_weight=1.0)
    t = tables(LOSS, ENTROPY, [3, 2, 1, 2, 0, 1])  # rows 0 and 4 left out
    assert set(strategy.select(t, 2, epoch_generator(0, 1), context_for(t, 2)).rows.tolist()) == {2, 5}
    rows = strategy.select(t, 5, epoch_generator(0, 1), context_for(t, 5)).rows.tolist()
    assert set(rows[:4]) == {1, 2, 3, 5} and rows[4] == 4  # then the least visited left-out row


def test_matches_a_numpy_reference_on_random_tables():
    rng = np.random.default_rng(0)
    for trial in range(50):
        n = int(rng.integers(5, 60))
        loss, entropy = rng.exponential(size=n), rng.exponential(size=n)
        loss[rng.random(n) < 0.1] = np.nan
        frequency = rng.integers(0, 3, size=n)
        rate, beta, k = float(rng.uniform(0, 0.9)), float(rng.uniform(0, 2)), int(rng.integers(1, n + 1))
        strategy = build_strategy("small_loss", small_loss_forget_rate=rate, small_loss_memory_weight=beta)
        t = tables(loss.tolist(), entropy.tolist(), frequency.tolist())
        rows = strategy.select(t, k, epoch_generator(trial, 1), context_for(t, k)).rows.numpy()
        key = (loss.astype(np.float32) - np.float32(beta) * entropy.astype(np.float32)).astype(np.float64)
        finite = np.flatnonzero(~np.isnan(key))
        forget = min(math.floor(rate * n), len(finite))
        threshold = np.sort(key[finite])[::-1][forget - 1] if forget else np.inf
        assert len(rows) == k == len(set(rows.tolist()))
        kept = np.setdiff1d(np.arange(n), finite[key[finite] >= threshold]) if forget else np.arange(n)
        if len(np.unique(key[finite][key[finite] >= threshold])) == forget or not forget:  # no tie at the cut
            chosen_kept = np.intersect1d(rows, kept)
            assert len(chosen_kept) == min(k, len(kept))
            others = np.setdiff1d(kept, rows)
            if len(others) and len(chosen_kept):  # least visited first among the kept rows
                assert frequency[chosen_kept].max() <= frequency[others].min()


def test_options_are_checked():
    with pytest.raises(ValueError, match=r"small_loss_forget_rate=1.0 is invalid"):
        build_strategy("small_loss", small_loss_forget_rate=1.0)
    with pytest.raises(ValueError, match=r"small_loss_memory_weight=-1 is invalid"):
        EMPConfig(output_dir="/tmp/x", pruning_method="small_loss", small_loss_memory_weight=-1)


def test_small_loss_trains_and_accounts_every_visit(tmp_path, text_dataset):
    args = make_args(tmp_path, pruning_method="small_loss", num_train_epochs=4, small_loss_forget_rate=0.25)
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=text_dataset)
    trainer.train()
    state = trainer.pruning_state
    n = len(text_dataset)
    assert state.epoch_plan_sizes == [n] + [n - n // 2] * 3
    assert torch.equal(state.frequency, state.kept_in_epoch().sum(0))
    assert int(state.frequency.sum()) == sum(state.epoch_plan_sizes)
