"""The accuracy-saving frontier: every method against the budget-matched baselines, paired by seed.

    # CPU, the runs of docs/benchmarks.md#frontier (two processes at most, `nice -n 10`, one thread each):
    OMP_NUM_THREADS=1 nice -n 10 python -m benchmarks.frontier --task fashion --arch resnet --max-train 1000 \\
        --max-test 2000 --epochs 30 --batch-size 64 --lr 2e-3 --threads 1 --seeds 10
    OMP_NUM_THREADS=1 nice -n 10 python -m benchmarks.frontier --task sentiment --max-train 320 --max-test 500 \\
        --epochs 3 --batch-size 8 --lr 1e-4 --seq-len 48 --freeze-layers 4 --threads 1 --seeds 5
    python -m benchmarks.frontier --task fashion ... --summary-only --plot   # same flags: tables and plots only

Methods (`--methods`): those of `benchmarks/quality.py` plus `seta`, `seta_kmeans` (the official k-means
grouping, whose saving varies: like `infobatch`, it is compared at its nominal ratio), `emp_window`,
`ucb_visits` and the baseline `fewer_steps`: full data (`pruning_method="none"`, every row every epoch)
stopped at `max_steps` = the optimizer steps of a fixed-budget pruned run at the same prune ratio, with the
same LR schedule shape (linear warm-up and decay over the run's own steps). Pruning starts at epoch 0
(`--pruning-warmup-epochs 0`, the official SeTa has no warm-up), so a fixed-budget method's realised saving
is its prune ratio.

Every finished run is appended to `<out>.jsonl` under a file lock (several processes may share it; a rerun
skips what is there). Runs go seed by seed, so an interrupted benchmark has every method on the first seeds.
The summary pairs every method with `random` and `fewer_steps` of the same seed and ratio (mean ± std of the
difference, and wins), writes `<out>_summary.{csv,json}`, and with `--plot` one accuracy-vs-realised-saving plot
and one paired-difference plot per task. The full-data runs evaluate after every epoch, so the summary also
says whether full data plateaued (change over the last 20% of epochs).
"""

from __future__ import annotations

import argparse
import fcntl
import gc
import json
import math
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:
    from benchmarks import (
        quality,  # the tasks, options and per-run statistics are shared
        regimes,  # the data of the regime suite
    )
except ModuleNotFoundError as error:
    if error.name != "benchmarks":
        raise
    sys.exit("frontier.py imports its siblings: from the repository root, run python -m benchmarks.frontier ...")
from emp_hf.core.schedule import EpochSchedule, StepCounter

METHODS: dict[str, dict[str, Any]] = {
    **quality.METHODS,
    "seta": {"pruning_method": "seta"},
    "seta_kmeans": {"pruning_method": "seta", "seta_grouping": "kmeans"},  # official grouping: an open budget
    "emp_window": {"pruning_method": "emp", "emp_selection": "window"},
    "ucb_visits": {"pruning_method": "ucb", "ucb_exploration": "visits"},
    "fewer_steps": {"pruning_method": "none"},
    "rs2": {"pruning_method": "rs2"},
    "small_loss": {"pruning_method": "small_loss"},
}
quality.METHODS.update(METHODS)  # `quality.parse_method` looks names up there
DEFAULT_METHODS = ["none", "random", "fewer_steps", "seta", "emp_sample", "emp_window", "infobatch"]
BASELINES = ("random", "fewer_steps")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument(
        "--arch",
        choices=["vit", "resnet", "minilm", "tiny-bert"],
        help="the model: fashion 'vit' (default) or 'resnet'; sentiment 'minilm' (default, pre-trained) or "
        "'tiny-bert' (a 2-layer BERT from scratch on MiniLM's tokenizer: cheap enough to train to convergence)",
    )
    extra.add_argument("--plateau-share", type=float, default=0.2, help="share of the final epochs checked")
    extra.add_argument(
        "--freeze-layers", type=int, default=0, help="sentiment: freeze the embeddings and this many lower layers"
    )
    extra.add_argument(
        "--regime",
        choices=regimes.REGIMES,
        help="the regime suite: change the training data (see benchmarks/regimes.py), balance the test set and "
        "report per-class accuracy; results go to regimes_<task>_<regime>",
    )
    extra.add_argument("--noise-rate", type=float, default=0.2, help="noise: share of training labels flipped")
    extra.add_argument("--tail-share", type=float, default=0.1, help="long_tail: share of a tail class's rows kept")
    extra.add_argument("--copies", type=int, default=4, help="duplicates: copies of each distinct row")
    extra.add_argument(
        "--track-margin",
        action="store_true",
        help="train with pruning_track_margin=True; with flipped labels, flag_precision also ranks by the lowest "
        "area under the margin ('margin')",
    )
    own, rest = extra.parse_known_args(argv)
    if "--pruning-warmup-epochs" not in rest:
        rest += ["--pruning-warmup-epochs", "0"]
    if "--methods" not in rest:
        rest += ["--methods", ",".join(DEFAULT_METHODS)]
    args = quality.parse_args(rest)
    args.arch, args.plateau_share, args.freeze_layers = own.arch, own.plateau_share, own.freeze_layers
    args.regime, args.noise_rate, args.tail_share, args.copies = own.regime, own.noise_rate, own.tail_share, own.copies
    args.track_margin = own.track_margin
    if args.arch is None:
        args.arch = "vit" if args.task == "fashion" else "minilm"
    if args.arch not in (("vit", "resnet") if args.task == "fashion" else ("minilm", "tiny-bert")):
        raise SystemExit(f"--arch {args.arch} is not a model of the {args.task} task.")
    args.name = f"frontier_{args.task}" + ("_tiny_bert" if args.arch == "tiny-bert" else "")  # results and plots
    if args.regime is not None:
        regime = regimes.regime_name(args.regime, args.noise_rate)
        args.name = args.name.replace("frontier_", "regimes_") + "_" + regime
    if "--out" not in rest:
        args.out = str(quality.REPO / "benchmarks" / "results" / args.name)
    return args


class Task(quality.Task):
    """`quality.Task` plus a small from-scratch `ResNet` (transformers' `ResNetConfig`) for Fashion-MNIST, MiniLM
    with its lower layers frozen (`--freeze-layers`: a cheaper fine-tune of the top layers), and a tiny BERT from
    scratch for the sentiment sentences (`--arch tiny-bert`); with `--regime`, the regime's data."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.num_classes = 10 if args.task == "fashion" else 2
        self.flipped = None  # noise: which training labels are wrong
        if args.regime is not None:
            clean = np.asarray(self.train["labels"])
            self.train, self.test = regimes.apply_regime(self.train, self.test, args, self.num_classes)
            if args.regime == "noise":
                self.flipped = np.asarray(self.train["labels"]) != clean

    def model(self, seed: int) -> torch.nn.Module:
        if self.args.arch == "tiny-bert":
            from transformers import BertConfig, BertForSequenceClassification

            torch.manual_seed(seed)
            config = BertConfig(
                vocab_size=self.processing_class.vocab_size,
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=128,
                max_position_embeddings=self.args.seq_len,
                num_labels=2,
            )
            return BertForSequenceClassification(config)
        if self.args.task == "sentiment":
            model = super().model(seed)
            if self.args.freeze_layers:
                frozen = [model.bert.embeddings, *model.bert.encoder.layer[: self.args.freeze_layers]]
                for module in frozen:
                    module.requires_grad_(False)
            return model
        if self.args.arch != "resnet":
            return super().model(seed)
        from transformers import ResNetConfig, ResNetForImageClassification

        torch.manual_seed(seed)
        config = ResNetConfig(
            num_channels=3,
            embedding_size=16,
            hidden_sizes=[16, 32, 64],
            depths=[1, 1, 1],
            layer_type="basic",
            downsample_in_first_stage=False,
            num_labels=10,
        )
        return ResNetForImageClassification(config)


def pruned_steps(args: argparse.Namespace, num_rows: int, ratio: float) -> int:
    """Optimizer steps of a fixed-budget pruned run (no anneal) at `ratio`: what `fewer_steps` may take."""
    schedule = EpochSchedule(num_rows, args.epochs, ratio, warmup_epochs=args.pruning_warmup_epochs)
    counter = StepCounter(batch_size=args.batch_size)
    return sum(counter.update_steps(schedule.nominal_plan_size(e)) for e in range(args.epochs))


def run_one(task: Task, args: argparse.Namespace, spec: str, fields: dict[str, Any], ratio: float, seed: int) -> dict:
    """One training run; `fewer_steps` trains on full data up to the pruned run's steps."""
    fields = dict(fields)
    if args.track_margin:
        fields["pruning_track_margin"] = True
    baseline = spec.partition(":")[0] == "fewer_steps"
    pruned = fields["pruning_method"] != "none"
    full_steps = args.epochs * math.ceil(len(task.train) / args.batch_size)
    if baseline:
        fields["max_steps"] = pruned_steps(args, len(task.train), ratio)
    curve = not pruned and not baseline and args.arch != "minilm"  # full data: is it at its plateau?
    with tempfile.TemporaryDirectory() as out:
        prune_ratio = ratio if pruned else None
        trainer = quality.build_trainer(task, args, out, fields, prune_ratio, seed, eval_each_epoch=curve)
        start = time.perf_counter()
        output = trainer.train()
        wall = time.perf_counter() - start
        prediction = trainer.predict(task.test)
        metrics = {"eval_accuracy": prediction.metrics["test_accuracy"]}
        state = trainer.pruning_state
        if args.regime is not None:
            logits = prediction.predictions
            logits = logits[0] if isinstance(logits, tuple) else logits
            per_class = regimes.class_accuracy(np.argmax(logits, -1), prediction.label_ids, task.num_classes)
            tail = regimes.tail_classes(task.num_classes)
            metrics["class_accuracy"] = per_class
            metrics["tail_accuracy"] = float(np.mean([per_class[c] for c in tail]))
            metrics["worst_accuracy"] = min(per_class)
        if task.flipped is not None:  # how well the record's statistics find the wrong labels
            tables = state.cpu_tables()
            if "margin" in tables:  # the lowest area under the margin first
                tables["margin"] = -tables["margin"]
            metrics["flag_precision"] = {
                name: regimes.flag_precision(tables[name].numpy(), task.flipped)
                for name in ("loss", "score", "margin")
                if name in tables and bool(np.isfinite(tables[name].numpy()).any())
            }
        record = {
            "method": spec,
            "ratio": ratio if (pruned or baseline) else 0.0,
            "seed": seed,
            "accuracy": metrics["eval_accuracy"],
            # example visits skipped: the pruning state's count, or (fewer_steps) the steps not taken
            "realized_saving": state.realized_saving() if pruned else 1.0 - output.global_step / full_steps,
            "step_saving": 1.0 - output.global_step / full_steps,
            "steps": output.global_step,
            "full_steps": full_steps,
            "train_seconds": wall,
            "train_loss": output.training_loss,
            "plan_sizes": state.epoch_plan_sizes,
            "curve": [h["eval_accuracy"] for h in trainer.state.log_history if "eval_accuracy" in h]
            if curve
            else None,
            **quality.frequency_stats(state, trainer.args),
            **{
                key: metrics[key]
                for key in ("class_accuracy", "tail_accuracy", "worst_accuracy", "flag_precision")
                if key in metrics
            },  # fmt: skip
        }
        del trainer
    gc.collect()
    return record


def append_record(path: Path, record: dict) -> None:
    with open(path, "a") as f:  # several processes may append: one locked line per run
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps(record) + "\n")
        fcntl.flock(f, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------- summary
def paired(records: list[dict], method: str, ratio: float, baseline: str, key: str = "accuracy") -> list[float]:
    base = {r["seed"]: r[key] for r in records if r["method"] == baseline and r["ratio"] == ratio}
    return [r[key] - base[r["seed"]] for r in records if r["method"] == method and r["ratio"] == ratio
            and r["seed"] in base]  # fmt: skip


def summarise(records: list[dict]) -> list[dict]:
    groups: dict[tuple[str, float], list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["method"], r["ratio"])].append(r)
    rows = []
    for (method, ratio), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0] not in ("none", *BASELINES))):
        row: dict[str, Any] = {"method": method, "ratio": ratio, "seeds": len(rs)}
        for key in ("accuracy", "realized_saving", "steps", "train_seconds", "starved"):
            row[f"{key}_mean"], row[f"{key}_std"] = quality.mean_std([float(x[key]) for x in rs])
        for key in ("tail_accuracy", "worst_accuracy"):
            if all(key in x for x in rs):
                row[f"{key}_mean"], row[f"{key}_std"] = quality.mean_std([float(x[key]) for x in rs])
                diffs = paired(records, method, ratio, "fewer_steps", key)
                row[f"{key}_vs_fewer_steps"] = quality.mean_std(diffs) if diffs and method != "fewer_steps" else None
        for baseline in (*BASELINES, "none"):
            diffs = (
                [r["accuracy"] - statistics.fmean(n["accuracy"] for n in records if n["method"] == "none")
                 for r in rs] if baseline == "none" and any(n["method"] == "none" for n in records)
                else paired(records, method, ratio, baseline) if baseline != "none" else []
            )  # fmt: skip
            mean, std = quality.mean_std(diffs) if diffs and method != baseline else (None, None)
            row[f"vs_{baseline}_mean"], row[f"vs_{baseline}_std"] = mean, std
            row[f"vs_{baseline}_wins"] = f"{sum(d > 0 for d in diffs)}/{len(diffs)}" if mean is not None else ""
        rows.append(row)
    return rows


def plateau(records: list[dict], share: float) -> str:
    """How much full data's test accuracy moved over its last `share` of epochs (mean over seeds)."""
    curves = [r["curve"] for r in records if r["method"] == "none" and r.get("curve")]
    if not curves:
        return "no full-data curve"
    epochs = len(curves[0])
    first = epochs - max(1, round(share * epochs)) - 1
    moves = [100 * (c[-1] - c[first]) for c in curves]
    span = [100 * (max(c[first:]) - min(c[first:])) for c in curves]
    return (
        f"full data over its last {epochs - 1 - first} of {epochs} epochs: change "
        f"{statistics.fmean(moves):+.2f} points (seeds {', '.join(f'{m:+.2f}' for m in moves)}), "
        f"range {statistics.fmean(span):.2f} points"
    )


def fmt(row: dict, key: str) -> str:
    if row[f"{key}_mean"] is None:
        return ""
    return f"{100 * row[f'{key}_mean']:+.2f} ± {100 * row[f'{key}_std']:.2f} ({row[f'{key}_wins']})"


def format_table(rows: list[dict]) -> str:
    head = (
        "| method | prune ratio | seeds | test accuracy (%) | realised saving | steps | vs random (wins) | "
        "vs fewer_steps (wins) | vs full data |"
    )
    per_class = [key for key in ("tail_accuracy", "worst_accuracy") if rows and all(f"{key}_mean" in r for r in rows)]
    for key in per_class:
        head += f" {key.replace('_', ' ')} (%) | vs fewer_steps |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        vs_none = "" if r["vs_none_mean"] is None else f"{100 * r['vs_none_mean']:+.2f}"
        line = (
            f"| {r['method']} | {r['ratio']:g} | {r['seeds']} | {100 * r['accuracy_mean']:.2f} ± "
            f"{100 * r['accuracy_std']:.2f} | {100 * r['realized_saving_mean']:.1f}% | {r['steps_mean']:.0f} | "
            f"{fmt(r, 'vs_random')} | {fmt(r, 'vs_fewer_steps')} | {vs_none} |"
        )
        for key in per_class:
            vs = r[f"{key}_vs_fewer_steps"]
            line += f" {100 * r[f'{key}_mean']:.2f} ± {100 * r[f'{key}_std']:.2f} |"
            line += f" {'' if vs is None else f'{100 * vs[0]:+.2f} ± {100 * vs[1]:.2f}'} |"
        lines.append(line)
    return "\n".join(lines)


def format_flag_table(records: list[dict]) -> str:
    """How well each statistic of the record finds the flipped labels: per method and ratio, the share of wrong
    labels among the `noise rate x N` rows it ranks first (`regimes.flag_precision`; `margin`: lowest first), mean ±
    std over seeds. Empty without flipped labels."""
    groups: dict[tuple[str, float], list[dict]] = defaultdict(list)
    for r in records:
        if r.get("flag_precision"):
            groups[(r["method"], r["ratio"])].append(r["flag_precision"])
    if not groups:
        return ""
    names = [n for n in ("loss", "score", "margin") if any(n in p for ps in groups.values() for p in ps)]
    paired_margin = "margin" in names  # margin minus loss, run by run
    head = " | ".join(f"precision by {n} (%)" for n in names) + (
        " | margin − loss (points, wins) |" if paired_margin else " |"
    )
    lines = ["| method | prune ratio | seeds | " + head, "|" + "---|" * (3 + len(names) + paired_margin)]
    for (method, ratio), precisions in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        cells = []
        for n in names:
            values = [p[n] for p in precisions if n in p]
            mean, std = quality.mean_std(values) if values else (None, None)
            cells.append("" if mean is None else f"{100 * mean:.1f} ± {100 * std:.1f}")
        if paired_margin:
            diffs = [p["margin"] - p["loss"] for p in precisions if "margin" in p and "loss" in p]
            mean, std = quality.mean_std(diffs) if diffs else (None, None)
            wins = f" ({sum(d > 0 for d in diffs)}/{len(diffs)})" if diffs else ""
            cells.append("" if mean is None else f"{100 * mean:+.1f} ± {100 * std:.1f}{wins}")
        lines.append(f"| {method} | {ratio:g} | {len(precisions)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], task: str, plot_dir: Path, name: str) -> list[Path]:
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    plot_dir.mkdir(parents=True, exist_ok=True)
    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m != "none"]
    methods.sort(key=lambda m: (m not in BASELINES, m))
    palette = colormaps["tab10"].colors
    colors = {m: palette[i % 10] for i, m in enumerate(methods)}
    fig = Figure(figsize=(7.5, 5.0), layout="constrained")
    ax = fig.add_subplot()
    quality.plot_accuracy_vs_saving(ax, rows, colors, task, baselines=BASELINES)
    ax.legend(fontsize=8)
    paths = [plot_dir / f"{name}.png"]
    fig.savefig(paths[0], dpi=110)

    fig = Figure(figsize=(11.0, 1.5 + 0.3 * len(rows)), layout="constrained")
    for j, baseline in enumerate(BASELINES):
        ax = fig.add_subplot(1, 2, j + 1)
        chosen = [r for r in rows if r[f"vs_{baseline}_mean"] is not None and r["method"] not in ("none", baseline)]
        ys = list(range(len(chosen)))[::-1]
        ax.barh(
            ys,
            [100 * r[f"vs_{baseline}_mean"] for r in chosen],
            xerr=[100 * r[f"vs_{baseline}_std"] for r in chosen],
            color=[colors[r["method"]] for r in chosen],
            capsize=3,
        )
        ax.set_yticks(ys, [f"{r['method']} @ {r['ratio']:g} ({r[f'vs_{baseline}_wins']})" for r in chosen], fontsize=8)
        ax.axvline(0, color="black", linewidth=1)
        ax.set_xlabel(f"accuracy minus {baseline}'s, same seed (points, mean ± std)")
    fig.suptitle(f"{task}: paired differences to the budget-matched baselines (wins/seeds)", fontsize=10)
    paths.append(plot_dir / f"{name}_paired.png")
    fig.savefig(paths[1], dpi=110)
    return paths


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    quality.quiet_runs(args)
    setting = {**quality.setting_of(args), "arch": None if args.arch == "minilm" else args.arch}
    if args.freeze_layers:
        setting["freeze_layers"] = args.freeze_layers
    if args.track_margin:
        setting["track_margin"] = True
    if args.regime is not None:
        setting["regime"] = args.regime
        setting.update({"long_tail": {"tail_share": args.tail_share}, "noise": {"noise_rate": args.noise_rate},
                        "duplicates": {"copies": args.copies}}.get(args.regime, {}))  # fmt: skip
    prefix = Path(args.out)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    results = Path(f"{prefix}.jsonl")
    if not args.summary_only:
        task = Task(args)
        print(f"{args.task}: {len(task.train)} train / {len(task.test)} test rows; setting {setting}", flush=True)
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for ratio in args.ratios:
                for spec, fields in args.method_specs:
                    full = fields["pruning_method"] == "none" and spec.partition(":")[0] != "fewer_steps"
                    run_ratio = 0.0 if full else ratio
                    done = {(r["method"], r["ratio"], r["seed"]) for r in quality.load_records(results, setting)}
                    if (spec, run_ratio, seed) in done:
                        continue
                    record = {**run_one(task, args, spec, fields, ratio, seed), "setting": setting}
                    append_record(results, record)
                    print(
                        f"  {spec:<22} p={run_ratio:<4g} seed={seed}  acc {100 * record['accuracy']:.2f}%  "
                        f"saving {100 * record['realized_saving']:.1f}%  steps {record['steps']}  "
                        f"{record['train_seconds']:.0f}s",
                        flush=True,
                    )
    wanted = {spec for spec, _ in args.method_specs}
    unique = {(r["method"], r["ratio"], r["seed"]): r for r in reversed(quality.load_records(results, setting))}
    records = [r for r in reversed(unique.values()) if r["method"] in wanted]  # the first run of each, if repeated
    records = [r for r in records if r["ratio"] in args.ratios or r["method"] == "none"]
    if not records:
        print("no results yet")
        return []
    rows = summarise(records)
    print()
    print(plateau(records, args.plateau_share))
    print(format_table(rows))
    flags = format_flag_table(records)
    if flags:
        print("\nthe wrong labels among the rows each statistic ranks first (chance: the noise rate)")
        print(flags)
    quality.write_summary(rows, prefix, setting)
    print(f"\nruns: {results}\nsummary: {prefix}_summary.csv, {prefix}_summary.json")
    if args.plot:
        for path in plot(rows, args.task, Path(args.plot_dir), args.name):
            print(f"plot: {path}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
