"""`EMPTrainer`: `transformers.Trainer` that trains each epoch on a subset chosen by a pruning strategy."""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict
from typing import Any

import torch
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, IntervalStrategy, TrainOutput
from transformers.utils import logging

from .checkpoint import latest_complete_checkpoint, load_pruning_state, save_pruning_state
from .config import EMPConfig
from .data import RowIndexCollator, add_row_index
from .distributed import attach_process_group
from .losses import PerExampleLossFunc, Task, infer_task, per_example_stats, unwrap_peft
from .record import model_name_of
from .sampler import EpochPlanner, PruningSampler
from .schedule import EpochSchedule, StepCounter, retarget_lr_scheduler
from .strategies import PruningOptions, build_strategy
from .tracker import PruningState

logger = logging.get_logger(__name__)


class EMPTrainer(Trainer):
    """A drop-in [`~transformers.Trainer`] that prunes the training data dynamically, epoch by epoch.

    Takes every argument `Trainer` takes, with `args` an [`EMPConfig`], plus:

    Args:
        per_example_loss_func (`Callable[[outputs, labels], tuple[Tensor, Tensor]]`, *optional*):
            Returns the per-example training loss and predictive entropy (each of shape `[batch]`) for a
            model whose head `emp_hf` does not know (see `docs/api.md`).

    After (or during) training, `trainer.pruning_state` holds the per-row statistics (`frequency`, `loss`,
    `entropy`, `score`), the per-epoch plans and `realized_saving()`.
    """

    args: EMPConfig

    def __init__(
        self,
        model: Any = None,
        args: EMPConfig | None = None,
        data_collator: Any = None,
        train_dataset: Any = None,
        *trainer_args: Any,
        per_example_loss_func: PerExampleLossFunc | None = None,
        **trainer_kwargs: Any,
    ) -> None:
        if args is None:
            args = EMPConfig(output_dir="tmp_trainer")
        if not isinstance(args, EMPConfig):
            raise TypeError(
                f"EMPTrainer needs `args` to be an EMPConfig, got {type(args).__name__}. EMPConfig takes every "
                "TrainingArguments field: replace TrainingArguments(...) with EMPConfig(...)."
            )
        self._dataset_fingerprint = getattr(train_dataset, "_fingerprint", None)
        if train_dataset is not None:
            train_dataset = add_row_index(train_dataset, args.pruning_index_column)
        super().__init__(model, args, data_collator, train_dataset, *trainer_args, **trainer_kwargs)
        self.per_example_loss_func = per_example_loss_func
        self.strategy = build_strategy(args.pruning_method, args.pruning_options)
        self.data_collator = RowIndexCollator(self.data_collator, args.pruning_index_column)
        self._task: Task | None = None
        self._problem_type: str | None = None
        self._resolve_head()
        if self.strategy.uses_weights:
            self.loss_is_scaled_for_ga = False  # the reweighted loss is a per-batch mean
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
            **asdict(args.pruning_options),
        )
        return state

    def _load_pruning_state(self, checkpoint: str) -> None:
        """Restore the pruning state of `checkpoint`; refuse one from other data or other options."""
        expected = dict(self.pruning_state.metadata)
        load_pruning_state(self.pruning_state, checkpoint)
        # Options added after a checkpoint was written count as their defaults.
        saved = {**asdict(PruningOptions()), **self.pruning_state.metadata}
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
        self.pruning_state.metadata = expected

    def train(
        self,
        resume_from_checkpoint: str | bool | None = None,
        trial: Any = None,
        ignore_keys_for_eval: list[str] | None = None,
        **kwargs: Any,
    ) -> TrainOutput:
        if self.train_dataset is None:
            raise ValueError("EMPTrainer: training requires a train_dataset.")
        self._resolve_head()
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
            num_epochs = 1
            while self._total_steps(schedule := self._schedule(num_epochs), schedule.num_keep) < args.max_steps:
                num_epochs += 1
        else:
            num_epochs = int(args.num_train_epochs)
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
        """Plan sizes of every epoch: exact where decided or fixed, estimated for InfoBatch's open budget.

        An undecided open-budget epoch is assumed as large as the latest pruned one, else `unknown_size`
        (default: all rows, an upper bound).
        """
        plans = self.pruning_state.plans
        known = [len(p) for p in plans[: schedule.num_epochs]]
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

    def set_initial_training_values(self, args: EMPConfig, dataloader: Any) -> tuple:
        values = list(super().set_initial_training_values(args, dataloader))
        schedule = self._planner.schedule
        sizes = self._expected_plan_sizes(schedule)
        # (num_train_epochs, num_update_steps_per_epoch, num_examples, num_train_samples,
        #  total_train_batch_size, steps_in_epoch, max_steps)
        values[0] = schedule.num_epochs
        values[1] = self._step_counter.update_steps(sizes[0])
        values[3] = sum(sizes)
        values[5] = self._step_counter.micro_batches(sizes[0])
        values[6] = args.max_steps if args.max_steps > 0 else self._total_steps(schedule)
        return tuple(values)

    def _init_training_state(
        self,
        max_steps: int,
        num_update_steps_per_epoch: int,
        num_train_epochs: int,
        resume_from_checkpoint,
        trial,
    ) -> tuple[int, int]:
        epochs_trained, steps_trained = super()._init_training_state(
            max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial
        )
        if resume_from_checkpoint is None or self.state.global_step == 0:
            return epochs_trained, steps_trained
        # Epochs have different lengths: locate global_step in the recorded plans.
        done = 0
        for epoch, plan in enumerate(self.pruning_state.plans):
            steps = self._step_counter.update_steps(len(plan))
            if self.state.global_step < done + steps:
                skip = 0 if self.args.ignore_data_skip else (self.state.global_step - done)
                return epoch, skip * self.args.gradient_accumulation_steps
            done += steps
        return len(self.pruning_state.plans), 0

    def _run_epoch(self, **kwargs: Any) -> None:
        epoch = kwargs["epoch"]
        self._epoch = epoch
        if self._sampler is None:
            self._planner.record_full_epoch(epoch)
        else:
            self._sampler.set_epoch(epoch)
        plan_size = len(self.pruning_state.plans[epoch])
        micro_batches = self._step_counter.micro_batches(plan_size)
        loader = kwargs["train_dataloader"]
        if self._sampler is not None and len(loader) != micro_batches:
            raise RuntimeError(
                f"Internal error: epoch {epoch} has {len(loader)} batches per process, expected {micro_batches}."
            )
        kwargs["steps_in_epoch"] = micro_batches
        kwargs["num_update_steps_per_epoch"] = self._step_counter.update_steps(plan_size)
        if not self.strategy.fixed_budget and self.args.max_steps <= 0:
            self._retarget_budget()
        super()._run_epoch(**kwargs)
        if self.args.logging_strategy != IntervalStrategy.NO:  # the epoch just trained, and the run so far
            self.log(self.pruning_summary())

    def _retarget_budget(self) -> None:
        """InfoBatch without budget matching: re-estimate the total steps now that this epoch's size is known."""
        total = self._total_steps(self._planner.schedule)
        self.state.max_steps = total
        if not retarget_lr_scheduler(self.lr_scheduler, total):
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
            loss = (weight * example_loss).mean()
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
        attach_process_group(self.pruning_state, self.accelerator, self._train_batch_size)
        self.pruning_state.update(rows, loss, entropy, self._epoch)

    # ------------------------------------------------------------------ checkpoints and logging
    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        self.pruning_state.flush()  # on every process, before the main one reads it
        if self.args.should_save:
            folder = os.path.join(
                self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            save_pruning_state(self.pruning_state, folder)
            if self.args.push_pruning_record and self.args.pruning_record_push_on_save:
                self._push_pruning_record()

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
