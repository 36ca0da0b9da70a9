"""Bytes of pruning state each process holds with the rows sharded across 1, 2 and 4 CPU processes (gloo).

    python benchmarks/sharding_memory.py                          # N = 1e6, worlds 1, 2, 4
    python benchmarks/sharding_memory.py --rows 1e7 --worlds 1,2,4,8

For each world size W it launches W processes (`torchrun --standalone`; W = 1: plain `python`). Each process
builds the `PruningState` of each method (its `required_tables`), shards it as `EMPTrainer` does
(`shard_across_processes`, `attach_process_group`), trains one full epoch (every rank observes its share of
the rows in micro-batches, flushed through the real gather), plans a pruned epoch (prune ratio 0.5), and reports
what it then holds: `table_bytes()` (its rows' statistic tables plus the whole `weight` table, trash slots
included) and `plan_bytes()` (the plan history, the same on every process). The table prints, per method and W,
the largest process's bytes and their ratio to the one-process run measured in the same invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the checkout its processes import emp_hf from (PYTHONPATH)

METHODS = ("emp", "infobatch", "random", "ucb")
BATCH = 4096


def worker(num_rows: int, out_dir: str) -> None:
    import torch
    from accelerate import Accelerator

    from emp_hf.core.sampler import EpochPlanner
    from emp_hf.core.schedule import EpochSchedule
    from emp_hf.core.tracker import PruningState
    from emp_hf.integration.distributed import attach_process_group, shard_across_processes
    from emp_hf.strategies import PruningOptions, build_strategy

    acc = Accelerator(cpu=True)
    rank, world = acc.process_index, acc.num_processes
    results = []
    for method in METHODS:
        strategy = build_strategy(method, PruningOptions(prune_ratio=0.5))
        schedule = EpochSchedule(num_rows=num_rows, num_epochs=3, prune_ratio=0.5, warmup_epochs=1)
        state = PruningState(num_rows, track=strategy.traits.required_tables)
        shard_across_processes(state, acc)
        attach_process_group(state, acc, BATCH)
        planner = EpochPlanner(state, strategy, schedule, seed=0)
        plan = planner.plan(0)
        batches = plan.long().split(BATCH)
        steps = -(-len(batches) // world)
        for step in range(steps):  # rank r trains global batches r, r + W, ... (a missing one: padding)
            g = step * world + rank
            rows = batches[g] if g < len(batches) else torch.empty(0, dtype=torch.long)
            loss = (rows.double() * 0.618 % 1.0).float()
            state.update(rows, loss, loss * 0.5, epoch=0)
        planner.plan(1)
        results.append(
            {
                "method": method,
                "rank": rank,
                "world": world,
                "rows": state.row_stop - state.row_start,
                "table_bytes": state.table_bytes(),
                "plan_bytes": state.plan_bytes(),
                "plan_size": state.epoch_plan_sizes[1],
            }
        )
        del planner, state
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    acc.wait_for_everyone()


def launch(world: int, num_rows: int, out_dir: str) -> list[dict]:
    script = [str(Path(__file__).resolve()), "--worker", "--rows", str(num_rows), "--out", out_dir]
    if world == 1:
        cmd = [sys.executable, *script]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}", *script]
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    return [record for r in range(world) for record in json.loads(Path(out_dir, f"rank{r}.json").read_text())]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=float, default=1e6)
    p.add_argument("--worlds", default="1,2,4")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default="", help=argparse.SUPPRESS)
    opts = p.parse_args()
    num_rows = int(opts.rows)
    if opts.worker:
        worker(num_rows, opts.out)
        return 0
    worlds = [int(w) for w in opts.worlds.split(",")]
    if 1 not in worlds:
        worlds.insert(0, 1)  # the ratios are against one process, measured in the same invocation
    records = {}
    for world in worlds:
        with tempfile.TemporaryDirectory() as out:
            for record in launch(world, num_rows, out):
                records.setdefault((record["method"], world), []).append(record)
    print(f"\nN = {num_rows:,} rows; bytes held per process after planning a pruned epoch (largest process)\n")
    columns = ["method", "processes", "rows per process", "table bytes", "ratio to 1 process", "bytes per row of N"]
    print("| " + " | ".join([*columns, "plan history bytes"]) + " |")
    print("|---|---|---|---|---|---|---|")
    for method in METHODS:
        base = max(r["table_bytes"] for r in records[(method, 1)])
        for world in worlds:
            ranks = records[(method, world)]
            assert len({r["plan_size"] for r in ranks}) == 1, "plans differ across processes"
            held = max(r["table_bytes"] for r in ranks)
            rows = max(r["rows"] for r in ranks)
            plan = max(r["plan_bytes"] for r in ranks)
            print(
                f"| {method} | {world} | {rows:,} | {held:,} | {held / base:.3f} | {held / num_rows:.2f} | {plan:,} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
