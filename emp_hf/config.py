"""`PruningArguments`: the options of dynamic data pruning; `EMPConfig` = `TrainingArguments` + them."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields

from transformers import TrainingArguments

from .strategies import STRATEGIES, PruningOptions
from .strategies.emp import EMP_SELECTIONS
from .strategies.seta import seta_window_size
from .strategies.ucb import UCB_EXPLORATIONS

DEFAULT_PRUNE_RATIO = 0.5
INDEX_COLUMN = "emp_row_index"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(repr=False)  # the TrainingArguments side provides __repr__ (it redacts *_token fields)
class PruningArguments:
    """The options of dynamic data pruning, as a dataclass mixin for any `TrainingArguments` subclass.

    Each epoch trains on a subset of the training rows chosen by `pruning_method` from per-example
    statistics (loss, predictive entropy, visit frequency) collected during training. Every field is also a
    command-line flag through [`~transformers.HfArgumentParser`]. See `docs/methods.md` for the methods.
    Combine it with a `TrainingArguments` class, pruning fields first: `class MyConfig(PruningArguments,
    SFTConfig)`; its validation then runs before the base class's `__post_init__`.
    """

    pruning_method: str = field(
        default="emp",
        metadata={
            "help": "How each epoch's subset is chosen: 'emp', 'infobatch', 'seta', 'ucb', 'epsilon_greedy', "
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
    memory_weight: float = field(
        default=1.0, metadata={"help": "EMP's beta: score = loss + memory_weight * predictive entropy."}
    )
    emp_selection: str = field(
        default="sample",
        metadata={
            "help": "How EMP turns scores into an epoch's rows: 'sample' (proportional to score), 'spaced' (half "
            "the longest-unvisited rows, half sampled by score), 'topk', 'epsilon_greedy' or 'soft' (InfoBatch's "
            "rule on the EMP score, budget-matched) or 'window' (SeTa's sliding window over EMP-score groups).",
            "choices": list(EMP_SELECTIONS),
        },
    )
    emp_temperature: float = field(
        default=1.0,
        metadata={
            "help": "Temperature of EMP's score sampling ('sample' and the sampled part of 'spaced'): a row is drawn "
            "with probability proportional to score ** (1 / emp_temperature). Below 1 sharpens toward top-k, above 1 "
            "flattens toward uniform. Must be > 0."
        },
    )
    emp_revisit_share: float = field(
        default=0.5,
        metadata={
            "help": "'spaced' only: share of a pruned epoch given to the least recently visited rows, in (0, 1]. "
            "Every row is revisited at least once in any ceil(N / ceil(share * K)) pruned epochs."
        },
    )
    ema_decay: float = field(
        default=0.9, metadata={"help": "Decay of the loss EMA used by 'ucb' and 'epsilon_greedy', in [0, 1)."}
    )
    ucb_c: float = field(default=1.0, metadata={"help": "UCB exploration weight: score = mean + ucb_c * std."})
    epsilon: float = field(
        default=0.1,
        metadata={"help": "Share of an epoch filled uniformly at random by the epsilon-greedy rules, in [0, 1]."},
    )
    infobatch_match_budget: bool = field(
        default=False,
        metadata={
            "help": "InfoBatch: choose the pruned share each epoch so the epoch visits N - floor(p*N) rows "
            "(equal budget with the other methods) instead of pruning prune_ratio of the below-mean rows."
        },
    )
    pruning_seed: int | None = field(
        default=None,
        metadata={
            "help": "Seed of the pruning decisions and plan order. Default: `data_seed`, else `seed` (the seeds "
            "Trainer's data order follows)."
        },
    )
    pruning_index_column: str = field(
        default=INDEX_COLUMN,
        metadata={"help": "Name of the column that carries each example's row index through the batch."},
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
    seta_num_groups: int = field(
        default=5,
        metadata={"help": "SeTa (and emp_selection='window'): G, the loss groups of the uniform subset, >= 1."},
    )
    seta_window_scale: float = field(
        default=0.9,
        metadata={
            "help": "SeTa: the window keeps w = round(G * seta_window_scale) consecutive groups, easy to hard; "
            "1 <= w <= G. prune_ratio stays the saving of a pruned epoch (the subset size follows from it)."
        },
    )
    seta_delta: float = field(
        default=0.875,
        metadata={
            "help": "SeTa: epochs with epoch + 1 > seta_delta * num_epochs draw a uniform subset (partial "
            "annealing), in (0, 1]."
        },
    )
    ucb_exploration: str = field(
        default="variance",
        metadata={
            "help": "UCB's exploration term: 'variance' (ucb_c * EMA std, the specification) or 'visits' "
            "(ucb_c * sqrt(ln t / visits), UCB1: rows left out come back).",
            "choices": list(UCB_EXPLORATIONS),
        },
    )

    def __post_init__(self) -> None:
        self._validate_pruning_options()
        base_post_init = getattr(super(), "__post_init__", None)
        if base_post_init is not None:  # cooperative: the TrainingArguments class this is mixed into
            base_post_init()

    def _validate_pruning_options(self) -> None:
        def fail(name: str, message: str) -> None:
            raise ValueError(f"{type(self).__name__}.{name}={getattr(self, name)!r} is invalid: {message}")

        if self.pruning_method not in STRATEGIES:
            fail("pruning_method", f"choose one of {sorted(STRATEGIES)}.")
        if self.prune_ratio is None:
            self.prune_ratio = 0.0 if self.pruning_method == "none" else DEFAULT_PRUNE_RATIO
        if not _is_number(self.prune_ratio) or not 0.0 <= self.prune_ratio < 1.0:
            fail("prune_ratio", "it must be a number in [0, 1).")
        self.prune_ratio = float(self.prune_ratio)
        if self.pruning_method == "none" and self.prune_ratio > 0:
            fail("prune_ratio", "pruning_method='none' never prunes; leave prune_ratio unset or pick a method.")
        if isinstance(self.pruning_warmup_epochs, bool) or not isinstance(self.pruning_warmup_epochs, int):
            fail("pruning_warmup_epochs", "it must be a whole number of epochs >= 0.")
        if self.pruning_warmup_epochs < 0:
            fail("pruning_warmup_epochs", "it must be >= 0.")
        if self.pruning_anneal_fraction is None:
            self.pruning_anneal_fraction = STRATEGIES[self.pruning_method].default_anneal_fraction
        if not _is_number(self.pruning_anneal_fraction) or not 0.0 <= self.pruning_anneal_fraction < 1.0:
            fail("pruning_anneal_fraction", "it must be a number in [0, 1).")
        for name, low, high, closed_high in (
            ("memory_weight", 0.0, math.inf, False),
            ("ema_decay", 0.0, 1.0, False),
            ("ucb_c", 0.0, math.inf, False),
            ("epsilon", 0.0, 1.0, True),
            ("emp_revisit_share", 0.0, 1.0, True),
        ):
            value = getattr(self, name)
            in_range = _is_number(value) and low <= value and (value <= high if closed_high else value < high)
            if not in_range or (_is_number(value) and math.isnan(value)):
                fail(name, f"it must be a number in [{low}, {high}{']' if closed_high else ')'}.")
        if self.emp_revisit_share == 0:
            fail("emp_revisit_share", "it must be > 0 (use emp_selection='sample' for no revisit queue).")
        if not _is_number(self.emp_temperature) or not 0.0 < self.emp_temperature < math.inf:
            fail("emp_temperature", "it must be a finite number > 0.")
        if self.emp_selection not in EMP_SELECTIONS:
            fail("emp_selection", f"choose one of {list(EMP_SELECTIONS)}.")
        if not isinstance(self.infobatch_match_budget, bool):
            fail("infobatch_match_budget", "it must be True or False.")
        groups = self.seta_num_groups
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            fail("seta_num_groups", "it must be a whole number of groups >= 1.")
        if not _is_number(self.seta_window_scale) or not 0.0 < self.seta_window_scale <= 1.0:
            fail("seta_window_scale", "it must be a number in (0, 1].")
        if not 1 <= seta_window_size(self.seta_num_groups, self.seta_window_scale) <= self.seta_num_groups:
            fail(
                "seta_window_scale",
                f"round({self.seta_num_groups} * {self.seta_window_scale}) = 0 groups; raise it or seta_num_groups.",
            )
        if not _is_number(self.seta_delta) or not 0.0 < self.seta_delta <= 1.0:
            fail("seta_delta", "it must be a number in (0, 1].")
        if self.ucb_exploration not in UCB_EXPLORATIONS:
            fail("ucb_exploration", f"choose one of {list(UCB_EXPLORATIONS)}.")
        if self.pruning_seed is not None and (
            isinstance(self.pruning_seed, bool) or not isinstance(self.pruning_seed, int)
        ):
            fail("pruning_seed", "it must be an integer or None.")
        if not isinstance(self.pruning_index_column, str) or not self.pruning_index_column:
            fail("pruning_index_column", "it must be a non-empty column name.")
        if self.push_pruning_record and os.environ.get("HF_HUB_OFFLINE", "0").upper() in ("1", "ON", "YES", "TRUE"):
            fail("push_pruning_record", "HF_HUB_OFFLINE is set, so nothing can be pushed; unset one of them.")
        if self.auto_find_batch_size:
            raise ValueError(
                f"{type(self).__name__}.auto_find_batch_size=True is not supported: a retried batch size would "
                "count the visits of the failed attempt twice. Set per_device_train_batch_size instead."
            )
        if self.pruning_method != "none" and self.max_steps <= 0:
            epochs = self.num_train_epochs
            if not _is_number(epochs) or epochs != int(epochs) or epochs < 1:
                fail("num_train_epochs", "pruning needs a whole number of epochs (or set max_steps).")
            anneal = math.ceil(self.pruning_anneal_fraction * epochs - 1e-9)
            if self.prune_ratio > 0 and self.pruning_warmup_epochs + anneal >= epochs:
                fail(
                    "num_train_epochs",
                    f"{self.pruning_warmup_epochs} warm-up and {anneal} anneal epochs leave no epoch to prune; "
                    "train longer or lower pruning_warmup_epochs / pruning_anneal_fraction.",
                )

    def __repr__(self) -> str:
        # TrainingArguments' redacting repr (`*_token` fields shown as <HUB_TOKEN>): subclasses such as
        # Seq2SeqTrainingArguments regenerate a plain dataclass repr that would print the token.
        return TrainingArguments.__str__(self)

    __str__ = __repr__

    @property
    def pruning_options(self) -> PruningOptions:
        """The options the strategies read: every `PruningOptions` field, taken from this config by name."""
        return PruningOptions(**{option.name: getattr(self, option.name) for option in fields(PruningOptions)})

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
