"""Tracking overhead and time saved, measured side by side in one process.

    python benchmarks/overhead.py                      # CPU, small BERT, synthetic token data
    python benchmarks/overhead.py --device cuda --rows 20000 --hidden 384 --layers 6   # GPU, MiniLM-sized

    python benchmarks/overhead.py --arms trainer,none --repeats 20   # tracking cost only, with its spread

Prints, as ratios of arms run interleaved in the same process (absolute times only mean something on a GPU):
  * EMPTrainer(pruning_method="none") / Trainer         -> the cost of per-example tracking
  * EMPTrainer(random, p) / EMPTrainer(none)            -> time of a pruned run vs the full run
  * ideal = 1 - realised saving                         -> how close the pruned run gets to the ideal
  * none / Trainer paired by repeat: median ratio, its robust standard error, quartiles and range
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets  # noqa: E402
import torch  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments  # noqa: E402

from emp_hf import EMPConfig, EMPTrainer  # noqa: E402


def build_data(rows: int, seq_len: int, vocab: int) -> datasets.Dataset:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (rows, seq_len), generator=g)
    labels = (ids[:, 1] % 2).tolist()
    return datasets.Dataset.from_dict({"input_ids": ids.tolist(), "labels": labels})


def run(arm: str, data: datasets.Dataset, opts: argparse.Namespace) -> tuple[float, float, int]:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=opts.vocab,
        hidden_size=opts.hidden,
        num_hidden_layers=opts.layers,
        num_attention_heads=max(opts.hidden // 64, 2),
        intermediate_size=4 * opts.hidden,
        num_labels=2,
    )
    model = BertForSequenceClassification(config)
    common = dict(
        output_dir=tempfile.mkdtemp(),
        num_train_epochs=opts.epochs,
        per_device_train_batch_size=opts.batch_size,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        use_cpu=opts.device == "cpu",
        bf16=opts.device == "cuda",
        seed=0,
        dataloader_num_workers=0,
    )
    if arm == "trainer":
        trainer = Trainer(model=model, args=TrainingArguments(**common), train_dataset=data)
    else:
        method, ratio = ("none", None) if arm == "none" else ("random", opts.prune_ratio)
        args = EMPConfig(**common, pruning_method=method, prune_ratio=ratio)
        trainer = EMPTrainer(model=model, args=args, train_dataset=data)
    start = time.perf_counter()
    output = trainer.train()
    if opts.device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    saving = trainer.pruning_state.realized_saving() if isinstance(trainer, EMPTrainer) else 0.0
    return seconds, saving, output.global_step


def ratio_stats(ratios: list[float]) -> dict[str, float]:
    """Median of per-repeat ratios, its robust standard error (1.2533 * 1.4826 * MAD / sqrt(n), the normal-theory
    standard error of a median with the spread estimated by the median absolute deviation, so that a repeat
    slowed down by another job does not swamp it), the interquartile range and the range."""
    median = statistics.median(ratios)
    mad = statistics.median(abs(r - median) for r in ratios)
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [median] * 3
    return {
        "median": median,
        "sem": 1.2533 * 1.4826 * mad / len(ratios) ** 0.5,
        "q1": quartiles[0],
        "q3": quartiles[2],
        "min": min(ratios),
        "max": max(ratios),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--prune-ratio", type=float, default=0.7)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--arms", default="trainer,none,pruned", help="comma-separated: trainer, none, pruned")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is steadiest on a CPU)")
    parser.add_argument("--json", default="", help="write the times and the paired ratio to this file")
    opts = parser.parse_args(argv)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    arms = [a for a in opts.arms.split(",") if a]
    if not set(arms) <= {"trainer", "none", "pruned"} or "trainer" not in arms and "none" not in arms:
        parser.error("--arms takes trainer, none and pruned, with trainer or none among them")

    data = build_data(opts.rows, opts.seq_len, opts.vocab)
    times: dict[str, list[float]] = {arm: [] for arm in arms}
    info: dict[str, tuple[float, int]] = {}
    run(arms[0], data, opts)  # warm-up: first-call costs land on no arm
    for repeat in range(opts.repeats):
        # interleaved, and every other repeat in reverse order (ABBA): drift in machine speed hits every arm alike
        for arm in arms if repeat % 2 == 0 else arms[::-1]:
            seconds, saving, steps = run(arm, data, opts)
            times[arm].append(seconds)
            info[arm] = (saving, steps)
    med = {arm: statistics.median(values) for arm, values in times.items()}
    print(f"\n{opts.rows} rows, {opts.epochs} epochs, batch {opts.batch_size}, device {opts.device}, "
          f"median of {opts.repeats} interleaved repeats (ABBA order)")  # fmt: skip
    print(f"{'arm':<34}{'steps':>7}{'median s':>10}{'ratio':>9}")
    if "trainer" in arms:
        print(f"{'Trainer':<34}{info['trainer'][1]:>7}{med['trainer']:>10.2f}{1.0:>9.3f}")
    if "none" in arms and "trainer" in arms:
        print(f"{'EMPTrainer none (tracking only)':<34}{info['none'][1]:>7}{med['none']:>10.2f}"
              f"{med['none'] / med['trainer']:>9.3f}  vs Trainer")  # fmt: skip
    if "pruned" in arms and "none" in arms:
        saving = info["pruned"][0]
        label = f"EMPTrainer random p={opts.prune_ratio}"
        print(
            f"{label:<34}{info['pruned'][1]:>7}{med['pruned']:>10.2f}{med['pruned'] / med['none']:>9.3f}"
            f"  vs full (ideal {1 - saving:.3f}, saving {saving:.3f})"
        )
    if "none" in arms and "trainer" in arms:
        paired = ratio_stats([a / b for a, b in zip(times["none"], times["trainer"], strict=True)])
        print(
            f"\nnone / Trainer, paired by repeat ({opts.repeats} repeats): median {paired['median']:.4f}, "
            f"robust standard error {paired['sem']:.4f} ({100 * paired['sem']:.2f}%), "
            f"quartiles {paired['q1']:.4f}-{paired['q3']:.4f}, range {paired['min']:.4f}-{paired['max']:.4f}"
        )
        if opts.json:
            payload = {"options": vars(opts), "times": times, "none_over_trainer": paired}
            Path(opts.json).write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
