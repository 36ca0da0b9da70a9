"""Gather per-example observations from every process (int64 rows and float32 values, separately, once per flush),
and shard the pruning state's rows across the processes (`shard_across_processes`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from accelerate import Accelerator

from ..core.tracker import PruningState


def step_major(rows: torch.Tensor, values: torch.Tensor, num_processes: int, batch_size: int):
    """Reorder gathered buffers from process-major (process 0's micro-batches, then process 1's, ...) to step-major
    (step 0 of every process in process order, then step 1, ...): the order a per-micro-batch gather gives."""
    steps = rows.numel() // (num_processes * batch_size)
    rows = rows.view(num_processes, steps, batch_size).transpose(0, 1).reshape(-1)
    values = values.view(num_processes, steps, batch_size, -1)  # loss, entropy[, margin]
    values = values.transpose(0, 1).reshape(rows.numel(), -1)
    return rows, values


def gather_observations(
    accelerator: Accelerator, rows: torch.Tensor, loss: torch.Tensor, entropy: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All processes' `(rows, loss, entropy)` of whole micro-batches, in step order then process order.

    `rows` holds one micro-batch (padded here to `batch_size` with row -1) or several micro-batches of exactly
    `batch_size` rows each (the observation buffer, already padded). Rows stay int64 (a float gather corrupts ids
    above 2**24, or 256 in bf16). A fixed size per micro-batch means no sizes need gathering (no extra
    collective, no host sync); the tracker ignores the padding and the duplicates that `even_batches` adds.
    """
    values = torch.stack([loss.float(), entropy.float()], dim=1)
    rows = rows.to(values.device, torch.int64)
    if accelerator.num_processes == 1:
        return rows, values[:, 0], values[:, 1]
    k = rows.numel()
    if k <= batch_size:
        rows = F.pad(rows, (0, batch_size - k), value=-1)
        values = F.pad(values, (0, 0, 0, batch_size - k), value=float("nan"))
    elif k % batch_size:
        raise ValueError(f"A micro-batch of {k} rows exceeds the per-device batch size {batch_size}.")
    rows, values = accelerator.gather((rows.contiguous(), values.contiguous()))
    rows, values = step_major(rows, values, accelerator.num_processes, batch_size)
    return rows, values[:, 0], values[:, 1]


class ProcessGather:
    """The `PruningState.gather` of a multi-process run: one `accelerator.gather` of the whole buffer per flush."""

    def __init__(self, accelerator: Accelerator, batch_size: int) -> None:
        self.accelerator = accelerator
        self.batch_size = batch_size

    def __call__(self, rows: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gathered_rows, gathered_values = self.accelerator.gather((rows.contiguous(), values.t().contiguous()))
        gathered_rows, gathered_values = step_major(
            gathered_rows, gathered_values, self.accelerator.num_processes, self.batch_size
        )
        return gathered_rows, gathered_values.t()

    def __deepcopy__(self, memo: dict) -> ProcessGather:  # a copied state keeps the process group
        return self


class ProcessShards:
    """The `PruningState.shards` of a multi-process run: this process's rank, and accelerate's collectives."""

    def __init__(self, accelerator: Accelerator) -> None:
        self.accelerator = accelerator
        self.rank = accelerator.process_index
        self.world = accelerator.num_processes

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.accelerator.gather(tensor.contiguous())

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.accelerator.reduce(tensor, reduction="sum")

    def __deepcopy__(self, memo: dict) -> ProcessShards:  # a copied state keeps the process group
        return self


def shard_across_processes(state: PruningState, accelerator: Accelerator) -> None:
    """Make each process keep only its block of `state`'s rows (a no-op with one process, or if sharded already).

    Call it on every process, with the state whole (e.g. right after creating or loading it); nothing is exchanged.
    """
    if accelerator.num_processes > 1 and state.shards is None:
        state.shard(ProcessShards(accelerator))


def attach_process_group(state: PruningState, accelerator: Accelerator, batch_size: int) -> None:
    """Make `state` gather from every process at each flush (a no-op with one process, or if already attached).

    Each process then pads every micro-batch to `batch_size` rows in the buffer, so every buffer holds the same
    number of slots and the flush needs one gather, no exchange of sizes; a sharded state (`shard_across_processes`)
    applies only the gathered observations of its own rows. Every process must flush at the same points: read the
    state (or call `state.flush()`) on every process, never on one alone.
    """
    if accelerator.num_processes == 1 or isinstance(state.gather, ProcessGather):
        return
    state.flush()
    state.gather = ProcessGather(accelerator, batch_size)
    state.micro_batch_width = batch_size
