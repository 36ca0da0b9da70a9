"""Carry each example's row index through the data pipeline, so statistics are tied to dataset rows."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import IterableDataset, Sampler
from transformers.utils import logging

from .config import INDEX_COLUMN

logger = logging.get_logger(__name__)

try:
    import datasets
except ImportError:  # pragma: no cover - datasets is a dependency, but keep torch-only use possible
    datasets = None


def is_iterable(dataset: Any) -> bool:
    """Whether `dataset` is a streamed (iterable) dataset: torch's or `datasets`'."""
    return isinstance(dataset, IterableDataset) or (
        datasets is not None and isinstance(dataset, datasets.IterableDataset)
    )


def add_row_index(dataset: Any, column: str = INDEX_COLUMN) -> Any:
    """Return `dataset` with a `column` holding each example's row index (0..N-1).

    Works for `datasets.Dataset` (also with `set_transform`/`with_transform`: the transform is wrapped so
    the index survives it) and for torch map-style datasets whose items are mappings. Idempotent; an existing
    `column` that is not exactly 0..N-1 (a dataset shuffled, selected or filtered after indexing) is rebuilt.
    Iterable datasets are rejected (`emp_hf.integration.streaming` prunes those by filtering the stream).
    """
    if is_iterable(dataset):
        raise TypeError(
            "Row indices need random access to rows, but the dataset is an IterableDataset: EMPTrainer prunes a "
            "streamed dataset by filtering it (its rows carry their ids; see docs/distributed.md#streamed-datasets)."
        )
    if datasets is not None and isinstance(dataset, datasets.Dataset):
        return _add_to_hf_dataset(dataset, column)
    if isinstance(dataset, RowIndexedDataset) and dataset.column == column:
        return dataset
    if hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
        return RowIndexedDataset(dataset, column)
    raise TypeError(f"Cannot add row indices to a {type(dataset).__name__}: it needs __getitem__ and __len__.")


def _add_to_hf_dataset(dataset: datasets.Dataset, column: str) -> datasets.Dataset:
    fmt = dataset.format
    transform = fmt["format_kwargs"].get("transform") if fmt["type"] == "custom" else None
    if column in dataset.column_names:
        if transform is not None and not isinstance(transform, _KeepIndexTransform):
            raise ValueError(
                f"The training dataset already has a column {column!r} and a transform that does not keep it: "
                f"remove the column (dataset.remove_columns({column!r})) or set pruning_index_column to a free name."
            )
        if _is_row_index(dataset, column):
            return dataset
        # A stale index (the dataset was shuffled, selected, filtered or split after indexing, or the column
        # means something else): it must mean "row of the dataset the trainer was given", so rebuild it.
        logger.warning(
            f"The training dataset's {column!r} column is not its row index 0..{len(dataset) - 1} (the dataset was "
            "shuffled, selected or filtered after indexing, or the column holds other data); rebuilding it."
        )
        if isinstance(transform, _KeepIndexTransform):
            transform = transform.transform
            fmt = {**fmt, "columns": None if fmt["columns"] is None else [c for c in fmt["columns"] if c != column]}
        dataset = dataset.with_format(None).remove_columns(column)
    plain = dataset.with_format(None).add_column(column, list(range(len(dataset))))
    if transform is not None:
        columns = fmt["columns"] if fmt["columns"] is None else [*fmt["columns"], column]
        return plain.with_transform(
            _KeepIndexTransform(transform, column),
            columns=columns,
            output_all_columns=fmt["output_all_columns"],
        )
    if fmt["type"] is not None:
        columns = fmt["columns"] if fmt["columns"] is None else [*fmt["columns"], column]
        return plain.with_format(
            fmt["type"], columns=columns, output_all_columns=fmt["output_all_columns"], **fmt["format_kwargs"]
        )
    return plain


def _is_row_index(dataset: datasets.Dataset, column: str) -> bool:
    """Whether `column` of `dataset` holds exactly 0..N-1 in order (read as one Arrow column, no Python loop)."""
    values = np.asarray(dataset.with_format("numpy", columns=[column])[:][column])
    is_integer = values.ndim == 1 and np.issubdtype(values.dtype, np.integer)
    return is_integer and np.array_equal(values, np.arange(len(values)))


class _KeepIndexTransform:
    """Wraps a user's `datasets` transform so the index column passes through it untouched."""

    def __init__(self, transform: Callable[[dict], dict], column: str) -> None:
        self.transform = transform
        self.column = column

    def __call__(self, batch: dict[str, list]) -> dict[str, Any]:
        index = batch.pop(self.column)
        out = dict(self.transform(batch))
        out[self.column] = index
        return out


class RowIndexedDataset(TorchDataset):
    """A torch map-style dataset whose items (mappings) gain a `column` with their row index."""

    def __init__(self, dataset: Any, column: str = INDEX_COLUMN) -> None:
        self.dataset = dataset
        self.column = column

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        if not isinstance(item, Mapping):
            raise TypeError(
                f"Row indices can only be attached to mapping examples (dicts), but item {index} is a "
                f"{type(item).__name__}. Return a dict such as {{'input_ids': ..., 'labels': ...}}."
            )
        return {**item, self.column: index}


class RowIndexCollator:
    """Wraps a data collator: takes the index column out of each feature, collates the rest, adds it back.

    User collators (e.g. language-modeling collators) therefore never see the index column.
    """

    def __init__(self, collator: Callable[[list], Any], column: str = INDEX_COLUMN) -> None:
        self.collator = collator
        self.column = column

    def __call__(self, features: list[Any]) -> Any:
        if not features or not isinstance(features[0], Mapping) or self.column not in features[0]:
            return self.collator(features)
        rows = [int(f[self.column]) for f in features]
        batch = self.collator([{k: v for k, v in f.items() if k != self.column} for f in features])
        if not isinstance(batch, MutableMapping):
            raise TypeError(
                f"The data collator returned a {type(batch).__name__}; EMPTrainer (like Trainer) needs a dict batch, "
                "e.g. {'input_ids': ..., 'labels': ...}, to carry each example's row index. Return a dict."
            )
        batch[self.column] = torch.tensor(rows, dtype=torch.int64)
        return batch


def length_grouped_order(plan: torch.Tensor, lengths: torch.Tensor, batch_size: int) -> torch.Tensor:
    """`plan` (already shuffled) reordered as `transformers`' `LengthGroupedSampler` orders a random permutation:
    mega-batches of `min(len // (4 * batch_size), 50) * batch_size` rows, each sorted by descending length, the
    longest row first. Same rows, deterministic given the plan (so a resumed epoch replays the same order)."""
    n = plan.numel()
    mult = max(min(n // (batch_size * 4), 50), 1)
    size = mult * batch_size
    count = -(-n // size)
    padded = torch.full((count * size,), -1, dtype=torch.int64)
    padded[:n] = plan.to(torch.int64)
    keys = torch.where(padded >= 0, lengths[padded.clamp_min(0)].to(torch.int64), -1).view(count, size)
    order = torch.sort(keys, dim=1, descending=True, stable=True).indices
    grouped = padded.view(count, size).gather(1, order).flatten()
    grouped = grouped[grouped >= 0]
    first_of = torch.arange(count) * size  # each mega-batch's longest row sits at its start
    starts = first_of[first_of < grouped.numel()]
    swap = torch.stack([torch.zeros((), dtype=torch.int64), starts[torch.argmax(lengths[grouped[starts]])]])
    grouped[swap] = grouped[swap.flip(0)]
    return grouped


class PlanOrderSampler(Sampler[int]):
    """Yields a pruning sampler's plan in the order `train_sampling_strategy` asks for: `group_by_length`
    (`length_grouped_order`) or `sequential` (ascending rows). `set_epoch` and `len` are the wrapped sampler's."""

    def __init__(self, sampler: Any, strategy: str, lengths: torch.Tensor | None = None, batch_size: int = 1) -> None:
        if strategy not in ("group_by_length", "sequential"):
            raise ValueError(f"Unknown plan order {strategy!r}.")
        if strategy == "group_by_length" and lengths is None:
            raise ValueError("group_by_length needs the length of every row.")
        self.sampler = sampler
        self.strategy = strategy
        self.lengths = lengths
        self.batch_size = batch_size

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[int]:
        plan = torch.as_tensor(list(self.sampler), dtype=torch.int64)
        if self.strategy == "sequential":
            return iter(torch.sort(plan).values.tolist())
        return iter(length_grouped_order(plan, self.lengths, self.batch_size).tolist())


def row_lengths(dataset: Any, length_column: str, input_name: str) -> torch.Tensor:
    """Each row's length, as `Trainer` finds it for `group_by_length`: the `length_column` if the dataset has one,
    else the length of each row's `input_name` (read once, before training)."""
    if datasets is not None and isinstance(dataset, datasets.Dataset) and length_column in dataset.column_names:
        return torch.as_tensor(np.asarray(dataset.with_format("numpy", columns=[length_column])[:][length_column]))
    first = dataset[0]
    if not isinstance(first, Mapping) or input_name not in first:
        raise ValueError(
            f"train_sampling_strategy='group_by_length' needs row lengths: add a {length_column!r} column "
            f"(length_column_name) or give each row an {input_name!r} field."
        )
    if datasets is not None and isinstance(dataset, datasets.Dataset):
        column = dataset.with_format(None, columns=[input_name])[:][input_name]
        return torch.tensor([len(value) for value in column], dtype=torch.int64)
    return torch.tensor([len(dataset[i][input_name]) for i in range(len(dataset))], dtype=torch.int64)


def row_classes(dataset: Any, label_names: list[str] | None) -> torch.Tensor:
    """Each row's class id (int64), for `pruning_class_quota`: the first of `label_names` (else `labels`, `label`)
    that is a column of the `datasets.Dataset`, one integer >= 0 per row (read once, before training)."""
    if datasets is None or not isinstance(dataset, datasets.Dataset):
        raise ValueError(
            "pruning_class_quota needs the training set as a datasets.Dataset with a class label column; "
            f"got a {type(dataset).__name__}."
        )
    names = [*(label_names or []), "labels", "label"]
    column = next((name for name in names if name in dataset.column_names), None)
    if column is None:
        raise ValueError(
            f"pruning_class_quota needs a class label column: the training set has none of {names} "
            f"(its columns: {dataset.column_names}); set label_names=[...] to name it."
        )
    values = np.asarray(dataset.with_format("numpy", columns=[column])[:][column])
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer) or (values.size and values.min() < 0):
        raise ValueError(
            f"pruning_class_quota needs one class id (an integer >= 0) per row in column {column!r}; it holds "
            f"{values.dtype} values of shape {values.shape[1:] or 'scalar'}"
            + (f", min {values.min()}" if values.size and np.issubdtype(values.dtype, np.number) else "")
            + "."
        )
    return torch.as_tensor(values, dtype=torch.int64)
