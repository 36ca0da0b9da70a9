"""`EMPSeq2SeqTrainer`: [`~transformers.Seq2SeqTrainer`] with dynamic data pruning.

Per-example loss and entropy of an encoder-decoder LM (T5, Bart, ...) are the mean over each example's labelled
decoder positions (labels `-100` are ignored); evaluation with `predict_with_generate` is untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

from .config import PruningArguments
from .trainer import PruningMixin


@dataclass(repr=False)  # keep Seq2SeqTrainingArguments' redacting __repr__
class EMPSeq2SeqConfig(PruningArguments, Seq2SeqTrainingArguments):
    """[`~transformers.Seq2SeqTrainingArguments`] plus the pruning options of [`PruningArguments`]."""


class EMPSeq2SeqTrainer(PruningMixin, Seq2SeqTrainer):
    """A drop-in [`~transformers.Seq2SeqTrainer`] that prunes the training data epoch by epoch.

    Takes every argument `Seq2SeqTrainer` takes, with `args` an [`EMPSeq2SeqConfig`], plus `per_example_loss_func`
    (see [`EMPTrainer`]).
    """

    config_class = EMPSeq2SeqConfig
