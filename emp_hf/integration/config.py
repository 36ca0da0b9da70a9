"""`PruningArguments`: the options of dynamic data pruning; `EMPConfig` = `TrainingArguments` + them."""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from transformers import HfArgumentParser, TrainingArguments

from ..core.quota import QUOTA_RULES
from ..strategies import STRATEGIES, PruningOptions, StrategyOptions, StrategyTraits
from ..strategies.base import DEFAULT_PRUNE_RATIO, check_number, invalid_option, is_number

INDEX_COLUMN = "emp_row_index"


@dataclass(repr=False)  # the TrainingArguments side provides __repr__ (it redacts *_token fields)
class PruningArguments(PruningOptions):
    """The options of dynamic data pruning, as a dataclass mixin for any `TrainingArguments` subclass.

    Each epoch trains on a subset of the training rows chosen by `pruning_method` from per-example
    statistics (loss, predictive entropy, visit frequency) collected during training. Every field is also a
    command-line flag through [`~transformers.HfArgumentParser`]. See `docs/methods.md` for the methods.
    The built-in strategies' options are inherited from their options classes (`PruningOptions`); a strategy
    registered elsewhere takes its own through `pruning_kwargs`, or through a config class that inherits its
    options too: `class MyConfig(MyOptions, EMPConfig)`.
    Combine it with a `TrainingArguments` class, pruning fields first: `class MyConfig(PruningArguments,
    SFTConfig)`; its validation then runs before the base class's `__post_init__`.
    """

    pruning_method: str = field(
        default="emp",
        metadata={
            "help": "How each epoch's subset is chosen: 'emp', 'infobatch', 'seta', 'rs2', 'small_loss', 'ucb', "
            "'epsilon_greedy', "
            "'random', 'none' (train on all rows, track statistics only), or any name registered with "
            "`register_strategy` (checked when the config is built, so strategies registered after import count).",
        },
    )
    prune_ratio: float | None = field(
        default=None,
        metadata={
            "help": "Fraction of the training rows a pruned epoch skips, in [0, 1). Default: "
            f"{DEFAULT_PRUNE_RATIO} for pruning methods, 0 for 'none'. For 'infobatch' it is the share of the "
            "below-mean rows pruned (see infobatch_match_budget)."
        },
    )
    pruning_warmup_epochs: int = field(
        default=1, metadata={"help": "Epochs at the start that train on all rows, so every row has a score."}
    )
    pruning_anneal_fraction: float | None = field(
        default=None,
        metadata={
            "help": "Fraction of the epochs at the end that train on all rows with weight 1, in [0, 1). "
            "Default: 0.125 for 'infobatch' (its delta = 0.875), 0 otherwise."
        },
    )
    ema_decay: float = field(
        default=0.9, metadata={"help": "Decay of the loss EMA used by 'ucb' and 'epsilon_greedy', in [0, 1)."}
    )
    pruning_seed: int | None = field(
        default=None,
        metadata={
            "help": "Seed of the pruning decisions and plan order. Default: `data_seed`, else `seed` (the seeds "
            "Trainer's data order follows)."
        },
    )
    pruning_track_margin: bool = field(
        default=False,
        metadata={
            "help": "Also record each row's area under the margin (AUM, Pleiss et al. 2020): the mean over its "
            "visits of its label's logit minus the largest other logit. The lowest are the likely mislabelled "
            "rows (`emp-hf inspect`, `record.top_k(k, by='margin', largest=False)`). Single-label classification "
            "heads only; 8 more bytes per row."
        },
    )
    pruning_index_column: str = field(
        default=INDEX_COLUMN,
        metadata={"help": "Name of the column that carries each example's row index through the batch."},
    )
    pruning_num_rows: int | None = field(
        default=None,
        metadata={
            "help": "The number of rows of a streamed (iterable) training set, whose rows carry their ids 0..N-1 in "
            "pruning_index_column. Default: the split size in the dataset's info, else its len()."
        },
    )
    pruning_class_quota: str | None = field(
        default=None,
        metadata={
            "help": "Split each pruned epoch's rows among the classes of the training labels before the method "
            "chooses: 'balanced' (the same number per class; a smaller class keeps all its rows) or 'proportional' "
            "(each class its share of the training set). The method then chooses which rows of each class. Needs a "
            "method with a fixed budget and a datasets.Dataset with one class label per row. Default: None (the "
            "method chooses among all rows)."
        },
    )
    ignore_pruning_state_mismatch: bool = field(
        default=False,
        metadata={
            "help": "Resume from a checkpoint whose pruning state was made with another dataset (same length) "
            "or other pruning options, instead of refusing."
        },
    )
    push_pruning_record: bool = field(
        default=False,
        metadata={
            "help": "Push the pruning record (per-row frequencies and scores, per-epoch plans) to a Hub dataset "
            "repo at the end of training (main process only)."
        },
    )
    pruning_record_repo_id: str | None = field(
        default=None,
        metadata={
            "help": "Hub dataset repo of the pruning record. Default: '<hub_model_id or output dir>-pruning-record'."
        },
    )
    pruning_record_private: bool | None = field(
        default=None, metadata={"help": "Make the pruning-record repo private. Default: hub_private_repo."}
    )
    pruning_record_push_on_save: bool = field(
        default=False, metadata={"help": "With push_pruning_record: also push at every checkpoint save."}
    )
    pruning_kwargs: dict | str | None = field(
        default=None,
        metadata={
            "help": "Options of a strategy registered outside emp_hf, as a dict or, on the command line, a JSON "
            "object (like lr_scheduler_kwargs): fields of its options_class, e.g. '{\"sharpness\": 2.0}'. "
            "Built-in options are flags of their own."
        },
    )
    dataloader_pin_memory: bool | None = field(  # TrainingArguments' field, with a default that fits the device
        default=None,
        metadata={
            "help": "Whether to pin memory in data loaders. Default: True when an accelerator (GPU, XPU, MPS, ...) "
            "is available, False on a CPU-only machine (where pinning does nothing but warn)."
        },
    )

    def __post_init__(self) -> None:
        if self.dataloader_pin_memory is None:
            self.dataloader_pin_memory = _accelerator_available()
        if self.pruning_method not in STRATEGIES:
            raise invalid_option(self, "pruning_method", f"choose one of {sorted(STRATEGIES)}.")
        if isinstance(self.pruning_kwargs, str):  # a JSON object from the command line
            try:
                self.pruning_kwargs = json.loads(self.pruning_kwargs)
            except json.JSONDecodeError as error:
                raise invalid_option(self, "pruning_kwargs", f"it is not a JSON object ({error}).") from None
        if self.prune_ratio is None:
            self.prune_ratio = DEFAULT_PRUNE_RATIO if self._traits_as_given().prunes else 0.0
        if is_number(self.prune_ratio):
            self.prune_ratio = float(self.prune_ratio)
        if self.pruning_anneal_fraction is None:
            self.pruning_anneal_fraction = self._traits_as_given().default_anneal_fraction
        # StrategyOptions.__post_init__: validate_options() below, then the TrainingArguments side's __post_init__.
        super().__post_init__()
        self._check_strategy_options()

    def _traits_as_given(self) -> StrategyTraits:
        """The traits of `pruning_method` with the options as given, which decide the defaults of `prune_ratio` (an
        unset one counts as the default meanwhile) and `pruning_anneal_fraction`, and the checks below.

        Asked before the options are validated: options that do not build (a bad value, which the validation names
        with this config's class, or `strategy_options` afterwards) count as `StrategyTraits()` meanwhile.
        """
        strategy = STRATEGIES[self.pruning_method]
        ratio = DEFAULT_PRUNE_RATIO if self.prune_ratio is None else self.prune_ratio
        kwargs = self.pruning_kwargs if isinstance(self.pruning_kwargs, dict) else {}
        try:
            options = strategy.options_class.from_values(self, **{**kwargs, "prune_ratio": ratio})
        except (TypeError, ValueError):
            return StrategyTraits()
        return strategy.traits_for(options)

    def validate_options(self) -> None:
        """Check every pruning option (the strategies' through `super()`) and its fit with the training options."""
        super().validate_options()
        traits = self._traits_as_given()
        if not traits.prunes and self.prune_ratio > 0:
            raise invalid_option(
                self,
                "prune_ratio",
                f"pruning_method={self.pruning_method!r} never prunes; leave prune_ratio unset or pick a method.",
            )
        if isinstance(self.pruning_warmup_epochs, bool) or not isinstance(self.pruning_warmup_epochs, int):
            raise invalid_option(self, "pruning_warmup_epochs", "it must be a whole number of epochs >= 0.")
        if self.pruning_warmup_epochs < 0:
            raise invalid_option(self, "pruning_warmup_epochs", "it must be >= 0.")
        check_number(self, "pruning_anneal_fraction", 0.0, 1.0, high_open=True)
        check_number(self, "ema_decay", 0.0, 1.0, high_open=True)
        if self.pruning_seed is not None and (
            isinstance(self.pruning_seed, bool) or not isinstance(self.pruning_seed, int)
        ):
            raise invalid_option(self, "pruning_seed", "it must be an integer or None.")
        if not isinstance(self.pruning_track_margin, bool):
            raise invalid_option(self, "pruning_track_margin", "it must be True or False.")
        if not isinstance(self.pruning_index_column, str) or not self.pruning_index_column:
            raise invalid_option(self, "pruning_index_column", "it must be a non-empty column name.")
        if self.pruning_num_rows is not None and (
            isinstance(self.pruning_num_rows, bool)
            or not isinstance(self.pruning_num_rows, int)
            or self.pruning_num_rows < 1
        ):
            raise invalid_option(self, "pruning_num_rows", "it must be a whole number of rows >= 1, or None.")
        self._validate_pruning_kwargs()
        if self.pruning_class_quota is not None:
            if self.pruning_class_quota not in QUOTA_RULES:
                raise invalid_option(self, "pruning_class_quota", f"choose one of {list(QUOTA_RULES)} or None.")
            if not (traits.prunes and traits.fixed_budget):
                raise invalid_option(
                    self,
                    "pruning_class_quota",
                    f"pruning_method={self.pruning_method!r} does not choose a fixed number of rows per epoch; use "
                    "a method with a fixed budget (emp, random, rs2, ...) or leave it unset.",
                )
        if self.push_pruning_record and os.environ.get("HF_HUB_OFFLINE", "0").upper() in ("1", "ON", "YES", "TRUE"):
            raise invalid_option(
                self, "push_pruning_record", "HF_HUB_OFFLINE is set, so nothing can be pushed; unset one of them."
            )
        if self.auto_find_batch_size and traits.prunes:
            raise ValueError(
                f"{type(self).__name__}.auto_find_batch_size=True is not supported with pruning_method="
                f"{self.pruning_method!r}: the plans and step budget are fixed for one batch size. Set "
                "per_device_train_batch_size instead (pruning_method='none' takes auto_find_batch_size)."
            )
        if traits.prunes and self.max_steps <= 0:
            epochs = self.num_train_epochs
            if not is_number(epochs) or epochs != int(epochs) or epochs < 1:
                raise invalid_option(
                    self, "num_train_epochs", "pruning needs a whole number of epochs (or set max_steps)."
                )
            anneal = math.ceil(self.pruning_anneal_fraction * epochs - 1e-9)
            if self.prune_ratio > 0 and self.pruning_warmup_epochs + anneal >= epochs:
                raise invalid_option(
                    self,
                    "num_train_epochs",
                    f"{self.pruning_warmup_epochs} warm-up and {anneal} anneal epochs leave no epoch to prune; "
                    "train longer or lower pruning_warmup_epochs / pruning_anneal_fraction.",
                )

    def _check_strategy_options(self) -> None:
        """Build `strategy_options` now (a registered strategy's own checks run on `pruning_kwargs`) and make sure
        checkpoints and records can store them."""
        options_class = STRATEGIES[self.pruning_method].options_class
        config_fields = {option.name: option for option in fields(self)}
        for option in fields(options_class):  # an option that is also a config field takes the config's value
            shared = config_fields.get(option.name)
            if shared is not None and option.name != "prune_ratio" and option.default != shared.default:
                raise ValueError(
                    f"{options_class.__name__}.{option.name} defaults to {option.default!r}, but it is also the "
                    f"config field {type(self).__name__}.{option.name} (default {shared.default!r}), whose value "
                    "the strategy gets: rename the option, or give it the config's default."
                )
        options = self.strategy_options
        STRATEGIES[self.pruning_method](options).check_arguments(self)
        try:
            json.dumps(asdict(options))
        except (TypeError, ValueError):
            raise ValueError(
                f"{type(self).__name__}: the options of pruning_method={self.pruning_method!r} ({options!r}) must be "
                "JSON values (numbers, strings, booleans, None, lists, dicts): checkpoints and records store them."
            ) from None

    def _validate_pruning_kwargs(self) -> None:
        """`pruning_kwargs` names only options of the strategy's `options_class` that have no flag of their own."""
        kwargs = self.pruning_kwargs
        if kwargs is None:
            return
        if not isinstance(kwargs, dict):
            raise invalid_option(self, "pruning_kwargs", "it must be a dict (a JSON object on the command line).")
        options_class = STRATEGIES[self.pruning_method].options_class
        own = {option.name for option in fields(options_class)}
        flags = {option.name for option in fields(self)}
        for key in kwargs:
            if key in flags:
                raise invalid_option(self, "pruning_kwargs", f"{key!r} is a config field: set {key}= (--{key}).")
            if key not in own:
                choices = sorted(own - flags)
                raise invalid_option(
                    self,
                    "pruning_kwargs",
                    f"{options_class.__name__} ({self.pruning_method!r}) has no option {key!r}; "
                    + (f"its own options are {choices}." if choices else "it has none beyond the config fields."),
                )

    def __repr__(self) -> str:
        # TrainingArguments' redacting repr (`*_token` fields shown as <HUB_TOKEN>): subclasses such as
        # Seq2SeqTrainingArguments regenerate a plain dataclass repr that would print the token.
        return TrainingArguments.__str__(self)

    __str__ = __repr__

    @property
    def strategy_options(self) -> StrategyOptions:
        """The options of `pruning_method`: its `options_class`, each field from this config by name, the rest
        from `pruning_kwargs`."""
        options_class = STRATEGIES[self.pruning_method].options_class
        return options_class.from_values(self, **(self.pruning_kwargs or {}))

    @property
    def effective_pruning_seed(self) -> int:
        """The seed of the plans: `pruning_seed`, else `data_seed`, else `seed` (as Trainer seeds its data order)."""
        if self.pruning_seed is not None:
            return self.pruning_seed
        return self.seed if self.data_seed is None else self.data_seed


@dataclass(repr=False)  # keep TrainingArguments' __repr__, which redacts *_token fields
class EMPConfig(PruningArguments, TrainingArguments):
    """[`~transformers.TrainingArguments`] for [`EMPTrainer`]: every Trainer option, plus data pruning.

    Each epoch trains on a subset of the training rows chosen by `pruning_method` from per-example
    statistics (loss, predictive entropy, visit frequency) collected during training. Every field is also a
    command-line flag through [`~transformers.HfArgumentParser`]. See `docs/methods.md` for the methods.
    """


def _accelerator_available() -> bool:
    return torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()


@contextmanager
def argument_errors(parser: argparse.ArgumentParser) -> Iterator[None]:
    """Turn a configuration mistake raised while `parser` parses (a `ValueError` from a config's `__post_init__`,
    such as `--pruning_method emp_` or `--prune_ratio 1.5`) into what argparse does with a bad flag: one
    `prog: error: ...` line on stderr and exit status 2, instead of a traceback.

        parser = TrlParser((ScriptArguments, EMPSFTConfig))
        with argument_errors(parser):
            script_args, training_args = parser.parse_args_and_config()
    """
    try:
        yield
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")


class EMPArgumentParser(HfArgumentParser):
    """[`~transformers.HfArgumentParser`] that reports a configuration mistake as argparse reports a bad flag.

    A value that `EMPConfig` (or any dataclass) refuses in `__post_init__` ends the program with one
    `prog: error: <message>` line and exit status 2, from the command line, a dict, a JSON or a YAML file;
    the dataclasses are returned as `HfArgumentParser` returns them. For another parser class (TRL's `TrlParser`),
    wrap the call in [`argument_errors`].

        parser = EMPArgumentParser((ModelArguments, EMPConfig))
        model_args, training_args = parser.parse_args_into_dataclasses()
    """

    def parse_args_into_dataclasses(self, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        with argument_errors(self):
            return super().parse_args_into_dataclasses(*args, **kwargs)

    def parse_dict(self, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        with argument_errors(self):
            return super().parse_dict(*args, **kwargs)

    def parse_json_file(self, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        with argument_errors(self):
            return super().parse_json_file(*args, **kwargs)

    def parse_yaml_file(self, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        with argument_errors(self):
            return super().parse_yaml_file(*args, **kwargs)
