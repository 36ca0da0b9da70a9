"""Every use of `transformers.Trainer` internals, in one place, with a check that they still look as assumed.

Epochs of different lengths need three private hooks of the Trainer's training loop, for which transformers has no
public extension point: `set_initial_training_values` (its 7-tuple of step counts), `_init_training_state` (where a
resumed run starts) and `_run_epoch` (each epoch's batch and step counts, passed by keyword). InfoBatch's open step
budget also rewrites the `num_training_steps` of the LR lambdas built by `transformers.get_scheduler`.

[`TrainerLoopHooks`] overrides those private methods and turns them into named hooks that `PruningMixin`
implements; nothing else in `emp_hf` touches them. [`check_trainer_internals`] verifies the signatures, the tuple
layout, the keyword call and the LR lambdas against the installed transformers, and `PruningMixin` runs it before
training: a transformers release that moved them fails with one message instead of training on wrong step counts
(or hanging other processes on a stale `steps_in_epoch`).
"""

from __future__ import annotations

import functools
import inspect
import re
from typing import Any, NamedTuple

import torch
import transformers
from transformers import Trainer

#: The transformers versions whose Trainer internals these hooks were written and tested against.
TESTED_TRANSFORMERS = ">=5.24,<5.25"


class TrainingValues(NamedTuple):
    """`Trainer.set_initial_training_values`'s return value, by name."""

    num_train_epochs: int
    num_update_steps_per_epoch: int
    num_examples: int
    num_train_samples: int
    total_train_batch_size: int
    steps_in_epoch: int | None
    max_steps: int


class EpochLength(NamedTuple):
    """One epoch's length for the training loop: micro-batches per process and optimizer steps."""

    steps_in_epoch: int
    num_update_steps_per_epoch: int


#: Parameters of the private methods the hooks override, in order (without `self`).
EXPECTED_SIGNATURES: dict[str, tuple[str, ...]] = {
    "set_initial_training_values": ("args", "dataloader"),
    "_init_training_state": (
        "max_steps",
        "num_update_steps_per_epoch",
        "num_train_epochs",
        "resume_from_checkpoint",
        "trial",
    ),
    "_run_epoch": (
        "model",
        "epoch",
        "train_dataloader",
        "steps_in_epoch",
        "num_update_steps_per_epoch",
        "trial",
        "ignore_keys_for_eval",
        "start_time",
        "resume_from_checkpoint",
        "epochs_trained",
        "steps_trained_in_current_epoch",
    ),
    # Semi-public extension points (TRL and sentence-transformers override them too).
    "_get_train_sampler": ("train_dataset",),
    "_set_signature_columns_if_needed": (),
    "_save_checkpoint": ("model", "trial"),
    "compute_loss": ("model", "inputs", "return_outputs", "num_items_in_batch"),
}

#: Methods of `transformers.Trainer` itself that `PruningMixin` overrides or calls (a subclass such as TRL's may
#: wrap them as `(*args, **kwargs)`; what the mixin relies on is the Trainer's own signature).
TRAINER_SIGNATURES: dict[str, tuple[str, ...]] = {
    "training_step": ("model", "inputs", "num_items_in_batch"),
    "log": ("logs", "start_time"),
    "save_model": ("output_dir", "_internal_call"),
    "_get_output_dir": ("trial",),
    "get_train_dataloader": (),
}

#: Private attributes of `transformers.Trainer` that `PruningMixin` reads, and the method whose source sets each.
EXPECTED_ATTRIBUTES: dict[str, str] = {
    "_train_batch_size": "__init__",
    "_signature_columns": "_set_signature_columns_if_needed",
    "is_in_train": "train",
}

#: LR schedule types whose lambdas depend on the total number of steps.
RETARGETED_SCHEDULES = ("linear", "cosine", "cosine_with_restarts", "polynomial")


class TransformersInternalsError(RuntimeError):
    """The installed transformers no longer has the Trainer internals `emp_hf` relies on."""


def _parameters(function: Any) -> tuple[str, ...]:
    return tuple(name for name in inspect.signature(function).parameters if name != "self")


def _source(function: Any) -> str | None:
    """The source of `function` as transformers ships it; None where it cannot be read (a compiled install) or the
    method was replaced by code outside transformers (a patch or profiler): then only its signature is checked."""
    function = inspect.unwrap(function) if function is not None else None
    if not str(getattr(function, "__module__", "")).startswith("transformers"):
        return None
    try:
        return inspect.getsource(function)
    except (OSError, TypeError):
        return None


def _signature_problems(trainer_class: type, expected: dict[str, tuple[str, ...]]) -> list[str]:
    """The methods of `trainer_class` that are missing or whose parameters differ from `expected`."""
    problems = []
    for name, parameters in expected.items():
        method = getattr(trainer_class, name, None)
        if method is None:
            problems.append(f"Trainer.{name} does not exist")
        elif _parameters(method) != parameters:
            problems.append(f"Trainer.{name}{_parameters(method)} is not {name}{parameters}")
    return problems


def check_trainer_internals(trainer_class: type = Trainer) -> list[str]:
    """What differs from the internals `emp_hf` relies on in `trainer_class` (empty when all is as expected)."""
    problems = _signature_problems(trainer_class, EXPECTED_SIGNATURES) + _signature_problems(
        Trainer, TRAINER_SIGNATURES
    )
    for attribute, method in EXPECTED_ATTRIBUTES.items():
        source = _source(getattr(Trainer, method, None))
        if source is not None and f"self.{attribute} =" not in source:
            problems.append(f"Trainer.{method} no longer sets self.{attribute}")
    loop = _source(getattr(trainer_class, "_inner_training_loop", None))
    if loop is not None:
        unpacked = re.search(r"\(([\w\s,]+)\)\s*=\s*self\.set_initial_training_values\(", loop)
        names = tuple(n.strip() for n in unpacked.group(1).split(",") if n.strip()) if unpacked else None
        if names != TrainingValues._fields:
            problems.append(f"set_initial_training_values returns {names}, not {TrainingValues._fields}")
        call = re.search(r"self\._run_epoch\((.*?)\n\s*\)", loop, re.DOTALL)
        passed = set(re.findall(r"(\w+)=", call.group(1))) if call else set()
        if not {"epoch", "train_dataloader", "steps_in_epoch", "num_update_steps_per_epoch"} <= passed:
            problems.append(
                "_run_epoch is not called with epoch, train_dataloader, steps_in_epoch and "
                "num_update_steps_per_epoch as keywords"
            )
    problems.extend(_check_lr_lambdas())
    return problems


def _check_lr_lambdas() -> list[str]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    problems = []
    for name in RETARGETED_SCHEDULES:
        scheduler = transformers.get_scheduler(name, optimizer, num_warmup_steps=1, num_training_steps=10)
        lambdas = getattr(scheduler, "lr_lambdas", [None])
        if not all(isinstance(f, functools.partial) and "num_training_steps" in f.keywords for f in lambdas):
            problems.append(f"get_scheduler({name!r}) no longer builds partials with a num_training_steps keyword")
    return problems


def assert_trainer_internals(trainer_class: type = Trainer) -> None:
    """Raise one [`TransformersInternalsError`] naming the tested range if the internals differ."""
    problems = check_trainer_internals(trainer_class)
    if problems:
        raise TransformersInternalsError(
            f"emp_hf relies on Trainer internals tested with transformers{TESTED_TRANSFORMERS}, but the installed "
            f"transformers {transformers.__version__} differs: " + "; ".join(problems) + ". Install "
            f"'transformers{TESTED_TRANSFORMERS}' or update emp_hf/integration/compat.py."
        )


@functools.cache
def _checked(trainer_class: type) -> bool:
    assert_trainer_internals(trainer_class)
    return True


def ensure_trainer_internals(trainer_class: type) -> None:
    """[`assert_trainer_internals`], once per process, for the trainer class `PruningMixin` was mixed into."""
    _checked(next(c for c in trainer_class.__mro__ if issubclass(c, Trainer) and not issubclass(c, TrainerLoopHooks)))


def retarget_lr_scheduler(scheduler: object, num_training_steps: int, num_warmup_steps: int | None = None) -> bool:
    """Point a `transformers` LR schedule at a new total number of steps, keeping its position.

    Works for the `LambdaLR` schedules of `transformers.get_scheduler` (linear, cosine, polynomial, ...),
    whose lambdas are `functools.partial`s with a `num_training_steps` keyword; lambdas without that keyword
    (constant schedules) do not depend on the total and stay. With `num_warmup_steps`, a `num_warmup_steps`
    keyword is replaced too. Returns False for any other scheduler.
    """
    if not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
        return False
    new = {"num_training_steps": num_training_steps}
    if num_warmup_steps is not None:
        new["num_warmup_steps"] = num_warmup_steps
    scheduler.lr_lambdas = [
        functools.partial(f.func, *f.args, **{**f.keywords, **{k: v for k, v in new.items() if k in f.keywords}})
        if isinstance(f, functools.partial) and "num_training_steps" in f.keywords
        else f
        for f in scheduler.lr_lambdas
    ]
    return True


class TrainerLoopHooks:
    """Overrides the Trainer's private loop methods and calls named hooks instead (see `PruningMixin`).

    - `_pruning_training_values(values: TrainingValues) -> TrainingValues`: the step counts of the whole run;
    - `_pruning_resume_position(epochs_trained, steps_trained, resume_from_checkpoint) -> (epoch, micro-batches)`;
    - `_pruning_epoch_begin(epoch, train_dataloader) -> EpochLength | None` and `_pruning_epoch_end(epoch)`.
    """

    def set_initial_training_values(self, args: Any, dataloader: Any) -> tuple:
        values = TrainingValues(*super().set_initial_training_values(args, dataloader))
        return tuple(self._pruning_training_values(values))

    def _init_training_state(
        self, max_steps: int, num_update_steps_per_epoch: int, num_train_epochs: int, resume_from_checkpoint, trial
    ) -> tuple[int, int]:
        epochs_trained, steps_trained = super()._init_training_state(
            max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial
        )
        return self._pruning_resume_position(epochs_trained, steps_trained, resume_from_checkpoint)

    def _run_epoch(self, **kwargs: Any) -> None:
        length = self._pruning_epoch_begin(kwargs["epoch"], kwargs["train_dataloader"])
        if length is not None:  # None: the Trainer's own counts stand (`pruning_method="none"`)
            kwargs.update(length._asdict())
        super()._run_epoch(**kwargs)
        self._pruning_epoch_end(kwargs["epoch"])
