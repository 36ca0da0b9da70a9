"""The buffered hot path, the flush, narrow tables and the compact plan history of `PruningState`.

Every check compares against `RefTracker` (test_tracker.py: docs/methods.md's tracker as a plain Python loop, one
observation at a time) or against values worked out by hand: buffering and flushing must not change a single
table entry, whatever the flush points, the buffer size or the number of processes.
"""

from __future__ import annotations

import copy
import io
import types

import numpy as np
import pytest
import torch
from test_tracker import RefTracker, assert_matches, update

from emp_hf.core.plan_history import pack_mask, unpack_mask
from emp_hf.core.sampler import EpochPlanner, order_seed
from emp_hf.core.schedule import EpochSchedule
from emp_hf.core.tracker import ALL_TABLES, PruningState
from emp_hf.integration.distributed import ProcessGather, attach_process_group, gather_observations, step_major
from emp_hf.strategies import STRATEGIES, PruningOptions, build_strategy


def random_batches(rng: np.random.Generator, n: int, epochs: int, per_epoch: int, max_batch: int = 12):
    """(epoch, rows, loss, entropy) micro-batches with padding, duplicates, re-visits and non-finite values."""
    for epoch in range(epochs):
        for _ in range(per_epoch):
            b = int(rng.integers(0, max_batch + 1))
            rows = rng.integers(-1, n, size=b)
            loss = rng.gamma(2.0, 1.0, size=b).astype(np.float32)
            entropy = rng.uniform(0.0, 2.0, size=b).astype(np.float32)
            bad = rng.random(b)
            loss[bad < 0.05] = np.nan
            entropy[(bad >= 0.05) & (bad < 0.08)] = np.inf
            yield epoch, rows, loss, entropy


# ---------------------------------------------------------------------------------------------- flush semantics
@pytest.mark.parametrize("buffer_rows", [1, 7, 64, 4096])
@pytest.mark.parametrize("read_every", [0, 1, 3])
def test_buffered_updates_match_the_reference_whatever_the_flush_points(buffer_rows, read_every):
    """Flushes when the buffer is full, at epoch changes and at (optional) reads in between: same tables."""
    rng = np.random.default_rng(buffer_rows * 10 + read_every)
    n = 30
    state, ref = PruningState(num_rows=n, ema_decay=0.8, buffer_rows=buffer_rows), RefTracker(n, 0.8)
    for i, (epoch, rows, loss, entropy) in enumerate(random_batches(rng, n, epochs=5, per_epoch=9)):
        update(state, rows, loss, entropy, epoch)
        ref.update(rows, loss.astype(np.float64), entropy.astype(np.float64), epoch)
        if read_every and i % read_every == 0:
            assert_matches(state, ref)
    assert ref.nonfinite > 0 and ref.frequency.max() > 1
    assert_matches(state, ref)


def test_observations_wait_in_the_buffer_until_a_read():
    state = PruningState(num_rows=4)
    update(state, [2, 2, -1], [1.0, 5.0, 9.0], [0.5, 0.5, 9.0], epoch=0)
    assert state.pending == 3
    assert int(state._tables["frequency"][2]) == 0  # not applied yet (private: what the flush guards)
    assert state.frequency.tolist() == [0, 0, 1, 0]  # any read flushes first
    assert state.pending == 0


@pytest.mark.parametrize(
    "read",
    [
        lambda s: s.tables["loss"][:-1],
        lambda s: s.device_tables()["loss"],
        lambda s: s.cpu_tables()["loss"],
        lambda s: s.loss,
        lambda s: s.state_dict()["tables"]["loss"][:-1],
        lambda s: copy.deepcopy(s).loss,
    ],
    ids=["tables", "device_tables", "cpu_tables", "attribute", "state_dict", "deepcopy"],
)
def test_every_way_in_sees_the_flushed_tables(read):
    state = PruningState(num_rows=3)
    update(state, [1], [2.5], [0.25], epoch=0)
    assert read(state).tolist()[1] == 2.5


def test_nonfinite_count_is_flushed_too():
    state = PruningState(num_rows=3)
    update(state, [0, 1], [float("nan"), 1.0], [0.0, 0.0], epoch=0)
    assert int(state.nonfinite_count) == 1


def test_a_new_epoch_flushes_the_previous_one():
    """A row seen in epoch 0 and again in epoch 1 counts twice, even though both sit in the buffer at once."""
    state = PruningState(num_rows=2, buffer_rows=100)
    update(state, [0], [1.0], [0.0], epoch=0)
    update(state, [0], [3.0], [0.0], epoch=1)
    update(state, [0], [7.0], [0.0], epoch=1)  # a re-visit within epoch 1: ignored
    assert state.frequency.tolist() == [2, 0]
    assert state.loss[0].item() == 3.0 and state.ema_mean[0].item() == pytest.approx(0.9 * 1.0 + 0.1 * 3.0)


def test_update_rejects_bad_input():
    state = PruningState(num_rows=3)
    with pytest.raises(ValueError, match="rows but"):
        update(state, [0, 1], [1.0], [1.0, 2.0], epoch=0)
    with pytest.raises(ValueError, match="epoch"):
        update(state, [0], [1.0], [1.0], epoch=-1)


def test_counters_widen_before_they_overflow():
    state = PruningState(num_rows=3)
    update(state, [0], [1.0], [0.0], epoch=0)
    assert state.last_epoch.dtype == torch.int16
    update(state, [0, 1], [2.0, 3.0], [0.0, 0.0], epoch=40_000)  # beyond int16
    assert state.last_epoch.dtype == torch.int32 and state.frequency.dtype == torch.int32
    assert state.last_epoch.tolist() == [40_000, 40_000, -1] and state.frequency.tolist() == [2, 1, 0]


# ---------------------------------------------------------------------------------------------- several processes
class FakeCollective:
    """`accelerator.gather` of `W` processes run in one: the c-th gather of every process returns the
    concatenation, in process order, of what every buffer held when the first of them called it."""

    def __init__(self, states: list[PruningState]) -> None:
        self.states = states
        self.results: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.calls = [0] * len(states)

    def rank(self, rank: int) -> types.SimpleNamespace:
        def gather(tensors):
            call = self.calls[rank]
            self.calls[rank] += 1
            if call == len(self.results):
                buffers = [s._buffer for s in self.states]
                self.results.append(
                    (
                        torch.cat([b.rows[: b.size].clone() for b in buffers]),
                        torch.cat([b.values[:, : b.size].t().clone() for b in buffers]),
                    )
                )
            rows, values = self.results[call]
            assert rows.numel() == tensors[0].numel() * len(self.states)
            return rows, values

        return types.SimpleNamespace(num_processes=len(self.states), gather=gather)


@pytest.mark.parametrize("num_processes,batch_size,buffer_rows", [(2, 4, 64), (3, 3, 9), (2, 5, 1024)])
def test_one_gather_per_flush_equals_one_gather_per_micro_batch(num_processes, batch_size, buffer_rows):
    """W processes buffer short, padded micro-batches; a flush gathers them all at once and reorders them
    step-major, so the result is the per-micro-batch gather's: step 0 of every process, then step 1, ..."""
    rng = np.random.default_rng(num_processes * 100 + batch_size)
    n = 25
    states = [PruningState(num_rows=n, buffer_rows=buffer_rows) for _ in range(num_processes)]
    collective = FakeCollective(states)
    for rank, state in enumerate(states):
        attach_process_group(state, collective.rank(rank), batch_size)
    ref = RefTracker(n, 0.9)
    for epoch in range(4):
        for _ in range(7):
            step_rows, step_loss, step_entropy = [], [], []
            for state in states:
                b = int(rng.integers(0, batch_size + 1))  # short batches: padded in the buffer
                rows = rng.integers(0, n, size=b)
                loss = rng.gamma(2.0, 1.0, size=b).astype(np.float32)
                entropy = rng.uniform(0, 1, size=b).astype(np.float32)
                update(state, rows, loss, entropy, epoch)
                step_rows += rows.tolist()
                step_loss += loss.tolist()
                step_entropy += entropy.tolist()
            ref.update(step_rows, step_loss, step_entropy, epoch)
    assert len(collective.results) < 4 * 7  # fewer gathers than micro-batches
    for state in states:  # every process reads at the same point (as the trainer's flush points are)
        state.flush()
    for state in states:
        assert_matches(state, ref)


def test_step_major_reorders_process_major_buffers():
    # 2 processes, 2 steps, batch 2: process p, step s, slot j holds 100p + 10s + j
    rows = torch.tensor([0, 1, 10, 11, 100, 101, 110, 111])
    values = rows.double().unsqueeze(1).repeat(1, 2)
    ordered, ordered_values = step_major(rows, values, num_processes=2, batch_size=2)
    assert ordered.tolist() == [0, 1, 100, 101, 10, 11, 110, 111]
    assert ordered_values[:, 1].long().tolist() == ordered.tolist()


def test_attach_process_group_pads_micro_batches_and_rejects_oversized_ones():
    state = PruningState(num_rows=10)
    one = types.SimpleNamespace(num_processes=1)
    attach_process_group(state, one, 4)
    assert state.gather is None and state.micro_batch_width is None
    two = types.SimpleNamespace(num_processes=2)
    attach_process_group(state, two, 4)
    assert isinstance(state.gather, ProcessGather) and state.micro_batch_width == 4
    update(state, [3], [1.0], [1.0], epoch=0)
    assert state.pending == 4  # padded to the per-device batch size: every process buffers the same slots
    with pytest.raises(ValueError, match="exceeds the per-device batch size"):
        update(state, [1, 2, 3, 4, 5], [1.0] * 5, [1.0] * 5, epoch=0)


def test_gather_observations_single_process_is_the_identity():
    accelerator = types.SimpleNamespace(num_processes=1)
    rows, loss, entropy = gather_observations(
        accelerator, torch.tensor([3, -1]), torch.tensor([1.0, 2.0]).bfloat16(), torch.tensor([0.5, 0.25]), 4
    )
    assert rows.tolist() == [3, -1] and rows.dtype == torch.int64
    assert loss.tolist() == [1.0, 2.0] and entropy.tolist() == [0.5, 0.25]


# ---------------------------------------------------------------------------------------------- tables kept
def test_each_strategy_keeps_only_what_it_declares():
    for name in STRATEGIES:
        strategy = build_strategy(name, PruningOptions())
        state = PruningState(num_rows=10, track=strategy.traits.required_tables)
        assert state.tracked >= {"frequency", "last_epoch"} and state.tracked <= ALL_TABLES, name
        assert set(strategy.traits.required_tables) <= state.tracked, name
    emp = PruningState(num_rows=8, track=build_strategy("emp", PruningOptions()).traits.required_tables)
    assert emp.tracked == {"loss", "entropy", "score", "frequency", "last_epoch"}
    assert emp.table_bytes() / 9 == 16  # 3 float32 + 2 int16, per row (trash slot included)
    with pytest.raises(AttributeError, match="does not keep 'ema_var'"):
        _ = emp.ema_var
    soft = build_strategy("emp", PruningOptions(emp_selection="soft"))
    assert "weight" in soft.traits.required_tables
    uniform = PruningState(num_rows=8, track=build_strategy("random", PruningOptions()).traits.required_tables)
    assert uniform.table_bytes() == 9 * 12  # loss, entropy, frequency, last_epoch


def test_bytes_per_row_targets():
    """Issue 15: at most 16 bytes per row for emp, random and infobatch."""
    for name in ("emp", "random", "infobatch"):
        state = PruningState(num_rows=1000, track=build_strategy(name, PruningOptions()).traits.required_tables)
        assert state.table_bytes() / 1001 <= 16, name


def test_partial_tables_update_exactly():
    """A state keeping only the EMA mean (no variance, no entropy) updates it as the full tracker does."""
    rng = np.random.default_rng(3)
    n = 20
    partial, ref = PruningState(num_rows=n, track={"loss", "ema_mean"}), RefTracker(n, 0.9)
    for epoch, rows, loss, entropy in random_batches(rng, n, epochs=4, per_epoch=6):
        update(partial, rows, loss, entropy, epoch)
        ref.update(rows, loss.astype(np.float64), entropy.astype(np.float64), epoch)
    np.testing.assert_allclose(partial.ema_mean.numpy(), ref.ema_mean, rtol=2e-5, atol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(partial.frequency.numpy(), ref.frequency)
    assert int(partial.nonfinite_count) == ref.nonfinite


def test_weights_need_a_weight_table():
    state = PruningState(num_rows=4, track={"loss"})
    assert state.loss_weight(torch.tensor([0, 3])).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="required_tables"):
        state.record_selection(0, torch.tensor([0, 1]), order_seed=1, weight=torch.tensor([2.0, 1, 1, 1]))


# ---------------------------------------------------------------------------------------------- plan history
def test_pack_and_unpack_masks():
    g = torch.Generator().manual_seed(0)
    for n in (1, 7, 8, 9, 100):
        mask = torch.rand(n, generator=g) < 0.4
        bits = pack_mask(mask)
        assert bits.dtype == torch.uint8 and bits.numel() == -(-n // 8)
        assert torch.equal(unpack_mask(bits, n), mask)
    assert pack_mask(torch.tensor([True, False, True])).tolist() == [0b101]


def planned_state(n: int = 50, epochs: int = 4, method: str = "emp", seed: int = 3):
    """A state after `epochs` planned and trained epochs (prune ratio 0.6), and its planner."""
    state = PruningState(num_rows=n, track=build_strategy(method, PruningOptions()).traits.required_tables)
    schedule = EpochSchedule(num_rows=n, num_epochs=epochs, prune_ratio=0.6)
    planner = EpochPlanner(state, build_strategy(method, PruningOptions(prune_ratio=0.6)), schedule, seed)
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        plan = planner.plan(epoch)
        state.update(plan.long(), torch.rand(len(plan), generator=g) * 3, torch.rand(len(plan), generator=g), epoch)
    return state, planner


def test_plans_are_stored_as_bitmaps_and_regenerate_exactly():
    n = 50
    state, _ = planned_state(n)
    assert state.epoch_plan_sizes == [50, 20, 20, 20]
    assert state.plan_bytes() == 3 * 7  # ceil(50 / 8) bytes per pruned epoch, nothing for the warm-up epoch
    decided = [p.clone() for p in state.plans]
    restored = PruningState(num_rows=n, track=state.tracked)
    buffer = io.BytesIO()
    torch.save(state.state_dict(), buffer)
    restored.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    assert restored.plans == decided  # regenerated from the bitmaps and the order seeds, in order
    assert all(p.dtype == torch.int32 and p.device.type == "cpu" for p in restored.plans)
    kept = restored.kept_in_epoch()
    for epoch, plan in enumerate(decided):
        assert sorted(plan.tolist()) == torch.nonzero(kept[epoch]).flatten().tolist()
    # decided on the CPU, the order is the ascending kept rows permuted by a CPU randperm seeded by the order seed
    rows = torch.nonzero(kept[2]).flatten()
    permutation = torch.randperm(rows.numel(), generator=torch.Generator().manual_seed(order_seed(3, 2)))
    assert state.plans.entries[2].order_rule == "randperm"
    assert rows[permutation].tolist() == decided[2].tolist()


def test_plans_saved_before_the_order_rule_was_recorded_regenerate_by_the_hash_sort():
    """A checkpoint of emp_hf <= 0.2 has no `order_rule`: its plans are the kept rows sorted by their SplitMix64
    keys (recomputed here by hand, in plain Python integers), and they still load and regenerate."""
    n = 50
    state, _ = planned_state(n)
    saved = state.state_dict()
    kept = torch.nonzero(state.plans.kept(2)).flatten().tolist()
    old_order = sorted(kept, key=lambda r: splitmix64_key(r, order_seed(3, 2)))
    for entry in saved["plans"]:
        del entry["order_rule"]
    saved["plans"][2]["head"] = old_order[:16]
    restored = PruningState(num_rows=n, track=state.tracked)
    restored.load_state_dict(saved)
    assert restored.plans.entries[2].order_rule == "mix64"
    assert restored.plans[2].tolist() == old_order


def splitmix64_key(row: int, seed: int) -> int:
    """The SplitMix64 finaliser of `row * golden + seed` in unsigned 64-bit arithmetic (the reference of mix64)."""
    mask = 2**64 - 1
    z = (row * 0x9E3779B97F4A7C15 + seed) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    z = z ^ (z >> 31)
    return z - 2**64 if z >= 2**63 else z  # compared as signed, as torch sorts int64


def test_mix64_matches_the_unsigned_reference():
    from emp_hf.core.plan_history import draw_order

    rows = torch.tensor([0, 1, 2, 5, 2**31 - 1, 2**40 + 7, 123456789])
    for seed in (0, 1, 2**62 + 12345, order_seed(7, 3)):
        want = sorted(rows.tolist(), key=lambda r: splitmix64_key(r, seed))
        assert draw_order(rows, seed).tolist() == want


def test_a_plan_that_regenerates_differently_is_refused():
    state, _ = planned_state()
    saved = state.state_dict()
    saved["plans"][2]["order_seed"] += 1  # an edited history
    restored = PruningState(num_rows=state.num_rows, track=state.tracked)
    restored.load_state_dict(saved)
    assert restored.plans[1].tolist() == state.plans[1].tolist()
    with pytest.raises(RuntimeError, match="cannot be regenerated"):
        _ = restored.plans[2]


def test_plan_history_reads_like_a_list():
    state, _ = planned_state()
    plans = state.plans
    assert len(plans) == 4 and plans[-1].tolist() == plans[3].tolist()
    assert [p.tolist() for p in plans[1:3]] == [plans[1].tolist(), plans[2].tolist()]
    with pytest.raises(IndexError):
        _ = plans[4]
    assert PruningState(num_rows=3).plans == []


# ---------------------------------------------------------------------------------------------- old checkpoints
def format_1_state(n: int = 6) -> dict:
    """A state dict as emp_hf wrote it before issue 15: eight int64/float32 tables, explicit int32 plans."""
    nan = float("nan")
    tables = {
        "loss": torch.tensor([0.5, nan, 1.5, 2.0, nan, 0.25, nan]),
        "entropy": torch.tensor([0.1, nan, 0.2, 0.3, nan, 0.4, nan]),
        "ema_mean": torch.tensor([0.5, nan, 1.4, 2.0, nan, 0.3, nan]),
        "ema_var": torch.tensor([0.0, 0.0, 0.01, 0.0, 0.0, 0.02, 0.0]),
        "score": torch.tensor([0.6, nan, 1.7, 2.3, nan, 0.65, nan]),
        "weight": torch.ones(7),
        "frequency": torch.tensor([1, 0, 2, 1, 0, 2, 3], dtype=torch.int64),
        "last_epoch": torch.tensor([0, -1, 1, 0, -1, 1, 1], dtype=torch.int64),
    }
    plans = [torch.tensor([3, 0, 5, 2, 1, 4], dtype=torch.int32), torch.tensor([5, 2], dtype=torch.int32)]
    return {
        "format_version": 1,
        "num_rows": n,
        "ema_decay": 0.8,
        "tables": tables,
        "plans": plans,
        "nonfinite_count": torch.tensor(1),
        "metadata": {"pruning_method": "emp"},
    }


def test_format_1_checkpoints_load():
    old = format_1_state()
    state = PruningState(num_rows=6, track=build_strategy("emp", PruningOptions()).traits.required_tables)
    state.load_state_dict(old)
    assert state.ema_decay == 0.8 and state.metadata == {"pruning_method": "emp"}
    assert state.frequency.tolist() == [1, 0, 2, 1, 0, 2] and state.frequency.dtype == torch.int16
    assert state.last_epoch.tolist() == [0, -1, 1, 0, -1, 1]
    np.testing.assert_array_equal(state.loss.numpy(), old["tables"]["loss"][:-1].numpy())
    np.testing.assert_array_equal(state.score.numpy(), old["tables"]["score"][:-1].numpy())
    assert [p.tolist() for p in state.plans] == [[3, 0, 5, 2, 1, 4], [5, 2]]
    assert int(state.nonfinite_count) == 1
    # and training continues from it
    update(state, [1, 2], [4.0, 1.0], [0.5, 0.5], epoch=2)
    assert state.frequency.tolist() == [1, 1, 3, 1, 0, 2]


def test_unknown_formats_are_refused_with_the_reason():
    bad = format_1_state()
    bad["format_version"] = 99
    with pytest.raises(ValueError, match="Unsupported pruning-state format 99.*reads formats"):
        PruningState(num_rows=6).load_state_dict(bad)


# ---------------------------------------------------------------------------------------------- cost of the hot path
VIEW_OPS = {
    "aten::view", "aten::_unsafe_view", "aten::reshape", "aten::_reshape_alias", "aten::slice", "aten::select",
    "aten::as_strided", "aten::expand", "aten::t", "aten::transpose", "aten::unsqueeze", "aten::squeeze",
    "aten::alias", "aten::detach", "aten::lift_fresh", "aten::empty", "aten::empty_strided", "aten::empty_like",
    "aten::resize_", "aten::result_type", "aten::to", "aten::_to_copy", "aten::contiguous",
}  # fmt: skip


def profiled_ops(fn) -> list[str]:
    """The leaf aten operators `fn` runs that do work (each one kernel on the CPU)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return [
        e.name for e in prof.events() if e.name.startswith("aten::") and not e.cpu_children and e.name not in VIEW_OPS
    ]


def test_hot_path_launches_at_most_six_kernels_per_micro_batch_and_never_syncs():
    n, batch, steps = 100_000, 32, 64
    state = PruningState(num_rows=n, track=build_strategy("emp", PruningOptions()).traits.required_tables)
    g = torch.Generator().manual_seed(0)
    batches = [
        (torch.randint(0, n, (batch,), generator=g), torch.rand(batch).bfloat16(), torch.rand(batch).bfloat16())
        for _ in range(steps)
    ]
    update(state, [0], [1.0], [1.0], epoch=0)  # allocate the buffer outside the profiled window
    state.flush()

    def one_epoch():
        for rows, loss, entropy in batches:
            state.update(rows, loss, entropy, epoch=1)
        state.flush()  # the epoch's flush, amortised over its micro-batches

    ops = profiled_ops(one_epoch)
    appends = profiled_ops(lambda: state.update(*batches[0], epoch=2))
    assert len(appends) == 3, appends  # three copies into the buffers
    assert len(ops) / steps <= 6, sorted(set(ops))
    syncs = {"aten::item", "aten::_local_scalar_dense", "aten::nonzero", "aten::is_nonzero"}
    assert not syncs & set(ops), sorted(syncs & set(ops))
    visited = len(torch.unique(torch.cat([b[0] for b in batches]))) + 1 + len(torch.unique(batches[0][0]))
    assert int(state.frequency.sum()) == visited  # epochs 1, 0 and 2: nothing lost on the way


# ------------------------------------------------------------------------------------------ on a GPU (when present)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_cuda_tracker_matches_the_reference():
    rng = np.random.default_rng(11)
    n = 40
    state, ref = PruningState(num_rows=n, device="cuda", buffer_rows=16), RefTracker(n, 0.9)
    for epoch, rows, loss, entropy in random_batches(rng, n, epochs=4, per_epoch=8):
        state.update(
            torch.as_tensor(rows).cuda(), torch.as_tensor(loss).cuda(), torch.as_tensor(entropy).cuda(), epoch
        )
        ref.update(rows, loss.astype(np.float64), entropy.astype(np.float64), epoch)
    cpu = PruningState(num_rows=n)
    cpu.load_state_dict(state.state_dict())
    assert_matches(cpu, ref)


@cuda
@pytest.mark.parametrize("method", sorted(STRATEGIES))
def test_cuda_plans_are_reproducible_and_read_back_on_the_cpu(method):
    n = 300
    runs = []
    for _ in range(2):
        strategy = build_strategy(method, PruningOptions(prune_ratio=0.6))
        state = PruningState(num_rows=n, device="cuda", track=strategy.traits.required_tables)
        schedule = EpochSchedule(num_rows=n, num_epochs=4, prune_ratio=0.6)
        planner = EpochPlanner(state, strategy, schedule, seed=5)
        g = torch.Generator().manual_seed(0)
        for epoch in range(4):
            plan = planner.plan(epoch)
            loss = torch.rand(len(plan), generator=g)
            state.update(plan.long().cuda(), loss.cuda(), loss.cuda(), epoch)
        runs.append(state)
    a, b = runs
    assert a.plans == b.plans  # the same on every process of a run
    cpu = PruningState(num_rows=n, track=a.tracked)
    cpu.load_state_dict(a.state_dict())
    assert cpu.plans == [p.clone() for p in a.plans]  # the order is a device-independent hash


@cuda
def test_mix64_is_the_same_on_cuda():
    from emp_hf.core.plan_history import draw_order

    rows = torch.randperm(100_000)[:50_000]
    assert torch.equal(draw_order(rows.cuda(), order_seed(1, 2)).cpu(), draw_order(rows, order_seed(1, 2)))
