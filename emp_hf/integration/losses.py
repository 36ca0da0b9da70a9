"""Per-example loss and predictive entropy from a model's logits, one function per kind of head (and, for a
classification head, the margin of area under the margin: `margins`).

Every function returns `(loss, entropy)`, each of shape `[batch]`, in float32, and works on the logits the
training forward pass already produced (no extra forward). A user-supplied `per_example_loss_func(outputs,
labels) -> (loss, entropy)` covers any other task.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES,
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES,
)

Task = Literal["sequence", "token", "causal_lm"]
PerExampleLossFunc = Callable[[Any, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]]
IGNORE_INDEX = -100


def _class_names(*mappings: dict[str, str | tuple[str, ...]]) -> set[str]:
    names: set[str] = set()
    for mapping in mappings:
        for value in mapping.values():
            names.update(value if isinstance(value, tuple) else (value,))
    return names


_TASK_OF_CLASS: dict[str, Task] = {
    **dict.fromkeys(_class_names(MODEL_FOR_MASKED_LM_MAPPING_NAMES), "token"),
    **dict.fromkeys(_class_names(MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES), "token"),
    **dict.fromkeys(_class_names(MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES), "token"),  # labels = decoder positions
    **dict.fromkeys(_class_names(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES), "causal_lm"),
    **dict.fromkeys(
        _class_names(
            MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
            MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
            MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES,
        ),
        "sequence",
    ),
}


def unwrap_peft(model: Any) -> Any:
    """The transformers model under a peft wrapper (or the model itself)."""
    if hasattr(model, "get_base_model"):
        return model.get_base_model()
    return model


def model_name_of(model: Any) -> str | None:
    """A name that identifies `model` to others: its Hub id, else its class (never a local path).

    The class is the model's own (`BertForSequenceClassification`), under a peft wrapper too, not
    `config.architectures[0]`, which names the checkpoint it was loaded from (`BertModel` for a pretrained base)."""
    if model is None:
        return None
    model = unwrap_peft(model)
    name = getattr(model, "name_or_path", None)
    if name and not os.path.isabs(str(name)) and not os.path.exists(str(name)):  # a local path says nothing to others
        return str(name)
    return type(model).__name__


def infer_task(model: Any) -> Task:
    """What kind of head `model` has, from its class; a clear error if per-example losses are unknown for it."""
    name = type(unwrap_peft(model)).__name__
    if name in _TASK_OF_CLASS:
        return _TASK_OF_CLASS[name]
    raise ValueError(
        f"EMPTrainer cannot split the loss of a {name} into per-example losses: it knows the sequence, image and "
        "audio classification, token classification, masked, causal and seq2seq LM heads of transformers. Pass "
        "`per_example_loss_func=fn` to EMPTrainer, where fn(outputs, labels) returns (loss, entropy), two "
        "tensors of shape [batch] (see docs/api.md)."
    )


def categorical_stats(
    logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy (with the Trainer's label smoothing) and softmax entropy, per position.

    `logits` is `[..., C]`, `labels` is `[...]`; positions labelled `-100` get loss and entropy 0.
    """
    log_probs = F.log_softmax(logits.float(), dim=-1)
    valid = labels != IGNORE_INDEX
    nll = -log_probs.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    if label_smoothing:
        nll = (1.0 - label_smoothing) * nll - label_smoothing * log_probs.mean(dim=-1)
    entropy = -(log_probs.exp() * log_probs).sum(dim=-1)
    return nll * valid, entropy * valid


def sequence_stats(
    logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0, problem_type: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One prediction per example: single-label, multi-label or regression, decided as transformers does."""
    if problem_type is None:
        if logits.shape[-1] == 1:
            problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            problem_type = "single_label_classification"
        else:
            problem_type = "multi_label_classification"
    if problem_type == "regression":
        error = (logits.float().reshape(labels.shape[0], -1) - labels.float().reshape(labels.shape[0], -1)) ** 2
        loss = error.mean(dim=1)
        return loss, torch.zeros_like(loss)
    if problem_type == "multi_label_classification":
        logits = logits.float()
        loss = F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none").mean(dim=-1)
        # Bernoulli entropy from logits: softplus(x) - x * sigmoid(x)
        entropy = (F.softplus(logits) - logits * torch.sigmoid(logits)).mean(dim=-1)
        return loss, entropy
    labels = labels.view(-1)
    loss, entropy = categorical_stats(logits, labels, label_smoothing)
    unlabelled = labels == IGNORE_INDEX  # no label: NaN, as for a token task without a labelled token
    return loss.masked_fill(unlabelled, float("nan")), entropy.masked_fill(unlabelled, float("nan"))


def token_stats(
    logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0, shift: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-level heads: mean over each example's labelled tokens (causal LMs predict the next token).

    An example without any labelled token gets NaN: it counts as visited but leaves its statistics unchanged.
    (The same rule holds for a sequence-level example labelled `-100`.)
    """
    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]
    loss, entropy = categorical_stats(logits, labels, label_smoothing)
    count = (labels != IGNORE_INDEX).sum(dim=1)
    labelled = count > 0
    denominator = count.clamp_min(1).float()  # no 0/0 in the graph: a NaN there poisons the gradients
    nan = torch.tensor(float("nan"), device=loss.device)
    return torch.where(labelled, loss.sum(dim=1) / denominator, nan), torch.where(
        labelled, entropy.sum(dim=1) / denominator, nan
    )


def margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The margin of area under the margin (AUM; Pleiss et al., NeurIPS'20, as their `aum` package computes it): the
    logit of each example's assigned label minus its largest other logit, float32 `[batch]`.

    `logits` is `[batch, C]` (C >= 2), `labels` `[batch]` class ids; an example labelled `-100` gets NaN (no
    visit for the margin). Label smoothing does not enter: the margin is of the logits, whatever the loss.
    """
    logits = logits.detach().float()
    labels = labels.reshape(-1)
    index = labels.clamp_min(0).unsqueeze(-1)
    assigned = logits.gather(-1, index).squeeze(-1)
    largest_other = logits.scatter(-1, index, float("-inf")).amax(dim=-1)
    return (assigned - largest_other).masked_fill(labels == IGNORE_INDEX, float("nan"))


def margin_unavailable(task: Task | None, problem_type: str | None, num_labels: int | None) -> str | None:
    """Why a head of `task` (None: a head emp_hf does not know) gives no per-row margin, or None if it gives one:
    only single-label classification heads (one assigned label among two or more classes) do."""
    if task is None:
        return "emp_hf does not know this model's head, so it has no logits to take a margin of"
    if task != "sequence":
        return "a token-level head (causal, masked or seq2seq LM, token classification) has no single label per row"
    if problem_type == "regression" or num_labels == 1:
        return "a regression head has no classes"
    if problem_type == "multi_label_classification":
        return "a multi-label head has no single assigned label"
    return None


def per_example_margin(outputs: Any, labels: torch.Tensor, problem_type: str | None = None) -> torch.Tensor:
    """`margins` of a sequence classification output (`[batch]`); a batch that is not single-label (float or
    multi-dimensional labels, one logit) is refused with a `ValueError` (shapes and dtypes only: no host sync)."""
    logits = outputs.get("logits") if isinstance(outputs, dict) else getattr(outputs, "logits", None)
    single_label = problem_type in (None, "single_label_classification") and labels.dtype in (torch.long, torch.int)
    if logits is None or logits.shape[-1] < 2 or not single_label or labels.numel() != logits.shape[0]:
        raise ValueError(
            "pruning_track_margin=True needs single-label classification batches (integer labels, one per row, and "
            "two or more logits): this batch has none. Set pruning_track_margin=False."
        )
    return margins(logits.reshape(labels.numel(), -1), labels)


def labelled_rows(labels: torch.Tensor, task: Task) -> torch.Tensor:
    """Boolean `[batch]`: whether each example has a label (a sequence label, or one labelled token) to learn from.

    Rows without one get NaN statistics from `per_example_stats` and take no part in a reweighted loss.
    """
    if task == "sequence":
        if labels.dtype not in (torch.long, torch.int):  # regression and multi-label targets are always labels
            return torch.ones(labels.shape[0], dtype=torch.bool, device=labels.device)
        return (labels.reshape(labels.shape[0], -1) != IGNORE_INDEX).any(dim=1)
    if task == "causal_lm":
        labels = labels[:, 1:]
    return (labels != IGNORE_INDEX).any(dim=1)


def label_counts(labels: torch.Tensor, task: Task) -> torch.Tensor:
    """Each row's number of labelled targets, `[batch]`: 1 or 0 for a sequence head (a regression or multi-label
    target always counts 1), the labelled next tokens of a causal LM, the labelled positions of a token head."""
    if task == "sequence":
        return labelled_rows(labels, task).to(torch.int64)
    if task == "causal_lm":
        labels = labels[:, 1:]
    return (labels != IGNORE_INDEX).sum(dim=1)


def per_example_stats(
    outputs: Any,
    labels: torch.Tensor | None,
    task: Task,
    label_smoothing: float = 0.0,
    problem_type: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example `(loss, entropy)` of a transformers model output for a `task` from `infer_task`."""
    logits = outputs.get("logits") if isinstance(outputs, dict) else getattr(outputs, "logits", None)
    if logits is None or labels is None:
        missing = "logits in the model outputs" if logits is None else "`labels` in the batch"
        raise ValueError(
            f"EMPTrainer needs {missing} to compute per-example losses. Make the model return logits and the "
            "collator produce `labels`, or pass `per_example_loss_func` to EMPTrainer."
        )
    if task == "sequence":
        return sequence_stats(logits, labels, label_smoothing, problem_type)
    return token_stats(logits, labels, label_smoothing, shift=task == "causal_lm")
