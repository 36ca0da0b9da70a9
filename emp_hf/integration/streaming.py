"""Streamed training sets: an `IterableDataset` pruned by filtering its stream against each epoch's plan.

No random access: every epoch reads the stream in its own order and yields only the rows of the epoch's plan, so a
skipped row never reaches the collator or the model. Each example carries its row id (the `pruning_index_column`,
ids `0..N-1`) and the run knows `N` (`pruning_num_rows`, else the dataset's info). `len(stream)` is the current
plan's size, so the Trainer's and accelerate's batch arithmetic gives the exact steps of every epoch.

With dataloader workers, every worker reads the whole stream and yields its turns of the kept rows (worker `w` of
`W` keeps turns `w, w+W, ...`, a turn being one batch, or one global batch when every process reads the stream):
the workers' batches then interleave into exactly the batches one worker would give, in the same order.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info
from transformers.utils import logging

try:
    import datasets
except ImportError:  # pragma: no cover - datasets is a dependency
    datasets = None

logger = logging.get_logger(__name__)

#: Rows read per `datasets.IterableDataset.iter` batch when a dataloader worker reads the whole stream.
READ_BATCH = 256


class PrunedStream(IterableDataset):
    """A streamed training set that yields, each epoch, the rows of the epoch's plan in the stream's order.

    Before `follow` it yields every row; `follow(sampler, rows_per_turn)` ties it to a `PruningSampler`, whose plan
    of the epoch given to `set_epoch` becomes the rows kept (a bool mask in shared memory, so persistent dataloader
    workers see each new plan). Every pass checks the stream: each example's id is an integer in `0..N-1`, no id
    comes twice, and a full pass holds `N` rows; anything else stops training with one line that says what to fix.
    """

    def __init__(self, source: Any, column: str, num_rows: int) -> None:
        self.source = source
        self.column = column
        self.num_rows = num_rows
        self._keep = torch.ones(num_rows, dtype=torch.bool).share_memory_()
        self._sampler: Any = None
        self._rows_per_turn = 1
        self._kept_epoch: int | None = None  # the epoch whose plan `_keep` holds

    def follow(self, sampler: Any, rows_per_turn: int) -> None:
        """Keep, from now on, the plan `sampler` decides for each epoch; workers split the kept rows in turns of
        `rows_per_turn` (the per-process batch, times the processes when each process reads the stream)."""
        self._sampler = sampler
        self._rows_per_turn = rows_per_turn
        self._kept_epoch = None

    def set_epoch(self, epoch: int) -> None:
        """The source's epoch (a shuffled stream reshuffles), and the plan of `epoch` as the rows kept."""
        if hasattr(self.source, "set_epoch"):
            self.source.set_epoch(epoch)
        if self._sampler is not None:
            self._sampler.set_epoch(epoch)
            self._keep_plan(epoch)

    def _keep_plan(self, epoch: int) -> None:
        plan = self._sampler.planner.plan(epoch)
        keep = torch.zeros(self.num_rows, dtype=torch.bool)
        keep[plan.to(torch.int64)] = True
        self._keep.copy_(keep)
        self._kept_epoch = epoch

    def __len__(self) -> int:
        """The rows this epoch yields: the current plan's size (all rows before `follow`)."""
        return self.num_rows if self._sampler is None else len(self._sampler)

    def __getstate__(self) -> dict[str, Any]:  # a spawned worker needs the mask, not the planner and its tables
        return {**self.__dict__, "_sampler": None}

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        if info is None and self._sampler is not None and self._kept_epoch != self._sampler.epoch:
            self._keep_plan(self._sampler.epoch)  # iterated without `set_epoch`: the sampler's epoch
        keep = self._keep.numpy()
        seen = np.zeros(self.num_rows, dtype=bool)
        kept = total = 0
        for example in _read_stream(self.source, whole=info is not None):
            row = self._row_of(example)
            if seen[row]:
                raise ValueError(
                    f"Row id {row} appears twice in the streamed training set's {self.column!r} column: each row "
                    f"needs its own id in 0..{self.num_rows - 1}."
                )
            seen[row] = True
            total += 1
            if keep[row]:
                if (kept // self._rows_per_turn) % workers == worker:
                    yield example
                kept += 1
        if total != self.num_rows:
            raise ValueError(
                f"The streamed training set yielded {total} rows, but the run was set up for {self.num_rows} "
                f"(ids 0..{self.num_rows - 1} in {self.column!r}): set pruning_num_rows={total} if the stream has "
                f"{total} rows (ids 0..{total - 1}), or fix its ids."
                + (" A torch IterableDataset must yield every row in every dataloader worker." if workers > 1 else "")
            )

    def _row_of(self, example: Any) -> int:
        if not isinstance(example, Mapping) or self.column not in example:
            raise ValueError(missing_column_message(self.column, example))
        value = example[self.column]
        try:
            row = operator.index(value)
        except TypeError:
            raise ValueError(
                f"The streamed training set's {self.column!r} column holds {value!r}, not an integer row id."
            ) from None
        if not 0 <= row < self.num_rows:
            raise ValueError(
                f"Row id {row} in the streamed training set's {self.column!r} column is outside "
                f"0..{self.num_rows - 1}: set pruning_num_rows to the stream's number of rows, or give its rows "
                "the ids 0..N-1."
            )
        return row


def _read_stream(source: Any, whole: bool) -> Iterator[Any]:
    """The examples of `source`. `whole` (in a dataloader worker): all of them, not the worker's share of the
    shards that `datasets.IterableDataset` would give it (`.iter` reads every shard, in the same order)."""
    if whole and datasets is not None and isinstance(source, datasets.IterableDataset):
        for batch in source.iter(batch_size=READ_BATCH):
            yield from _unbatch(batch)
        return
    yield from source


def _unbatch(batch: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The examples of a batch of columns (a nested column is a batch of its own)."""
    columns = {key: list(_unbatch(value)) if isinstance(value, Mapping) else value for key, value in batch.items()}
    size = len(next(iter(columns.values()))) if columns else 0
    for i in range(size):
        yield {key: value[i] for key, value in columns.items()}


def missing_column_message(column: str, example: Any = None) -> str:
    found = f" (its examples have {sorted(example)})" if isinstance(example, Mapping) else ""
    return (
        f"Pruning a streamed training set needs each example's row id (0..N-1) in a {column!r} column, which it "
        f"lacks{found}: add one, e.g. dataset.map(lambda _, i: {{{column!r}: i}}, with_indices=True) before any "
        "shuffle, or set pruning_index_column to the column that holds the ids."
    )


def stream_num_rows(dataset: Any, num_rows: int | None) -> int:
    """The rows of a streamed dataset: `num_rows` (the config's `pruning_num_rows`), else its info's split size,
    else `len(dataset)`; one line that says what to set when none is known."""
    if num_rows is not None:
        return num_rows
    splits = getattr(getattr(dataset, "info", None), "splits", None)
    split = getattr(dataset, "split", None)
    if splits and split is not None and str(split) in splits and splits[str(split)].num_examples:
        return int(splits[str(split)].num_examples)
    try:
        return len(dataset)
    except TypeError:
        pass
    raise ValueError(
        f"Pruning a streamed training set needs its number of rows, which this {type(dataset).__name__} does not "
        "tell (no split size in its info, no len()): set pruning_num_rows=N in the config (--pruning_num_rows N)."
    )


def check_id_column(dataset: Any, column: str) -> None:
    """Refuse a stream without the row-id column before training (from its features, else its first example)."""
    names = getattr(dataset, "column_names", None)
    if datasets is not None and isinstance(dataset, datasets.IterableDataset) and names is not None:
        if column not in names:
            raise ValueError(missing_column_message(column, dict.fromkeys(names)))
        return
    first = next(iter(dataset), None)
    if first is None:
        raise ValueError("The streamed training set is empty.")
    if not isinstance(first, Mapping) or column not in first:
        raise ValueError(missing_column_message(column, first))


def prunable_stream(dataset: Any, column: str, num_rows: int | None) -> PrunedStream:
    """`dataset` (a torch or `datasets` `IterableDataset`) as a `PrunedStream`, or one line that says what to add."""
    if isinstance(dataset, PrunedStream):
        return dataset
    if getattr(dataset, "_distributed", None) is not None:
        raise ValueError(
            "The streamed training set was split with split_dataset_by_node, so each process would keep a different "
            "number of plan rows: pass the whole stream (accelerate gives each process its share of every batch)."
        )
    rows = stream_num_rows(dataset, num_rows)
    check_id_column(dataset, column)
    return PrunedStream(dataset, column, rows)


def rows_per_turn(accelerator: Any, batch_size: int) -> int:
    """The rows of one dataloader batch of the stream, as accelerate shards it: one batch of `batch_size` when
    process 0 reads the stream and dispatches the batches (accelerate's default for an `IterableDataset`), one
    global batch (`batch_size` x processes) when every process reads it (`dispatch_batches=False`)."""
    dispatch = accelerator.dataloader_config.dispatch_batches
    if dispatch is None:
        dispatch = accelerator.device_placement
    each_process_reads = accelerator.num_processes > 1 and not dispatch
    return batch_size * (accelerator.num_processes if each_process_reads else 1)


def dataset_rows(dataset: Any) -> int:
    """The training set's rows: a stream's `num_rows` (its `len` is the current plan's), else `len(dataset)`."""
    return dataset.num_rows if isinstance(dataset, PrunedStream) else len(dataset)


def warn_if_cut_short(dataset: Any, epoch: int, trained: int, planned: int) -> None:
    """A streamed epoch that stopped early (`max_steps`, a callback) trained a prefix of the stream, not of the
    plan: its statistics are right, but the record's `trained_plans` (the plan's first rows) names other rows."""
    if isinstance(dataset, PrunedStream):
        logger.warning(
            f"Epoch {epoch} of the streamed training set stopped after {trained} of its plan's {planned} rows: the "
            "statistics hold the rows it trained (the first in the stream's order), but the pruning record counts "
            "the plan's first rows as trained for that epoch."
        )
