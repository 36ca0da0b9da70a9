"""`PruningState` (the per-row tracker) against references written independently in plain Python/numpy.

The reference (`RefTracker`) follows docs/methods.md (what is observed, `ucb`, the choices left open) literally,
one observation at a time: padding (-1) is skipped, only the first occurrence of a row in one update counts, a
row already visited in the same epoch is not counted again, a non-finite loss or entropy counts as a visit but
leaves the statistics alone, the first finite observation sets `mean = loss, var = 0`, and later ones apply
`v <- d*v + (1-d)*(l - mu_old)^2`, `mu <- d*mu + (1-d)*l`.
"""

from __future__ import annotations

import io
import math
import os

import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler

from emp_hf.core.tracker import PruningState

PER_ROW = ("loss", "entropy", "ema_mean", "ema_var", "frequency", "last_epoch")


class RefTracker:
    """The tracker of docs/methods.md, written as a plain Python loop over float64 numpy arrays."""

    def __init__(self, n: int, decay: float) -> None:
        self.n, self.d = n, decay
        self.loss = np.full(n, np.nan)
        self.entropy = np.full(n, np.nan)
        self.ema_mean = np.full(n, np.nan)
        self.ema_var = np.zeros(n)
        self.frequency = np.zeros(n, dtype=np.int64)
        self.last_epoch = np.full(n, -1, dtype=np.int64)
        self.nonfinite = 0

    def update(self, rows, losses, entropies, epoch: int) -> None:
        in_this_update: set[int] = set()
        for r, lo, h in zip(rows, losses, entropies, strict=True):
            r, lo, h = int(r), float(lo), float(h)
            if r < 0 or r in in_this_update:
                continue
            in_this_update.add(r)
            if self.last_epoch[r] == epoch:
                continue
            self.frequency[r] += 1
            self.last_epoch[r] = epoch
            if not (math.isfinite(lo) and math.isfinite(h)):
                self.nonfinite += 1
                continue
            self.loss[r], self.entropy[r] = lo, h
            if math.isnan(self.ema_mean[r]):
                self.ema_mean[r], self.ema_var[r] = lo, 0.0
            else:
                mu_old = self.ema_mean[r]
                self.ema_var[r] = self.d * self.ema_var[r] + (1 - self.d) * (lo - mu_old) ** 2
                self.ema_mean[r] = self.d * mu_old + (1 - self.d) * lo


def update(state: PruningState, rows, loss, entropy, epoch: int) -> None:
    state.update(
        torch.as_tensor(rows, dtype=torch.int64),
        torch.as_tensor(loss, dtype=torch.float32),
        torch.as_tensor(entropy, dtype=torch.float32),
        epoch,
    )


def assert_matches(state: PruningState, ref: RefTracker) -> None:
    for name in ("loss", "entropy", "ema_mean", "ema_var"):
        got = getattr(state, name).double().numpy()
        want = getattr(ref, name)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=name)
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6, equal_nan=True, err_msg=name)
    np.testing.assert_array_equal(state.frequency.numpy(), ref.frequency)
    np.testing.assert_array_equal(state.last_epoch.numpy(), ref.last_epoch)
    assert int(state.nonfinite_count) == ref.nonfinite


# ---------------------------------------------------------------------------------------------- initial state
def test_initial_tables():
    state = PruningState(num_rows=7)
    for name in ("loss", "entropy", "ema_mean"):
        assert getattr(state, name).shape == (7,)
        assert torch.isnan(getattr(state, name)).all()
    assert (state.ema_var == 0).all()
    assert (state.frequency == 0).all() and state.frequency.dtype == torch.int16  # narrowest exact dtype
    assert (state.last_epoch == -1).all()
    assert (state.weight == 1).all()
    assert not state.seen.any()
    assert int(state.nonfinite_count) == 0
    assert state.plans == [] and state.realized_saving() == 0.0


def test_num_rows_must_be_positive():
    with pytest.raises(ValueError):
        PruningState(num_rows=0)


# ---------------------------------------------------------------------------------------------- EMA by hand
def test_ema_by_hand():
    """d = 0.9; losses 2, 4, 1 in epochs 0, 1, 2 (worked out on paper)."""
    state = PruningState(num_rows=5, ema_decay=0.9)
    update(state, [3], [2.0], [0.5], epoch=0)
    assert state.ema_mean[3].item() == pytest.approx(2.0)
    assert state.ema_var[3].item() == 0.0
    update(state, [3], [4.0], [0.25], epoch=1)
    # v = 0.9*0 + 0.1*(4-2)^2 = 0.4 ; mu = 0.9*2 + 0.1*4 = 2.2
    assert state.ema_var[3].item() == pytest.approx(0.4, rel=1e-6)
    assert state.ema_mean[3].item() == pytest.approx(2.2, rel=1e-6)
    update(state, [3], [1.0], [0.125], epoch=2)
    # v = 0.9*0.4 + 0.1*(1-2.2)^2 = 0.36 + 0.144 = 0.504 ; mu = 0.9*2.2 + 0.1*1 = 2.08
    assert state.ema_var[3].item() == pytest.approx(0.504, rel=1e-6)
    assert state.ema_mean[3].item() == pytest.approx(2.08, rel=1e-6)
    assert state.loss[3].item() == 1.0 and state.entropy[3].item() == 0.125
    assert state.frequency[3].item() == 3 and state.last_epoch[3].item() == 2
    # untouched rows stay unobserved
    others = [0, 1, 2, 4]
    assert torch.isnan(state.loss[others]).all() and (state.frequency[others] == 0).all()


def test_decay_zero_keeps_last_value_and_squared_jump():
    state = PruningState(num_rows=2, ema_decay=0.0)
    update(state, [0], [1.5], [0.0], epoch=0)
    update(state, [0], [4.0], [0.0], epoch=1)
    assert state.ema_mean[0].item() == 4.0
    assert state.ema_var[0].item() == pytest.approx((4.0 - 1.5) ** 2)


@pytest.mark.parametrize("decay", [0.9, 0.5, 0.99])
def test_random_stream_matches_numpy_loop(decay):
    """Random batches with padding, in-batch duplicates, re-visits and non-finite values over 6 epochs."""
    rng = np.random.default_rng(1234)
    n = 40
    state, ref = PruningState(num_rows=n, ema_decay=decay), RefTracker(n, decay)
    for epoch in range(6):
        for _ in range(8):
            b = int(rng.integers(1, 12))
            rows = rng.integers(-1, n, size=b)
            loss = rng.gamma(2.0, 1.0, size=b).astype(np.float32)
            entropy = rng.uniform(0.0, 2.0, size=b).astype(np.float32)
            bad = rng.random(b)
            loss[bad < 0.04] = np.nan
            loss[(bad >= 0.04) & (bad < 0.06)] = np.inf
            entropy[(bad >= 0.06) & (bad < 0.08)] = -np.inf
            update(state, rows, loss, entropy, epoch)
            ref.update(rows, loss.astype(np.float64), entropy.astype(np.float64), epoch)
    assert ref.nonfinite > 0 and ref.frequency.max() > 1  # the stream exercised what it should
    assert_matches(state, ref)
    np.testing.assert_array_equal(state.seen.numpy(), ref.frequency > 0)


# ---------------------------------------------------------------------------------------------- what counts
def test_padding_rows_are_ignored():
    state = PruningState(num_rows=4)
    update(state, [-1, 2, -1, -1], [9.0, 1.0, 9.0, 9.0], [9.0, 0.5, 9.0, 9.0], epoch=0)
    assert state.frequency.tolist() == [0, 0, 1, 0]
    assert state.loss[2].item() == 1.0 and state.entropy[2].item() == 0.5
    assert torch.isnan(state.loss[[0, 1, 3]]).all()
    assert int(state.nonfinite_count) == 0


def test_only_padding_and_empty_updates_are_noops():
    state = PruningState(num_rows=3)
    update(state, [-1, -1], [1.0, 2.0], [1.0, 2.0], epoch=0)
    update(state, [], [], [], epoch=0)
    assert (state.frequency == 0).all() and torch.isnan(state.loss).all()


def test_duplicates_in_one_update_first_occurrence_wins():
    state = PruningState(num_rows=6)
    update(state, [4, 4, 5, 4, 5], [1.0, 2.0, 3.0, 4.0, 5.0], [0.1, 0.2, 0.3, 0.4, 0.5], epoch=0)
    assert state.frequency.tolist() == [0, 0, 0, 0, 1, 1]
    assert state.loss[4].item() == 1.0 and state.entropy[4].item() == pytest.approx(0.1)
    assert state.loss[5].item() == 3.0 and state.entropy[5].item() == pytest.approx(0.3)
    assert state.ema_mean[4].item() == 1.0 and state.ema_var[4].item() == 0.0


def test_revisit_in_same_epoch_is_not_counted():
    state = PruningState(num_rows=3)
    update(state, [1], [1.0], [0.5], epoch=0)
    update(state, [1, 0], [5.0, 2.0], [5.0, 0.5], epoch=0)
    assert state.frequency.tolist() == [1, 1, 0]
    assert state.loss[1].item() == 1.0 and state.ema_mean[1].item() == 1.0
    update(state, [1], [5.0], [0.25], epoch=1)  # a new epoch counts again
    assert state.frequency.tolist() == [1, 2, 0]
    assert state.loss[1].item() == 5.0
    assert state.ema_mean[1].item() == pytest.approx(0.9 * 1.0 + 0.1 * 5.0)


@pytest.mark.parametrize("num_processes,batch_size,plan_size", [(2, 3, 10), (4, 3, 10), (3, 4, 5), (4, 2, 3)])
def test_even_batches_loop_back_duplicates_are_dropped(num_processes, batch_size, plan_size):
    """Feed the tracker what every process of an Accelerate-sharded loader (even_batches=True) trains on,
    gathered step by step in process order: every row of the plan is counted exactly once per epoch."""
    from accelerate.data_loader import BatchSamplerShard

    n = 12
    state = PruningState(num_rows=n)
    freq = np.zeros(n, dtype=np.int64)
    rng = np.random.default_rng(0)
    for epoch in range(3):
        plan = rng.permutation(n)[:plan_size].tolist()
        shards = [
            list(BatchSamplerShard(BatchSampler(plan, batch_size, False), num_processes, rank, even_batches=True))
            for rank in range(num_processes)
        ]
        steps = len(shards[0])
        assert all(len(s) == steps for s in shards)
        total = sum(len(b) for s in shards for b in s)
        assert total > plan_size  # there are loop-back duplicates to drop
        for step in range(steps):
            rows = [r for s in shards for r in s[step]]
            loss = [1.0 + epoch + 0.01 * r for r in rows]
            update(state, rows, loss, [0.5] * len(rows), epoch)
        freq[plan] += 1
        np.testing.assert_array_equal(state.frequency.numpy(), freq)
        assert (state.last_epoch[plan] == epoch).all()


def test_nonfinite_counts_as_visit_but_keeps_statistics():
    state = PruningState(num_rows=4, ema_decay=0.9)
    update(state, [0, 1, 2, 3], [1.0, 2.0, 3.0, 4.0], [0.1, 0.2, 0.3, 0.4], epoch=0)
    before = {k: getattr(state, k).clone() for k in ("loss", "entropy", "ema_mean", "ema_var")}
    nan, inf = float("nan"), float("inf")
    update(state, [0, 1, 2, 3], [nan, inf, 3.5, -inf], [0.1, 0.2, nan, 0.4], epoch=1)
    assert state.frequency.tolist() == [2, 2, 2, 2]
    assert state.last_epoch.tolist() == [1, 1, 1, 1]
    assert int(state.nonfinite_count) == 4
    for k, v in before.items():
        torch.testing.assert_close(getattr(state, k), v, msg=k)


def test_nonfinite_first_occurrence_blocks_later_duplicate():
    state = PruningState(num_rows=2)
    update(state, [0, 0], [float("nan"), 1.0], [0.0, 0.0], epoch=0)
    assert state.frequency.tolist() == [1, 0]
    assert int(state.nonfinite_count) == 1
    assert torch.isnan(state.loss[0]) and torch.isnan(state.ema_mean[0])
    # the first finite observation later still initialises the EMA
    update(state, [0], [3.0], [0.5], epoch=1)
    assert state.ema_mean[0].item() == 3.0 and state.ema_var[0].item() == 0.0


def test_nonfinite_on_unvisited_row_keeps_it_unscored():
    state = PruningState(num_rows=2)
    update(state, [1], [float("inf")], [0.0], epoch=0)
    assert state.frequency.tolist() == [0, 1]
    assert state.seen.tolist() == [False, True]
    assert torch.isnan(state.loss).all() and torch.isnan(state.ema_mean).all()


def _available_memory_bytes() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


@pytest.mark.skipif(_available_memory_bytes() < 3 * 2**30, reason="needs ~1 GiB for 2**24 rows")
def test_row_ids_beyond_float32_integer_range():
    """Row ids above 2**24 are not representable in float32: they must still land in their own slot."""
    n = 2**24 + 3
    state = PruningState(num_rows=n)
    rows = [2**24 + 2, 2**24 + 1, 2**24, 2**24 - 1, 5]
    losses = [1.0, 2.0, 3.0, 4.0, 5.0]
    entropies = [0.5, 0.25, 0.125, 0.0625, 0.03125]
    update(state, rows, losses, entropies, epoch=0)
    update(state, [2**24 + 1, 2**24 + 2], [6.0, 7.0], [0.0, 0.0], epoch=1)
    assert int(state.frequency.sum()) == 7
    for r, lo, h in zip(rows, losses, entropies, strict=True):
        if r in (2**24 + 1, 2**24 + 2):
            continue
        assert state.loss[r].item() == lo and state.entropy[r].item() == h and state.frequency[r].item() == 1
    assert state.loss[2**24 + 1].item() == 6.0 and state.frequency[2**24 + 1].item() == 2
    assert state.loss[2**24 + 2].item() == 7.0 and state.frequency[2**24 + 2].item() == 2
    assert state.ema_mean[2**24 + 2].item() == pytest.approx(0.9 * 1.0 + 0.1 * 7.0)


# ---------------------------------------------------------------------------------------------- plans
def test_record_plan_and_realized_saving():
    n = 10
    state = PruningState(num_rows=n)
    sizes = [10, 6, 6, 10]
    rng = np.random.default_rng(0)
    plans = [torch.as_tensor(rng.permutation(n)[:s]) for s in sizes]
    for e, p in enumerate(plans):
        state.record_plan(e, p)
    assert state.epoch_plan_sizes == sizes
    for stored, p in zip(state.plans, plans, strict=True):
        assert stored.device.type == "cpu"
        assert stored.tolist() == p.tolist()  # order preserved
    assert state.realized_saving() == pytest.approx(1 - 32 / 40)
    assert state.realized_saving(num_epochs=5) == pytest.approx(1 - 32 / 50)
    kept = state.kept_in_epoch().numpy()
    want = np.zeros((4, n), dtype=bool)
    for e, p in enumerate(plans):
        want[e, p.numpy()] = True
    np.testing.assert_array_equal(kept, want)


def test_record_plan_out_of_order_raises():
    state = PruningState(num_rows=3)
    with pytest.raises(RuntimeError):
        state.record_plan(1, torch.arange(3))
    state.record_plan(0, torch.arange(3))
    with pytest.raises(RuntimeError):
        state.record_plan(0, torch.arange(3))


def test_record_plan_weights():
    state = PruningState(num_rows=4)
    w = torch.tensor([1.0, 2.0, 1.0, 0.5])
    state.record_plan(0, torch.tensor([0, 1, 3]), weight=w)
    assert state.weight.tolist() == [1.0, 2.0, 1.0, 0.5]
    state.record_plan(1, torch.arange(4))  # no weights: back to all ones
    assert state.weight.tolist() == [1.0] * 4


def test_set_scores_and_cpu_tables_exclude_trash_slot():
    state = PruningState(num_rows=3)
    state.set_scores(torch.tensor([0.5, 1.5, 2.5]))
    tables = state.cpu_tables()
    assert set(PER_ROW) <= set(tables)
    assert all(t.shape == (3,) for t in tables.values())
    assert tables["score"].tolist() == [0.5, 1.5, 2.5]
    tables["score"][0] = 99.0  # a copy, not a view
    assert state.score[0].item() == 0.5


# ---------------------------------------------------------------------------------------------- checkpoints
def _history(state: PruningState, rng: np.random.Generator, epochs: range) -> None:
    n = state.num_rows
    for epoch in epochs:
        for _ in range(5):
            rows = rng.integers(-1, n, size=6)
            loss = rng.gamma(2.0, 1.0, size=6)
            loss[rng.random(6) < 0.1] = np.nan
            update(state, rows, loss, rng.uniform(0, 1, size=6), epoch)


def test_state_dict_round_trip_and_continuation():
    n = 25
    state = PruningState(num_rows=n, ema_decay=0.8)
    _history(state, np.random.default_rng(7), range(3))
    for e, size in enumerate([25, 12, 12]):
        state.record_plan(e, torch.randperm(n, generator=torch.Generator().manual_seed(e))[:size])
    state.metadata["strategy"] = "emp"
    buffer = io.BytesIO()
    torch.save(state.state_dict(), buffer)  # as the checkpoint code does
    restored = PruningState(num_rows=n)
    restored.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))

    assert restored.ema_decay == 0.8
    assert restored.metadata == {"strategy": "emp"}
    assert int(restored.nonfinite_count) == int(state.nonfinite_count)
    assert [p.tolist() for p in restored.plans] == [p.tolist() for p in state.plans]
    assert restored.realized_saving() == state.realized_saving()
    for name in state.tables:
        torch.testing.assert_close(restored.tables[name], state.tables[name], equal_nan=True, msg=name)

    # the resumed tracker continues exactly as the uninterrupted one
    _history(state, np.random.default_rng(8), range(3, 5))
    _history(restored, np.random.default_rng(8), range(3, 5))
    for name in PER_ROW:
        torch.testing.assert_close(getattr(restored, name), getattr(state, name), equal_nan=True, msg=name)
    assert int(restored.nonfinite_count) == int(state.nonfinite_count)


def test_load_state_dict_rejects_other_dataset_and_format():
    state = PruningState(num_rows=5)
    with pytest.raises(ValueError):
        PruningState(num_rows=6).load_state_dict(state.state_dict())
    bad = state.state_dict()
    bad["format_version"] = 999
    with pytest.raises(ValueError):
        PruningState(num_rows=5).load_state_dict(bad)


def test_load_state_dict_does_not_alias_its_source():
    source = PruningState(num_rows=3)
    target = PruningState(num_rows=3)
    target.load_state_dict(source.state_dict())
    update(target, [0], [1.0], [0.5], epoch=0)
    assert source.frequency.tolist() == [0, 0, 0]
