"""Checks that run before training: each refuses, with one line that says what to change, a setting the pruning
cannot honour (rather than training on it and finding out after the run)."""

from __future__ import annotations

import contextlib
import inspect
import os
import random
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from transformers.utils import find_labels

from ..core.schedule import EpochSchedule, StepCounter
from ..strategies import StrategyTraits
from .config import INDEX_COLUMN, PruningArguments
from .losses import Task, margin_unavailable, unwrap_peft


@contextlib.contextmanager
def preserved_random_states() -> Iterator[None]:
    """Run a check that may draw random numbers (a masking data collator) without moving any generator training
    reads: Python's, NumPy's and torch's (CPU, and every initialised CUDA device) are restored on exit."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


#: The orders a pruning method can give each plan's rows.
PLAN_ORDERS = ("random", "group_by_length", "sequential")


def check_index_column(model: Any, args: PruningArguments) -> None:
    """Refuse a `pruning_index_column` that names a model input: it is taken off each batch before the forward."""
    column = args.pruning_index_column
    forward = getattr(unwrap_peft(model), "forward", None) if model is not None else None
    inputs = set(inspect.signature(forward).parameters) if forward is not None else set()
    labels = args.label_names
    if labels is None:
        labels = find_labels(type(unwrap_peft(model))) if forward is not None else []
    inputs |= {"label", "label_ids", "labels", *labels}
    if column in inputs:
        raise ValueError(
            f"EMPConfig.pruning_index_column={column!r} names a model input; the row index is removed from "
            f"each batch before the forward pass. Choose a free column name (default {INDEX_COLUMN!r})."
        )


def check_margin_tracking(args: PruningArguments, model: Any, task: Task | None, user_loss: bool) -> None:
    """With `pruning_track_margin`, refuse a run whose rows have no margin: a user `per_example_loss_func` (it
    returns losses, not logits), or a head that is not single-label classification (`losses.margin_unavailable`)."""
    if not args.pruning_track_margin or model is None:
        return
    config = getattr(unwrap_peft(model), "config", None)
    if user_loss:
        reason = "a per_example_loss_func returns losses, not the logits a margin is taken of"
    else:
        reason = margin_unavailable(task, getattr(config, "problem_type", None), getattr(config, "num_labels", None))
    if reason is not None:
        raise ValueError(
            f"{type(args).__name__}.pruning_track_margin=True needs a single-label classification head, but "
            f"{reason} ({type(unwrap_peft(model)).__name__}). Set pruning_track_margin=False."
        )


def check_sampling_strategy(args: PruningArguments, traits: StrategyTraits) -> None:
    """Pruning methods order each plan as 'random', 'group_by_length' or 'sequential'; refuse the others."""
    strategy = str(getattr(args, "train_sampling_strategy", "random"))
    if traits.prunes and strategy not in PLAN_ORDERS:
        raise ValueError(
            f"train_sampling_strategy={strategy!r} is not supported with pruning_method={args.pruning_method!r}: "
            "it rebalances Trainer's own batches, while each epoch trains on the pruning plan's rows. Use 'random' "
            "(the default), 'group_by_length' or 'sequential', or pruning_method='none' to train exactly as "
            "Trainer does with this sampling strategy."
        )


def check_accelerator(accelerator: Any) -> None:
    """Refuse the batch-sharding settings under which processes would see different numbers of batches."""
    if accelerator.split_batches:
        raise ValueError("EMPTrainer does not support accelerator_config.split_batches=True.")
    if accelerator.num_processes > 1 and not accelerator.even_batches:
        raise ValueError(
            "EMPTrainer needs accelerator_config.even_batches=True (the default) with several processes: "
            "with even_batches=False a plan whose batch count is not a multiple of the number of processes "
            "gives the processes different numbers of batches, and training stops mid-run. The loop-back "
            "duplicates that even_batches adds are not double-counted by the pruning state."
        )


def check_drop_last(counter: StepCounter, schedule: EpochSchedule, traits: StrategyTraits) -> None:
    """With `dataloader_drop_last`, refuse a plan smaller than one global batch (its epoch has no batch)."""
    if not counter.drop_last or not traits.prunes:
        return
    global_batch = counter.batch_size * counter.num_processes
    for size, what in ((schedule.num_rows, "the training set"), (schedule.num_keep, "a pruned epoch's plan")):
        if counter.micro_batches(size) == 0:
            raise ValueError(
                f"dataloader_drop_last=True drops every batch of an epoch: {what} has {size} rows, fewer than "
                f"one global batch of {global_batch} ({counter.batch_size} per device x {counter.num_processes} "
                f"processes). Lower prune_ratio (now {schedule.prune_ratio}) or the batch size, or set "
                "dataloader_drop_last=False."
            )


def check_output_dir_writable(output_dir: str) -> None:
    """Fail before training, not after it, when the pruning state could not be saved into `output_dir`."""
    try:
        os.makedirs(output_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output_dir, prefix=".emp_hf-write-test-"):
            pass
    except OSError as error:
        raise PermissionError(
            f"output_dir={output_dir!r} is not writable ({error.strerror or error}): EMPTrainer saves the pruning "
            "state there at each checkpoint and with the model. Choose a writable output_dir."
        ) from None
