"""Feed a sharded `PruningState` under W processes and a one-process reference the same observations; record both.

    torchrun --standalone --nproc_per_node 2 tests/distributed/run_sharding.py --output_dir OUT --save_dir CKPT
    torchrun --standalone --nproc_per_node 4 tests/distributed/run_sharding.py --output_dir OUT --resume CKPT
    python tests/distributed/run_sharding.py --output_dir OUT --resume CKPT                  # 1 process

For every pruning method, each process plans `EPOCHS` epochs with `EpochPlanner` on its sharded state and trains
the plan as Accelerate's `BatchSamplerShard` with `even_batches` would deal it (global batches of `BATCH` rows,
batch `g` to rank `g % W`, the last ones filled by looping back to the plan's start), buffering the observations
(per-row losses that depend on the row and the epoch only, some non-finite) and flushing them with the real
gather. In the same process a whole state (no collective) gets the same observations step-major, planned by its
own planner: the one-process run. Global batches are W-independent, so every world size, fresh or resumed, must
end in the same state.

`--save_dir` saves a checkpoint (`emp_hf.integration.checkpoint.save_pruning_state`, the main process, inside
`whole()`) after
`STOP_BATCHES` global batches of epoch `STOP_EPOCH`; `--resume DIR` loads it (whole, then sharded, as `EMPTrainer`
does) and continues from there. Each rank writes `OUT/rank<r>.json`: its row block, its local tables' lengths,
whether they equal the reference's block bit for bit, the plans of both, hashes of the assembled and reference
tables, the non-finite counts and the bytes it holds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import torch
from accelerate import Accelerator

from emp_hf.core.sampler import EpochPlanner
from emp_hf.core.schedule import EpochSchedule
from emp_hf.core.tracker import PruningState
from emp_hf.integration.checkpoint import load_pruning_state, save_pruning_state
from emp_hf.integration.distributed import attach_process_group, shard_across_processes
from emp_hf.strategies import STRATEGIES, PruningOptions, build_strategy
from emp_hf_dev.launching import end_process_group

N = 1003  # no world size divides it
BATCH = 8
EPOCHS = 4
STOP_EPOCH, STOP_BATCHES = 1, 24  # a multiple of every world size tested (1, 2, 4)
METHODS = [*sorted(set(STRATEGIES) - {"none"}), "emp+margin"]  # "+margin": with the area under the margin


def observations(rows: torch.Tensor, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row losses and entropies that depend on the row and the epoch; some are non-finite."""
    x = rows.double()
    loss = ((x * 0.6180339 + epoch * 0.37) % 1.0 * 3.0 + 0.05).float()
    entropy = ((x * 0.4142 + epoch * 0.11) % 1.0).float()
    loss[(rows % 97 == 5) & (epoch == 2)] = float("nan")
    return loss, entropy


def margins(rows: torch.Tensor, epoch: int) -> torch.Tensor:
    """Per-row margins that depend on the row and the epoch, in [-2, 2)."""
    return ((rows.double() * 0.7071 + epoch * 0.23) % 1.0 * 4.0 - 2.0).float()


def global_batches(plan: torch.Tensor, world: int) -> list[torch.Tensor]:
    """The epoch's global batches as `BatchSamplerShard(even_batches=True)` deals them: whole, looped back."""
    batches = -(-plan.numel() // BATCH)
    slots = -(-batches // world) * world * BATCH
    looped = plan.repeat(-(-slots // plan.numel()))[:slots]
    return list(looped.long().split(BATCH))


def table_hash(tables: dict[str, torch.Tensor]) -> str:
    """SHA-256 of every row's tables (no trash slot), names and dtypes included."""
    h = hashlib.sha256()
    for name in sorted(tables):
        t = tables[name][:-1].contiguous()
        h.update(f"{name}:{t.dtype}:{t.numel()};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equality (NaN equal to NaN)."""
    return a.dtype == b.dtype and a.shape == b.shape and bool(torch.equal(a.view(torch.uint8), b.view(torch.uint8)))


def run_method(method: str, acc: Accelerator, opts: argparse.Namespace) -> dict:
    rank, world = acc.process_index, acc.num_processes
    name, _, extra = method.partition("+")
    options = PruningOptions(prune_ratio=0.5)
    schedule = EpochSchedule(num_rows=N, num_epochs=EPOCHS, prune_ratio=0.5, warmup_epochs=1)
    strategy, ref_strategy = build_strategy(name, options), build_strategy(name, options)
    track = strategy.traits.required_tables | ({"margin"} if extra == "margin" else set())
    state = PruningState(N, track=track, buffer_rows=4 * BATCH)
    reference = PruningState(N, track=track)

    def margin(rows: torch.Tensor, epoch: int) -> torch.Tensor | None:
        return margins(rows, epoch) if extra == "margin" else None

    start_epoch, skip = 0, 0
    if opts.resume:
        directory = os.path.join(opts.resume, method)
        load_pruning_state(state, directory)
        load_pruning_state(reference, directory)
        start_epoch, skip = STOP_EPOCH, STOP_BATCHES
    shard_across_processes(state, acc)  # as EMPTrainer: created (or loaded) whole, then each keeps its block
    attach_process_group(state, acc, BATCH)
    planner = EpochPlanner(state, strategy, schedule, seed=7)
    ref_planner = EpochPlanner(reference, ref_strategy, schedule, seed=7)
    for epoch in range(start_epoch, EPOCHS):
        plan, ref_plan = planner.plan(epoch), ref_planner.plan(epoch)
        batches, ref_batches = global_batches(plan, world), global_batches(ref_plan, world)
        first = skip if epoch == start_epoch else 0
        for g in range(first, len(batches)):
            if g % world == rank:
                state.update(batches[g], *observations(batches[g], epoch), epoch, margin(batches[g], epoch))
            if g < len(ref_batches):  # the one-process run trains its own plan
                batch = ref_batches[g]
                reference.update(batch, *observations(batch, epoch), epoch, margin(batch, epoch))
            if opts.save_dir and epoch == STOP_EPOCH and g + 1 == STOP_BATCHES:
                with state.whole():  # on every process; the main one writes every row's state
                    if acc.is_main_process:
                        save_pruning_state(state, os.path.join(opts.save_dir, method))
                acc.wait_for_everyone()
    state.flush()  # the gather of the last observations (every process)
    local = {name: table.clone() for name, table in state._tables.items()}  # this process's own tables, as held
    if state._weights is not None:  # the loss weights, whole on every process (one byte a row)
        local["weight"] = state._weights.dense()
    ref_tables = reference.tables
    local_equal = {}
    for name, table in local.items():
        expected = ref_tables[name][:-1] if name == "weight" else ref_tables[name][state.row_start : state.row_stop]
        local_equal[name] = same(table[:-1], expected)
    held = state.table_bytes()
    assembled = state.tables  # one collective, every process
    return {
        "method": method,
        "rank": rank,
        "world_size": world,
        "rows": [state.row_start, state.row_stop],
        "local_rows": {name: t.numel() - 1 for name, t in local.items()},
        "local_equal": local_equal,
        "plans": [p.tolist() for p in state.plans],
        "ref_plans": [p.tolist() for p in reference.plans],
        "hash": table_hash(assembled),
        "ref_hash": table_hash(ref_tables),
        "frequency_total": int(state.frequency.long().sum()),
        "ref_frequency_total": int(reference.frequency.long().sum()),
        "nonfinite": int(state.nonfinite_count),
        "ref_nonfinite": int(reference.nonfinite_count),
        "table_bytes": held,
        "ref_table_bytes": reference.table_bytes(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--save_dir", default="", help="save a checkpoint mid-run here")
    p.add_argument("--resume", default="", help="continue from the checkpoint saved in this directory")
    p.add_argument("--methods", default=",".join(METHODS))
    opts = p.parse_args(argv)
    acc = Accelerator(cpu=True)
    results = [run_method(method, acc, opts) for method in opts.methods.split(",") if method]
    out = Path(opts.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{acc.process_index}.json").write_text(json.dumps(results))
    acc.wait_for_everyone()
    return 0


if __name__ == "__main__":
    code = main()
    end_process_group()
    sys.exit(code)
