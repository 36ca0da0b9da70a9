"""`PruningMixin`: dynamic data pruning for any `transformers.Trainer` subclass; `EMPTrainer` = mixin + `Trainer`.

Each epoch trains on a subset chosen by a pruning strategy. Pairs for other trainers: `emp_hf.seq2seq`
(`Seq2SeqTrainer`) and `emp_hf.sft` (TRL's `SFTTrainer`).
"""

from __future__ import annotations

import inspect
import math
import os
import tempfile
import warnings
from dataclasses import asdict
from typing import Any, ClassVar

import torch
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, IntervalStrategy, TrainOutput
from transformers.utils import find_labels, logging

from .checkpoint import latest_complete_checkpoint, load_pruning_state, save_pruning_state
from .compat import EpochLength, TrainerLoopHooks, TrainingValues, ensure_trainer_internals, retarget_lr_scheduler
from .config import INDEX_COLUMN, EMPConfig, PruningArguments
from .data import PlanOrderSampler, RowIndexCollator, add_row_index, row_lengths
from .distributed import attach_process_group
from .losses import (
    PerExampleLossFunc,
    Task,
    infer_task,
    labelled_rows,
    model_name_of,
    per_example_stats,
    unwrap_peft,
)
from .sampler import EpochPlanner, PruningSampler
from .schedule import EpochSchedule, StepCounter
from .strategies import build_strategy
from .strategies.base import option_defaults
from .tracker import PruningState

logger = logging.get_logger(__name__)


class PruningMixin(TrainerLoopHooks):
    """Makes a [`~transformers.Trainer`] subclass prune the training data dynamically, epoch by epoch.

    Put it first: `class EMPSFTTrainer(PruningMixin, SFTTrainer)`, with `config_class` a `TrainingArguments`
    subclass that also derives from [`PruningArguments`]. Takes every argument the trainer takes, with `args` a
    `config_class`, plus:

    Args:
        per_example_loss_func (`Callable[[outputs, labels], tuple[Tensor, Tensor]]`, *optional*):
            Returns the per-example training loss and predictive entropy (each of shape `[batch]`) for a
            model whose head `emp_hf` does not know (see `docs/api.md`).

    After (or during) training, `trainer.pruning_state` holds the per-row statistics (`frequency`, `loss`,
    `entropy`, `score`), the per-epoch plans and `realized_saving()`.
    """

    args: PruningArguments
    #: The config class `args` must be an instance of (the default when `args` is None).
    config_class: ClassVar[type] = EMPConfig

    def __init__(
        self,
        model: Any = None,
        args: PruningArguments | None = None,
        data_collator: Any = None,
        train_dataset: Any = None,
        *trainer_args: Any,
        per_example_loss_func: PerExampleLossFunc | None = None,
        **trainer_kwargs: Any,
    ) -> None:
        config = self.config_class
        if args is None:
            args = config(output_dir="tmp_trainer")
        if not isinstance(args, config) or not isinstance(args, PruningArguments):
            base = next(
                c for c in config.__mro__ if issubclass(c, TrainingArguments) and not issubclass(c, PruningArguments)
            )
            raise TypeError(
                f"{type(self).__name__} needs `args` to be an {config.__name__}, got {type(args).__name__}. "
                f"{config.__name__} takes every {base.__name__} field: replace {base.__name__}(...) with "
                f"{config.__name__}(...)."
            )
        self._check_index_column(model, args)
        if train_dataset is not None and not hasattr(train_dataset, "__len__"):
            add_row_index(train_dataset, args.pruning_index_column)  # raises: pruning needs random access to rows
        super().__init__(model, args, data_collator, train_dataset, *trainer_args, **trainer_kwargs)
        # Index the dataset the trainer trains on (TRL's trainers tokenize, filter and shuffle it in __init__).
        self._dataset_fingerprint = getattr(self.train_dataset, "_fingerprint", None)
        if self.train_dataset is not None:
            self.train_dataset = add_row_index(self.train_dataset, args.pruning_index_column)
        self.per_example_loss_func = per_example_loss_func
        self._check_sampling_strategy()
        self.strategy = build_strategy(args.pruning_method, args.strategy_options)
        self.data_collator = RowIndexCollator(self.data_collator, args.pruning_index_column)
        self._task: Task | None = None
        self._problem_type: str | None = None
        self._resolve_head()
        if self.strategy.uses_weights:
            self.loss_is_scaled_for_ga = False  # the reweighted loss is a per-batch mean
            if self.compute_loss_func is not None and per_example_loss_func is None:
                raise ValueError(
                    f"pruning_method={args.pruning_method!r} reweights each example's loss, so a compute_loss_func "
                    "cannot be used as given (it returns one batch loss). Pass per_example_loss_func=fn instead, "
                    "fn(outputs, labels) -> (loss, entropy) of shape [batch]: emp_hf weights and averages those."
                )
        self.pruning_state: PruningState | None = self._new_pruning_state()
        self._planner: EpochPlanner | None = None
        self._sampler: PruningSampler | None = None
        self._step_counter: StepCounter | None = None
        self._epoch = 0
        self._warned_regression = False
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        if launched > 1 and self.accelerator.num_processes == 1:
            raise RuntimeError(
                f"{launched} processes were launched but EMPTrainer sees one: each would train alone on all the "
                "data and write the same output_dir. On a machine without GPUs set use_cpu=True."
            )

    # ------------------------------------------------------------------ state
    def _new_pruning_state(self) -> PruningState | None:
        if self.train_dataset is None:
            return None
        state = PruningState(
            len(self.train_dataset),
            ema_decay=self.args.ema_decay,
            device=self.args.device,
            track=self.strategy.required_tables,
        )
        args = self.args
        state.metadata.update(
            dataset_fingerprint=self._dataset_fingerprint,
            model_name=model_name_of(unwrap_peft(self.model)) if self.model is not None else None,
            pruning_method=args.pruning_method,
            pruning_seed=args.effective_pruning_seed,
            pruning_warmup_epochs=args.pruning_warmup_epochs,
            pruning_anneal_fraction=args.pruning_anneal_fraction,
            ema_decay=args.ema_decay,
            **asdict(self.strategy.options),
        )
        return state

    def _load_pruning_state(self, checkpoint: str) -> None:
        """Restore the pruning state of `checkpoint`; refuse one from other data or other options."""
        expected = dict(self.pruning_state.metadata)
        load_pruning_state(self.pruning_state, checkpoint)
        # Options added after a checkpoint was written count as their defaults.
        saved = {**option_defaults(type(self.strategy.options)), **self.pruning_state.metadata}
        differences = [
            f"{key}: checkpoint {saved.get(key)!r}, now {value!r}"
            for key, value in expected.items()
            if key != "model_name" and saved.get(key) != value
        ]
        if differences and not self.args.ignore_pruning_state_mismatch:
            raise ValueError(
                f"The pruning state in {checkpoint} was made with other data or options ("
                + "; ".join(differences)
                + "). Resume with the same dataset and pruning options, or set ignore_pruning_state_mismatch=True "
                "to continue from its statistics anyway."
            )
        if "planned_epochs" in self.pruning_state.metadata:
            expected["planned_epochs"] = self.pruning_state.metadata["planned_epochs"]
        self.pruning_state.metadata = expected

    def train(
        self,
        resume_from_checkpoint: str | bool | None = None,
        trial: Any = None,
        ignore_keys_for_eval: list[str] | None = None,
        **kwargs: Any,
    ) -> TrainOutput:
        if self.train_dataset is None:
            raise ValueError(f"{type(self).__name__}: training requires a train_dataset.")
        ensure_trainer_internals(type(self))
        self._resolve_head()
        self._check_output_dir_writable()
        if isinstance(resume_from_checkpoint, bool) and resume_from_checkpoint:
            resume_from_checkpoint = latest_complete_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"No complete checkpoint found in output directory ({self.args.output_dir})")
        self.pruning_state = self._new_pruning_state()
        if resume_from_checkpoint:
            self._load_pruning_state(resume_from_checkpoint)
        output = super().train(resume_from_checkpoint, trial, ignore_keys_for_eval, **kwargs)
        self.pruning_state.flush()  # on every process: the last observations reach the tables (one gather)
        if self.is_world_process_zero():
            save_pruning_state(self.pruning_state, self.args.output_dir)  # `emp-hf export/inspect OUTPUT_DIR`
            if self.args.push_pruning_record:
                self._push_pruning_record(save_dir=os.path.join(self.args.output_dir, "pruning_record"))
        summary = self.pruning_summary()
        output.metrics.update({f"train_{k.split('/')[-1]}": v for k, v in summary.items()})
        return output

    # ------------------------------------------------------------------ sampling and step budget
    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler | None:
        self._prepare_pruning()
        if self.args.pruning_method == "none":  # the control arm trains exactly like Trainer
            self._sampler = None
            return super()._get_train_sampler(train_dataset)
        self._sampler = PruningSampler(self._planner)
        order = str(self.args.train_sampling_strategy)
        if order in ("group_by_length", "sequential"):  # the plan's rows, in the order Trainer would use
            lengths = self._row_lengths() if order == "group_by_length" else None
            batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
            return PlanOrderSampler(self._sampler, order, lengths, batch)
        return self._sampler

    def _prepare_pruning(self) -> None:
        """Fix the step counter, the number of epochs and the planner before the dataloader is built."""
        args = self.args
        if self.accelerator.split_batches:
            raise ValueError("EMPTrainer does not support accelerator_config.split_batches=True.")
        if self.accelerator.num_processes > 1 and not self.accelerator.even_batches:
            raise ValueError(
                "EMPTrainer needs accelerator_config.even_batches=True (the default) with several processes: "
                "with even_batches=False a plan whose batch count is not a multiple of the number of processes "
                "gives the processes different numbers of batches, and training stops mid-run. The loop-back "
                "duplicates that even_batches adds are not double-counted by the pruning state."
            )
        self._step_counter = StepCounter(
            batch_size=self._train_batch_size,
            num_processes=self.accelerator.num_processes,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            drop_last=args.dataloader_drop_last,
        )
        if args.max_steps > 0:  # as many passes over the plans as max_steps needs (open budgets: at least K rows)
            num_epochs = self._epochs_for_max_steps([])  # an upper bound for an open budget: the loop's length
            self._max_epochs = num_epochs
            if not self.strategy.fixed_budget:  # as last fitted to the plans before a resume
                num_epochs = self.pruning_state.metadata.get("planned_epochs", num_epochs)
        else:
            num_epochs = math.ceil(args.num_train_epochs)  # fractional epochs only reach here for `none`
        self._check_drop_last(self._schedule(num_epochs))
        self.pruning_state.metadata["planned_epochs"] = num_epochs
        self._planner = EpochPlanner(self.pruning_state, self.strategy, self._schedule(num_epochs), self._seed)

    @property
    def _seed(self) -> int:
        return self.args.effective_pruning_seed

    def _schedule(self, num_epochs: int) -> EpochSchedule:
        return EpochSchedule(
            num_rows=self.pruning_state.num_rows,
            num_epochs=num_epochs,
            prune_ratio=self.args.prune_ratio,
            warmup_epochs=self.args.pruning_warmup_epochs,
            anneal_fraction=self.args.pruning_anneal_fraction,
        )

    def _expected_plan_sizes(self, schedule: EpochSchedule, unknown_size: int | None = None) -> list[int]:
        """Plan sizes of every epoch: exact where decided or fixed, estimated for an open budget.

        An undecided open-budget epoch counts as `num_keep` rows when the strategy visits at most that many (an
        upper bound: the LR schedule only shortens), else as large as the latest pruned one, else `unknown_size`
        (default: all rows, an upper bound).
        """
        known = self.pruning_state.epoch_plan_sizes[: schedule.num_epochs]
        if self.strategy.budget_at_most_num_keep:
            estimate = schedule.num_keep
        else:
            estimate = known[-1] if known and schedule.phase(len(known) - 1) == "pruned" else None
        sizes = list(known)
        for epoch in range(len(known), schedule.num_epochs):
            size = schedule.nominal_plan_size(epoch)
            if schedule.phase(epoch) == "pruned" and not self.strategy.fixed_budget:
                size = estimate if estimate is not None else (unknown_size or schedule.num_rows)
            sizes.append(size)
        return sizes

    def _total_steps(self, schedule: EpochSchedule, unknown_size: int | None = None) -> int:
        return sum(self._step_counter.update_steps(n) for n in self._expected_plan_sizes(schedule, unknown_size))

    def _pruning_training_values(self, values: TrainingValues) -> TrainingValues:
        """The run's step counts from the plan sizes (the Trainer derives them from the first epoch's length)."""
        args = self.args
        if self._sampler is None:  # `none` trains exactly like Trainer: its epochs, steps and fractional epochs
            return values
        schedule = self._planner.schedule
        sizes = self._expected_plan_sizes(schedule)
        return values._replace(
            num_train_epochs=max(schedule.num_epochs, getattr(self, "_max_epochs", 0) if args.max_steps > 0 else 0),
            num_update_steps_per_epoch=self._step_counter.update_steps(sizes[0]),
            num_train_samples=sum(sizes),
            steps_in_epoch=self._step_counter.micro_batches(sizes[0]),
            max_steps=args.max_steps if args.max_steps > 0 else self._total_steps(schedule),
        )

    def _pruning_resume_position(
        self, epochs_trained: int, steps_trained: int, resume_from_checkpoint: str | None
    ) -> tuple[int, int]:
        """Epoch and micro-batches to skip when resuming: the Trainer assumes epochs of equal length."""
        if resume_from_checkpoint is None or self.state.global_step == 0 or self._sampler is None:
            return epochs_trained, steps_trained
        # Epochs have different lengths: locate global_step in the recorded plans.
        done = 0
        for epoch, size in enumerate(self.pruning_state.epoch_plan_sizes):
            steps = self._step_counter.update_steps(size)
            if self.state.global_step < done + steps:
                skip = 0 if self.args.ignore_data_skip else (self.state.global_step - done)
                return epoch, skip * self.args.gradient_accumulation_steps
            done += steps
        return len(self.pruning_state.plans), 0

    def _pruning_epoch_begin(self, epoch: int, train_dataloader: Any) -> EpochLength | None:
        """Plan `epoch` and return its length in micro-batches and optimizer steps (None: Trainer's own)."""
        self._epoch = epoch
        if self._sampler is None:  # `none`: Trainer's sampler, epochs and step counts, untouched
            self._planner.record_full_epoch(epoch)
            return None
        if self.args.max_steps > 0 and not self.strategy.fixed_budget and epoch == len(self.pruning_state.plans):
            self._refit_epochs_to_max_steps(epoch)
        self._sampler.set_epoch(epoch)
        plan_size = self.pruning_state.epoch_plan_sizes[epoch]
        micro_batches = self._step_counter.micro_batches(plan_size)
        loader = train_dataloader
        if self._sampler is not None and len(loader) != micro_batches:
            raise RuntimeError(
                f"Internal error: epoch {epoch} has {len(loader)} batches per process, expected {micro_batches}."
            )
        if not self.strategy.fixed_budget and self.args.max_steps <= 0:
            self._retarget_budget()
        return EpochLength(micro_batches, self._step_counter.update_steps(plan_size))

    def _pruning_epoch_end(self, epoch: int) -> None:
        if self.args.logging_strategy != IntervalStrategy.NO:  # the epoch just trained, and the run so far
            self.log(self.pruning_summary())

    def _retarget_budget(self) -> None:
        """InfoBatch without budget matching: re-estimate the total steps now that this epoch's size is known."""
        total = self._total_steps(self._planner.schedule)
        self.state.max_steps = total
        warmup = self.args.get_warmup_steps(total)  # a warm-up ratio is a share of the steps the run takes
        if not retarget_lr_scheduler(self.lr_scheduler, total, warmup):
            warnings.warn(
                f"Cannot retarget a {type(self.lr_scheduler).__name__} to InfoBatch's changing step budget; the "
                "LR schedule assumes an upper bound and may not reach its end. Set infobatch_match_budget=True.",
                stacklevel=2,
            )

    # ------------------------------------------------------------------ loss and per-example statistics
    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if self.args.pruning_index_column not in self._signature_columns:
            self._signature_columns.append(self.args.pruning_index_column)

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        rows = inputs.pop(self.args.pruning_index_column, None)
        if rows is None or not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.get("labels")
        loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        if self.strategy.uses_weights:
            example_loss, entropy = self._per_example(outputs, labels)
            weight = self.pruning_state.loss_weight(rows).to(example_loss.device)
            loss = self._weighted_mean(weight, example_loss, labels)
        else:
            with torch.no_grad():
                example_loss, entropy = self._per_example(outputs, labels)
        self._observe(rows, example_loss.detach(), entropy.detach())
        return (loss, outputs) if return_outputs else loss

    def prediction_step(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple:
        inputs.pop(self.args.pruning_index_column, None)  # evaluating on an indexed dataset
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)

    def _resolve_head(self) -> None:
        """Which per-example loss the model needs: fails before training for a head emp_hf does not know."""
        if self.per_example_loss_func is None and self.model is not None:
            self._task = infer_task(self.model)
            self._problem_type = getattr(getattr(unwrap_peft(self.model), "config", None), "problem_type", None)

    def _per_example(self, outputs: Any, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.per_example_loss_func is not None:
            return self.per_example_loss_func(outputs, labels)
        loss, entropy = per_example_stats(
            outputs, labels, self._task, self.args.label_smoothing_factor, problem_type=self._problem_type
        )
        if (
            not self._warned_regression
            and self.args.pruning_method == "emp"
            and self.args.memory_weight > 0
            and self._task == "sequence"
            and outputs.logits.shape[-1] == 1
        ):
            logger.warning("EMP on a regression task has no predictive entropy: it reduces to loss-only selection.")
            self._warned_regression = True
        return loss, entropy

    def _observe(self, rows: torch.Tensor, loss: torch.Tensor, entropy: torch.Tensor) -> None:
        """Buffer one micro-batch's observations: a few device copies, no host sync, one gather per flush."""
        if loss.shape != rows.shape or entropy.shape != rows.shape:  # shapes only: no synchronisation
            raise ValueError(
                f"Per-example loss and entropy must have one value per example, shape {tuple(rows.shape)}, got "
                f"{tuple(loss.shape)} and {tuple(entropy.shape)}. A batch that merges examples (padding-free or "
                "packed rows) must be split back into examples (see docs/api.md)."
            )
        attach_process_group(self.pruning_state, self.accelerator, self._train_batch_size)
        self.pruning_state.update(rows, loss, entropy, self._epoch)

    # ------------------------------------------------------------------ checkpoints and logging
    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        # The pruning state goes in first: the Trainer's save ends by deleting old checkpoints
        # (save_total_limit) and may push the folder (hub_strategy="checkpoint"); both must find it written.
        # The Trainer's trainer_state.json, written after the model, marks the checkpoint complete.
        self.pruning_state.flush()  # on every process (a collective with several), before the main one reads it
        if self.args.should_save:
            folder = os.path.join(
                self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            save_pruning_state(self.pruning_state, folder)
        super()._save_checkpoint(model, trial)
        if self.args.push_pruning_record and self.args.pruning_record_push_on_save and self.is_world_process_zero():
            self._push_pruning_record()  # global rank 0 only, also with save_on_each_node

    def _push_pruning_record(self, save_dir: str | None = None) -> None:
        """Push the pruning record to the Hub; a failure is logged with the command that retries it."""
        from .hub import push_trainer_pruning_record

        try:
            push_trainer_pruning_record(self, save_dir=save_dir)
        except Exception as error:  # a finished run must not crash on a network error
            retry = f"emp-hf push {save_dir or self.args.output_dir} --repo-id <repo>"
            logger.error(f"Pushing the pruning record failed ({error}). Retry with: {retry}")

    def pruning_summary(self) -> dict[str, float]:
        """Kept fraction of the latest planned epoch, realised saving so far, and a frequency summary."""
        state = self.pruning_state
        frequency = state.frequency.float()  # flushes the buffered observations (on every process)
        sizes = state.epoch_plan_sizes
        return {
            "pruning/kept_fraction": sizes[-1] / state.num_rows if sizes else 1.0,
            "pruning/realized_saving": state.realized_saving(),
            "pruning/frequency_mean": frequency.mean().item(),
            "pruning/frequency_min": frequency.min().item(),
            "pruning/frequency_max": frequency.max().item(),
            "pruning/never_visited": int((frequency == 0).sum().item()),
            "pruning/nonfinite_losses": int(state.nonfinite_count.item()),
        }

    # ------------------------------------------------------------------ input checks (before training)
    @staticmethod
    def _check_index_column(model: Any, args: EMPConfig) -> None:
        """Refuse a `pruning_index_column` that names a model input: it is popped before the forward pass."""
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

    def _weighted_mean(self, weight: torch.Tensor, loss: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Mean of `weight * loss` over the rows that have a label (built-in heads); no host sync, no NaN."""
        if self.per_example_loss_func is not None or labels is None:
            return (weight * loss).mean()
        labelled = labelled_rows(labels, self._task).to(loss.device)
        total = torch.where(labelled, weight * loss, torch.zeros_like(loss)).sum()
        return total / labelled.sum().clamp_min(1)

    def _check_sampling_strategy(self) -> None:
        """Pruning methods order each plan as 'random', 'group_by_length' or 'sequential'; refuse the others."""
        strategy = str(getattr(self.args, "train_sampling_strategy", "random"))
        if self.args.pruning_method != "none" and strategy not in ("random", "group_by_length", "sequential"):
            raise ValueError(
                f"train_sampling_strategy={strategy!r} is not supported with pruning_method="
                f"{self.args.pruning_method!r}: it rebalances Trainer's own batches, while each epoch trains on the "
                "pruning plan's rows. Use 'random' (the default), 'group_by_length' or 'sequential', or "
                "pruning_method='none' to train exactly as Trainer does with this sampling strategy."
            )

    def _check_drop_last(self, schedule: EpochSchedule) -> None:
        """With `dataloader_drop_last`, refuse a plan smaller than one global batch (its epoch has no batch)."""
        counter = self._step_counter
        if not counter.drop_last or self.args.pruning_method == "none":
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

    def _epochs_for_max_steps(self, known: list[int]) -> int:
        """Fewest epochs whose steps reach `max_steps`: `known` plan sizes first, then nominal sizes (an open
        budget's undecided pruned epochs as large as the latest known plan smaller than the dataset, else K, the
        smallest an open-budget plan can be)."""
        num_epochs = len(known) + 1
        while True:
            schedule = self._schedule(num_epochs)
            estimate = next((size for size in reversed(known) if size < schedule.num_rows), schedule.num_keep)
            sizes = [*known[:num_epochs]]
            for epoch in range(len(sizes), num_epochs):
                fixed = self.strategy.fixed_budget or schedule.phase(epoch) != "pruned"
                sizes.append(schedule.nominal_plan_size(epoch) if fixed else estimate)
            if sum(self._step_counter.update_steps(n) for n in sizes) >= self.args.max_steps:
                return num_epochs
            num_epochs += 1

    def _refit_epochs_to_max_steps(self, epoch: int) -> None:
        """InfoBatch's open budget with `max_steps`: before planning `epoch`, fit the number of epochs to the plan
        sizes seen so far, so the anneal epochs end the run. A function of the recorded plans only (resumes equal
        the uninterrupted run); the count is kept in the pruning state's metadata as `planned_epochs`."""
        known = self.pruning_state.epoch_plan_sizes[:epoch]
        num_epochs = min(self._epochs_for_max_steps(known), getattr(self, "_max_epochs", math.inf))
        self.pruning_state.metadata["planned_epochs"] = num_epochs
        self._planner.schedule = self._schedule(num_epochs)

    def _check_output_dir_writable(self) -> None:
        """Fail before training, not after it, when the pruning state could not be saved into `output_dir`."""
        if not (self.args.should_save or self.is_world_process_zero()):
            return
        output_dir = self.args.output_dir
        try:
            os.makedirs(output_dir, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=output_dir, prefix=".emp_hf-write-test-"):
                pass
        except OSError as error:
            raise PermissionError(
                f"output_dir={output_dir!r} is not writable ({error.strerror or error}): EMPTrainer saves the pruning "
                "state there at each checkpoint and at the end of training. Choose a writable output_dir."
            ) from None

    def _row_lengths(self) -> torch.Tensor:
        """Row lengths for `group_by_length`, found as Trainer finds them (computed once per trainer)."""
        if getattr(self, "_lengths", None) is None:
            names = getattr(self.processing_class, "model_input_names", None) or ["input_ids"]
            self._lengths = row_lengths(self.train_dataset, self.args.length_column_name, names[0])
        return self._lengths


class EMPTrainer(PruningMixin, Trainer):
    """A drop-in [`~transformers.Trainer`] that prunes the training data dynamically, epoch by epoch.

    Takes every argument `Trainer` takes, with `args` an [`EMPConfig`], plus:

    Args:
        per_example_loss_func (`Callable[[outputs, labels], tuple[Tensor, Tensor]]`, *optional*):
            Returns the per-example training loss and predictive entropy (each of shape `[batch]`) for a
            model whose head `emp_hf` does not know (see `docs/api.md`).

    After (or during) training, `trainer.pruning_state` holds the per-row statistics (`frequency`, `loss`,
    `entropy`, `score`), the per-epoch plans and `realized_saving()`.
    """

    config_class = EMPConfig
