"""Row indices above 2**24 survive the observation path with bf16/fp16 losses.

float32 represents every integer only up to 2**24 (bf16 up to 2**8, fp16 up to 2**11): gathering indices in
the loss dtype (as InfoBatch does with `cat([indices, losses])`) silently updates the wrong rows. emp_hf keeps
indices int64 from the collator to the tracker and gathers them separately from the float32 values.
"""

from __future__ import annotations

import os
import sys
import types

import numpy as np
import pytest
import torch

from emp_hf import EMPTrainer, PruningState
from emp_hf.integration.distributed import gather_observations
from emp_hf_dev.launching import run_processes, torchrun_cmd

N = 2**24 + 10  # ~670 MB of per-row tables per state
BIG = [2**24 + 1, 2**24 + 3, 2**24 + 5, 2**24 + 9]  # none is representable in float32


def _bf16_values(k: int, offset: float) -> torch.Tensor:
    return (torch.arange(k, dtype=torch.float32) * 0.375 + offset).to(torch.bfloat16)


@pytest.fixture(scope="module")
def big_state() -> PruningState:
    return PruningState(N)


def test_the_indices_are_not_float32_representable():
    rows = torch.tensor(BIG, dtype=torch.int64)
    assert not torch.equal(rows.to(torch.float32).to(torch.int64), rows)  # the bug being guarded against
    assert not torch.equal(rows.to(torch.bfloat16).to(torch.int64), rows)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_update_records_exact_rows_above_2_24(big_state, dtype):
    state = big_state
    epoch = 0 if dtype == torch.bfloat16 else 1  # a new epoch per case: the same rows may count again
    # -1 is padding, N is out of range, BIG[3] appears twice (an even_batches duplicate)
    rows = torch.tensor([*BIG, BIG[3], -1, N, 7], dtype=torch.int64)
    loss = torch.tensor([0.5, 1.25, 2.0, 3.5, 9.0, 8.0, 8.0, 0.75], dtype=dtype)
    entropy = torch.tensor([0.1, 0.2, 0.3, 0.4, 9.0, 8.0, 8.0, 0.6], dtype=dtype)
    before = state.frequency.clone()
    state.update(rows, loss, entropy, epoch)
    expected_rows = torch.tensor([*BIG, 7])
    changed = torch.nonzero(state.frequency != before).flatten()
    assert torch.equal(changed, expected_rows.sort().values)
    visits = state.frequency[expected_rows] - before[expected_rows]
    assert torch.equal(visits, torch.ones(5, dtype=torch.int64))
    assert torch.equal(state.last_epoch[expected_rows], torch.full((5,), epoch))
    keep = [0, 1, 2, 3, 7]  # the first occurrence of BIG[3] wins
    assert torch.equal(state.loss[expected_rows], loss[keep].float())
    assert torch.equal(state.entropy[expected_rows], entropy[keep].float())
    for neighbour in (2**24, 2**24 + 2, 2**24 + 4, 2**24 + 8):  # where float32 rounding would land
        assert state.frequency[neighbour] == before[neighbour]
    assert state.tables["frequency"][N] >= 0  # the trash slot absorbs padding/duplicates, never a real row


def _stub_trainer(accelerator, state: PruningState, batch_size: int, epoch: int = 0):
    """The attributes `EMPTrainer._observe` reads."""
    return types.SimpleNamespace(
        accelerator=accelerator, pruning_state=state, _train_batch_size=batch_size, _epoch=epoch
    )


def test_observe_single_process_keeps_int64_rows():
    from accelerate import Accelerator

    state = PruningState(N)
    stub = _stub_trainer(Accelerator(cpu=True), state, batch_size=4)
    rows = torch.tensor(BIG, dtype=torch.int64)
    loss = _bf16_values(4, 1.0)
    EMPTrainer._observe(stub, rows, loss, _bf16_values(4, 0.25))
    assert torch.equal(torch.nonzero(state.frequency).flatten(), rows)
    assert torch.equal(state.loss[rows], loss.float())


def _observe_on_two_ranks(out_dir: str) -> None:
    """Runs in each of 2 processes: rank 1 has a short batch (padding path), rows above 2**24, bf16 losses."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    rank = accelerator.process_index
    assert accelerator.num_processes == 2, accelerator.num_processes
    state = PruningState(N)
    stub = _stub_trainer(accelerator, state, batch_size=4)
    if rank == 0:
        rows = torch.tensor([BIG[0], BIG[1], BIG[2], 11], dtype=torch.int64)
    else:  # a short last batch: _observe pads it to 4 with -1; BIG[2] is an even_batches duplicate
        rows = torch.tensor([BIG[3], BIG[2]], dtype=torch.int64)
    loss = _bf16_values(rows.numel(), 1.0 + 10 * rank)
    entropy = _bf16_values(rows.numel(), 0.5 + 10 * rank)
    EMPTrainer._observe(stub, rows, loss, entropy)
    touched = torch.nonzero(state.frequency).flatten()
    # a batch larger than the fixed gather size fails on every process before any collective (no hang)
    too_big = torch.arange(5, dtype=torch.int64)
    try:
        gather_observations(accelerator, too_big, torch.ones(5), torch.ones(5), batch_size=4)
    except ValueError:
        pass
    else:
        raise AssertionError("an oversized micro-batch was gathered")
    np.savez(
        os.path.join(out_dir, f"rank{rank}.npz"),
        touched=touched.numpy(),
        frequency=state.frequency[touched].numpy(),
        loss=state.loss[touched].numpy(),
        entropy=state.entropy[touched].numpy(),
        nan_loss=int(torch.isnan(state.loss).sum()),
    )
    accelerator.wait_for_everyone()


@pytest.mark.distributed
def test_observe_gathers_rows_above_2_24_across_two_processes(tmp_path):
    # torchrun starts fresh processes. accelerate.debug_launcher forks this pytest process instead, and a
    # child forked after the parent ran an OpenMP parallel region (any large tensor op) hangs in libgomp.
    code, out = run_processes(torchrun_cmd(__file__, str(tmp_path)), timeout=120, what="2-process gather")
    assert code == 0, out[-6000:]
    r0, r1 = (np.load(tmp_path / f"rank{r}.npz") for r in range(2))
    for key in r0.files:
        np.testing.assert_array_equal(r0[key], r1[key], err_msg=key)  # both ranks hold the same state
    expected_rows = sorted([BIG[0], BIG[1], BIG[2], 11, BIG[3]])
    np.testing.assert_array_equal(r0["touched"], expected_rows)
    np.testing.assert_array_equal(r0["frequency"], np.ones(5, dtype=np.int64))
    # gather order is rank 0 then rank 1, so rank 0's BIG[2] is the first occurrence; padding is dropped
    loss0 = _bf16_values(4, 1.0).float().numpy()
    loss1 = _bf16_values(2, 11.0).float().numpy()
    by_row = {BIG[0]: loss0[0], BIG[1]: loss0[1], BIG[2]: loss0[2], 11: loss0[3], BIG[3]: loss1[0]}
    np.testing.assert_array_equal(r0["loss"], [by_row[r] for r in expected_rows])
    assert r0["nan_loss"] == N - 5


if __name__ == "__main__":  # the 2-process half of the test above, under torchrun
    _observe_on_two_ranks(sys.argv[1])
