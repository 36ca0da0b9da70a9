"""How the pruning state scales with the number of training rows: bytes per row and time to plan an epoch.

    python benchmarks/tracker_scaling.py --threads 1                       # N = 1e4 ... 1e8 on CPU, as memory allows
    python benchmarks/tracker_scaling.py --threads 1 --max-rows 1e7        # stop at ten million rows
    python benchmarks/tracker_scaling.py --device cuda                     # tables and planning on the GPU

For each N and each strategy (every EMP selection rule, InfoBatch with and without budget matching):

* bytes per row: the per-row tables the strategy keeps (`required_tables`, plus `frequency` and `last_epoch`;
  the trash slot included), and what one pruned epoch adds to the plan history (a kept-row bitmap);
* `plan`: the time of `EpochPlanner.plan` on a pruned epoch (prune ratio 0.5), on the tables' device, with the
  device synchronised (on the CPU also the process CPU time, which other jobs on the machine do not inflate):
  flushing, scoring, selecting, packing the bitmap and drawing the order (the ordered plan
  ends on the CPU, as the sampler yields it). Tables are filled with random statistics first;
* `flush`: the time to apply a full observation buffer (`--buffer-rows` rows of one epoch) to the tables.

Sizes whose estimated peak memory exceeds what is available are skipped with a note (~100 bytes per row at the
peak of planning on the CPU, see `PLAN_PEAK_BYTES_PER_ROW`); `--plan-max-rows` times the plans only up to a
smaller N. `peak RSS` is the process's peak resident memory so far (sizes run in increasing order). `--json`
writes the results.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from emp_hf.sampler import EpochPlanner, order_seed  # noqa: E402
from emp_hf.schedule import EpochSchedule  # noqa: E402
from emp_hf.strategies import STRATEGIES, PruningOptions, build_strategy  # noqa: E402
from emp_hf.strategies.emp import EMP_SELECTIONS  # noqa: E402
from emp_hf.tracker import BUFFER_ROWS, PruningState  # noqa: E402

#: Peak bytes per row while planning on the CPU (tables, sort keys, permutations, Gumbel noise, the plan), with a
#: margin: measured peak RSS at 1e7 rows was ~90 bytes per row for `emp:spaced`, the most demanding rule.
PLAN_PEAK_BYTES_PER_ROW = 110


def strategy_specs() -> list[tuple[str, str, PruningOptions]]:
    """(label, method, options) of every strategy, every EMP selection rule and both SeTa groupings."""
    specs = []
    for name in sorted(STRATEGIES):
        if name == "emp":
            for rule in EMP_SELECTIONS:
                specs.append((f"emp:{rule}", name, PruningOptions(prune_ratio=0.5, emp_selection=rule)))
        elif name == "seta":
            specs.append((name, name, PruningOptions(prune_ratio=0.5)))
            specs.append(("seta:kmeans", name, PruningOptions(prune_ratio=0.5, seta_grouping="kmeans")))
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


def filled_state(n: int, track: frozenset[str], device: torch.device, seed: int) -> PruningState:
    """A state that looks mid-training: every row observed once, a warm-up epoch planned."""
    g = torch.Generator().manual_seed(seed)
    state = PruningState(n, device=device, track=track)
    t = state.tables
    chunk = 1 << 24  # fill in chunks: no N-sized float64 temporaries
    scales = {"loss": 3.0, "entropy": 1.0, "ema_mean": 3.0, "ema_var": 0.1, "score": 3.0}
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        for name, scale in scales.items():
            if name in t:
                t[name][start:stop] = (torch.rand(stop - start, generator=g) * scale).to(device)
    t["frequency"][:n] = 1
    t["last_epoch"][:n] = 0
    state.record_selection(0, None, order_seed(seed, 0))
    return state


def time_flush(state: PruningState, rows: int, device: torch.device, seed: int, repeats: int = 3) -> float:
    """Median time to apply `rows` buffered observations of one epoch (a fresh epoch per repeat)."""
    g = torch.Generator().manual_seed(seed)
    n = state.num_rows
    times = []
    for epoch in range(1, repeats + 2):
        batch = torch.randint(0, n, (rows,), generator=g).to(device)
        values = torch.rand(rows, generator=g).to(device)
        state.update(batch, values, values, epoch=100 + epoch)
        sync(device)
        start = time.perf_counter()
        state.flush()
        sync(device)
        if epoch > 1:  # the first one warms up
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_plan(
    state: PruningState, method: str, options: PruningOptions, repeats: int, seed: int
) -> tuple[float, float]:
    """Median wall-clock and process CPU seconds of planning a pruned epoch (CPU seconds are what a loaded,
    shared machine does not inflate, with one torch thread)."""
    # no warm-up, so epoch 1 is SeTa's second pruned epoch (t = 1: a real window; t = 0 is a uniform sample)
    schedule = EpochSchedule(num_rows=state.num_rows, num_epochs=4, prune_ratio=0.5, warmup_epochs=0)
    planner = EpochPlanner(state, build_strategy(method, options), schedule, seed)
    walls, cpus = [], []
    for _ in range(repeats):
        del state.plans.entries[1:]  # plan epoch 1 afresh (a benchmark-only rewind of the history)
        gc.collect()
        sync(state.device)
        start, cpu_start = time.perf_counter(), time.process_time()
        planner.plan(1)
        sync(state.device)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu_start)
    return statistics.median(walls), statistics.median(cpus)


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


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1e4,1e5,1e6,1e7,1e8", help="comma-separated row counts")
    p.add_argument("--max-rows", type=float, default=1e8, help="skip sizes above this")
    p.add_argument("--plan-max-rows", type=float, default=1e8, help="time plans only up to this N")
    p.add_argument("--device", default="cpu", help="where the tables live: cpu, cuda, cuda:1, ...")
    p.add_argument("--buffer-rows", type=int, default=BUFFER_ROWS, help="rows per timed flush")
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
        need = (PLAN_PEAK_BYTES_PER_ROW if with_plans else 32) * n
        if need > 0.9 * (dev if device.type == "cuda" else host):
            notes.append(
                f"N={fmt_rows(n)} skipped: needs ~{need / 2**30:.1f} GiB on {device}, "
                f"{(dev if device.type == 'cuda' else host) / 2**30:.1f} GiB available (lower --max-rows to silence)"
            )
            continue
        start = time.perf_counter()
        row = {"num_rows": n, "strategies": {}}
        for label, method, options in specs:
            track = build_strategy(method, options).traits.required_tables
            state = filled_state(n, track, device, args.seed)
            entry = {"table_bytes_per_row": state.table_bytes() / n, "tables": sorted(state.tracked)}
            if label == specs[0][0]:
                row["flush_seconds"] = time_flush(state, args.buffer_rows, device, args.seed)
            if with_plans:
                before = state.plan_bytes()
                repeats = args.plan_repeats if n <= 10**7 else 1
                entry["plan_seconds"], entry["plan_cpu_seconds"] = time_plan(state, method, options, repeats, 0)
                entry["plan_bytes_per_epoch"] = state.plan_bytes() - before
            row["strategies"][label] = entry
            del state
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        if not with_plans:
            notes.append(f"N={fmt_rows(n)}: plans not timed (above --plan-max-rows {args.plan_max_rows:.0e})")
        row["peak_rss_bytes"] = peak_rss_bytes()
        if device.type == "cuda":
            row["peak_device_bytes"] = torch.cuda.max_memory_allocated(device)
        results.append(row)
        print(
            f"# N={fmt_rows(n)} done in {time.perf_counter() - start:.1f} s: flush {fmt_time(row['flush_seconds'])}, "
            + ", ".join(f"{k} {fmt_time(v.get('plan_seconds'))}" for k, v in row["strategies"].items()),
            flush=True,
        )

    if results:
        labels = [label for label, _, _ in specs]
        cols = " | ".join(f"N={fmt_rows(r['num_rows'])}" for r in results)
        print("\nBytes per row: per-row tables (trash slot included); plan history per pruned epoch\n")
        print("| strategy | tables kept | tables (B/row) | plan history (B/row/epoch) |")
        print("|---|---|---:|---:|")
        last = results[-1]["strategies"]
        for label in labels:
            e = last[label]
            plan = e.get("plan_bytes_per_epoch")
            plan_cell = "-" if plan is None else f"{plan / results[-1]['num_rows']:.3f}"
            kept = ", ".join(t for t in e["tables"] if t not in ("frequency", "last_epoch"))
            print(f"| {label} | {kept} | {e['table_bytes_per_row']:.1f} | {plan_cell} |")
        print(f"\nTime to plan one pruned epoch (`EpochPlanner.plan`, prune ratio 0.5, on {device}):\n")
        print(f"| strategy | {cols} |")
        print("|---|" + "---:|" * len(results))
        for label in labels:
            cells = [fmt_time(r["strategies"][label].get("plan_seconds")) for r in results]
            print(f"| {label} | " + " | ".join(cells) + " |")
        flush_cells = " | ".join(fmt_time(r["flush_seconds"]) for r in results)
        print(f"| flush of {args.buffer_rows:,} buffered rows | {flush_cells} |")
        rss_cells = " | ".join(f"{r['peak_rss_bytes'] / 2**30:.2f} GiB" for r in results)
        print(f"| peak RSS so far | {rss_cells} |")
        if device.type == "cpu":
            print("\nThe same, process CPU time (what the planning itself used, whatever the machine's load):\n")
            print(f"| strategy | {cols} |")
            print("|---|" + "---:|" * len(results))
            for label in labels:
                cells = [fmt_time(r["strategies"][label].get("plan_cpu_seconds")) for r in results]
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
