#!/usr/bin/env python
"""Train a ViT image classifier with dynamic data pruning (`EMPTrainer`).

In the style of transformers' `examples/pytorch/image-classification/run_image_classification.py`; every
`EMPConfig` (hence every `TrainingArguments`) field is a flag, and a single `.json` argument is read as the
whole configuration.

    # CIFAR-10 from the Hub (needs network): fine-tune a pretrained ViT ...
    accelerate launch recipes/image_classification.py --dataset_name uoft-cs/cifar10 \\
        --model_name_or_path google/vit-base-patch16-224-in21k --pruning_method emp --prune_ratio 0.5 \\
        --num_train_epochs 3 --learning_rate 5e-5 --per_device_train_batch_size 64 --output_dir out/cifar10
    # ... or train a small ViT (2.7M parameters at 32x32) from scratch
    accelerate launch recipes/image_classification.py --dataset_name uoft-cs/cifar100 --vit_from_scratch \\
        --num_train_epochs 100 --learning_rate 1e-3 --per_device_train_batch_size 256 --output_dir out/c100

    # offline: Fashion-MNIST at 32x32x3 (installed by `make setup`)
    python recipes/image_classification.py --dataset_name fashion_mnist_offline --vit_from_scratch \\
        --max_train_samples 4000 --num_train_epochs 3 --learning_rate 1e-3 --per_device_train_batch_size 128 \\
        --output_dir /tmp/image_out

The training split gets the usual augmentation (random crop with zero padding 4, horizontal flip), written in
torch (torchvision is not needed) and applied through `Dataset.with_transform`. The offline dataset is only
used when named: a Hub dataset that cannot be reached fails at once with a message that names it. At the end
the script prints and saves (`all_results.json`) the evaluation metrics, the realised saving, the optimizer
steps and the wall-clock time, and writes the training-frequency histogram to `output_dir`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import evaluate
import numpy as np
import torch
import torch.nn.functional as F
import transformers
from datasets import DatasetDict
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    EvalPrediction,
    ViTConfig,
    ViTForImageClassification,
    set_seed,
)

from emp_hf import EMPConfig, EMPTrainer
from emp_hf_dev.offline_data import load_fashion_mnist
from emp_hf_dev.recipe_runtime import (
    DATASET_ALIASES,
    HubModelArguments,
    cpu_processes_without_accelerator,
    from_hub,
    full_data_steps,
    load_hub_dataset,
    load_images,
    log_process,
    parse_recipe_args,
    report,
    setup_logging,
    train_and_save,
)

OFFLINE_DATASET = "fashion_mnist_offline"
METRICS_DIR = Path(__file__).resolve().parent / "metrics"
OFFLINE_HINT = (
    f"Without network, train on the offline dataset instead: `--dataset_name {OFFLINE_DATASET} "
    "--vit_from_scratch` (Fashion-MNIST at 32x32x3, installed by `make setup`)."
)

logger = logging.getLogger(__name__)


@dataclass
class DataTrainingArguments:
    """What data to train and evaluate on."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "A Hub image-classification dataset, e.g. uoft-cs/cifar10 or uoft-cs/cifar100 (also 'cifar10', "
            f"'cifar100'); or '{OFFLINE_DATASET}' (Fashion-MNIST at 32x32x3, no network needed)."
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of --dataset_name."})
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": f"Where the '{OFFLINE_DATASET}' IDX files are (default: /usr/share/datasets/fashion-mnist)."
        },
    )
    image_column_name: str | None = field(
        default=None, metadata={"help": "The image column (default: the first of img, image, pixel_values)."}
    )
    label_column_name: str | None = field(
        default=None, metadata={"help": "The label column (default: the first of fine_label, label, labels)."}
    )
    eval_split: str | None = field(
        default=None, metadata={"help": "The evaluation split (default: validation, else test)."}
    )
    train_val_split: float = field(
        default=0.15, metadata={"help": "Share of train held out for evaluation when there is no eval split."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first this many training images."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first this many evaluation images."}
    )
    augment: bool = field(default=True, metadata={"help": "Augment the training split (random crop and flip)."})
    crop_padding: int = field(
        default=4, metadata={"help": "Zero padding of the random crop, in pixels at the model's image size."}
    )
    random_flip: bool = field(default=True, metadata={"help": "Random horizontal flips of the training images."})

    def __post_init__(self) -> None:
        if self.dataset_name is None:
            raise ValueError(
                f"Pass --dataset_name: a Hub dataset (uoft-cs/cifar10, uoft-cs/cifar100) or {OFFLINE_DATASET}."
            )
        self.dataset_name = DATASET_ALIASES.get(self.dataset_name.lower(), self.dataset_name)
        if self.crop_padding < 0:
            raise ValueError(f"--crop_padding must be >= 0, got {self.crop_padding}.")


@dataclass
class ModelArguments(HubModelArguments):
    """A pretrained checkpoint to fine-tune, or the size of a ViT trained from scratch."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Pretrained image-classification checkpoint (Hub id or local directory) to fine-tune."},
    )
    image_processor_name: str | None = field(
        default=None, metadata={"help": "Image processor name or path, if not the model's."}
    )
    vit_from_scratch: bool = field(
        default=False, metadata={"help": "Train a randomly initialised ViT of the size given by the vit_* flags."}
    )
    vit_image_size: int | None = field(
        default=None, metadata={"help": "Input side of the scratch ViT (default: the dataset's, 32 for CIFAR)."}
    )
    vit_patch_size: int = field(default=4, metadata={"help": "Patch side of the scratch ViT."})
    vit_hidden_size: int = field(default=192, metadata={"help": "Hidden size of the scratch ViT."})
    vit_num_layers: int = field(default=6, metadata={"help": "Transformer layers of the scratch ViT."})
    vit_num_heads: int = field(default=3, metadata={"help": "Attention heads of the scratch ViT."})
    vit_intermediate_size: int | None = field(
        default=None, metadata={"help": "MLP size of the scratch ViT (default: 4 x hidden size)."}
    )
    vit_dropout: float = field(default=0.0, metadata={"help": "Hidden and attention dropout of the scratch ViT."})

    def __post_init__(self) -> None:
        if self.vit_from_scratch == (self.model_name_or_path is not None):
            raise ValueError(
                "Pass either --model_name_or_path <checkpoint> (fine-tune) or --vit_from_scratch (a small ViT "
                "sized by the vit_* flags), exactly one of them."
            )
        if self.vit_hidden_size % self.vit_num_heads:
            raise ValueError(
                f"--vit_hidden_size {self.vit_hidden_size} must be a multiple of --vit_num_heads {self.vit_num_heads}."
            )


# ----------------------------------------------------------------------------------------------------------
# Images: batch transform with augmentation, in torch
# ----------------------------------------------------------------------------------------------------------


def random_crop(images: torch.Tensor, padding: int) -> torch.Tensor:
    """Per-image random crop of the original size from the images zero-padded by `padding` on every side."""
    if padding == 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (n,)).tolist()
    left = torch.randint(0, 2 * padding + 1, (n,)).tolist()
    return torch.stack([padded[i, :, t : t + h, s : s + w] for i, (t, s) in enumerate(zip(top, left, strict=True))])


def random_horizontal_flip(images: torch.Tensor) -> torch.Tensor:
    flip = torch.rand(images.shape[0]) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


class ImageTransform:
    """`Dataset.with_transform` batch transform: images -> `pixel_values` normalised at the model's size, labels.

    Images may be PIL images or arrays (CHW or HWC); arrays are in [0, 1] unless `input_normalization`
    `(mean, std)` says how they were normalised. Training batches are augmented (random crop with zero
    padding, horizontal flip) before normalisation, as torchvision's CIFAR pipelines do.
    """

    def __init__(
        self,
        image_column: str,
        label_column: str,
        size: tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        *,
        train: bool,
        crop_padding: int = 4,
        flip: bool = True,
        input_normalization: tuple[float, float] | None = None,
    ) -> None:
        self.image_column = image_column
        self.label_column = label_column
        self.size = tuple(size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.train = train
        self.crop_padding = crop_padding
        self.flip = flip
        self.input_normalization = input_normalization

    def __call__(self, batch: dict[str, list]) -> dict[str, torch.Tensor]:
        images = load_images(batch[self.image_column], self.size, self.input_normalization)
        if self.train:
            images = random_crop(images, self.crop_padding)
            if self.flip:
                images = random_horizontal_flip(images)
        pixel_values = (images - self.mean) / self.std
        return {"pixel_values": pixel_values, "labels": torch.as_tensor(batch[self.label_column], dtype=torch.long)}


def collate_fn(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return {
        "pixel_values": torch.stack([e["pixel_values"] for e in examples]),
        "labels": torch.as_tensor([int(e["labels"]) for e in examples], dtype=torch.long),
    }


# ----------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> tuple[ModelArguments, DataTrainingArguments, EMPConfig]:
    return parse_recipe_args((ModelArguments, DataTrainingArguments, EMPConfig), argv)


def load_raw_datasets(data_args: DataTrainingArguments, model_args: ModelArguments, seed: int) -> DatasetDict:
    """`train` and `eval` splits."""
    if data_args.dataset_name == OFFLINE_DATASET:
        data = load_fashion_mnist(
            data_args.data_dir,
            image_size=32,
            max_train=data_args.max_train_samples,
            max_test=data_args.max_eval_samples,
        )
        return DatasetDict({"train": data["train"], "eval": data["test"]})
    raw = load_hub_dataset(
        data_args.dataset_name,
        data_args.dataset_config_name,
        cache_dir=model_args.cache_dir,
        token=model_args.token,
        offline_hint=OFFLINE_HINT,
    )
    eval_split = data_args.eval_split or next((s for s in ("validation", "test") if s in raw), None)
    if eval_split is None:
        if not 0 < data_args.train_val_split < 1:
            raise ValueError(f"The dataset has no evaluation split ({list(raw)}): set --train_val_split in (0, 1).")
        split = raw["train"].train_test_split(data_args.train_val_split, seed=seed)
        return DatasetDict({"train": split["train"], "eval": split["test"]})
    return DatasetDict({"train": raw["train"], "eval": raw[eval_split]})


def pick_column(dataset: datasets.Dataset, name: str | None, candidates: Sequence[str], what: str) -> str:
    if name is not None:
        if name not in dataset.column_names:
            raise ValueError(f"--{what}_column_name {name!r} is not a column of the dataset: {dataset.column_names}.")
        return name
    found = next((c for c in candidates if c in dataset.column_names), None)
    if found is None:
        raise ValueError(f"No {what} column among {dataset.column_names}: pass --{what}_column_name.")
    return found


def main(argv: list[str] | None = None) -> dict[str, Any]:
    start = time.perf_counter()
    cpu_processes_without_accelerator()
    model_args, data_args, training_args = parse_args(argv)
    setup_logging(training_args, logger)
    log_process(training_args, logger)
    if training_args.remove_unused_columns:
        # The transform needs the raw image column, which the Trainer would drop (as in run_image_classification).
        training_args.remove_unused_columns = False
    set_seed(training_args.seed)

    # Data, before the model: a missing dataset fails before anything slow happens.
    raw_datasets = load_raw_datasets(data_args, model_args, training_args.seed)
    train_dataset, eval_dataset = raw_datasets["train"], raw_datasets["eval"]
    if data_args.max_train_samples is not None:
        train_dataset = train_dataset.select(range(min(len(train_dataset), data_args.max_train_samples)))
    if data_args.max_eval_samples is not None:
        eval_dataset = eval_dataset.select(range(min(len(eval_dataset), data_args.max_eval_samples)))
    image_column = pick_column(train_dataset, data_args.image_column_name, ("img", "image", "pixel_values"), "image")
    label_column = pick_column(train_dataset, data_args.label_column_name, ("fine_label", "label", "labels"), "label")
    label_feature = train_dataset.features[label_column]
    if hasattr(label_feature, "names"):
        labels = list(label_feature.names)
    else:
        labels = [str(v) for v in sorted(train_dataset.unique(label_column))]
        if labels != [str(i) for i in range(len(labels))]:
            raise ValueError(f"Labels must be a ClassLabel or the ids 0..n-1; got {labels[:10]}...")
    label2id = {name: i for i, name in enumerate(labels)}
    id2label = dict(enumerate(labels))

    # Model and image geometry
    if model_args.vit_from_scratch:
        first = train_dataset[0][image_column]
        native = first.size[1] if hasattr(first, "size") and not hasattr(first, "shape") else np.shape(first)[-1]
        side = model_args.vit_image_size or int(native)
        if side % model_args.vit_patch_size:
            raise ValueError(
                f"The image side {side} is not a multiple of --vit_patch_size {model_args.vit_patch_size}."
            )
        config = ViTConfig(
            image_size=side,
            patch_size=model_args.vit_patch_size,
            num_channels=3,
            hidden_size=model_args.vit_hidden_size,
            num_hidden_layers=model_args.vit_num_layers,
            num_attention_heads=model_args.vit_num_heads,
            intermediate_size=model_args.vit_intermediate_size or 4 * model_args.vit_hidden_size,
            hidden_dropout_prob=model_args.vit_dropout,
            attention_probs_dropout_prob=model_args.vit_dropout,
            num_labels=len(labels),
            label2id=label2id,
            id2label=id2label,
        )
        model = ViTForImageClassification(config)
        # Saved with the model (size, mean, std); the PIL backend needs no torchvision.
        if hasattr(transformers, "ViTImageProcessorPil"):
            processor_class = transformers.ViTImageProcessorPil
        else:  # older transformers
            processor_class = transformers.ViTImageProcessor
        image_processor = processor_class(
            size={"height": side, "width": side}, image_mean=[0.5] * 3, image_std=[0.5] * 3
        )
        model_name = (
            f"ViT from scratch ({model_args.vit_num_layers} layers, hidden {model_args.vit_hidden_size}, "
            f"{model_args.vit_num_heads} heads, patch {model_args.vit_patch_size}, {side}x{side})"
        )
    else:
        hub_kwargs = model_args.hub_kwargs(OFFLINE_HINT)
        config = from_hub(
            AutoConfig,
            model_args.model_name_or_path,
            num_labels=len(labels),
            label2id=label2id,
            id2label=id2label,
            finetuning_task="image-classification",
            **hub_kwargs,
        )
        model = from_hub(
            AutoModelForImageClassification,
            model_args.model_name_or_path,
            config=config,
            ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
            **hub_kwargs,
        )
        image_processor = from_hub(
            AutoImageProcessor, model_args.image_processor_name or model_args.model_name_or_path, **hub_kwargs
        )
        model_name = model_args.model_name_or_path
    size = getattr(image_processor, "size", None) or {}
    if "shortest_edge" in size:
        height = width = size["shortest_edge"]
    else:
        height, width = size.get("height", config.image_size), size.get("width", config.image_size)
    mean = getattr(image_processor, "image_mean", None) or [0.5] * 3
    std = getattr(image_processor, "image_std", None) or [0.5] * 3
    num_params = sum(p.numel() for p in model.parameters())
    logger.info(f"{model_name}: {num_params / 1e6:.2f}M parameters, input {height}x{width}")

    # Transforms: augmentation on the training split only
    transform_kwargs = dict(
        image_column=image_column,
        label_column=label_column,
        size=(height, width),
        mean=mean,
        std=std,
        crop_padding=data_args.crop_padding,
        flip=data_args.random_flip,
        input_normalization=(0.5, 0.5) if data_args.dataset_name == OFFLINE_DATASET else None,
    )
    train_dataset = train_dataset.with_transform(ImageTransform(train=data_args.augment, **transform_kwargs))
    eval_dataset = eval_dataset.with_transform(ImageTransform(train=False, **transform_kwargs))

    metric = evaluate.load(str(METRICS_DIR / "accuracy"), cache_dir=model_args.cache_dir, keep_in_memory=True)

    def compute_metrics(p: EvalPrediction) -> dict[str, float]:
        logits = p.predictions[0] if isinstance(p.predictions, tuple) else p.predictions
        return metric.compute(predictions=np.argmax(logits, axis=1), references=p.label_ids)

    trainer = EMPTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=image_processor,
        data_collator=collate_fn,
        compute_metrics=compute_metrics,
    )

    train_result = train_and_save(trainer)
    train_metrics = dict(train_result.metrics)
    train_metrics["train_samples"] = len(train_dataset)
    train_metrics["model_parameters"] = num_params

    eval_metrics = trainer.evaluate()
    eval_metrics["eval_samples"] = len(eval_dataset)

    title = (
        f"Image recipe: dataset {data_args.dataset_name}, {model_name}, {num_params / 1e6:.2f}M parameters, "
        f"{len(train_dataset)} training images, {training_args.world_size} process(es)"
    )
    full_steps = full_data_steps(len(train_dataset), training_args, training_args.world_size)
    return report(trainer, train_metrics, eval_metrics, title=title, full_steps=full_steps, start=start)


if __name__ == "__main__":
    main()
