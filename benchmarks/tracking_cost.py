"""What per-example tracking costs per micro-batch: kernel launches (torch profiler) and time.

    python benchmarks/tracking_cost.py --threads 1                 # CPU
    python benchmarks/tracking_cost.py --device cuda --batch 32    # GPU: CUDA kernel launches, CUDA-event timing

For one process, three paths are measured on `--micro-batches` micro-batches of `--batch` rows of a run over
`--rows` rows (every micro-batch a fresh slice of one epoch's shuffled plan, bf16 losses):

* `tracker (buffered)`: what `EMPTrainer._observe` does now, `PruningState.update` (an append to the device
  buffers), with the flushes that fall in the window (the buffer holds `--buffer-rows` rows) and one final
  flush, amortised over the micro-batches;
* `tracker (before issue 15)`: the previous hot path, kept here for comparison: `gather_observations` and an
  immediate per-micro-batch update (sort-based de-duplication, `index_add_`, `index_fill_`, EMA gathers and
  scatters) on the eight full tables;
* `per-example stats`: `losses.categorical_stats` on `[batch, --classes]` logits (the loss and entropy the
  tracker records; the trainer computes them from the logits the forward pass already made).

Kernel launches: on CUDA, the `cudaLaunchKernel`/`cudaMemcpyAsync`/`cudaMemsetAsync` runtime calls; on the CPU,
the leaf aten operators that do work (view-like operators and allocations excluded). Time: the median over
`--repeats` windows of the window's time per micro-batch (CUDA events on a GPU, `perf_counter` on the CPU), and
the process CPU time per micro-batch (on a loaded, shared CPU the steadier number). `--json` writes the results.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch

from emp_hf.core.tracker import BUFFER_ROWS, PruningState  # noqa: E402
from emp_hf.integration.distributed import gather_observations  # noqa: E402
from emp_hf.integration.losses import categorical_stats  # noqa: E402
from emp_hf.strategies import PruningOptions, build_strategy  # noqa: E402

#: aten operators that only make views, metadata or allocations: no kernel runs for them.
NO_KERNEL = {
    "aten::view", "aten::_unsafe_view", "aten::reshape", "aten::_reshape_alias", "aten::slice", "aten::select",
    "aten::as_strided", "aten::expand", "aten::t", "aten::transpose", "aten::permute", "aten::unsqueeze",
    "aten::squeeze", "aten::alias", "aten::detach", "aten::detach_", "aten::lift_fresh", "aten::empty",
    "aten::empty_strided", "aten::empty_like", "aten::resize_", "aten::result_type", "aten::contiguous",
    "aten::to", "aten::_to_copy", "aten::numpy_T", "aten::unbind", "aten::split", "aten::chunk",
    "aten::narrow", "aten::flatten", "aten::view_as",
}  # fmt: skip
CUDA_LAUNCHES = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cudaMemcpyAsync", "cudaMemsetAsync", "cuLaunchKernel")


def count_launches(fn: Callable[[], None], device: torch.device) -> tuple[int, Counter]:
    """Kernel launches while `fn` runs, and the operators (CPU) or runtime calls (CUDA) counted."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    names: Counter = Counter()
    for event in prof.events():
        if device.type == "cuda":
            if event.name in CUDA_LAUNCHES:
                names[event.name] += 1
        elif event.name.startswith("aten::") and not event.cpu_children and event.name not in NO_KERNEL:
            names[event.name] += 1
    return sum(names.values()), names


def legacy_tables(n: int, device: torch.device) -> dict[str, torch.Tensor]:
    specs = {
        "loss": (torch.float32, float("nan")),
        "entropy": (torch.float32, float("nan")),
        "ema_mean": (torch.float32, float("nan")),
        "ema_var": (torch.float32, 0.0),
        "score": (torch.float32, float("nan")),
        "weight": (torch.float32, 1.0),
        "frequency": (torch.int64, 0),
        "last_epoch": (torch.int64, -1),
    }
    return {k: torch.full((n + 1,), v, dtype=d, device=device) for k, (d, v) in specs.items()}


def legacy_update(t: dict[str, torch.Tensor], rows, loss, entropy, epoch: int, d: float = 0.9) -> None:
    """`PruningState.update` as it was before issue 15 (applied at every micro-batch)."""
    n = t["loss"].numel() - 1
    rows = rows.to(torch.int64)
    loss = loss.to(torch.float32)
    entropy = entropy.to(torch.float32)
    safe_rows = rows.clamp(-1, n).masked_fill(rows < 0, n)
    order = torch.sort(safe_rows, stable=True).indices
    sorted_rows = safe_rows[order]
    first_sorted = torch.ones_like(sorted_rows, dtype=torch.bool)
    first_sorted[1:] = sorted_rows[1:] != sorted_rows[:-1]
    first = torch.empty_like(first_sorted).scatter_(0, order, first_sorted)
    keep = (rows >= 0) & (rows < n) & (t["last_epoch"][safe_rows] != epoch) & first
    visit = torch.where(keep, safe_rows, n)
    finite = keep & torch.isfinite(loss) & torch.isfinite(entropy)
    target = torch.where(finite, safe_rows, n)
    t["frequency"].index_add_(0, visit, keep.to(torch.int64))
    t["last_epoch"].index_fill_(0, visit, epoch)
    old_mean = t["ema_mean"][target]
    first_obs = torch.isnan(old_mean)
    new_mean = torch.where(first_obs, loss, d * old_mean + (1 - d) * loss)
    new_var = torch.where(first_obs, 0.0, d * t["ema_var"][target] + (1 - d) * (loss - old_mean) ** 2)
    t["ema_mean"][target] = new_mean
    t["ema_var"][target] = new_var
    t["loss"][target] = loss
    t["entropy"][target] = entropy


class OneProcess:
    num_processes = 1


def measure(opts: argparse.Namespace) -> list[dict]:
    device = torch.device(opts.device)
    n, b, m = opts.rows, opts.batch, opts.micro_batches
    g = torch.Generator().manual_seed(0)
    plan = torch.randperm(n, generator=g)[: m * b].to(device)
    batches = [
        (
            plan[i * b : (i + 1) * b],
            torch.rand(b, generator=g).to(device, torch.bfloat16),
            torch.rand(b, generator=g).to(device, torch.bfloat16),
        )
        for i in range(m)
    ]
    logits = torch.randn(b, opts.classes, generator=g).to(device, torch.bfloat16)
    labels = torch.randint(0, opts.classes, (b,), generator=g).to(device)
    track = build_strategy(opts.method, PruningOptions()).traits.required_tables
    epoch = [0]

    def buffered() -> None:
        state = buffered.state
        epoch[0] += 1
        for rows, loss, entropy in batches:
            state.update(rows, loss, entropy, epoch[0])
        state.flush()

    buffered.state = PruningState(n, device=device, track=track, buffer_rows=opts.buffer_rows)
    tables = legacy_tables(n, device)
    accelerator = OneProcess()

    def legacy() -> None:
        epoch[0] += 1
        for rows, loss, entropy in batches:
            rows, loss, entropy = gather_observations(accelerator, rows, loss, entropy, b)
            legacy_update(tables, rows, loss, entropy, epoch[0])

    def stats() -> None:
        for _ in batches:
            categorical_stats(logits, labels)

    paths = [
        (f"tracker (buffered, {opts.method} tables)", buffered),
        ("tracker (before issue 15)", legacy),
        (f"per-example stats ({opts.classes} classes)", stats),
    ]
    results = []
    for label, fn in paths:
        fn()  # warm-up
        launches, names = count_launches(fn, device)
        windows = [window_seconds(fn, device) for _ in range(opts.repeats)]
        times = [wall / m for wall, _ in windows]
        cpu_times = [cpu / m for _, cpu in windows]
        results.append(
            {
                "path": label,
                "launches_per_micro_batch": launches / m,
                "seconds_per_micro_batch": statistics.median(times),
                "cpu_seconds_per_micro_batch": statistics.median(cpu_times),
                "spread": (max(times) - min(times)) / statistics.median(times),
                "operators": dict(names.most_common()),
            }
        )
    return results


def window_seconds(fn: Callable[[], None], device: torch.device) -> tuple[float, float]:
    """(seconds of the window: CUDA events on a GPU, wall clock on the CPU; process CPU seconds)."""
    cpu_start = time.process_time()
    if device.type == "cuda":
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        fn()
        stop.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(stop) / 1e3, time.process_time() - cpu_start
    begin = time.perf_counter()
    fn()
    return time.perf_counter() - begin, time.process_time() - cpu_start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--rows", type=int, default=1_000_000, help="rows of the training set (N)")
    p.add_argument("--batch", type=int, default=32, help="rows per micro-batch")
    p.add_argument("--micro-batches", type=int, default=500, help="micro-batches per timed window")
    p.add_argument("--buffer-rows", type=int, default=BUFFER_ROWS)
    p.add_argument("--classes", type=int, default=2)
    p.add_argument("--method", default="emp", help="whose required_tables the buffered tracker keeps")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", default="")
    opts = p.parse_args(argv)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    results = measure(opts)
    device = torch.device(opts.device)
    what = "CUDA runtime launches" if device.type == "cuda" else "leaf aten operators"
    print(
        f"\n{opts.device}, N={opts.rows:,}, batch {opts.batch}, {opts.micro_batches} micro-batches per window, "
        f"buffer {opts.buffer_rows:,} rows, median of {opts.repeats} windows, {torch.get_num_threads()} threads\n"
    )
    clock = "CUDA events" if device.type == "cuda" else "wall clock"
    print(
        f"| path | kernel launches per micro-batch ({what}) | time per micro-batch ({clock}) | spread "
        "| host CPU time per micro-batch |"
    )
    print("|---|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['path']} | {r['launches_per_micro_batch']:.2f} | {r['seconds_per_micro_batch'] * 1e6:.1f} µs "
            f"| {100 * r['spread']:.0f}% | {r['cpu_seconds_per_micro_batch'] * 1e6:.1f} µs |"
        )
    print()
    for r in results:
        top = ", ".join(f"{k.removeprefix('aten::')}×{v}" for k, v in list(r["operators"].items())[:8])
        print(f"{r['path']}: {top}")
    if opts.json:
        Path(opts.json).write_text(json.dumps({"options": vars(opts), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
