"""Get a pruning record from wherever it is (a saved record directory, a training output or checkpoint
directory, or a Hub dataset repo) and select the rows it chose from the training dataset."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import datasets
import torch
from transformers.utils import logging

from ..core.tracker import PruningState
from .export import export_pruning_record, record_from_output_dir
from .hub import download_pruning_record
from .record import PruningRecord, check_dataset, read_record_dir, resolve_record_source, source_rows

logger = logging.get_logger(__name__)


def load_pruning_record(
    repo_id_or_dir: str | os.PathLike, revision: str | None = None, token: str | bool | None = None
) -> PruningRecord:
    """Load a record from a local directory or a Hub dataset repo.

    A local directory is a saved record (`save_pruning_record`) or, as a convenience, a training output /
    checkpoint directory (the record is exported from its `pruning_state.pt`). Anything else is taken as
    a Hub dataset repo id and downloaded with `huggingface_hub.snapshot_download` (`revision`, `token`;
    `HF_TOKEN` and `HF_ENDPOINT` apply). With `HF_HUB_OFFLINE=1` only the local Hub cache is tried and a
    miss raises `RecordOfflineError` at once.

    From a directory, the newest complete state or record is read: a record directory that training went on
    past, or a top-level state older than a checkpoint, gives way to the newer one (by global step, else
    modification time), with a warning; `record.source_path` names the file read.
    """
    kind, path = resolve_record_source(repo_id_or_dir)
    if kind == "record_dir":
        record = read_record_dir(path)
    elif kind == "training_output":
        record = record_from_output_dir(path)
    else:
        record = read_record_dir(download_pruning_record(path, revision=revision, token=token))
    logger.info(f"Read the pruning record of {os.fspath(repo_id_or_dir)} from {record.source_path}.")
    return record


def select_rows(
    dataset: Any,
    record: PruningRecord | PruningState | str | os.PathLike,
    *,
    epoch: int | None = None,
    top_k: int | None = None,
    by: str | Sequence[str] = "score",
    largest: bool = True,
    check: bool = True,
) -> Any:
    """The rows of `dataset` chosen by a pruning record.

    Pass exactly one of `epoch` (that epoch's plan, in training order; negative counts from the end) or
    `top_k` (a static coreset: the `top_k` rows with the largest `by`, or the smallest with `largest=False`, best
    first; see `PruningRecord.top_k`; `by="margin", largest=False`: the likely mislabelled rows of a run with
    `pruning_track_margin=True`). `record` may also be a `PruningState`, a directory or a Hub repo id. For a run whose
    trainer derived its rows from the dataset it was given (TRL's `SFTTrainer` tokenizes and filters it), pass
    that dataset: the record maps each training row back to it. Returns
    `dataset.select(...)` for a `datasets.Dataset`, else a `torch.utils.data.Subset`. With `check=True` a
    dataset whose length or fingerprint differs from the record's raises `DatasetMismatchError`.
    """
    if isinstance(record, PruningState):
        record = export_pruning_record(record)
    elif not isinstance(record, PruningRecord):
        record = load_pruning_record(record)
    if (epoch is None) == (top_k is None):
        raise ValueError("Pass exactly one of epoch= (an epoch's plan) or top_k= (a static coreset).")
    indices = record.plan(epoch) if epoch is not None else record.top_k(top_k, by=by, largest=largest)
    mapping = source_rows(dataset, record)
    if mapping is not None:  # the user's dataset the trainer's rows came from (TRL): map them back
        indices = [mapping[i] for i in indices]
    elif check:
        check_dataset(dataset, record)
    if isinstance(dataset, datasets.Dataset):
        return dataset.select(indices)
    return torch.utils.data.Subset(dataset, indices)
