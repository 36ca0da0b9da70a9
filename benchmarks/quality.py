"""Accuracy, realised saving and overhead of every pruning method, on real data, over several seeds.

    # CPU, reduced size (the main grid of docs/benchmarks.md; about 15 s per pruned run on one core):
    python benchmarks/quality.py --task fashion --max-train 6000 --max-test 10000 --epochs 7 --hidden 64 \\
        --layers 2 --heads 4 --patch 4 --batch-size 128 --threads 1 --ratios 0.3 0.5 0.7 --seeds 5 --plot
    # GPU, full size (all 60,000 Fashion-MNIST images, a 2.7M-parameter ViT, 20 epochs, bf16):
    python benchmarks/quality.py --task fashion --device cuda --plot
    python benchmarks/quality.py --task sentiment --device cuda --plot

Tasks (both offline, installed by `make setup`):
  * `fashion`: a small ViT (`ViTConfig`, random init) trained from scratch on Fashion-MNIST at 32x32;
  * `sentiment`: all-MiniLM-L6-v2 fine-tuned on the VADER movie-review sentences (binary sentiment).

Methods (`--methods`, comma-separated; `all` is the default list): `none`, `random`, `epsilon_greedy`, `ucb`,
`infobatch` (nominal ratio), `infobatch_matched` (`infobatch_match_budget=True`) and `emp_<selection>` for
every `emp_selection`. Any method takes `EMPConfig` overrides after a colon:
`emp_epsilon_greedy:epsilon=0.5`, `emp_sample:memory_weight=0`.

Each finished run is appended to `<out>.jsonl` at once (an interrupted run keeps what finished, and a
rerun with the same settings skips it); the summary (mean and std over seeds of the test accuracy, realised
saving, optimizer steps, training wall-clock, the spread of the per-row training frequency and the share of
rows no pruned epoch visited) is printed as a table and written to `<out>_summary.csv` and `.json`.
`--plot` writes accuracy-vs-realised-saving and frequency histograms to `--plot-dir` (docs/images).
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers.trainer_callback import PrinterCallback  # noqa: E402

from emp_hf import EMPConfig, EMPTrainer  # noqa: E402
from emp_hf.core.schedule import EpochSchedule  # noqa: E402
from emp_hf.strategies.emp import EMP_SELECTIONS  # noqa: E402
from emp_hf_dev.offline_data import minilm_path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

#: Method name -> `EMPConfig` fields. `emp_<selection>` exists for every selection rule.
METHODS: dict[str, dict[str, Any]] = {
    "none": {"pruning_method": "none"},
    "random": {"pruning_method": "random"},
    "epsilon_greedy": {"pruning_method": "epsilon_greedy"},
    "ucb": {"pruning_method": "ucb"},
    "infobatch": {"pruning_method": "infobatch"},
    "infobatch_matched": {"pruning_method": "infobatch", "infobatch_match_budget": True},
    **{f"emp_{sel}": {"pruning_method": "emp", "emp_selection": sel} for sel in EMP_SELECTIONS},
}
DEFAULT_METHODS = [*METHODS, "emp_epsilon_greedy:epsilon=0.5"]

#: Per-task defaults: the full-size (GPU) setting. Every one is a flag.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "fashion": dict(
        max_train=None,
        max_test=None,
        epochs=20,
        batch_size=256,
        lr=1e-3,
        weight_decay=0.05,
        warmup=0.05,
        hidden=192,
        layers=6,
        heads=3,
        patch=4,
    ),  # fmt: skip
    "sentiment": dict(
        max_train=None,
        max_test=None,
        epochs=5,
        batch_size=32,
        lr=5e-5,
        weight_decay=0.01,
        warmup=0.06,
        seq_len=64,
    ),  # fmt: skip
}


# ---------------------------------------------------------------------------------------------- arguments
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=sorted(TASK_DEFAULTS), default="fashion")
    p.add_argument("--methods", default="all", help="comma-separated method names (see above), or 'all'")
    p.add_argument(
        "--ratios", nargs="+", default=["0.3", "0.5", "0.7"], help="prune ratios (space- or comma-separated)"
    )
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (first-seed, first-seed + 1, ...)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--max-train", type=int, help="training rows (default: all)")
    p.add_argument("--max-test", type=int, help="test rows (default: all)")
    p.add_argument("--epochs", type=int, help="epochs of every run (fashion 20, sentiment 5)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--warmup", type=float, help="LR warm-up, share of the run's optimizer steps")
    p.add_argument("--pruning-warmup-epochs", type=int, default=1)
    p.add_argument("--hidden", type=int, help="fashion: ViT hidden size (default 192)")
    p.add_argument("--layers", type=int, help="fashion: ViT layers (default 6)")
    p.add_argument("--heads", type=int, help="fashion: attention heads (default 3)")
    p.add_argument("--patch", type=int, help="fashion: patch size (default 4)")
    p.add_argument("--seq-len", type=int, help="sentiment: tokens per sentence (default 64)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None, help="default: on with cuda")
    p.add_argument("--workers", type=int, default=0, help="dataloader workers")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--out", help="results prefix (default benchmarks/results/<task>)")
    p.add_argument("--no-resume", action="store_true", help="rerun runs already in <out>.jsonl")
    p.add_argument("--plot", action="store_true", help="write plots to --plot-dir")
    p.add_argument("--plot-dir", default=str(REPO / "docs" / "images"))
    p.add_argument("--no-warmup-run", action="store_true", help="skip the unrecorded warm-up run")
    p.add_argument("--summary-only", action="store_true", help="summarise <out>.jsonl without training")
    args = p.parse_args(argv)
    for key, value in TASK_DEFAULTS[args.task].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.bf16 is None:
        args.bf16 = args.device == "cuda"
    if args.out is None:
        args.out = str(REPO / "benchmarks" / "results" / args.task)
    names = DEFAULT_METHODS if args.methods == "all" else split_methods(args.methods)
    args.method_specs = [parse_method(m) for m in names]
    try:
        args.ratios = [float(r) for item in args.ratios for r in item.split(",") if r.strip()]
    except ValueError as error:
        p.error(f"--ratios: {error}")
    for ratio in args.ratios:
        if not 0.0 < ratio < 1.0:
            p.error(f"--ratios: {ratio} is not in (0, 1)")
    return args


def split_methods(text: str) -> list[str]:
    """`"a,b:x=1,y=2,c"` -> `["a", "b:x=1,y=2", "c"]`: a piece with `=` but no `:` continues the previous method."""
    names: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        if names and "=" in piece and ":" not in piece:
            names[-1] += "," + piece
        elif piece:
            names.append(piece)
    return names


def parse_method(spec: str) -> tuple[str, dict[str, Any]]:
    """`name[:field=value,...]` -> (spec, EMPConfig fields)."""
    name, _, extra = spec.partition(":")
    if name not in METHODS:
        raise SystemExit(f"Unknown method {name!r}; choose from {sorted(METHODS)} (optionally name:field=value).")
    fields = dict(METHODS[name])
    for item in filter(None, extra.split(",")):
        key, _, raw = item.partition("=")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        fields[key.strip()] = value
    return spec, fields


def setting_of(args: argparse.Namespace) -> dict[str, Any]:
    """Everything besides method, ratio and seed that changes a result: runs are only reused when equal."""
    keys = ["task", "max_train", "max_test", "epochs", "batch_size", "lr", "weight_decay", "warmup"]
    keys += ["pruning_warmup_epochs", "device", "bf16"]
    keys += ["hidden", "layers", "heads", "patch"] if args.task == "fashion" else ["seq_len"]
    return {key: getattr(args, key) for key in keys}


# ---------------------------------------------------------------------------------------------- tasks
class Task:
    """Data (built once) and a fresh model per run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.collator = None
        self.processing_class = None
        if args.task == "fashion":
            from emp_hf_dev.offline_data import load_fashion_mnist

            data = load_fashion_mnist(image_size=32, max_train=args.max_train, max_test=args.max_test)
            self.train = data["train"].rename_column("label", "labels").with_format("torch")
            self.test = data["test"].rename_column("label", "labels").with_format("torch")
        else:
            from transformers import AutoTokenizer, DataCollatorWithPadding

            from emp_hf_dev.offline_data import load_sentiment_sentences

            data = load_sentiment_sentences()
            train, test = data["train"], data["test"]
            if args.max_train is not None:
                train = train.shuffle(seed=0).select(range(min(args.max_train, len(train))))
            if args.max_test is not None:
                test = test.select(range(min(args.max_test, len(test))))
            tokenizer = AutoTokenizer.from_pretrained(minilm_path())

            def tokenize(batch: dict) -> dict:
                return tokenizer(batch["sentence"], truncation=True, max_length=args.seq_len)

            train = train.map(tokenize, batched=True, remove_columns=["sentence"])
            test = test.map(tokenize, batched=True, remove_columns=["sentence"])
            self.train = train.rename_column("label", "labels")
            self.test = test.rename_column("label", "labels")
            self.collator = DataCollatorWithPadding(tokenizer)
            self.processing_class = tokenizer

    def model(self, seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        args = self.args
        if args.task == "fashion":
            from transformers import ViTConfig, ViTForImageClassification

            config = ViTConfig(
                image_size=32,
                patch_size=args.patch,
                num_channels=3,
                hidden_size=args.hidden,
                num_hidden_layers=args.layers,
                num_attention_heads=args.heads,
                intermediate_size=4 * args.hidden,
                num_labels=10,
            )
            return ViTForImageClassification(config)
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=2)


def compute_metrics(prediction: Any) -> dict[str, float]:
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    return {"accuracy": float((np.argmax(logits, -1) == prediction.label_ids).mean())}


# ---------------------------------------------------------------------------------------------- one run
def build_trainer(
    task: Task,
    args: argparse.Namespace,
    output_dir: str,
    fields: dict[str, Any],
    prune_ratio: float | None,
    seed: int,
    eval_each_epoch: bool = False,
) -> EMPTrainer:
    """The `EMPTrainer` of one benchmark run (`fields`: `pruning_method` and any other `EMPConfig` field)."""
    config = EMPConfig(
        output_dir=output_dir,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=256,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup,
        lr_scheduler_type="linear",
        report_to=[],
        save_strategy="no",
        eval_strategy="epoch" if eval_each_epoch else "no",
        logging_strategy="no",
        disable_tqdm=True,
        use_cpu=args.device == "cpu",
        bf16=args.bf16,
        seed=seed,
        dataloader_num_workers=args.workers,
        pruning_warmup_epochs=args.pruning_warmup_epochs,
        prune_ratio=prune_ratio,
        **fields,
    )
    trainer = EMPTrainer(
        model=task.model(seed),
        args=config,
        train_dataset=task.train,
        eval_dataset=task.test if eval_each_epoch else None,
        data_collator=task.collator,
        processing_class=task.processing_class,
        compute_metrics=compute_metrics,
    )
    trainer.remove_callback(PrinterCallback)  # disable_tqdm would print every log line
    return trainer


def run_one(task: Task, args: argparse.Namespace, spec: str, fields: dict[str, Any], ratio: float, seed: int) -> dict:
    method = fields["pruning_method"]
    pruned = method != "none"
    with tempfile.TemporaryDirectory() as out:
        trainer = build_trainer(task, args, out, fields, ratio if pruned else None, seed)
        if args.device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        output = trainer.train()
        if args.device == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
        metrics = trainer.evaluate(eval_dataset=task.test)
        state = trainer.pruning_state
        record = {
            "method": spec,
            "ratio": ratio if pruned else 0.0,
            "seed": seed,
            "accuracy": metrics["eval_accuracy"],
            "realized_saving": state.realized_saving(),
            "steps": output.global_step,
            "full_steps": args.epochs * math.ceil(len(task.train) / args.batch_size),
            "train_seconds": wall,
            "train_loss": output.training_loss,
            "plan_sizes": state.epoch_plan_sizes,
            **frequency_stats(state, trainer.args),
        }
        del trainer
    gc.collect()
    return record


def frequency_stats(state: Any, config: EMPConfig) -> dict[str, Any]:
    """Spread of the per-row visit counts and the rows that no pruned epoch visited (starved rows)."""
    frequency = state.frequency.cpu().numpy()
    schedule = EpochSchedule(
        num_rows=state.num_rows,
        num_epochs=len(state.plans),
        prune_ratio=config.prune_ratio,
        warmup_epochs=config.pruning_warmup_epochs,
        anneal_fraction=config.pruning_anneal_fraction,
    )
    pruned_epochs = [e for e in range(len(state.plans)) if schedule.phase(e) == "pruned"]
    visited = np.zeros(state.num_rows, dtype=bool)
    for epoch in pruned_epochs:
        visited[state.plans[epoch].long().numpy()] = True
    return {
        "freq_mean": float(frequency.mean()),
        "freq_std": float(frequency.std()),
        "freq_min": int(frequency.min()),
        "freq_max": int(frequency.max()),
        "starved": float(1.0 - visited.mean()) if pruned_epochs else 0.0,
        "freq_hist": np.bincount(frequency, minlength=len(state.plans) + 1).tolist(),
    }


# ---------------------------------------------------------------------------------------------- results
def load_records(path: Path, setting: dict[str, Any]) -> list[dict]:
    if not path.exists():
        return []
    records = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                record = json.loads(line)
                if record.get("setting") == setting:
                    records.append(record)
    return records


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(records: list[dict]) -> list[dict]:
    """Mean and std over seeds per (method, ratio), and the paired (same-seed) accuracy difference to random."""
    groups: dict[tuple[str, float], list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["method"], r["ratio"])].append(r)
    random_by_seed = {(r["ratio"], r["seed"]): r["accuracy"] for r in records if r["method"] == "random"}
    rows = []
    for (method, ratio), rs in sorted(
        groups.items(), key=lambda kv: (kv[0][1], kv[0][0] not in ("none", "random"), kv[0][0])
    ):
        row: dict[str, Any] = {"method": method, "ratio": ratio, "seeds": len(rs)}
        for key in ("accuracy", "realized_saving", "steps", "train_seconds", "freq_std", "starved"):
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std([float(x[key]) for x in rs])
        row["full_steps"] = rs[0]["full_steps"]
        diffs = [
            x["accuracy"] - random_by_seed[(ratio, x["seed"])] for x in rs if (ratio, x["seed"]) in random_by_seed
        ]
        row["vs_random_mean"], row["vs_random_std"] = mean_std(diffs) if diffs else (None, None)
        row["vs_random_wins"] = f"{sum(d > 0 for d in diffs)}/{len(diffs)}" if diffs else ""
        rows.append(row)
    return rows


def format_table(rows: list[dict], none_seconds: float | None) -> str:
    head = (
        "| method | ratio | seeds | test accuracy (%) | vs random, paired (wins) | realised saving | steps | "
        "train time (s) | time vs none | freq std | starved rows |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        vs = ""
        if r["vs_random_mean"] is not None and r["method"] != "random":
            vs = f"{100 * r['vs_random_mean']:+.2f} ± {100 * r['vs_random_std']:.2f} ({r['vs_random_wins']})"
        rel = f"{r['train_seconds_mean'] / none_seconds:.2f}" if none_seconds else ""
        lines.append(
            f"| {r['method']} | {r['ratio']:g} | {r['seeds']} | "
            f"{100 * r['accuracy_mean']:.2f} ± {100 * r['accuracy_std']:.2f} | {vs} | "
            f"{100 * r['realized_saving_mean']:.1f}% | {r['steps_mean']:.0f} / {r['full_steps']} | "
            f"{r['train_seconds_mean']:.0f} ± {r['train_seconds_std']:.0f} | {rel} | "
            f"{r['freq_std_mean']:.2f} | {100 * r['starved_mean']:.1f}% |"
        )
    return "\n".join(lines)


def write_summary(rows: list[dict], prefix: Path, setting: dict[str, Any]) -> None:
    with open(f"{prefix}_summary.json", "w") as f:
        json.dump({"setting": setting, "rows": rows}, f, indent=1)
    with open(f"{prefix}_summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


# ---------------------------------------------------------------------------------------------- plots
def plot_accuracy_vs_saving(
    ax: Any, rows: list[dict], colors: dict[str, Any], task: str, baselines: tuple[str, ...] = ()
) -> None:
    """Each method of `colors` (in that order): accuracy (mean ± std over seeds) against realised saving, the
    `baselines` dashed; full data (`none`) as a horizontal line."""
    for i, method in enumerate(colors):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["realized_saving_mean"])
        baseline = method in baselines
        ax.errorbar(
            [100 * r["realized_saving_mean"] for r in mine],
            [100 * r["accuracy_mean"] for r in mine],
            yerr=[100 * r["accuracy_std"] for r in mine],
            label=method,
            color=colors[method],
            marker="osD^v<>pP*X"[i % 11],
            linestyle="--" if baseline else "-",
            capsize=3,
            linewidth=1.5 if baseline else 1,
        )
    full_data_style = ":" if baselines else "--"  # dashes are the baselines' when there are any
    for r in rows:
        if r["method"] == "none":
            ax.axhline(
                100 * r["accuracy_mean"],
                color="black",
                linestyle=full_data_style,
                linewidth=1,
                label="none (full data)",
            )
    ax.set_xlabel("realised saving (% of example visits skipped)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{task}: accuracy vs realised saving (mean ± std over seeds)")


def plot(records: list[dict], rows: list[dict], task: str, plot_dir: Path) -> list[Path]:
    from matplotlib.figure import Figure  # Agg through Figure.savefig: no pyplot, no display

    plot_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    fig = Figure(figsize=(7.5, 5.0), layout="constrained")
    ax = fig.add_subplot()
    methods = sorted({r["method"] for r in rows if r["method"] != "none"}, key=lambda m: (m != "random", m))
    from matplotlib import colormaps

    palette = colormaps["tab20"].colors
    colors = {m: palette[(2 * i) % 20 + (2 * i) // 20 % 2] for i, m in enumerate(methods)}
    plot_accuracy_vs_saving(ax, rows, colors, task)
    ax.legend(fontsize=7, ncol=2)
    path = plot_dir / f"{task}_accuracy_vs_saving.png"
    fig.savefig(path, dpi=110)
    paths.append(path)

    ratios = sorted({r["ratio"] for r in records if r["ratio"] > 0})
    fig = Figure(figsize=(9.0, 1.2 + 0.32 * len(methods) * len(ratios)), layout="constrained")
    ax = fig.add_subplot()
    labels, means, stds, bar_colors = [], [], [], []
    for ratio in ratios:
        for r in rows:
            if r["ratio"] == ratio and r["method"] not in ("none", "random") and r["vs_random_mean"] is not None:
                labels.append(f"{r['method']} @ {ratio:g} ({r['vs_random_wins']})")
                means.append(100 * r["vs_random_mean"])
                stds.append(100 * r["vs_random_std"])
                bar_colors.append(colors[r["method"]])
    if labels:
        ys = np.arange(len(labels))[::-1]
        ax.barh(ys, means, xerr=stds, color=bar_colors, capsize=3)
        ax.set_yticks(ys, labels, fontsize=8)
        ax.axvline(0, color="black", linewidth=1)
        ax.set_xlabel("accuracy minus random's on the same seed (points, mean ± std over seeds)")
        ax.set_title(f"{task}: paired difference to uniform random at the same prune ratio (wins/seeds)", fontsize=10)
        path = plot_dir / f"{task}_vs_random.png"
        fig.savefig(path, dpi=110)
        paths.append(path)

    for ratio in ratios:
        mine = [m for m in methods if any(r["method"] == m and r["ratio"] == ratio for r in records)]
        if not mine:
            continue
        cols = min(4, len(mine))
        nrows = math.ceil(len(mine) / cols)
        fig = Figure(figsize=(3.2 * cols, 2.6 * nrows), layout="constrained")
        for i, method in enumerate(mine):
            ax = fig.add_subplot(nrows, cols, i + 1)
            runs = [r for r in records if r["method"] == method and r["ratio"] == ratio]
            width = max(len(r["freq_hist"]) for r in runs)
            hist = np.mean([np.pad(r["freq_hist"], (0, width - len(r["freq_hist"]))) for r in runs], axis=0)
            total = hist.sum()
            ax.bar(np.arange(width), 100 * hist / total, color=colors[method])
            std = statistics.fmean(r["freq_std"] for r in runs)
            starved = statistics.fmean(r["starved"] for r in runs)
            ax.set_title(f"{method}\nstd {std:.2f}, starved {100 * starved:.1f}%", fontsize=8)
            ax.set_xticks(np.arange(width))
            ax.tick_params(labelsize=7)
            if i % cols == 0:
                ax.set_ylabel("% of rows", fontsize=8)
            if i >= len(mine) - cols:
                ax.set_xlabel("times trained", fontsize=8)
        fig.suptitle(f"{task}, prune ratio {ratio:g}: how often each row was trained", fontsize=10)
        path = plot_dir / f"{task}_frequency_p{ratio:g}.png"
        fig.savefig(path, dpi=110)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------- main
def quiet_runs(args: argparse.Namespace) -> None:
    """Torch threads as asked; no transformers warnings or datasets progress bars between the result lines."""
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    import datasets

    datasets.disable_progress_bars()


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    quiet_runs(args)

    setting = setting_of(args)
    prefix = Path(args.out)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    results = Path(f"{prefix}.jsonl")
    records = [] if args.no_resume else load_records(results, setting)
    done = {(r["method"], r["ratio"], r["seed"]) for r in records}

    if not args.summary_only:
        task = Task(args)
        print(f"{args.task}: {len(task.train)} train / {len(task.test)} test rows; setting {setting}", flush=True)
        if not args.no_warmup_run:  # first-call costs (allocator, kernels, imports) land on no measured run
            warm = Task.__new__(Task)
            warm.__dict__.update(
                task.__dict__, train=task.train.select(range(min(len(task.train), 2 * args.batch_size)))
            )
            run_one(warm, argparse.Namespace(**{**vars(args), "epochs": 1}), "none", METHODS["none"], 0.0, 0)
        for ratio in args.ratios:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                for spec, fields in args.method_specs:
                    run_ratio = ratio if fields["pruning_method"] != "none" else 0.0
                    if (spec, run_ratio, seed) in done:
                        continue
                    record = run_one(task, args, spec, fields, ratio, seed)
                    record["setting"] = setting
                    with open(results, "a") as f:  # one line per finished run: interruptions lose only the current
                        f.write(json.dumps(record) + "\n")
                    records.append(record)
                    done.add((spec, run_ratio, seed))
                    print(
                        f"  {spec:<34} p={run_ratio:<4g} seed={seed}  acc {100 * record['accuracy']:.2f}%  "
                        f"saving {100 * record['realized_saving']:.1f}%  steps {record['steps']}  "
                        f"{record['train_seconds']:.0f}s  freq std {record['freq_std']:.2f}  "
                        f"starved {100 * record['starved']:.1f}%",
                        flush=True,
                    )
    wanted = {spec for spec, _ in args.method_specs}
    records = [r for r in records if r["method"] in wanted and (r["ratio"] in args.ratios or r["ratio"] == 0.0)]
    if not records:
        print("no results yet")
        return []
    rows = summarise(records)
    none_rows = [r for r in rows if r["method"] == "none"]
    print()
    print(format_table(rows, none_rows[0]["train_seconds_mean"] if none_rows else None))
    write_summary(rows, prefix, setting)
    print(f"\nruns: {results}\nsummary: {prefix}_summary.csv, {prefix}_summary.json")
    if args.plot:
        for path in plot(records, rows, args.task, Path(args.plot_dir)):
            print(f"plot: {path}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
