"""`PruningMixin`: dynamic data pruning for any `transformers.Trainer` subclass; `EMPTrainer` = mixin + `Trainer`.

Each epoch trains on a subset chosen by a pruning strategy. Pairs for other trainers: `emp_hf.integration.seq2seq`
(`Seq2SeqTrainer`) and `emp_hf.integration.sft` (TRL's `SFTTrainer`).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import datasets
import torch
from transformers import Trainer, TrainingArguments
from transformers.modeling_utils import unwrap_model
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput, get_last_checkpoint
from transformers.utils import logging

from ..core.budget import StepBudget
from ..core.sampler import EpochPlanner, PruningSampler
from ..core.schedule import EpochSchedule, StepCounter
from ..core.tracker import MARGIN_TABLES, PruningState
from ..strategies import build_strategy
from ..strategies.base import option_defaults
from .checkpoint import latest_complete_checkpoint, load_pruning_state, save_pruning_state
from .compat import EpochLength, TrainerLoopHooks, TrainingValues, ensure_trainer_internals, retarget_lr_scheduler
from .config import EMPConfig, PruningArguments
from .data import PlanOrderSampler, RowIndexCollator, add_row_index, is_iterable, row_classes, row_lengths
from .distributed import attach_process_group, shard_across_processes
from .losses import (
    PerExampleLossFunc,
    Task,
    infer_task,
    label_counts,
    model_name_of,
    per_example_margin,
    per_example_stats,
    unwrap_peft,
)
from .preflight import (
    check_accelerator,
    check_drop_last,
    check_index_column,
    check_margin_tracking,
    check_output_dir_writable,
    check_sampling_strategy,
    preserved_random_states,
)
from .streaming import PrunedStream, dataset_rows, prunable_stream, rows_per_turn, warn_if_cut_short

logger = logging.get_logger(__name__)


@dataclass
class MicroBatch:
    """One training micro-batch as the statistics see it: its rows, its labels, and what its forward pass gave."""

    rows: torch.Tensor
    labels: Any = None
    outputs: Any = None  # the forward pass's outputs, kept until `compute_loss` reweights them
    forwarded: bool = False  # the model ran on this micro-batch
    observed: bool = False  # its statistics were recorded
    position_ids: torch.Tensor | None = None  # a padding-free batch: where its examples start (EMPSFTTrainer)


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
        check_index_column(model, args)
        strategy = build_strategy(args.pruning_method, args.strategy_options)
        if train_dataset is not None and is_iterable(train_dataset) and strategy.traits.prunes:
            train_dataset = prunable_stream(train_dataset, args.pruning_index_column, args.pruning_num_rows)
        super().__init__(model, args, data_collator, train_dataset, *trainer_args, **trainer_kwargs)
        # Index the dataset the trainer trains on (TRL's trainers tokenize, filter and shuffle it in __init__).
        self._indexed_dataset: Any = None
        self._dataset_fingerprint: str | None = None
        self._source_rows: dict[str, Any] | None = None
        self.strategy = strategy
        self._index_train_dataset()
        self.per_example_loss_func = per_example_loss_func
        check_sampling_strategy(self.args, strategy.traits)
        self.data_collator = RowIndexCollator(self.data_collator, args.pruning_index_column)
        self._task: Task | None = None
        self._problem_type: str | None = None
        self._resolve_head()
        check_margin_tracking(self.args, self.model, self._task, per_example_loss_func is not None)
        if strategy.traits.uses_weights:
            if per_example_loss_func is not None:
                self.loss_is_scaled_for_ga = False  # the reweighted user loss is a per-batch mean
            if self.compute_loss_func is not None and per_example_loss_func is None:
                raise ValueError(
                    f"pruning_method={args.pruning_method!r} reweights each example's loss, so a compute_loss_func "
                    "cannot be used as given (it returns one batch loss). Pass per_example_loss_func=fn instead, "
                    "fn(outputs, labels) -> (loss, entropy) of shape [batch]: emp_hf weights and averages those."
                )
        self._micro_batch: MicroBatch | None = None
        self._hooked: tuple[torch.nn.Module, Any] | None = None
        self._warned_no_entropy = False
        self.pruning_state: PruningState | None = self._new_pruning_state()
        self._planner: EpochPlanner | None = None
        self._resume_from: str | None = None
        self._budget: StepBudget | None = None
        self._max_epochs: int | None = None  # with max_steps: the training loop's number of passes
        self._dataloaders_built = 0
        self._resumed_epoch: int | None = None
        self._resumed_micro_batches = self._micro_batches_run = 0
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
    def _index_train_dataset(self) -> None:
        """Give the training set its row-index column, once per dataset object (also one assigned after
        construction: `trainer.train_dataset = other`). `none` trains on an `IterableDataset` as Trainer does,
        without statistics (one warning)."""
        dataset = self.train_dataset
        if dataset is None or dataset is self._indexed_dataset:
            return
        if is_iterable(dataset) and not self._trains_like_trainer:  # pruned by filtering the stream (streaming.py)
            args = self.args
            self.train_dataset = self._indexed_dataset = prunable_stream(
                dataset, args.pruning_index_column, args.pruning_num_rows
            )
            return
        if is_iterable(dataset):  # only `none` gets here
            logger.warning(
                "The training dataset is an IterableDataset: pruning_method='none' trains on it as Trainer does, "
                "without per-row statistics (they need a row index: use a map-style dataset to record them)."
            )
            self._indexed_dataset = dataset
            return
        self._dataset_fingerprint = getattr(dataset, "_fingerprint", None)
        self._source_rows = self._training_rows_source(dataset)
        self.train_dataset = self._indexed_dataset = add_row_index(dataset, self.args.pruning_index_column)

    def _training_rows_source(self, dataset: Any) -> dict[str, Any] | None:
        """Where the training rows came from when the trainer derived them from the user's dataset (TRL tokenizes
        and filters it): `{"fingerprint", "num_rows", "rows"}` with `rows[i]` the user's row of training row `i`
        (None: the same rows). Kept as the state's `metadata["source_dataset"]`; a plain Trainer trains the given
        rows."""
        return None

    @property
    def _tracks_rows(self) -> bool:
        """Whether the training set has a row index (every map-style dataset; not a streamed one under `none`)."""
        dataset = self.train_dataset
        return dataset is not None and (isinstance(dataset, PrunedStream) or not is_iterable(dataset))

    def _new_pruning_state(self) -> PruningState | None:
        if not self._tracks_rows:
            return None
        args = self.args
        state = PruningState(
            dataset_rows(self.train_dataset),
            ema_decay=args.ema_decay,
            device=args.device,
            track=self.strategy.traits.required_tables
            | (MARGIN_TABLES.keys() if args.pruning_track_margin else set()),
        )
        if self._source_rows is not None:
            state.metadata["source_dataset"] = self._source_rows
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
        if args.pruning_track_margin:  # only when on: checkpoints of runs without it resume as before
            state.metadata["pruning_track_margin"] = True
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
        for key in ("planned_epochs", "trained_rows", "global_step"):  # what the run recorded, not an option
            if key in self.pruning_state.metadata:
                expected[key] = self.pruning_state.metadata[key]
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
        self._index_train_dataset()
        self._resolve_head()
        check_margin_tracking(self.args, self.model, self._task, self.per_example_loss_func is not None)
        if self.args.should_save or self.is_world_process_zero():
            check_output_dir_writable(self.args.output_dir)
        if isinstance(resume_from_checkpoint, bool) and resume_from_checkpoint:
            resume_from_checkpoint = self._last_checkpoint()
        self._resume_from = resume_from_checkpoint or None
        self._dataloaders_built = 0
        self._resumed_epoch, self._resumed_micro_batches, self._micro_batches_run = None, 0, 0
        self._reset_pruning_state()
        self._check_training_labels()
        output = super().train(resume_from_checkpoint, trial, ignore_keys_for_eval, **kwargs)
        if self.pruning_state is None:
            return output
        # on every process: the last observations reach the tables, and every process holds every row again (as
        # with one process), so that the main process alone can read, save or push the state
        self.pruning_state.unshard()
        if self.args.push_pruning_record and self.is_world_process_zero():
            self._push_pruning_record(save_dir=os.path.join(self.args.output_dir, "pruning_record"))
        summary = self.pruning_summary()
        output.metrics.update({f"train_{k.split('/')[-1]}": v for k, v in summary.items()})
        return output

    def _last_checkpoint(self) -> str:
        """`resume_from_checkpoint=True`: the newest complete checkpoint (`none`: the Trainer's choice, as Trainer)."""
        output_dir = self.args.output_dir
        if self._trains_like_trainer:
            checkpoint = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        else:
            checkpoint = latest_complete_checkpoint(output_dir)
        if checkpoint is None:
            raise ValueError(f"No valid checkpoint found in output directory ({output_dir})")  # as Trainer says
        return checkpoint

    def _reset_pruning_state(self) -> None:
        """A fresh pruning state, or the one of the checkpoint training resumes from; with several processes, each
        keeps its block of the rows (a checkpoint holds every row, so any number of processes resumes it)."""
        self.pruning_state = self._new_pruning_state()
        checkpoint = self._resume_from
        if self.pruning_state is not None and checkpoint and os.path.isdir(checkpoint):
            try:
                self._load_pruning_state(checkpoint)
            except (FileNotFoundError, ValueError) as error:
                if not self._trains_like_trainer:
                    raise
                # `none` resumes as Trainer does; statistics it cannot trust are not used: they start afresh.
                logger.warning(f"Not resuming the pruning statistics ({error}); they start afresh from this run.")
                self.pruning_state = self._new_pruning_state()
        # (no checkpoint at that path: the Trainer says so, "Can't find a valid checkpoint at ...")
        if self.pruning_state is not None:
            shard_across_processes(self.pruning_state, self.accelerator)

    @property
    def _trains_like_trainer(self) -> bool:
        """A method that never prunes (`none`, the control arm): Trainer's sampler, epochs and step counts,
        untouched."""
        return not self.strategy.traits.prunes

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """`Trainer.save_model`, and the pruning state beside the model (`emp-hf inspect/export OUTPUT_DIR`)."""
        super().save_model(output_dir, _internal_call)
        state = self.pruning_state
        if _internal_call or state is None or not self.args.should_save or not state.epoch_plan_sizes:
            return  # checkpoints get theirs in `_save_checkpoint`
        self._stamp(state)
        save_pruning_state(state, output_dir if output_dir is not None else self.args.output_dir)

    def _stamp(self, state: PruningState) -> None:
        """Note in the state the optimizer step it was saved at (readers pick the newest state by it)."""
        state.metadata["global_step"] = self.state.global_step

    # ------------------------------------------------------------------ sampling and step budget
    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler | None:
        if self.pruning_state is None:
            return super()._get_train_sampler(train_dataset)
        if self._dataloaders_built and self.is_in_train:  # `auto_find_batch_size` retries with a smaller batch
            self._reset_pruning_state()  # the failed attempt's visits do not count
        self._dataloaders_built += 1
        self._prepare_pruning()
        if self._trains_like_trainer:
            self._sampler = None
            return super()._get_train_sampler(train_dataset)
        self._sampler = PruningSampler(self._planner)
        if isinstance(train_dataset, PrunedStream):  # the stream keeps each plan's rows, in its own order
            train_dataset.follow(self._sampler, rows_per_turn(self.accelerator, self._train_batch_size))
            return None
        order = str(self.args.train_sampling_strategy)
        if order in ("group_by_length", "sequential"):  # the plan's rows, in the order Trainer would use
            lengths = self._row_lengths() if order == "group_by_length" else None
            batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
            return PlanOrderSampler(self._sampler, order, lengths, batch)
        return self._sampler

    def get_train_dataloader(self) -> Any:
        if isinstance(self.train_dataset, PrunedStream):  # the Trainer asks no sampler of a stream: plan it here
            self._get_train_sampler(self.train_dataset)
        return super().get_train_dataloader()

    def _prepare_pruning(self) -> None:
        """Fix the step counter, the number of epochs and the planner before the dataloader is built."""
        args = self.args
        check_accelerator(self.accelerator)
        self._step_counter = StepCounter(
            batch_size=self._train_batch_size,
            num_processes=self.accelerator.num_processes,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            drop_last=args.dataloader_drop_last,
        )
        self._budget = StepBudget(
            counter=self._step_counter,
            options=EpochSchedule(
                num_rows=self.pruning_state.num_rows,
                num_epochs=1,
                prune_ratio=args.prune_ratio,
                warmup_epochs=args.pruning_warmup_epochs,
                anneal_fraction=args.pruning_anneal_fraction,
            ),
            fixed_budget=self.strategy.traits.fixed_budget,
            at_most_num_keep=self.strategy.traits.budget_at_most_num_keep,
        )
        self._max_epochs = None
        if args.max_steps > 0:  # as many passes over the plans as max_steps needs (open budgets: at least K rows)
            num_epochs = self._max_epochs = self._budget.epochs_for_max_steps(args.max_steps)  # the loop's length
            if not self.strategy.traits.fixed_budget:  # as last fitted to the plans before a resume
                num_epochs = self.pruning_state.metadata.get("planned_epochs", num_epochs)
        else:
            num_epochs = math.ceil(args.num_train_epochs)  # fractional epochs only reach here for `none`
        check_drop_last(self._step_counter, self._budget.schedule(num_epochs), self.strategy.traits)
        self.pruning_state.metadata["planned_epochs"] = num_epochs
        quota = args.pruning_class_quota
        classes = None if quota is None else row_classes(self.train_dataset, args.label_names)
        self._planner = EpochPlanner(
            self.pruning_state, self.strategy, self._budget.schedule(num_epochs), self._seed, classes, quota
        )

    @property
    def _seed(self) -> int:
        return self.args.effective_pruning_seed

    def _expected_plan_sizes(self) -> list[int]:
        """Every epoch's plan size: exact where planned or fixed, estimated for an open budget's undecided ones."""
        return self._budget.plan_sizes(self._planner.schedule, self.pruning_state.epoch_plan_sizes)

    def _total_steps(self) -> int:
        return self._budget.steps(self._expected_plan_sizes())

    def _pruning_training_values(self, values: TrainingValues) -> TrainingValues:
        """The run's step counts from the plan sizes (the Trainer derives them from the first epoch's length)."""
        args = self.args
        if self._sampler is None:  # `none` trains exactly like Trainer: its epochs, steps and fractional epochs
            return values
        schedule = self._planner.schedule
        sizes = self._expected_plan_sizes()
        return values._replace(
            num_train_epochs=max(schedule.num_epochs, self._max_epochs or 0),
            num_update_steps_per_epoch=self._step_counter.update_steps(sizes[0]),
            num_train_samples=sum(sizes),
            steps_in_epoch=self._step_counter.micro_batches(sizes[0]),
            max_steps=args.max_steps if args.max_steps > 0 else self._budget.steps(sizes),
        )

    def _pruning_resume_position(
        self, epochs_trained: int, steps_trained: int, resume_from_checkpoint: str | None
    ) -> tuple[int, int]:
        """Epoch and micro-batches to skip when resuming: the Trainer assumes epochs of equal length."""
        if resume_from_checkpoint is None or self.state.global_step == 0 or self._sampler is None:
            return epochs_trained, steps_trained
        # Epochs have different lengths: locate global_step in the recorded plans.
        epoch, steps = self._budget.resume_position(self.state.global_step, self.pruning_state.epoch_plan_sizes)
        skip = 0 if self.args.ignore_data_skip else steps
        self._resumed_epoch, self._resumed_micro_batches = epoch, skip * self.args.gradient_accumulation_steps
        return epoch, self._resumed_micro_batches

    def _pruning_epoch_begin(self, epoch: int, train_dataloader: Any) -> EpochLength | None:
        """Plan `epoch` and return its length in micro-batches and optimizer steps (None: Trainer's own)."""
        self._epoch = epoch
        if self.pruning_state is None:  # `none` on a streamed dataset: nothing to record
            return None
        rows = dataset_rows(self.train_dataset)
        if rows != self.pruning_state.num_rows:
            raise RuntimeError(
                f"The training dataset changed length during training: {rows} rows at epoch "
                f"{epoch}, {self.pruning_state.num_rows} when training started. Its rows must stay the same for "
                "the whole run; start a new run (a new output_dir) to train on other data."
            )
        self._micro_batches_run = self._resumed_micro_batches if epoch == self._resumed_epoch else 0
        if self._sampler is None:  # `none`: Trainer's sampler, epochs and step counts, untouched
            return None
        open_budget = not self.strategy.traits.fixed_budget
        if self.args.max_steps > 0 and open_budget and epoch == len(self.pruning_state.plans):
            self._refit_epochs_to_max_steps(epoch)
        self._sampler.set_epoch(epoch)
        plan_size = self.pruning_state.epoch_plan_sizes[epoch]
        micro_batches = self._step_counter.micro_batches(plan_size)
        loader = train_dataloader
        if self._sampler is not None and len(loader) != micro_batches:
            raise RuntimeError(
                f"Internal error: epoch {epoch} has {len(loader)} batches per process, expected {micro_batches}."
            )
        if not self.strategy.traits.fixed_budget and self.args.max_steps <= 0:
            self._retarget_budget()
        return EpochLength(micro_batches, self._step_counter.update_steps(plan_size))

    def _pruning_epoch_end(self, epoch: int) -> None:
        """Record which of the epoch's rows trained (an early stop and `dataloader_drop_last` leave some out).

        `none`: the rows its forward passes visited become the epoch's plan. A pruning method: its sampler's order
        is the plan's, so the rows trained are the first `micro-batches x batch size x processes` of it; fewer
        than the plan are kept in `metadata["trained_rows"]` (epoch -> count), which the record honours. The
        pruning summary itself rides on the Trainer's training logs (`log`).
        """
        state = self.pruning_state
        if state is None:
            return
        if self._sampler is None:
            state.flush()  # on every process (a collective with several)
            self._planner.record_full_epoch(epoch, state.last_epoch == epoch)
            return
        counter = self._step_counter
        trained = self._micro_batches_run * counter.batch_size * counter.num_processes
        if trained < state.epoch_plan_sizes[epoch]:
            state.metadata.setdefault("trained_rows", {})[str(epoch)] = trained
            warn_if_cut_short(self.train_dataset, epoch, trained, state.epoch_plan_sizes[epoch])

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """`Trainer.log`; each training log (the one with `loss`) also carries the pruning summary."""
        if "loss" in logs and self.is_in_train and self.pruning_state is not None:
            logs = {**logs, **self.pruning_summary()}
        super().log(logs, start_time)

    def _retarget_budget(self) -> None:
        """InfoBatch without budget matching: re-estimate the total steps now that this epoch's size is known."""
        total = self._total_steps()
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

    def training_step(
        self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        """Take the row index off the batch, then train as the Trainer does; the forward hook records statistics.

        The index never reaches `compute_loss` (nor a user's override of it) or the model. The statistics come from
        the outputs of the one training forward pass, whatever `compute_loss` does, through a forward hook on the
        model (`_capture_outputs`).
        """
        rows = inputs.pop(self.args.pruning_index_column, None) if isinstance(inputs, MutableMapping) else None
        if rows is None or self.pruning_state is None:
            return super().training_step(model, inputs, num_items_in_batch)
        self._hook_model(model)
        self._micro_batches_run += 1
        batch = self._micro_batch = self._new_micro_batch(rows, inputs)
        try:
            loss = super().training_step(model, inputs, num_items_in_batch)
        finally:
            self._micro_batch = None
        if not batch.forwarded:
            raise RuntimeError(
                f"{type(self).__name__} records each example's loss from the model's forward pass, but this training "
                "step never called the model (trainer.model): call it in compute_loss, e.g. outputs = model(**inputs)."
            )
        if not batch.observed:  # a weighted strategy, and a compute_loss override that skips ours
            raise RuntimeError(
                f"pruning_method={self.args.pruning_method!r} reweights each example's loss in "
                f"{type(self).__name__}.compute_loss, which your compute_loss override does not call: call "
                "super().compute_loss(model, inputs, return_outputs, num_items_in_batch), or pick a pruning method "
                "that does not reweight (e.g. 'emp')."
            )
        return loss

    def _new_micro_batch(self, rows: torch.Tensor, inputs: dict[str, Any]) -> MicroBatch:
        """What the forward hook and `compute_loss` need of this micro-batch (labels as the Trainer names them)."""
        return MicroBatch(rows=rows, labels=self._batch_labels(inputs))

    def _batch_labels(self, inputs: MutableMapping[str, Any]) -> Any:
        """The batch's labels (`label_names`): one tensor, a tuple of them, or None. A model whose loss emp_hf
        splits per example needs them: without them (and no `per_example_loss_func`) a one-line `ValueError`."""
        labels = tuple(inputs.get(name) for name in self.label_names) if self.label_names else ()
        label = labels[0] if len(labels) == 1 else (None if all(x is None for x in labels) else labels)
        if label is None and self.per_example_loss_func is None and self._task is not None:
            names = self.label_names or ["labels"]
            raise ValueError(
                f"The training batches have no {names[0]!r}, which the model needs to compute its loss (batch keys: "
                f"{sorted(inputs)}). Add a {names[0]!r} column to the training dataset, set label_names, or use a "
                "data collator that builds the labels."
            )
        return label

    def _check_training_labels(self) -> None:
        """Before training: the first training row, collated as the dataloader collates it, has the labels the
        statistics need (`_batch_labels`). Every random state the collator may draw from is restored afterwards, so
        training sees exactly the random numbers it would have seen (a masking collator draws from torch's)."""
        dataset = self.train_dataset
        if self.pruning_state is None or self._task is None or self.per_example_loss_func is not None:
            return
        if is_iterable(dataset) or len(dataset) == 0:
            return
        with preserved_random_states():
            try:
                row = dataset[0]
                if isinstance(dataset, datasets.Dataset) and self.args.remove_unused_columns:
                    self._set_signature_columns_if_needed()  # the columns Trainer's dataloader keeps
                    row = {name: value for name, value in row.items() if name in self._signature_columns}
                batch = self.data_collator([row])
            except Exception:  # noqa: BLE001  (the dataloader reports its own errors, as it would for Trainer)
                return
        if isinstance(batch, MutableMapping):
            self._batch_labels(batch)

    def _hook_model(self, model: torch.nn.Module) -> None:
        """Register `_capture_outputs` on the model under every wrapper (once per model object)."""
        module = unwrap_model(self.accelerator.unwrap_model(model))
        if self._hooked is not None and self._hooked[0] is module:
            return
        if self._hooked is not None:
            self._hooked[1].remove()
        self._hooked = (module, module.register_forward_hook(self._capture_outputs))

    def _capture_outputs(self, module: torch.nn.Module, args: Any, outputs: Any) -> None:
        """Forward hook: the first training forward pass of a micro-batch (in training mode, with gradients) gives
        its per-example statistics."""
        batch = self._micro_batch
        if batch is None or batch.forwarded or not module.training or not torch.is_grad_enabled():
            return  # not a training forward pass (TRL recomputes outputs without gradient for metrics)
        batch.forwarded = True
        if self.strategy.traits.uses_weights:  # compute_loss reweights the per-example losses of these outputs
            batch.outputs = outputs
            return
        with torch.no_grad():
            loss, entropy = self._per_example(outputs, batch.labels)
        self._observe(batch.rows, loss.detach(), entropy.detach(), self._margin(outputs, batch.labels))
        batch.observed = True

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        inputs.pop(self.args.pruning_index_column, None)  # a direct call with an indexed batch
        batch = self._micro_batch
        if batch is None or not self.strategy.traits.uses_weights or not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        trainer_loss, outputs = result if return_outputs else (result, None)
        if batch.outputs is None:
            raise RuntimeError(f"{type(self).__name__}.compute_loss: the model was not called on the training batch.")
        example_loss, entropy = self._per_example(batch.outputs, batch.labels)
        weight = self.pruning_state.loss_weight(batch.rows).to(example_loss.device)
        loss = self._weighted_loss(weight, example_loss, batch.labels, trainer_loss)
        margin = self._margin(batch.outputs, batch.labels)
        self._observe(batch.rows, example_loss.detach(), entropy.detach(), margin)
        batch.observed, batch.outputs = True, None
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
        """Which per-example loss the model needs; a head emp_hf does not know is refused before training, except
        by `none`, which then trains exactly as the Trainer does and records visits only (one warning)."""
        self._task = None
        if self.per_example_loss_func is not None or self.model is None:
            return
        try:
            self._task = infer_task(self.model)
        except ValueError:
            if not self._trains_like_trainer:
                raise
            logger.warning(
                f"EMPTrainer cannot split the loss of a {type(unwrap_peft(self.model)).__name__} into per-example "
                "losses: pruning_method='none' trains as Trainer does and records each row's visits only (pass "
                "per_example_loss_func to record losses too)."
            )
        self._problem_type = getattr(getattr(unwrap_peft(self.model), "config", None), "problem_type", None)

    @property
    def _records_visits_only(self) -> bool:
        return self._task is None and self.per_example_loss_func is None

    def _per_example(self, outputs: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example `(loss, entropy)`, each `[batch]`, of the training forward pass's `outputs`."""
        if self.per_example_loss_func is not None:
            return self._user_per_example(outputs, labels)
        if self._records_visits_only:  # visits only: NaN statistics leave the tables unchanged
            rows = self._micro_batch.rows
            nan = torch.full(rows.shape, float("nan"), device=rows.device)
            return nan, nan
        loss, entropy = per_example_stats(
            outputs, labels, self._task, self.args.label_smoothing_factor, problem_type=self._problem_type
        )
        if (
            not self._warned_regression
            and self.strategy.traits.ranks_by_entropy
            and self._task == "sequence"
            and outputs.logits.shape[-1] == 1
        ):
            logger.warning(
                f"pruning_method={self.args.pruning_method!r} on a regression task has no predictive entropy: it "
                "reduces to loss-only selection."
            )
            self._warned_regression = True
        return loss, entropy

    def _user_per_example(self, outputs: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """`per_example_loss_func(outputs, labels)`: `(loss, entropy)`, or `loss` / `(loss, None)` for no entropy."""
        result = self.per_example_loss_func(outputs, labels)
        loss, entropy = result if isinstance(result, tuple) and len(result) == 2 else (result, None)
        if not torch.is_tensor(loss) or not (entropy is None or torch.is_tensor(entropy)):
            raise TypeError(
                "per_example_loss_func must return (loss, entropy), two tensors of shape [batch] (or loss alone, or "
                f"(loss, None), when there is no entropy), got {type(result).__name__}."
            )
        if entropy is None:
            if not self._warned_no_entropy and "entropy" in self.strategy.traits.required_tables:
                logger.warning(
                    f"per_example_loss_func returns no entropy: pruning_method={self.args.pruning_method!r} reads "
                    "it and counts it as 0."
                )
                self._warned_no_entropy = True
            entropy = torch.zeros_like(loss.detach())
        return loss, entropy

    def _margin(self, outputs: Any, labels: Any) -> torch.Tensor | None:
        """Each example's margin (`losses.margins`) when the state tracks it (`pruning_track_margin`), else None."""
        if not self.pruning_state.tracks_margin:
            return None
        return per_example_margin(outputs, labels, self._problem_type)

    def _observe(
        self, rows: torch.Tensor, loss: torch.Tensor, entropy: torch.Tensor, margin: torch.Tensor | None = None
    ) -> None:
        """Buffer one micro-batch's observations: a few device copies, no host sync, one gather per flush."""
        if loss.shape != rows.shape or entropy.shape != rows.shape:  # shapes only: no synchronisation
            raise ValueError(
                f"Per-example loss and entropy must have one value per example, shape {tuple(rows.shape)}, got "
                f"{tuple(loss.shape)} and {tuple(entropy.shape)}. A batch that merges examples (padding-free or "
                "packed rows) must be split back into examples (see docs/api.md)."
            )
        attach_process_group(self.pruning_state, self.accelerator, self._train_batch_size)
        self.pruning_state.update(rows, loss, entropy, self._epoch, margin)

    # ------------------------------------------------------------------ checkpoints and logging
    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        # The pruning state goes in first: the Trainer's save ends by deleting old checkpoints
        # (save_total_limit) and may push the folder (hub_strategy="checkpoint"); both must find it written.
        # The Trainer's trainer_state.json, written after the model, marks the checkpoint complete.
        if self.pruning_state is None:
            return super()._save_checkpoint(model, trial)
        state = self.pruning_state
        # on every process (a collective with several): the main one writes every row's state, as one process does
        with state.whole():
            self._stamp(state)
            if self.args.should_save:
                folder = os.path.join(
                    self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
                )
                save_pruning_state(state, folder)
        super()._save_checkpoint(model, trial)
        if self.args.push_pruning_record and self.args.pruning_record_push_on_save:
            with state.whole():
                if self.is_world_process_zero():
                    self._push_pruning_record()  # global rank 0 only, also with save_on_each_node

    def _push_pruning_record(self, save_dir: str | None = None) -> None:
        """Push the pruning record to the Hub; a failure is logged with the command that retries it."""
        from ..records.hub import push_trainer_pruning_record

        try:
            push_trainer_pruning_record(self, save_dir=save_dir)
        except Exception as error:  # a finished run must not crash on a network error
            retry = f"emp-hf push {save_dir or self.args.output_dir} --repo-id <repo>"
            logger.error(f"Pushing the pruning record failed ({error}). Retry with: {retry}")

    def pruning_summary(self) -> dict[str, float]:
        """Kept fraction of the latest planned epoch, realised saving so far, and a frequency summary."""
        state = self.pruning_state
        if state is None:
            return {}
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
    def _weighted_loss(
        self, weight: torch.Tensor, loss: torch.Tensor, labels: Any, trainer_loss: torch.Tensor
    ) -> torch.Tensor:
        """The reweighted loss on the scale of the Trainer's own `trainer_loss`: equal to it when every weight is 1.

        Built-in heads: `sum_i w_i * loss_i * n_i / D`, with `n_i` the row's labelled targets (1 for a sequence
        label, its labelled tokens for a token head) and `D = sum_i loss_i * n_i / trainer_loss` (detached) the
        normaliser the model's loss used: the micro-batch's targets for a mean, `num_items_in_batch` for a loss
        that takes it, over the processes where `average_tokens_across_devices` scales it. The Trainer's
        gradient-accumulation rule then applies as to its own loss. A `per_example_loss_func`'s losses are averaged
        over the micro-batch (and divided by the accumulation steps). No host sync; rows without a label take no
        part.
        """
        if self.per_example_loss_func is not None:
            return (weight * loss).mean()
        counts = self._label_counts(labels).to(loss.device)
        contribution = torch.where(counts > 0, loss * counts, torch.zeros_like(loss))
        reference = trainer_loss.detach().float()
        total = contribution.sum().detach()
        normaliser = torch.where(reference != 0, total / reference, counts.sum().clamp_min(1).float())
        return (weight * contribution).sum() / normaliser

    def _label_counts(self, labels: Any) -> torch.Tensor:
        """Each row's number of labelled targets (`[batch]`): 1 or 0 for a sequence head, tokens for a token head."""
        return label_counts(labels, self._task)

    def _refit_epochs_to_max_steps(self, epoch: int) -> None:
        """An open budget with `max_steps`: before planning `epoch`, fit the number of epochs to the plan sizes seen
        so far, so the anneal epochs end the run. A function of the recorded plans only (resumes equal the
        uninterrupted run); the count is kept in the pruning state's metadata as `planned_epochs`."""
        known = self.pruning_state.epoch_plan_sizes[:epoch]
        num_epochs = min(self._budget.epochs_for_max_steps(self.args.max_steps, known), self._max_epochs)
        self.pruning_state.metadata["planned_epochs"] = num_epochs
        self._planner.reschedule(self._budget.schedule(num_epochs))

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
