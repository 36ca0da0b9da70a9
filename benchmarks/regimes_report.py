"""The regime suite across regimes: every arm against `fewer_steps` and `random`, paired by seed, and the targets.

    python benchmarks/regimes_report.py            # after benchmarks/regimes.sh; reads benchmarks/results/regimes_*
    python benchmarks/regimes_report.py --plot     # also docs/images/regimes_<task>.png

Prints one markdown table per task (rows: arm and saving; columns: regimes; cells: accuracy minus `fewer_steps`'s
on the same seed, mean ± std over seeds, and wins), the long tail's worst-class accuracy the same way, and the two
targets of issue 22, judged from the same numbers:

* safety: the default rule's mean is at most 0.5 points below `fewer_steps` in every regime, at 50% and 70%;
* win: a rule is above both `fewer_steps` and `random`, its mean difference larger than the paired spread (the
  std of the differences), in at least two of the three uneven regimes (noise, long tail, duplicates), at 50%.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"
REGIME_ORDER = ("clean", "noise20", "noise40", "long_tail", "duplicates")
UNEVEN = {"noise": ("noise20", "noise40"), "long tail": ("long_tail",), "duplicates": ("duplicates",)}
BASELINES = ("fewer_steps", "random")
DEFAULT = "emp_sample"


def load(path: Path) -> list[dict]:
    """The records of `path` in the setting of its last record (the first run of each (method, ratio, seed))."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not records:
        return []
    setting = records[-1]["setting"]
    unique: dict[tuple, dict] = {}
    for r in records:
        if r["setting"] == setting:
            unique.setdefault((r["method"], r["ratio"], r["seed"]), r)
    return list(unique.values())


def paired(records: list[dict], method: str, ratio: float, baseline: str, key: str = "accuracy") -> list[float]:
    base = {r["seed"]: r[key] for r in records if r["method"] == baseline and r["ratio"] == ratio}
    return [100 * (r[key] - base[r["seed"]]) for r in records
            if r["method"] == method and r["ratio"] == ratio and r["seed"] in base]  # fmt: skip


def stats(diffs: list[float]) -> dict | None:
    if not diffs:
        return None
    std = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    return {"mean": statistics.fmean(diffs), "std": std, "wins": sum(d > 0 for d in diffs), "n": len(diffs)}


def cell(s: dict | None) -> str:
    return "" if s is None else f"{s['mean']:+.2f} ± {s['std']:.2f} ({s['wins']}/{s['n']})"


def collect() -> dict[str, dict[str, list[dict]]]:
    """task -> regime -> records."""
    found: dict[str, dict[str, list[dict]]] = defaultdict(dict)
    for path in sorted(RESULTS.glob("regimes_*.jsonl")):
        stem = path.stem.removeprefix("regimes_")
        regime = next((r for r in REGIME_ORDER if stem.endswith("_" + r)), None)
        if regime is not None:
            found[stem.removesuffix("_" + regime)][regime] = load(path)
    return found


def summarise(found: dict[str, dict[str, list[dict]]]) -> dict:
    out: dict = {}
    for task, by_regime in found.items():
        rows: dict = defaultdict(dict)
        for regime, records in by_regime.items():
            for method in sorted({r["method"] for r in records} - {"none"}):
                for ratio in sorted({r["ratio"] for r in records if r["method"] == method}):
                    entry = {b: stats(paired(records, method, ratio, b)) for b in BASELINES if b != method}
                    accs = [100 * r["accuracy"] for r in records if r["method"] == method and r["ratio"] == ratio]
                    entry["accuracy"] = statistics.fmean(accs)
                    if all("worst_accuracy" in r for r in records):
                        entry["worst_vs_fewer_steps"] = stats(
                            paired(records, method, ratio, "fewer_steps", "worst_accuracy")
                        )
                        entry["tail_vs_fewer_steps"] = stats(
                            paired(records, method, ratio, "fewer_steps", "tail_accuracy")
                        )
                    rows[(method, ratio)][regime] = entry
            full = [100 * r["accuracy"] for r in records if r["method"] == "none"]
            if full:
                rows[("none", 0.0)][regime] = {"accuracy": statistics.fmean(full), "seeds": len(full)}
        out[task] = rows
    return out


def beats(entry: dict | None) -> bool:
    """Above both baselines by more than the paired spread."""
    if entry is None:
        return False
    return all(entry.get(b) and entry[b]["mean"] > entry[b]["std"] and entry[b]["mean"] > 0 for b in BASELINES)


def targets(summary: dict) -> list[str]:
    lines = []
    for task, rows in summary.items():
        misses = []
        for ratio in (0.5, 0.7):
            for regime, entry in sorted(rows.get((DEFAULT, ratio), {}).items()):
                s = entry.get("fewer_steps")
                if s and s["mean"] < -0.5:
                    misses.append(f"{regime} at {ratio:g}: {s['mean']:+.2f}")
        lines.append(f"{task}: safety of `{DEFAULT}` (>= -0.5 vs fewer_steps everywhere): "
                     + ("met" if not misses else "MISSED (" + "; ".join(misses) + ")"))  # fmt: skip
        for (method, ratio), by_regime in sorted(rows.items()):
            if ratio != 0.5 or method in BASELINES:
                continue
            won = [name for name, regimes in UNEVEN.items() if any(beats(by_regime.get(r)) for r in regimes)]
            lines.append(f"{task}: `{method}` at 0.5 above both baselines beyond the spread in: "
                         + (", ".join(won) if won else "none") + f" ({len(won)} of 3 uneven regimes)")  # fmt: skip
    return lines


def tables(summary: dict) -> str:
    parts = []
    for task, rows in summary.items():
        regimes = [r for r in REGIME_ORDER if any(r in by for by in rows.values())]
        for title, key in (("accuracy vs fewer_steps", "fewer_steps"), ("accuracy vs random", "random")):
            head = f"| {task}: {title} | saving | " + " | ".join(regimes) + " |"
            lines = [head, "|" + "---|" * (len(regimes) + 2)]
            for (method, ratio), by in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
                if method == "none" or method == key:
                    continue
                lines.append(
                    f"| `{method}` | {ratio:.0%} | " + " | ".join(cell(by.get(r, {}).get(key)) for r in regimes) + " |"
                )
            full = rows.get(("none", 0.0), {})
            lines.append("| full data (accuracy) | 0% | " + " | ".join(
                f"{full[r]['accuracy']:.2f}" if r in full else "" for r in regimes) + " |")  # fmt: skip
            fewer = {
                r: rows.get(("fewer_steps", ratio), {}).get(r, {}).get("accuracy") for r in regimes for ratio in (0.5,)
            }
            lines.append("| `fewer_steps` (accuracy) | 50% | " + " | ".join(
                f"{fewer[r]:.2f}" if fewer[r] is not None else "" for r in regimes) + " |")  # fmt: skip
            parts.append("\n".join(lines))
        if any("long_tail" in by and by["long_tail"].get("worst_vs_fewer_steps") for by in rows.values()):
            lines = [f"| {task}, long tail | saving | worst class vs fewer_steps | tail classes vs fewer_steps |",
                     "|---|---|---|---|"]  # fmt: skip
            for (method, ratio), by in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
                entry = by.get("long_tail")
                if entry and "worst_vs_fewer_steps" in entry and method != "fewer_steps":
                    lines.append(f"| `{method}` | {ratio:.0%} | {cell(entry['worst_vs_fewer_steps'])} | "
                                 f"{cell(entry['tail_vs_fewer_steps'])} |")  # fmt: skip
            parts.append("\n".join(lines))
    return "\n\n".join(parts)


def plot(summary: dict) -> list[Path]:
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    paths = []
    for task, rows in summary.items():
        regimes = [r for r in REGIME_ORDER if any(r in by for by in rows.values())]
        methods = sorted({m for m, _ in rows if m not in ("none", "fewer_steps")})
        colors = {m: colormaps["tab10"].colors[i % 10] for i, m in enumerate(methods)}
        fig = Figure(figsize=(11.0, 4.0), layout="constrained")
        for j, ratio in enumerate((0.5, 0.7)):
            ax = fig.add_subplot(1, 2, j + 1)
            width = 0.8 / max(len(methods), 1)
            for i, method in enumerate(methods):
                entries = [rows.get((method, ratio), {}).get(r, {}).get("fewer_steps") for r in regimes]
                xs = [k + (i - (len(methods) - 1) / 2) * width for k in range(len(regimes))]
                ax.bar(xs, [e["mean"] if e else 0 for e in entries], width,
                       yerr=[e["std"] if e else 0 for e in entries], color=colors[method], capsize=2,
                       label=method)  # fmt: skip
            ax.axhline(0, color="black", linewidth=1)
            ax.axhline(-0.5, color="grey", linewidth=1, linestyle="--")
            ax.set_xticks(range(len(regimes)), regimes, fontsize=8)
            ax.set_title(f"{ratio:.0%} saving", fontsize=10)
            ax.set_ylabel("accuracy minus fewer_steps' (points, same seed)")
        ax.legend(fontsize=8)
        fig.suptitle(f"{task}: each rule against full data trained for fewer steps (dashed: the -0.5 safety line)")
        path = IMAGES / f"regimes_{task}.png"
        fig.savefig(path, dpi=110)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", action="store_true")
    args = parser.parse_args(argv)
    summary = summarise(collect())
    print(tables(summary))
    print()
    print("\n".join(targets(summary)))
    serial = {task: {f"{m}@{r:g}": by for (m, r), by in rows.items()} for task, rows in summary.items()}
    (RESULTS / "regimes_summary.json").write_text(json.dumps(serial, indent=1))
    if args.plot:
        for path in plot(summary):
            print(f"plot: {path}")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
