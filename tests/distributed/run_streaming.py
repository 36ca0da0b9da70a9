"""Train a tiny BERT with `EMPTrainer` on a streamed (or map-style) training set and record what each process saw.

    torchrun --standalone --nproc_per_node 2 tests/distributed/run_streaming.py --output_dir OUT --source datasets
    python tests/distributed/run_streaming.py --output_dir OUT --source map --per_device_train_batch_size 16

`--source`: `map` (a `datasets.Dataset`), `datasets` (its `to_iterable_dataset()`) or `torch` (a torch
`IterableDataset` of the same rows); the streams carry the row ids in `emp_row_index` and get their size from
`pruning_num_rows`. `--each_process_reads` sets `accelerator_config.dispatch_batches=False` (every process reads
the stream and keeps its share of each global batch; by default process 0 reads it and dispatches the batches).
Each rank writes `OUT/<method>/rank<r>.json` (the format of `run_pruning.py`), read by
`tests/distributed/test_streaming_multiprocess.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from run_pruning import EpochRecorder, RecordingTrainer, make_dataset, make_model, state_hash  # noqa: E402
from transformers import PrinterCallback  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from emp_hf import EMPConfig  # noqa: E402
from emp_hf.integration.config import INDEX_COLUMN  # noqa: E402
from emp_hf_dev.launching import end_process_group


class TorchStream(torch.utils.data.IterableDataset):
    """The rows of a `datasets.Dataset` as a torch stream, in order (no `__len__`)."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __iter__(self):
        for row in self.dataset:
            yield {key: torch.tensor(value) for key, value in row.items()}


def training_set(source: str, num_rows: int, seed: int):
    data = make_dataset(num_rows, seed)
    data = data.add_column(INDEX_COLUMN, list(range(num_rows)))
    if source == "map":
        return data
    return data.to_iterable_dataset(num_shards=2) if source == "datasets" else TorchStream(data)


def run_method(method: str, opts: argparse.Namespace) -> dict:
    out = Path(opts.output_dir) / method
    config = EMPConfig(
        output_dir=str(out / "trainer"),
        num_train_epochs=opts.num_train_epochs,
        per_device_train_batch_size=opts.per_device_train_batch_size,
        gradient_accumulation_steps=opts.gradient_accumulation_steps,
        learning_rate=opts.learning_rate,
        seed=opts.seed,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=opts.num_workers,
        ddp_find_unused_parameters=False,
        accelerator_config={"dispatch_batches": False} if opts.each_process_reads else {},
        pruning_method=method,
        prune_ratio=opts.prune_ratio,
        pruning_num_rows=None if opts.source == "map" else opts.num_rows,
    )
    recorder = EpochRecorder()
    trainer = RecordingTrainer(
        model=make_model(opts.seed, opts.dropout),
        args=config,
        train_dataset=training_set(opts.source, opts.num_rows, opts.seed),
        callbacks=[recorder],
    )
    trainer.remove_callback(PrinterCallback)
    recorder.trainer = trainer
    output = trainer.train()
    ps, acc = trainer.pruning_state, trainer.accelerator
    result = {
        "method": method,
        "rank": acc.process_index,
        "world_size": acc.num_processes,
        "source": opts.source,
        "global_step": output.global_step,
        "records": recorder.records,
        "trained": {str(epoch): batches for epoch, batches in sorted(trainer.trained.items())},
        "final_hash": state_hash(ps),
        "plans": [plan.tolist() for plan in ps.plans],
        "frequency": ps.frequency.tolist(),
        "last_epoch": ps.last_epoch.tolist(),
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"rank{acc.process_index}.json"
    path.with_suffix(".tmp").write_text(json.dumps(result))
    os.replace(path.with_suffix(".tmp"), path)
    acc.wait_for_everyone()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--source", choices=["map", "datasets", "torch"], default="datasets")
    p.add_argument("--methods", default="random,emp")
    p.add_argument("--num_rows", type=int, default=203)
    p.add_argument("--per_device_train_batch_size", type=int, default=8)
    p.add_argument("--gradient_accumulation_steps", type=int, default=2)
    p.add_argument("--num_train_epochs", type=int, default=4)
    p.add_argument("--prune_ratio", type=float, default=0.5)
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num_workers", type=int, default=0, help="dataloader_num_workers")
    p.add_argument("--each_process_reads", action="store_true", help="accelerator_config dispatch_batches=False")
    opts = p.parse_args(argv)
    hf_logging.set_verbosity_error()
    for method in [m for m in opts.methods.split(",") if m]:
        result = run_method(method, opts)
        if result["rank"] == 0:
            sizes = [len(plan) for plan in result["plans"]]
            print(f"[run_streaming] {method} {opts.source}: step={result['global_step']} plans={sizes}", flush=True)
    return 0


if __name__ == "__main__":
    code = main()
    end_process_group()
    sys.exit(code)
