"""How the pruning state scales with the number of training rows: memory, per-batch update, per-epoch plan.

    python benchmarks/tracker_scaling.py                       # N = 1e4 ... 1e8 on CPU, as memory allows
    python benchmarks/tracker_scaling.py --max-rows 1e7        # stop at ten million rows
    python benchmarks/tracker_scaling.py --device cuda         # tables on the GPU (plans are decided on CPU)

For each N it reports:

* bytes per row: the per-row tables of `PruningState` (with the trash slot), and what each recorded epoch
  plan adds (int32 per planned row);
* `update`: the median time of `PruningState.update` on a batch of `--batch` rows (256 by default; what one
  micro-batch gathered from every process costs the tracker), with the device synchronised around each call;
* `plan`: the time of `EpochPlanner.plan` on a pruned epoch (prune ratio 0.5) for every strategy: copying
  the tables to CPU, scoring, selecting and shuffling. Tables are filled with random statistics first.

Sizes whose estimated peak memory exceeds what is available are skipped with a note: 1e8 rows need 4 GB of
tables, and planning copies them to CPU and sorts N keys, ~160 B/row (16 GB at 1e8) at its peak on CPU;
`--plan-max-rows` times the plans only up to a smaller N. `--json` writes the results.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emp_hf.sampler import EpochPlanner  # noqa: E402
from emp_hf.schedule import EpochSchedule  # noqa: E402
from emp_hf.strategies import STRATEGIES, PruningOptions, build_strategy  # noqa: E402
from emp_hf.strategies.emp import EMP_SELECTIONS  # noqa: E402
from emp_hf.tracker import PruningState  # noqa: E402

# Peak bytes per row while planning, measured on CPU (tables + their CPU copy + the strategy's sort keys,
# permutations and Gumbel noise), with a margin; on a GPU the tables live there and the CPU needs the rest.
PLAN_PEAK_BYTES_PER_ROW = 160
TABLE_BYTES_PER_ROW = 40


def strategy_specs() -> list[tuple[str, str, PruningOptions]]:
    """(label, method, options) of every strategy and every EMP selection rule."""
    specs = []
    for name in sorted(STRATEGIES):
        if name == "emp":
            for rule in EMP_SELECTIONS:
                specs.append((f"emp:{rule}", name, PruningOptions(prune_ratio=0.5, emp_selection=rule)))
        elif name == "infobatch":
            specs.append((name, name, PruningOptions(prune_ratio=0.5)))
            matched = PruningOptions(prune_ratio=0.5, infobatch_match_budget=True)
            specs.append(("infobatch:matched", name, matched))
        else:
            specs.append((name, name, PruningOptions(prune_ratio=0.5)))
    return specs


def available_bytes(device: torch.device) -> tuple[int, int]:
    """(host bytes available, device bytes free; equal to the host's on CPU)."""
    try:
        import psutil

        host = psutil.virtual_memory().available
    except ImportError:  # pragma: no cover
        host = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return host, free
    return host, host


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def filled_state(n: int, device: torch.device, seed: int) -> PruningState:
    """A state that looks mid-training: every row observed once, a warm-up plan recorded."""
    g = torch.Generator().manual_seed(seed)
    state = PruningState(n, device=device)
    t = state.tables
    chunk = 1 << 24  # fill in chunks: no N-sized float64 temporaries
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        m = stop - start
        t["loss"][start:stop] = (torch.rand(m, generator=g) * 3).to(device)
        t["entropy"][start:stop] = torch.rand(m, generator=g).to(device)
        t["ema_mean"][start:stop] = (torch.rand(m, generator=g) * 3).to(device)
        t["ema_var"][start:stop] = (torch.rand(m, generator=g) * 0.1).to(device)
    t["frequency"][:n] = 1
    t["last_epoch"][:n] = 0
    state.record_plan(0, torch.arange(n))
    return state


def time_update(state: PruningState, batch: int, repeats: int, device: torch.device, seed: int) -> float:
    g = torch.Generator().manual_seed(seed)
    n = state.num_rows
    inputs = [
        (
            torch.randint(0, n, (batch,), generator=g).to(device),
            torch.rand(batch, generator=g).to(device, torch.bfloat16),
            torch.rand(batch, generator=g).to(device, torch.bfloat16),
        )
        for _ in range(repeats + 5)
    ]
    times = []
    for i, (rows, loss, entropy) in enumerate(inputs):
        sync(device)
        start = time.perf_counter()
        state.update(rows, loss, entropy, epoch=1 + i)  # a new epoch each call: every row is recorded
        sync(device)
        if i >= 5:  # warm-up calls
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_plans(
    state: PruningState, specs: list[tuple[str, str, PruningOptions]], repeats: int, seed: int
) -> dict[str, float]:
    schedule = EpochSchedule(num_rows=state.num_rows, num_epochs=4, prune_ratio=0.5, warmup_epochs=1)
    saved_plans = list(state.plans)
    results = {}
    for label, method, options in specs:
        planner = EpochPlanner(state, build_strategy(method, options), schedule, seed)
        times = []
        gc.collect()
        for _ in range(repeats):
            state.plans = list(saved_plans)  # plan epoch 1 afresh
            start = time.perf_counter()
            plan = planner.plan(1)
            sync(state.tables["loss"].device)
            times.append(time.perf_counter() - start)
            del plan
        results[label] = statistics.median(times)
    state.plans = saved_plans
    return results


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def fmt_rows(n: int) -> str:
    exponent = round(math.log10(n))
    return f"1e{exponent}" if 10**exponent == n else f"{n:,}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1e4,1e5,1e6,1e7,1e8", help="comma-separated row counts")
    p.add_argument("--max-rows", type=float, default=1e8, help="skip sizes above this")
    p.add_argument("--plan-max-rows", type=float, default=1e8, help="time plans only up to this N")
    p.add_argument("--device", default="cpu", help="where the tables live: cpu, cuda, cuda:1, ...")
    p.add_argument("--batch", type=int, default=256, help="rows per update call")
    p.add_argument("--update-repeats", type=int, default=200)
    p.add_argument("--plan-repeats", type=int, default=3, help="repeats of each plan (1 above 1e7 rows)")
    p.add_argument("--strategies", default="", help="comma-separated labels (default: all, see --list)")
    p.add_argument("--list", action="store_true", help="list the strategy labels and exit")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave the default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="", help="write the results to this file")
    args = p.parse_args(argv)

    specs = strategy_specs()
    if args.list:
        print("\n".join(label for label, _, _ in specs))
        return 0
    if args.strategies:
        wanted = set(args.strategies.split(","))
        unknown = wanted - {label for label, _, _ in specs}
        if unknown:
            p.error(f"unknown strategies {sorted(unknown)}; see --list")
        specs = [s for s in specs if s[0] in wanted]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch.cuda.is_available() is False")
    sizes = [int(float(s)) for s in args.sizes.split(",") if s]

    cpu = platform.processor() or platform.machine()
    machine = f"{cpu}, {os.cpu_count()} CPU cores, torch {torch.__version__}"
    if device.type == "cuda":
        machine += f", {torch.cuda.get_device_name(device)}"
    print(f"# tracker scaling on {device} ({machine}), {torch.get_num_threads()} torch threads", flush=True)
    results, notes = [], []
    for n in sizes:
        if n > args.max_rows:
            notes.append(f"N={fmt_rows(n)} skipped: above --max-rows {args.max_rows:.0e}")
            continue
        host, dev = available_bytes(device)
        with_plans = n <= args.plan_max_rows
        need_dev = TABLE_BYTES_PER_ROW * n
        need_host = (PLAN_PEAK_BYTES_PER_ROW if with_plans else TABLE_BYTES_PER_ROW) * n
        if device.type == "cuda":
            need_host -= need_dev
        if need_host > 0.9 * host or need_dev > 0.9 * dev:
            notes.append(
                f"N={fmt_rows(n)} skipped: needs ~{need_host / 2**30:.1f} GiB host"
                + (f" and {need_dev / 2**30:.1f} GiB on {device}" if device.type == "cuda" else "")
                + f", {host / 2**30:.1f} GiB host"
                + (f" / {dev / 2**30:.1f} GiB device" if device.type == "cuda" else "")
                + " available (lower --max-rows to silence)"
            )
            continue
        start = time.perf_counter()
        state = filled_state(n, device, args.seed)
        table_bytes = sum(t.numel() * t.element_size() for t in state.tables.values())
        update = time_update(state, args.batch, args.update_repeats, device, args.seed)
        plans = {}
        if with_plans:
            plans = time_plans(state, specs, args.plan_repeats if n <= 10**7 else 1, args.seed)
        else:
            notes.append(f"N={fmt_rows(n)}: plans not timed (above --plan-max-rows {args.plan_max_rows:.0e})")
        row = {
            "num_rows": n,
            "table_bytes_per_row": table_bytes / n,
            "table_mib": table_bytes / 2**20,
            "plan_bytes_per_row_per_epoch": state.plans[0].element_size(),
            "update_seconds": update,
            "batch": args.batch,
            "plan_seconds": plans,
        }
        results.append(row)
        print(
            f"# N={fmt_rows(n)} done in {time.perf_counter() - start:.1f} s: update {fmt_time(update)}, "
            + ", ".join(f"{k} {fmt_time(v)}" for k, v in plans.items()),
            flush=True,
        )
        del state
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    if results:
        print()
        header = "| N | tables (B/row) | tables (MiB) | plan (B/row/epoch) |"
        print(f"{header} update, batch {args.batch} (median) |")
        print("|---:|---:|---:|---:|---:|")
        for r in results:
            print(
                f"| {fmt_rows(r['num_rows'])} | {r['table_bytes_per_row']:.1f} | {r['table_mib']:,.1f} | "
                f"{r['plan_bytes_per_row_per_epoch']} | {fmt_time(r['update_seconds'])} |"
            )
        print()
        print("Time to plan one pruned epoch (`EpochPlanner.plan`, prune ratio 0.5):")
        print()
        print("| strategy | " + " | ".join(f"N={fmt_rows(r['num_rows'])}" for r in results) + " |")
        print("|---|" + "---:|" * len(results))
        for label, _, _ in specs:
            cells = [fmt_time(r["plan_seconds"].get(label)) for r in results]
            print(f"| {label} | " + " | ".join(cells) + " |")
    for note in notes:
        print(f"Note: {note}")
    if args.json:
        payload = {"device": str(device), "machine": machine, "threads": torch.get_num_threads()}
        payload.update(results=results, notes=notes)
        Path(args.json).write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
