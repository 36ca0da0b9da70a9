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
* `primitives`: beside each plan, in the same process, the fewest operations its rule needs (`primitives`:
  for `random`, `emp`, `infobatch` and `seta`), and `ratio` = plan / primitives (process CPU time);
* the peak RSS while planning (on Linux: the peak is reset just before, `/proc/self/clear_refs`) and what
  planning added to the process, against the table bytes;
* `flush`: the time to apply a full observation buffer (`--buffer-rows` rows of one epoch) to the tables.

Sizes whose estimated peak memory exceeds what is available are skipped with a note (~80 bytes per row at the
peak of planning on the CPU for the most demanding rule, see `PLAN_PEAK_BYTES_PER_ROW`); `--plan-max-rows` times
the plans only up to a smaller N. `peak RSS so far` is the process's peak resident memory over the run (sizes in
increasing order). `--json` writes the results; `--no-primitives` skips the primitive column.
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

from emp_hf.core.sampler import EpochPlanner, order_seed  # noqa: E402
from emp_hf.core.schedule import EpochSchedule  # noqa: E402
from emp_hf.core.tracker import BUFFER_ROWS, PruningState  # noqa: E402
from emp_hf.strategies import STRATEGIES, PruningOptions, build_strategy  # noqa: E402
from emp_hf.strategies.emp import EMP_SELECTIONS  # noqa: E402

#: Peak bytes per row while planning on the CPU (tables, keys, masks, permutations, the plan), with a margin:
#: at 1e7 rows planning added at most 52 bytes per row to the 16 of the tables (`emp:epsilon_greedy`, which still
#: sorts every row); 6-26 for `random`, `emp:sample`, `infobatch` and `seta` (`docs/benchmarks.md`).
PLAN_PEAK_BYTES_PER_ROW = 80


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


def permute_kept(mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Primitive: the kept rows of `mask`, in a uniformly random order (`nonzero`, then `kept[randperm(K)]`)."""
    kept = torch.nonzero(mask).flatten()
    return kept[torch.randperm(kept.numel(), generator=generator, device=generator.device)]


def primitives(method: str, options: PruningOptions, tables: dict[str, torch.Tensor], num_keep: int, seed: int):
    """The plan of `method` written with the fewest operations its rule needs (float32 throughout, one shot, no
    exact budget, ties ignored), or None for a method without one. The lower bound planning is compared to:

    * `random`: a Bernoulli keep (`rand(N) < K / N`), then a permutation of the kept rows;
    * `emp`: the score `loss + beta * entropy`, Gumbel keys `log(score) - log(-log(u))`, the `K`-th largest
      (`kthvalue`), the rows above it, then a permutation (every EMP rule is compared to this, the default's);
    * `infobatch`: the mean loss, the below-mean mask, a uniform share of it pruned (a Bernoulli draw of the
      pruned share), the weights (`where`), then a permutation of the kept rows;
    * `seta`: a uniform subset (a Bernoulli draw of `M / N`), a sort of its losses, the window of `K` of them,
      then a permutation.
    """
    g = torch.Generator(device=tables["loss"].device).manual_seed(seed)
    device = tables["loss"].device
    n = tables["loss"].numel()
    loss = tables["loss"]
    if method == "random":
        return permute_kept(torch.rand(n, generator=g, device=device) < num_keep / n, g)
    if method == "emp":
        score = loss + options.memory_weight * tables["entropy"]
        keys = torch.log(score) - torch.log(-torch.log(torch.rand(n, generator=g, device=device)))
        threshold = torch.kthvalue(keys, n - num_keep + 1).values
        return permute_kept(keys >= threshold, g)
    if method == "infobatch":
        below = loss < loss.mean()
        share = options.prune_ratio
        if options.infobatch_match_budget:
            share = min((n - num_keep) / max(int(below.sum()), 1), 1.0)
        keep = ~(below & (torch.rand(n, generator=g, device=device) < share))
        weight = torch.where(below & keep, 1.0 / (1.0 - min(share, 0.999)), 1.0)
        return permute_kept(keep, g), weight
    if method == "seta":
        window = round(options.seta_num_groups * options.seta_window_scale)
        size = min(n, math.ceil(num_keep * options.seta_num_groups / window))
        subset = torch.nonzero(torch.rand(n, generator=g, device=device) < size / n).flatten()
        easy_to_hard = subset[torch.sort(loss[subset]).indices]
        start = min(size // options.seta_num_groups, max(easy_to_hard.numel() - num_keep, 0))
        mask = torch.zeros(n, dtype=torch.bool, device=device)
        mask[easy_to_hard[start : start + num_keep]] = True
        return permute_kept(mask, g)
    return None


def time_primitives(
    state: PruningState, method: str, options: PruningOptions, repeats: int, seed: int
) -> tuple[float, float] | None:
    """Median wall-clock and process CPU seconds of `primitives` (None for a method without them)."""
    tables = state.device_tables()
    num_keep = EpochSchedule(num_rows=state.num_rows, num_epochs=4, prune_ratio=0.5, warmup_epochs=0).num_keep
    walls, cpus = [], []
    for _ in range(repeats):
        gc.collect()
        sync(state.device)
        start, cpu_start = time.perf_counter(), time.process_time()
        out = primitives(method, options, tables, num_keep, seed)
        sync(state.device)
        if out is None:
            return None
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu_start)
        del out
    return statistics.median(walls), statistics.median(cpus)


def _proc_status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the process's peak RSS (Linux `clear_refs`), so the next read is the peak of what follows."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:  # pragma: no cover - not Linux, or not allowed
        return False


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
    p.add_argument(
        "--no-primitives", dest="primitives", action="store_false", help="skip timing the primitive operations"
    )
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
                gc.collect()
                rss_before = _proc_status_bytes("VmRSS") if device.type == "cpu" and reset_peak_rss() else None
                entry["plan_seconds"], entry["plan_cpu_seconds"] = time_plan(state, method, options, repeats, 0)
                if rss_before is not None:  # the peak RSS of planning, and what planning added to the process
                    entry["plan_peak_rss_bytes"] = _proc_status_bytes("VmHWM")
                    entry["plan_added_bytes"] = entry["plan_peak_rss_bytes"] - rss_before
                entry["plan_bytes_per_epoch"] = state.plan_bytes() - before
                if args.primitives:
                    timed = time_primitives(state, method, options, repeats, 0)
                    if timed is not None:
                        entry["primitive_seconds"], entry["primitive_cpu_seconds"] = timed
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
        if any("primitive_cpu_seconds" in e for r in results for e in r["strategies"].values()):
            print("\nPlanning against the primitive operations its rule needs (`primitives`), process CPU time:\n")
            print("| strategy | N | plan | primitives | ratio |")
            print("|---|---:|---:|---:|---:|")
            for r in results:
                for label in labels:
                    e = r["strategies"][label]
                    if "primitive_cpu_seconds" in e:
                        ratio = e["plan_cpu_seconds"] / e["primitive_cpu_seconds"]
                        plan, prim = fmt_time(e["plan_cpu_seconds"]), fmt_time(e["primitive_cpu_seconds"])
                        print(f"| {label} | {fmt_rows(r['num_rows'])} | {plan} | {prim} | {ratio:.2f}x |")
        if any("plan_peak_rss_bytes" in e for r in results for e in r["strategies"].values()):
            print("\nPeak RSS while planning, per row, against the tables (bytes per row):\n")
            print("| strategy | N | tables | peak RSS | peak / tables | added by planning |")
            print("|---|---:|---:|---:|---:|---:|")
            for r in results:
                n = r["num_rows"]
                for label in labels:
                    e = r["strategies"][label]
                    if "plan_peak_rss_bytes" in e:
                        tables, peak = e["table_bytes_per_row"], e["plan_peak_rss_bytes"] / n
                        added = e["plan_added_bytes"] / n
                        cells = f"{tables:.1f} | {peak:.1f} | {peak / tables:.2f}x | {added:.1f}"
                        print(f"| {label} | {fmt_rows(n)} | {cells} |")
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
