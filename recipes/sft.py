#!/usr/bin/env python
"""Supervised fine-tuning of a causal LM with dynamic data pruning: TRL's `SFTTrainer` -> `EMPSFTTrainer`.

In the style of TRL's `trl/scripts/sft.py`: every `EMPSFTConfig` field (every `SFTConfig` and `TrainingArguments`
flag plus the pruning options) is a flag, and `--config recipe.yaml` reads them from a file (`TrlParser`).

    # offline: the real movie-review sentences as instructions (prompt -> " positive"/" negative") and a tiny
    # Llama built from a config, with a word-level tokenizer trained on the training sentences
    python recipes/sft.py --dataset_name sentiment_offline --output_dir /tmp/sft_out \\
        --pruning_method emp --prune_ratio 0.5 --num_train_epochs 4

    # any Hub model and dataset (needs network): a text-classification dataset with a label column is phrased
    # as instructions like the offline one; any other dataset (prompt-completion, messages, text) trains as is
    accelerate launch recipes/sft.py --model_name_or_path Qwen/Qwen2.5-0.5B --dataset_name stanfordnlp/sst2 \\
        --text_column sentence --learning_rate 2e-5 --output_dir out/sst2-sft
    accelerate launch recipes/sft.py --model_name_or_path Qwen/Qwen2.5-0.5B --dataset_name trl-lib/Capybara \\
        --output_dir out/capybara-sft

At the end it prints and saves (`all_results.json`) the realised saving, the optimizer steps against the same run
without pruning, the evaluation loss and, for instruction-phrased classification, the task accuracy (the label
whose first completion token the model ranks higher after the prompt).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch
from datasets import Dataset, DatasetDict, load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, set_seed
from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available
from trl import TrlParser

from emp_hf.integration.config import argument_errors
from emp_hf.integration.sft import EMPSFTConfig, EMPSFTTrainer  # emp_hf: the SFTConfig/SFTTrainer pair that prunes
from emp_hf_dev.offline_data import load_sentiment_sentences
from emp_hf_dev.recipe_runtime import (
    ThreadArguments,
    follow_free_cores,
    full_data_steps,
    report,
    set_torch_threads,
    setup_logging,
)

OFFLINE_DATASET = "sentiment_offline"
SPECIAL_TOKENS = ["<pad>", "<eos>", "<unk>"]

logger = logging.getLogger(__name__)


@dataclass
class ScriptArguments:
    """What to train: the dataset, the model (or a tiny one built from a config) and the instruction format."""

    dataset_name: str = field(
        default=OFFLINE_DATASET,
        metadata={"help": f"A Hub dataset, or {OFFLINE_DATASET!r} (the movie-review sentences, no network)."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "The Hub dataset's configuration."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    dataset_test_split: str = field(default="test", metadata={"help": "Split to evaluate on (Hub datasets)."})
    text_column: str = field(
        default="sentence", metadata={"help": "Classification datasets: the column with the text to classify."}
    )
    label_column: str = field(default="label", metadata={"help": "Classification datasets: the label column."})
    prompt_template: str = field(
        default="Review: {text}\nSentiment:", metadata={"help": "The instruction around each text ({text})."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on the first N rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on the first N rows."})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A causal LM (Hub id or path). Default: a tiny Llama built from a config."}
    )
    tiny_hidden_size: int = field(default=64, metadata={"help": "Tiny model: hidden size."})
    tiny_num_layers: int = field(default=2, metadata={"help": "Tiny model: decoder layers."})
    tiny_min_word_frequency: int = field(
        default=2, metadata={"help": "Tiny model: words seen fewer times in training become <unk>."}
    )


def as_instructions(dataset: Dataset, script_args: ScriptArguments) -> Dataset:
    """Classification rows -> prompt-completion rows: the prompt template around the text, the label name."""
    names = dataset.features[script_args.label_column].names

    def phrase(batch: dict) -> dict:
        return {
            "prompt": [script_args.prompt_template.format(text=text) for text in batch[script_args.text_column]],
            "completion": [f" {names[label]}" for label in batch[script_args.label_column]],
        }

    return dataset.map(phrase, batched=True, remove_columns=dataset.column_names)


def load_data(script_args: ScriptArguments) -> tuple[DatasetDict, list[str] | None]:
    """The train and test splits, and the label names when the task is classification phrased as instructions."""
    if script_args.dataset_name == OFFLINE_DATASET:
        raw = load_sentiment_sentences()
        script_args.text_column, script_args.label_column = "sentence", "label"
    else:
        raw = load_dataset(script_args.dataset_name, script_args.dataset_config)
        raw = DatasetDict({"train": raw[script_args.dataset_train_split], "test": raw[script_args.dataset_test_split]})
    limits = {"train": script_args.max_train_samples, "test": script_args.max_eval_samples}
    raw = DatasetDict({k: d.select(range(min(len(d), limits[k] or len(d)))) for k, d in raw.items()})
    if script_args.label_column not in raw["train"].column_names:
        return raw, None
    label_names = raw["train"].features[script_args.label_column].names
    return DatasetDict({k: as_instructions(d, script_args) for k, d in raw.items()}), label_names


def tiny_model_and_tokenizer(script_args: ScriptArguments, train: Dataset, seed: int):
    """A word-level tokenizer trained on the training rows, and a tiny Llama built from a config."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    texts = (
        [p + c for p, c in zip(train["prompt"], train["completion"], strict=True)]
        if "prompt" in train.features
        else None
    )
    if texts is None:
        raise ValueError("The tiny model is for prompt-completion data; pass --model_name_or_path for this dataset.")
    word_trainer = trainers.WordLevelTrainer(
        min_frequency=script_args.tiny_min_word_frequency, special_tokens=SPECIAL_TOKENS
    )
    backend.train_from_iterator(texts, trainer=word_trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    set_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=script_args.tiny_hidden_size,
        intermediate_size=2 * script_args.tiny_hidden_size,
        num_hidden_layers=script_args.tiny_num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config), tokenizer


@torch.no_grad()
def label_accuracy(model, tokenizer, test: Dataset, label_names: list[str], batch_size: int = 64) -> float:
    """Share of test prompts after which the model ranks the right label's first token above the others'."""
    label_ids = []
    for name in label_names:  # the first token of " name" after a prompt, as the trainer tokenized it
        prompt_ids = tokenizer(test[0]["prompt"])["input_ids"]
        label_ids.append(tokenizer(test[0]["prompt"] + f" {name}")["input_ids"][len(prompt_ids)])
    if len(set(label_ids)) < len(label_ids):
        raise ValueError(f"The labels {label_names} start with the same token; accuracy cannot tell them apart.")
    model.eval()
    names = {f" {name}": i for i, name in enumerate(label_names)}
    correct = 0
    for start in range(0, len(test), batch_size):
        rows = test[start : start + batch_size]
        batch = tokenizer(rows["prompt"], return_tensors="pt", padding=True, padding_side="right")
        batch = batch.to(model.device)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        last = batch["attention_mask"].sum(dim=1) - 1
        scores = logits[torch.arange(len(last)), last][:, label_ids]
        truth = torch.tensor([names[c.removesuffix(tokenizer.eos_token)] for c in rows["completion"]])
        correct += int((scores.argmax(dim=-1).cpu() == truth).sum())
    return correct / len(test)


def parse_args(argv: list[str] | None) -> tuple[ScriptArguments, EMPSFTConfig, ThreadArguments]:
    """The arguments, as TRL's scripts read them (`--config recipe.yaml` too); a value a config refuses is one
    `error:` line (exit status 2). TRL turns `bf16` on by default; here it is on only where the hardware has it
    (a GPU with bf16, or a TPU): on a CPU it would stop the run ("Your setup doesn't support bf16/gpu")."""
    parser = TrlParser((ScriptArguments, EMPSFTConfig, ThreadArguments))
    parser.set_defaults(bf16=is_torch_bf16_gpu_available() or is_torch_xla_available())
    with argument_errors(parser):
        return parser.parse_args_and_config(args=argv)


def main(argv: list[str] | None = None) -> dict:
    script_args, training_args, thread_args = parse_args(argv)
    set_torch_threads(thread_args.threads)
    setup_logging(training_args, logger)
    start = time.perf_counter()
    data, label_names = load_data(script_args)
    if script_args.model_name_or_path is None:
        model, tokenizer = tiny_model_and_tokenizer(script_args, data["train"], training_args.seed)
    else:
        tokenizer = AutoTokenizer.from_pretrained(script_args.model_name_or_path)
        model = AutoModelForCausalLM.from_pretrained(script_args.model_name_or_path)
    trainer = EMPSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=data["train"],
        eval_dataset=data["test"],
        processing_class=tokenizer,
    )
    follow_free_cores(trainer)
    train_result = trainer.train()
    trainer.save_model()
    eval_metrics = trainer.evaluate()
    if label_names is not None:
        eval_metrics["eval_accuracy"] = label_accuracy(trainer.model, tokenizer, data["test"], label_names)
    full_steps = full_data_steps(len(trainer.train_dataset), training_args, trainer.accelerator.num_processes)
    return report(
        trainer,
        train_result.metrics,
        eval_metrics,
        title=f"SFT on {script_args.dataset_name} ({script_args.model_name_or_path or 'tiny Llama from a config'})",
        full_steps=full_steps,
        start=start,
    )


if __name__ == "__main__":
    main()
