"""`EMPSFTTrainer`: TRL's [`~trl.SFTTrainer`] with dynamic data pruning (`pip install 'emp_hf[trl]'`).

Each training row is one example as TRL prepared it (tokenized, labels built from the completion or assistant
masks, truncated). An example's loss and entropy are the means over its labelled tokens, so prompt tokens never
count with completion-only loss; `loss_type='dft'` records DFT's per-token loss. Padding-free batches (one
flattened row per batch, examples told apart by `position_ids` restarting at 0) are split back into examples.
Packing is refused: TRL packs several examples into one row and drops their row indices, so their losses cannot
be told apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from packaging.version import Version

try:
    import trl
    from trl import SFTConfig, SFTTrainer
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError("emp_hf.integration.sft needs TRL: pip install 'emp_hf[trl]'") from error

from ..strategies import build_strategy
from .config import PruningArguments
from .data import is_iterable
from .losses import IGNORE_INDEX, categorical_stats
from .trainer import PruningMixin

#: Whether this TRL computes the loss with its fused LM head (per-token log-probabilities, no logits).
_FUSED_LM_HEAD = Version(trl.__version__) >= Version("1.15")
#: The column of the user's row numbers that rides through TRL's processing of the training set.
SOURCE_ROW_COLUMN = "emp_source_row"
#: TRL loss types whose per-token losses `emp_hf` reproduces (`chunked_nll` and Liger return no logits).
SUPPORTED_LOSS_TYPES = ("nll", "dft")


@dataclass(repr=False)  # keep SFTConfig's redacting __repr__
class EMPSFTConfig(PruningArguments, SFTConfig):
    """TRL's [`~trl.SFTConfig`] plus the pruning options of [`PruningArguments`].

    `loss_type` defaults to `'nll'` here (TRL's default `'chunked_nll'` never materialises the logits that the
    per-example statistics are computed from). Parses with `HfArgumentParser` and `TrlParser`.
    """

    def __post_init__(self) -> None:
        if self.loss_type is None or (self.loss_type == "chunked_nll" and _FUSED_LM_HEAD):
            self.loss_type = "nll"  # TRL >= 1.15 reads 'chunked_nll' as an alias of 'nll', its fused default
        name = type(self).__name__
        if self.packing:
            raise ValueError(
                f"{name}.packing=True is not supported: packing merges several examples into one training row, so "
                "their losses cannot be told apart for pruning. Set packing=False (padding_free=True also avoids "
                "padding)."
            )
        if self.loss_type not in SUPPORTED_LOSS_TYPES:
            raise ValueError(
                f"{name}.loss_type={self.loss_type!r} is not supported: pruning needs each example's token losses "
                f"from the logits; choose one of {list(SUPPORTED_LOSS_TYPES)}."
            )
        if self.use_liger_kernel:
            raise ValueError(
                f"{name}.use_liger_kernel=True is not supported: the Liger loss returns no logits, and pruning needs "
                "each example's token losses. Set use_liger_kernel=False."
            )
        super().__post_init__()


def causal_lm_stats(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    label_smoothing: float = 0.0,
    dft: bool = False,
    position_ids: torch.Tensor | None = None,
    num_examples: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example `(loss, entropy)` of a causal-LM batch: means over each example's labelled next tokens.

    `logits` `[B, T, V]` and `labels` `[B, T]` (`-100` where no loss is taken). With `position_ids` (padding-free:
    `B == 1`, an example starts wherever a position id is 0) the tokens are split into `num_examples` examples;
    positions past the last example (padding) are dropped. `dft=True` gives DFT's per-token loss `-p * log p`
    (`p` detached). An example without labelled tokens gets NaN (visited, statistics unchanged).
    """
    logits, labels = logits[:, :-1], labels[:, 1:]
    valid = labels != IGNORE_INDEX
    if dft:
        log_probs = F.log_softmax(logits.float(), dim=-1)
        target = log_probs.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
        loss = -target.exp().detach() * target * valid
        entropy = -(log_probs.exp() * log_probs).sum(dim=-1) * valid
    else:
        loss, entropy = categorical_stats(logits, labels, label_smoothing)
    return _per_example_means(loss, entropy, valid, position_ids, num_examples)


def fused_causal_lm_stats(
    outputs: Any,
    *,
    dft: bool = False,
    position_ids: torch.Tensor | None = None,
    num_examples: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`causal_lm_stats` from the outputs of TRL's fused LM head (`model(..., fused_lm_head=True)`, TRL >= 1.16),
    which never builds the logits: its per-next-token `log_probs` of the labels, `entropy` and `label_mask`
    (`[B, T - 1]`, zero where no loss is taken). An output without `entropy` counts it as 0."""
    log_probs = outputs.log_probs.float()
    valid = outputs.label_mask.bool() if getattr(outputs, "label_mask", None) is not None else log_probs != 0
    loss = -log_probs * log_probs.exp().detach() if dft else -log_probs
    entropy = getattr(outputs, "entropy", None)
    entropy = torch.zeros_like(log_probs) if entropy is None else entropy.float()
    return _per_example_means(loss * valid, entropy * valid, valid, position_ids, num_examples)


def is_fused_output(outputs: Any) -> bool:
    """Whether `outputs` come from TRL's fused LM head (per-token log-probabilities, no logits)."""
    return getattr(outputs, "log_probs", None) is not None and getattr(outputs, "logits", None) is None


def _per_example_means(
    loss: torch.Tensor,
    entropy: torch.Tensor,
    valid: torch.Tensor,
    position_ids: torch.Tensor | None,
    num_examples: int | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Means of next-token `loss` and `entropy` (`[B, T - 1]`, zero where not `valid`) over each example's tokens."""
    if position_ids is None:
        count = valid.sum(dim=1).float()
        return loss.sum(dim=1) / count, entropy.sum(dim=1) / count
    if num_examples is None:
        raise ValueError("causal_lm_stats: padding-free batches need num_examples.")
    count = _per_flat_example(valid, position_ids, num_examples)
    return (
        _per_flat_example(loss, position_ids, num_examples) / count,
        _per_flat_example(entropy, position_ids, num_examples) / count,
    )


def _per_flat_example(values: torch.Tensor, position_ids: torch.Tensor, num_examples: int) -> torch.Tensor:
    """Sums of next-token `values` (`[1, T - 1]`) per example of a padding-free row; padding past the last dropped."""
    example = ((position_ids == 0).cumsum(dim=-1) - 1)[:, 1:].reshape(-1).clamp(0, num_examples)
    sums = torch.zeros(num_examples + 1, dtype=torch.float32, device=values.device)
    return sums.index_add_(0, example, values.reshape(-1).float())[:num_examples]


def causal_lm_label_counts(labels: torch.Tensor, position_ids: torch.Tensor, num_examples: int) -> torch.Tensor:
    """Each example's labelled next tokens in a padding-free row (`labels` and `position_ids` `[1, T]`)."""
    return _per_flat_example(labels[:, 1:] != IGNORE_INDEX, position_ids, num_examples)


class EMPSFTTrainer(PruningMixin, SFTTrainer):
    """TRL's [`~trl.SFTTrainer`] that prunes the training data epoch by epoch.

    Takes every argument `SFTTrainer` takes, with `args` an [`EMPSFTConfig`], plus `per_example_loss_func`
    (see [`EMPTrainer`]). Prompt-completion, conversational and plain-text datasets, completion-only and
    assistant-only loss, and padding-free batches are supported; packing is not.
    """

    config_class = EMPSFTConfig

    def __init__(
        self,
        model: Any = None,
        args: Any = None,
        data_collator: Any = None,
        train_dataset: Any = None,
        *trainer_args: Any,
        **trainer_kwargs: Any,
    ) -> None:
        # TRL tokenizes, truncates and filters the training set: a column of the user's row numbers rides through,
        # so the record maps every trained row back to the user's dataset (`select_rows(raw, record)`).
        self._raw_source = None
        pruning = (
            isinstance(args, PruningArguments)
            and build_strategy(args.pruning_method, args.strategy_options).traits.prunes
        )
        if pruning and train_dataset is not None and is_iterable(train_dataset):
            raise ValueError(
                "EMPSFTTrainer does not prune a streamed training set (TRL tokenizes, truncates and may drop its "
                "rows, so the row ids and the row count would not hold): pass a map-style dataset, or use "
                "pruning_method='none' to train the stream as SFTTrainer does."
            )
        if isinstance(train_dataset, datasets.Dataset) and SOURCE_ROW_COLUMN not in train_dataset.column_names:
            self._raw_source = {"fingerprint": train_dataset._fingerprint, "num_rows": len(train_dataset)}
            train_dataset = train_dataset.add_column(SOURCE_ROW_COLUMN, list(range(len(train_dataset))))
        super().__init__(model, args, data_collator, train_dataset, *trainer_args, **trainer_kwargs)

    def _training_rows_source(self, dataset: Any) -> dict[str, Any] | None:
        raw = self._raw_source
        if raw is None or not isinstance(dataset, datasets.Dataset) or SOURCE_ROW_COLUMN not in dataset.column_names:
            return None
        rows = np.asarray(dataset.with_format("numpy", columns=[SOURCE_ROW_COLUMN])[:][SOURCE_ROW_COLUMN])
        same = len(rows) == raw["num_rows"] and np.array_equal(rows, np.arange(len(rows)))
        return {**raw, "rows": None if same else rows.tolist()}

    def _new_micro_batch(self, rows: torch.Tensor, inputs: dict[str, Any]) -> Any:
        batch = super()._new_micro_batch(rows, inputs)
        # A padding-free batch is one flattened row: its examples start wherever a position id is 0.
        batch.position_ids = inputs.get("position_ids") if self.padding_free else None
        return batch

    def _per_example(self, outputs: Any, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.per_example_loss_func is not None or self._task != "causal_lm":
            return super()._per_example(outputs, labels)
        position_ids, num_examples = self._flat_layout()
        if is_fused_output(outputs):
            dft = self.args.loss_type == "dft"
            return fused_causal_lm_stats(outputs, dft=dft, position_ids=position_ids, num_examples=num_examples)
        logits = getattr(outputs, "logits", None)
        if logits is None or labels is None:
            return super()._per_example(outputs, labels)  # raises the message that says what is missing
        return causal_lm_stats(
            logits,
            labels,
            label_smoothing=self.args.label_smoothing_factor,
            dft=self.args.loss_type == "dft",
            position_ids=position_ids,
            num_examples=num_examples,
        )

    def _label_counts(self, labels: Any) -> torch.Tensor:
        position_ids, num_examples = self._flat_layout()
        if position_ids is None or self._task != "causal_lm":
            return super()._label_counts(labels)
        return causal_lm_label_counts(labels, position_ids, num_examples)

    def _flat_layout(self) -> tuple[torch.Tensor | None, int | None]:
        """`(position_ids, number of examples)` of a padding-free micro-batch, else `(None, None)`."""
        batch = self._micro_batch
        position_ids = getattr(batch, "position_ids", None) if batch is not None else None
        return (position_ids, batch.rows.numel()) if position_ids is not None else (None, None)
