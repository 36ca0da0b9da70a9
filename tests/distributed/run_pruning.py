"""Train a tiny BERT with `EMPTrainer` and record what every process saw; run under several processes.

    torchrun --standalone --nproc_per_node 2 tests/distributed/run_pruning.py --output_dir OUT --methods emp
    accelerate launch --multi_gpu --num_processes 2 tests/distributed/run_pruning.py --output_dir OUT
    python tests/distributed/run_pruning.py --output_dir OUT --per_device_train_batch_size 16   # 1 process

(`accelerate launch --cpu --num_processes 2` starts a single process in accelerate 1.15; `--multi_gpu` makes
it start both, and `--device cpu`, the default, keeps them on CPU with gloo.)

For each method in `--methods`, every rank writes `OUT/<method>/rank<r>.json` with, per epoch, the SHA-256
of its tracker state at `on_epoch_end` and the batches of row indices it trained on, and at the end its
frequency table, plans, per-row statistics and global step. `tests/distributed/test_multiprocess.py`
compares these files across ranks and runs.

Interruption: `--stop_at_step S` saves a checkpoint at global step S and stops there (as a preempted job
would); a second invocation with `--resume` continues from the last checkpoint of the same output dir.
Other layouts: `--drop_last`, `--uneven_batches` (`even_batches=False`), `--fsdp full_shard` with
`--device auto` on GPUs (on CPU, accelerate 1.15 ignores FSDP and trains with DDP).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets  # noqa: E402
import torch  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification, PrinterCallback, TrainerCallback  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from emp_hf import EMPConfig, EMPTrainer, PruningState  # noqa: E402
from emp_hf_dev.launching import end_process_group

METHODS = ("none", "random", "epsilon_greedy", "ucb", "infobatch", "emp")
VOCAB = 100
SEQ_LEN = 16


def state_hash(state: PruningState) -> str:
    """SHA-256 of every per-row table (names, dtypes and bytes), the plans and the non-finite counter."""
    h = hashlib.sha256()
    for name in sorted(state.tables):
        table = state.tables[name].detach().to("cpu").contiguous()
        h.update(f"{name}:{table.dtype}:{table.numel()};".encode())
        h.update(table.numpy().tobytes())
    for epoch, plan in enumerate(state.plans):
        plan = plan.to("cpu").contiguous()
        h.update(f"plan{epoch}:{plan.dtype}:{plan.numel()};".encode())
        h.update(plan.numpy().tobytes())
    h.update(str(int(state.nonfinite_count)).encode())
    return h.hexdigest()


def make_dataset(num_rows: int, seed: int) -> datasets.Dataset:
    """A learnable toy task: label 1 iff token 5 appears at position 3."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(6, VOCAB, (num_rows, SEQ_LEN), generator=g)
    labels = torch.randint(0, 2, (num_rows,), generator=g)
    ids[labels == 1, 3] = 5
    ids[:, 0] = 1
    return datasets.Dataset.from_dict({"input_ids": ids.tolist(), "labels": labels.tolist()})


def make_model(seed: int, dropout: float) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=SEQ_LEN,
        num_labels=2,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    return BertForSequenceClassification(config)


class RecordingTrainer(EMPTrainer):
    """`EMPTrainer` that records the row indices of every training micro-batch this process computes."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.current_epoch: int | None = None
        self.trained: dict[int, list[list[int]]] = defaultdict(list)

    def _run_epoch(self, **kwargs):
        self.current_epoch = kwargs["epoch"]
        return super()._run_epoch(**kwargs)

    def training_step(self, model, inputs, num_items_in_batch=None):
        rows = inputs.get(self.args.pruning_index_column)  # EMPTrainer.training_step pops it
        if rows is not None:
            self.trained[self.current_epoch].append([int(r) for r in rows.tolist()])
        return super().training_step(model, inputs, num_items_in_batch)


class EpochRecorder(TrainerCallback):
    """Hashes the trainer's pruning state at the end of every epoch (also a partial, interrupted one)."""

    def __init__(self) -> None:
        self.trainer: RecordingTrainer | None = None
        self.records: list[dict] = []
        self.held_rows: list[list[int]] = []  # per epoch end: the block of rows this process keeps tables of

    def on_epoch_end(self, args, state, control, **kwargs):
        ps = self.trainer.pruning_state
        self.records.append(
            {
                "epoch": self.trainer.current_epoch,
                "global_step": state.global_step,
                "num_plans": len(ps.plans),
                "hash": state_hash(ps),
            }
        )
        self.held_rows.append([ps.row_start, ps.row_stop])


class StopAfterCheckpoint(TrainerCallback):
    """Saves a checkpoint at global step `step` and stops training right after it (a simulated preemption)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


def _floats(t: torch.Tensor) -> list:
    return [None if x != x else x for x in t.tolist()]  # NaN -> null (strict JSON)


def run_method(method: str, opts: argparse.Namespace, dataset: datasets.Dataset) -> dict:
    out = Path(opts.output_dir) / method
    config = EMPConfig(
        output_dir=str(out / "trainer"),
        num_train_epochs=opts.num_train_epochs,
        per_device_train_batch_size=opts.per_device_train_batch_size,
        gradient_accumulation_steps=opts.gradient_accumulation_steps,
        learning_rate=opts.learning_rate,
        lr_scheduler_type="linear",
        seed=opts.seed,
        use_cpu=opts.device == "cpu",
        report_to=[],
        save_strategy="no",  # StopAfterCheckpoint asks for the one save the interruption needs
        logging_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
        dataloader_drop_last=opts.drop_last,
        accelerator_config={"even_batches": not opts.uneven_batches},
        **({"fsdp": opts.fsdp, "fsdp_config": {"version": opts.fsdp_version}} if opts.fsdp else {}),
        pruning_method=method,
        prune_ratio=None if method == "none" else opts.prune_ratio,
    )
    recorder = EpochRecorder()
    callbacks: list[TrainerCallback] = [recorder]
    if opts.stop_at_step:
        callbacks.append(StopAfterCheckpoint(opts.stop_at_step))
    trainer = RecordingTrainer(
        model=make_model(opts.seed, opts.dropout), args=config, train_dataset=dataset, callbacks=callbacks
    )
    trainer.remove_callback(PrinterCallback)  # keep the launch output short
    recorder.trainer = trainer
    start = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=True if opts.resume else None)
    seconds = time.perf_counter() - start
    ps = trainer.pruning_state
    acc = trainer.accelerator
    result = {
        "method": method,
        "rank": acc.process_index,
        "world_size": acc.num_processes,
        "distributed_type": str(acc.distributed_type),
        "backend": getattr(acc.state, "backend", None),
        "per_device_train_batch_size": opts.per_device_train_batch_size,
        "gradient_accumulation_steps": opts.gradient_accumulation_steps,
        "num_rows": ps.num_rows,
        "resumed": bool(opts.resume),
        "stop_at_step": opts.stop_at_step,
        "global_step": output.global_step,
        "seconds": seconds,
        "records": recorder.records,
        "held_rows": recorder.held_rows,
        "trained": {str(epoch): batches for epoch, batches in sorted(trainer.trained.items())},
        "final_hash": state_hash(ps),
        "plans": [plan.tolist() for plan in ps.plans],
        "frequency": ps.frequency.tolist(),
        "last_epoch": ps.last_epoch.tolist(),
        # the tables the method keeps (its strategy's `required_tables`); null for the others
        **{
            name: _floats(getattr(ps, name)) if name in ps.tracked else None
            for name in ("loss", "entropy", "ema_mean", "ema_var", "weight")
        },
        "nonfinite_count": int(ps.nonfinite_count),
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"rank{acc.process_index}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, path)
    acc.wait_for_everyone()
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods, run in turn")
    p.add_argument("--num_rows", type=int, default=203)
    p.add_argument("--per_device_train_batch_size", type=int, default=8)
    p.add_argument("--gradient_accumulation_steps", type=int, default=2)
    p.add_argument("--num_train_epochs", type=int, default=4)
    p.add_argument("--prune_ratio", type=float, default=0.5)
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--drop_last", action="store_true", help="dataloader_drop_last=True")
    p.add_argument("--uneven_batches", action="store_true", help="accelerator_config even_batches=False")
    p.add_argument("--device", choices=["cpu", "auto"], default="cpu", help="auto: the accelerator if any")
    p.add_argument("--fsdp", default="", help="TrainingArguments.fsdp, e.g. 'full_shard' (empty: DDP)")
    p.add_argument("--fsdp_version", type=int, default=2)
    p.add_argument("--stop_at_step", type=int, default=0, help="save a checkpoint at this step and stop")
    p.add_argument("--resume", action="store_true", help="resume from the last checkpoint of --output_dir")
    opts = p.parse_args(argv)
    methods = [m for m in opts.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {METHODS}")
    opts.methods = methods
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    hf_logging.set_verbosity_error()
    dataset = make_dataset(opts.num_rows, opts.seed)
    for method in opts.methods:
        result = run_method(method, opts, dataset)
        if result["rank"] == 0:
            print(
                f"[run_pruning] {method}: world_size={result['world_size']} "
                f"global_step={result['global_step']} "
                f"plans={[len(p) for p in result['plans']]} {result['seconds']:.1f}s",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    code = main()
    end_process_group()
    sys.exit(code)
