"""The pruning record of a run and its directory format.

A `PruningRecord` says which rows each epoch trained on and holds the per-row statistics behind it. It is
built from a `PruningState` (`PruningRecord.from_state`) and saved as a small dataset directory
(`rows.parquet`, `plans.parquet`, `pruning_record.json` and a dataset card `README.md`: `PruningRecord.save`,
`read_record_dir`). Exporting a run is `emp_hf.records.export`, the Hub is `emp_hf.records.hub`, loading from anywhere
and
selecting rows is `emp_hf.records.load`. See `docs/hub.md`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Literal

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq
import torch
from datasets.table import InMemoryTable
from huggingface_hub import DatasetCard, DatasetCardData
from transformers.utils import logging

from ..core.tracker import DERIVED_SCORE_TABLE, PruningState
from ..integration.checkpoint import STATE_FILE, atomic_write, atomic_write_bytes, newer, newest_pruning_state
from ..strategies import STRATEGIES, PruningStrategy, StrategyTraits
from ..version import __version__

logger = logging.get_logger(__name__)

RECORD_FORMAT_VERSION = 1
RECORD_FILE = "pruning_record.json"
ROWS_FILE = "rows.parquet"
PLANS_FILE = "plans.parquet"
CARD_FILE = "README.md"
PLOTS_DIR = "plots"
#: What `resolve_record_source` finds a path or repo id to be.
RecordSource = Literal["record_dir", "training_output", "hub"]
#: The files of a record directory (what is uploaded and downloaded).
RECORD_PATTERNS = [RECORD_FILE, ROWS_FILE, PLANS_FILE, CARD_FILE, f"{PLOTS_DIR}/*.png"]

#: `EMPConfig` fields stored as a record's `options` when an `EMPConfig` is passed as `options` (with every
#: field of its `strategy_options`).
PRUNING_ARG_FIELDS = (
    "pruning_method",
    "pruning_warmup_epochs",
    "pruning_anneal_fraction",
    "ema_decay",
    "effective_pruning_seed",
    "num_train_epochs",
    "max_steps",
)
QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
QUANTILE_LABELS = ("min", "p10", "p25", "p50", "p75", "p90", "max")
#: How many likely mislabelled rows the summary (`emp-hf inspect`) names.
LIKELY_MISLABELLED_ROWS = 10


def score_definition(method: str | None, options: Mapping[str, Any] | None = None, *, derived: bool = False) -> str:
    """What a record's `score` column is, in words (the y-label of its plots, a line of `emp-hf inspect`)."""
    strategy = STRATEGIES.get(method) if isinstance(method, str) else None
    if strategy is not None:
        return strategy.score_description(options or {}, derived=derived)
    if derived:
        return f"last observed loss ({method or 'the strategy'} keeps no score of its own)"
    return f"what {method or 'the strategy'} ranked by at its last plan"


#: Options of the epoch schedule that every method but `none` reads.
SCHEDULE_OPTIONS = ("pruning_warmup_epochs", "pruning_anneal_fraction", "pruning_seed")


def used_options(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The options of a record that its method reads: the strategy's own options (its `options_class`, less
    `prune_ratio`, shown apart), the schedule's (not for `none`) and `ema_decay` where the method keeps the loss
    EMA. What `emp-hf inspect` and the dataset card list; the record keeps every option it was given."""
    options = dict(metadata.get("options") or {})
    if "effective_pruning_seed" in options:
        options.setdefault("pruning_seed", options.pop("effective_pruning_seed"))
    method = metadata.get("pruning_method")
    strategy = STRATEGIES.get(method) if isinstance(method, str) else None
    if strategy is None:  # a method this emp_hf does not know: all but the bookkeeping
        bookkeeping = {"pruning_method", "prune_ratio", "model_name", "planned_epochs", "global_step"}
        return {k: v for k, v in sorted(options.items()) if k not in bookkeeping}
    names = {f.name for f in dataclasses.fields(strategy.options_class)} - {"prune_ratio"}
    traits = _recorded_traits(strategy, options)
    if traits.prunes:
        names |= set(SCHEDULE_OPTIONS)
    if "ema_mean" in traits.required_tables:
        names.add("ema_decay")
    return {k: options[k] for k in sorted(names) if k in options}


def _recorded_traits(strategy: type[PruningStrategy], options: Mapping[str, Any]) -> StrategyTraits:
    """The traits of `strategy` with a record's `options`; options it cannot build from count as the default
    traits, with the EMA decay kept in view."""
    try:
        return strategy.traits_for(strategy.options_class.from_values(SimpleNamespace(**options)))
    except Exception:  # noqa: BLE001  (a record of options this emp_hf refuses)
        return StrategyTraits(required_tables=frozenset({"ema_mean"}))


class DatasetMismatchError(ValueError):
    """The dataset passed to `select_rows` is not the one the record was made on."""


class RecordFormatError(ValueError):
    """A record directory whose files are damaged, edited or of another format (a one-line message)."""


class RecordOfflineError(ConnectionError):
    """A Hub record was requested while `HF_HUB_OFFLINE=1` and it is not in the local cache."""


@dataclass
class PruningRecord:
    """A run's pruning record.

    Attributes:
        rows: one row per training example, ordered by `row_index`: `row_index`, `frequency` (times
            trained), `score` (what the strategy ranked by at the last plan), `loss`, `entropy` (last
            observed), `ema_mean`, `last_epoch` (last epoch trained, -1 if never) and `kept_epochs` (the
            epochs whose plan contained the row); with `pruning_track_margin`, `margin`: the area under the
            margin (the mean over the row's visits of its label's logit minus the largest other logit; the lowest
            are the likely mislabelled rows).
        plans: one row per epoch: `epoch`, `rows` (row indices in training order), `size`, `kept_fraction`.
        metadata: method, options, prune ratio, realised saving, model, dataset identity, `emp_hf` version
            (what `pruning_record.json` holds).
    """

    rows: datasets.Dataset
    plans: datasets.Dataset
    metadata: dict[str, Any]
    #: Where this record was read from (a record directory or a `pruning_state.pt`); not saved with it.
    source_path: str | None = dataclasses.field(default=None, compare=False, repr=False)

    # ------------------------------------------------------------------ from a run
    @classmethod
    def from_state(
        cls,
        state: PruningState,
        *,
        dataset: Any = None,
        model_name: str | None = None,
        options: Any = None,
    ) -> PruningRecord:
        """The record of a `PruningState` (e.g. `trainer.pruning_state`).

        Args:
            state: the run's per-row statistics and per-epoch plans.
            dataset: the training dataset, for its identity (name, config, split, length). The recorded
                fingerprint is the one the trainer stored at training time (`state.metadata`); the dataset's
                own is used only when the state has none. Its length must be `state.num_rows`.
            model_name: the model's name or path (recorded in the card).
            options: the pruning options (an `EMPConfig`, a `PruningOptions`, a dataclass or a mapping),
                merged over the options `EMPTrainer` stores in `state.metadata`.
        """
        n = state.num_rows
        if dataset is not None and len(dataset) != n:
            raise ValueError(
                f"The dataset has {len(dataset)} rows but the pruning state has {n}: pass the training dataset."
            )
        tables = state.cpu_tables()
        derived = "score" not in tables and DERIVED_SCORE_TABLE in tables
        if derived:
            tables["score"] = state.derived_score().cpu()
        for name in ("score", "loss", "entropy", "ema_mean"):  # tables the strategy did not keep: NaN columns
            tables.setdefault(name, torch.full((n,), float("nan")))
        plans = trained_plans(state)
        kept = state.kept_in_epoch().numpy()  # [E, N]
        for epoch, plan in enumerate(plans):  # an epoch that stopped early (or dropped its last batch)
            if len(plan) < kept[epoch].sum():
                kept[epoch] = False
                kept[epoch, plan.numpy()] = True

        row_of_visit, epoch_of_visit = np.nonzero(kept.T)  # row-major: by row, then by epoch
        kept_offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(np.bincount(row_of_visit, minlength=n), out=kept_offsets[1:])
        margin = {"margin": pa.array(tables["margin"].numpy().astype(np.float32))} if "margin" in tables else {}
        rows_table = pa.table(
            {
                "row_index": pa.array(np.arange(n, dtype=np.int64)),
                "frequency": pa.array(tables["frequency"].numpy().astype(np.int64)),
                "score": pa.array(tables["score"].numpy().astype(np.float32)),
                "loss": pa.array(tables["loss"].numpy().astype(np.float32)),
                "entropy": pa.array(tables["entropy"].numpy().astype(np.float32)),
                "ema_mean": pa.array(tables["ema_mean"].numpy().astype(np.float32)),
                "last_epoch": pa.array(tables["last_epoch"].numpy().astype(np.int64)),
                "kept_epochs": pa.ListArray.from_arrays(
                    pa.array(kept_offsets), pa.array(epoch_of_visit.astype(np.int32))
                ),
                **margin,
            }
        )
        sizes = [len(p) for p in plans]
        plan_offsets = np.zeros(len(sizes) + 1, dtype=np.int32)
        np.cumsum(sizes, out=plan_offsets[1:])
        plan_values = torch.cat([p.long() for p in plans]).numpy() if plans else np.zeros(0, dtype=np.int64)
        plans_table = pa.table(
            {
                "epoch": pa.array(np.arange(len(sizes), dtype=np.int32)),
                "rows": pa.ListArray.from_arrays(pa.array(plan_offsets), pa.array(plan_values.astype(np.int64))),
                "size": pa.array(np.asarray(sizes, dtype=np.int64)),
                "kept_fraction": pa.array(np.asarray(sizes, dtype=np.float64) / n),
            }
        )

        identity = _dataset_identity(dataset)
        fingerprint = state.metadata.get("dataset_fingerprint") or identity.pop("fingerprint", None)
        identity.pop("fingerprint", None)
        run_facts = {"dataset_fingerprint", "trained_rows", "source_dataset"}  # what the run recorded, not options
        stored = {k: v for k, v in state.metadata.items() if k not in run_facts}  # the trainer's options
        option_dict = {**_options_dict(stored), **_options_dict(options)}
        metadata: dict[str, Any] = {
            "format_version": RECORD_FORMAT_VERSION,
            "emp_hf_version": __version__,
            "pruning_method": state.metadata.get("pruning_method", option_dict.get("pruning_method")),
            "prune_ratio": state.metadata.get("prune_ratio", option_dict.get("prune_ratio")),
            "options": option_dict,
            "model_name": model_name or state.metadata.get("model_name"),
            "dataset": {"fingerprint": fingerprint, "num_rows": n, **identity},
            "num_rows": n,
            "num_epochs": len(sizes),
            "plan_sizes": sizes,
            "realized_saving": state.realized_saving(),
            "nonfinite_losses": int(state.nonfinite_count.item()),
            "ema_decay": state.ema_decay,
            "score_definition": score_definition(
                state.metadata.get("pruning_method", option_dict.get("pruning_method")), option_dict, derived=derived
            ),
        }
        if "global_step" in state.metadata:
            metadata["global_step"] = state.metadata["global_step"]
        if state.metadata.get("source_dataset"):  # the trainer's rows came from the user's dataset (TRL)
            metadata["source_dataset"] = state.metadata["source_dataset"]
        return cls(rows=_to_dataset(rows_table), plans=_to_dataset(plans_table), metadata=metadata)

    # ------------------------------------------------------------------ facts
    @property
    def num_rows(self) -> int:
        return int(self.metadata["num_rows"])

    @property
    def num_epochs(self) -> int:
        return len(self.plans)

    @property
    def plan_sizes(self) -> list[int]:
        return [int(s) for s in self.plans["size"]]

    @property
    def realized_saving(self) -> float:
        """`1 - sum(plan sizes) / (N * epochs)`."""
        return float(self.metadata["realized_saving"])

    @property
    def dataset_fingerprint(self) -> str | None:
        return self.metadata.get("dataset", {}).get("fingerprint")

    def column(self, name: str) -> np.ndarray:
        """A per-row column of `rows` as a numpy array (in `rows` order)."""
        return self.rows.select_columns([name]).with_format("arrow")[:].column(0).to_numpy()

    def plan(self, epoch: int) -> list[int]:
        """The rows epoch `epoch` trained on, in training order (a negative epoch counts from the end)."""
        if not -self.num_epochs <= epoch < self.num_epochs:
            raise IndexError(f"The record has {self.num_epochs} epochs (0..{self.num_epochs - 1}); got {epoch}.")
        return self._checked_plan(epoch % self.num_epochs).tolist()

    def _checked_plan(self, epoch: int) -> np.ndarray:
        """Epoch `epoch`'s rows; rows outside `0..N-1` or repeated (a record built from edited tables) raise
        `RecordFormatError` rather than select other rows or fail in `dataset.select`."""
        rows = np.asarray(self.plans.with_format("numpy")[epoch]["rows"], dtype=np.int64)
        outside = (rows < 0) | (rows >= self.num_rows)
        if outside.any() or np.unique(rows).size != rows.size:
            problem = f"holds row {int(rows[outside][0])}" if outside.any() else "holds a row more than once"
            raise RecordFormatError(
                f"The plan of epoch {epoch} of this pruning record {problem} (rows are 0..{self.num_rows - 1}, once "
                "each): its plans table was edited or damaged. Load the record again."
            )
        return rows

    def top_k(self, k: int, by: str | Sequence[str] = "score", largest: bool = True) -> list[int]:
        """The `k` row indices with the largest (or smallest) `by`, best first.

        `by` is a `rows` column (`score`, `frequency`, `loss`, `entropy`, `ema_mean`, `margin`, ...) or several, the
        first deciding and the next breaking ties; rows whose value is NaN come last; remaining ties go to the
        lower row index. A column with no value at all (every row NaN) is refused with a `ValueError`: the rows
        would come out in index order, ranked by nothing. `score` is `metadata["score_definition"]`.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= self.num_rows:
            raise ValueError(f"top_k must be an integer in [0, {self.num_rows}], got {k!r}.")
        keys = [by] if isinstance(by, str) else list(by)
        unknown = [name for name in keys if name not in self.rows.column_names or name == "kept_epochs"]
        if not keys or unknown:
            allowed = [c for c in self.rows.column_names if c not in ("kept_epochs", "row_index")]
            hint = (
                " (a record has 'margin' when trained with pruning_track_margin=True)" if "margin" in unknown else ""
            )
            raise ValueError(f"Cannot rank rows by {unknown or by!r}: choose from {allowed}{hint}.")
        if not np.isfinite(self.column(keys[0]).astype(np.float64)).any():
            filled = [
                c
                for c in self.rows.column_names
                if c not in ("kept_epochs", "row_index") and np.isfinite(self.column(c).astype(np.float64)).any()
            ]
            raise ValueError(
                f"Cannot rank rows by {keys[0]!r}: no row of this record has a value for it (all NaN). Rank by one "
                f"of {filled} instead (by=...)."
            )
        sort_keys: list[np.ndarray] = [self.column("row_index")]
        for name in reversed(keys):  # np.lexsort: the last key is the primary one
            values = self.column(name).astype(np.float64)
            values = -values if largest else values
            sort_keys.append(np.where(np.isnan(values), np.inf, values))
        order = np.lexsort(sort_keys)[:k]
        return [int(i) for i in self.column("row_index")[order]]

    def kept_matrix(self) -> np.ndarray:
        """Boolean matrix `[epochs, N]`: whether row i was in the plan of epoch e."""
        kept = np.zeros((self.num_epochs, self.num_rows), dtype=bool)
        for e in range(self.num_epochs):
            kept[e, self._checked_plan(e)] = True
        return kept

    # ------------------------------------------------------------------ views
    def to_dataset_dict(self) -> datasets.DatasetDict:
        """`DatasetDict({"rows": ..., "plans": ...})`."""
        return datasets.DatasetDict({"rows": self.rows, "plans": self.plans})

    def card(self, plots: Sequence[str] = ()) -> DatasetCard:
        """The dataset card (README.md) with the record's metadata as YAML; `plots`: image paths to embed."""
        return build_card(self.metadata, plots=plots)

    def summary(self) -> dict[str, Any]:
        """See `summarize_pruning_record`."""
        return summarize_pruning_record(self)

    def save(self, directory: str | os.PathLike, *, overwrite: bool = False, images: Sequence[str] = ()) -> str:
        """Write the record to `directory`: `rows.parquet`, `plans.parquet`, `pruning_record.json` and the
        dataset card `README.md`, which embeds `images` (paths relative to `directory`). Returns the directory.

        A `README.md` that is not a pruning record's card is never replaced unless `overwrite=True` (see
        `check_record_target`). `emp_hf.records.export.save_pruning_record` also draws the pictures."""
        directory = os.fspath(directory)
        check_record_target(directory, overwrite=overwrite)
        os.makedirs(directory, exist_ok=True)
        _write_parquet(self.rows, os.path.join(directory, ROWS_FILE))
        _write_parquet(self.plans, os.path.join(directory, PLANS_FILE))
        text = json.dumps(_jsonable(self.metadata), indent=2, sort_keys=True) + "\n"
        atomic_write_bytes(os.path.join(directory, RECORD_FILE), text.encode())
        atomic_write_bytes(os.path.join(directory, CARD_FILE), str(self.card(plots=images)).encode())
        return directory

    def __repr__(self) -> str:
        method = self.metadata.get("pruning_method")
        return (
            f"PruningRecord(method={method!r}, num_rows={self.num_rows}, num_epochs={self.num_epochs}, "
            f"realized_saving={self.realized_saving:.4f})"
        )


# ---------------------------------------------------------------------- the record directory
def check_record_target(directory: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Raise `FileExistsError` if writing a record into `directory` would replace a `README.md` that is not a
    pruning record's card (the directory holds no `pruning_record.json`), unless `overwrite=True`."""
    card_path = os.path.join(os.fspath(directory), CARD_FILE)
    if os.path.isfile(card_path) and not is_record_dir(directory) and not overwrite:
        raise FileExistsError(
            f"{card_path} exists and is not a pruning record's card: exporting would replace it. Choose an empty "
            "directory, or pass overwrite=True (emp-hf export --overwrite)."
        )


def is_record_dir(path: str | os.PathLike) -> bool:
    """Whether `path` is a record directory (one written by `PruningRecord.save`)."""
    return os.path.isfile(os.path.join(os.fspath(path), RECORD_FILE))


def resolve_record_source(path_or_repo_id: str | os.PathLike) -> tuple[RecordSource, str]:
    """What a path or repo id the user gave is: the one place that decides it.

    Returns `("record_dir", directory)` for a saved record (its directory or its `pruning_record.json`),
    `("training_output", path)` for a training output or checkpoint directory or a `pruning_state.pt` file,
    and `("hub", repo_id)` for anything that is not on disk (a Hub dataset repo id).

    A record directory that also holds a newer complete pruning state (at its top level or in a checkpoint: a
    run that went on training after `emp-hf export OUT --to OUT`) is read as the training output it is, with a
    warning; newer is by global step when both say theirs, else by modification time (`checkpoint.newer`).
    """
    path = os.fspath(path_or_repo_id)
    if os.path.isfile(path) and os.path.basename(path) == RECORD_FILE:
        path = os.path.dirname(path) or "."
    elif os.path.isfile(path):
        return "training_output", path
    if not os.path.isdir(path):
        return "hub", path
    if not is_record_dir(path):
        return "training_output", path
    state = newest_pruning_state(path)
    if state is not None:
        directory, step = state
        record_step = _record_step(path)
        record_time = os.path.getmtime(os.path.join(path, RECORD_FILE))
        if newer((step, os.path.getmtime(os.path.join(directory, STATE_FILE))), (record_step, record_time)):
            logger.warning(
                f"Reading {os.path.join(directory, STATE_FILE)} (step {step if step is not None else 'unknown'}): "
                f"it is newer than the pruning record {os.path.join(path, RECORD_FILE)} (step "
                f"{record_step if record_step is not None else 'unknown'}), which training went on past."
            )
            return "training_output", os.path.join(directory, STATE_FILE)
    return "record_dir", path


def _record_step(directory: str) -> int | None:
    """The global step a saved record was exported at, if it says (None also for a damaged file)."""
    try:
        with open(os.path.join(directory, RECORD_FILE)) as f:
            metadata = json.load(f)
        source = metadata.get("source") or {}
        step = source.get("global_step", metadata.get("global_step"))
    except (OSError, ValueError, AttributeError):
        return None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


#: The columns of `rows.parquet` and `plans.parquet`.
ROW_COLUMNS = ("row_index", "frequency", "score", "loss", "entropy", "ema_mean", "last_epoch", "kept_epochs")
PLAN_COLUMNS = ("epoch", "rows", "size", "kept_fraction")


def read_record_dir(directory: str | os.PathLike) -> PruningRecord:
    """Read a record directory (one written by `PruningRecord.save`), checking its format and its files.

    A damaged or edited file (invalid JSON, a list where an object belongs, plan indices that are negative,
    `>= num_rows` or repeated, tables that disagree with the metadata) raises `RecordFormatError` (a
    `ValueError`) with one line naming the directory and the problem."""
    directory = os.fspath(directory)
    path = os.path.join(directory, RECORD_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            metadata = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RecordFormatError(
            f"{path} is not valid JSON ({error}): the pruning record is damaged. Export it again (emp-hf export) "
            "or download it again."
        ) from None
    _check_metadata(metadata, path)
    tables = {}
    for name in (ROWS_FILE, PLANS_FILE):
        file = os.path.join(directory, name)
        if not os.path.isfile(file):
            raise FileNotFoundError(f"The pruning record in {directory} is incomplete: {name} is missing.")
        try:
            tables[name] = pq.read_table(file)
        except (pa.ArrowException, OSError) as error:
            reason = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
            raise RecordFormatError(
                f"{file} cannot be read ({reason}): it is truncated or damaged. Export the record again (emp-hf "
                "export) or download it again."
            ) from None
    problem = _table_problem(tables[ROWS_FILE], tables[PLANS_FILE], metadata)
    if problem:
        raise RecordFormatError(
            f"The pruning record in {directory} is damaged or was edited: {problem}. Export it again (emp-hf "
            "export) or download it again."
        )
    record = PruningRecord(
        rows=_to_dataset(tables[ROWS_FILE]), plans=_to_dataset(tables[PLANS_FILE]), metadata=metadata
    )
    record.source_path = directory
    return record


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_metadata(metadata: Any, path: str) -> None:
    """Raise `RecordFormatError` unless `metadata` (a parsed `pruning_record.json`) has the fields and types a
    record needs."""

    def refuse(problem: str) -> None:
        raise RecordFormatError(
            f"{path} is not a pruning record's metadata: {problem}. The file was edited or damaged; export the "
            "record again (emp-hf export) or download it again."
        )

    if not isinstance(metadata, dict):
        refuse(f"it holds a JSON {type(metadata).__name__}, where an object belongs")
    version = metadata.get("format_version")
    if not _is_int(version) or version < 1:
        refuse(f"format_version must be a whole number >= 1, got {version!r}")
    if version > RECORD_FORMAT_VERSION:
        raise RecordFormatError(
            f"{path} holds a pruning record of format {version}; this emp_hf reads format "
            f"{RECORD_FORMAT_VERSION} and older: upgrade emp_hf."
        )
    for key, valid, what in (
        ("num_rows", lambda v: _is_int(v) and v > 0, "a whole number > 0"),
        ("num_epochs", lambda v: _is_int(v) and v >= 0, "a whole number >= 0"),
        ("realized_saving", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    ):
        if not valid(metadata.get(key)):
            refuse(f"{key} must be {what}, got {metadata.get(key)!r}")
    for key in ("dataset", "options", "source"):
        if metadata.get(key) is not None and not isinstance(metadata[key], dict):
            refuse(f"{key} holds a JSON {type(metadata[key]).__name__}, where an object belongs")
    sizes = metadata.get("plan_sizes")
    if sizes is not None and not (isinstance(sizes, list) and all(_is_int(v) for v in sizes)):
        refuse(f"plan_sizes must be a list of whole numbers, got {str(sizes)[:60]}")


def _table_problem(rows: pa.Table, plans: pa.Table, metadata: dict[str, Any]) -> str | None:
    """What is wrong with a record's tables, given its metadata (None: nothing)."""
    n, epochs = metadata["num_rows"], metadata["num_epochs"]
    for name, table, columns in ((ROWS_FILE, rows, ROW_COLUMNS), (PLANS_FILE, plans, PLAN_COLUMNS)):
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            return f"{name} lacks the columns {missing}"
    integer = pa.types.is_integer
    for name in ("row_index", "frequency", "last_epoch", "epoch", "size"):
        table = rows if name in ROW_COLUMNS else plans
        if not integer(table.schema.field(name).type):
            return f"column {name!r} holds {table.schema.field(name).type}, not integers"
    plan_type = plans.schema.field("rows").type
    if not (pa.types.is_list(plan_type) or pa.types.is_large_list(plan_type)) or not integer(plan_type.value_type):
        return f"column 'rows' of {PLANS_FILE} holds {plan_type}, not lists of row indices"
    if rows.num_rows != n or not np.array_equal(rows.column("row_index").to_numpy(), np.arange(n)):
        return f"{ROWS_FILE} must hold the rows 0..{n - 1} in order (num_rows={n}), it holds {rows.num_rows} rows"
    epoch_numbers = plans.column("epoch").to_pylist()
    if epoch_numbers != list(range(epochs)):
        return f"{PLANS_FILE} must hold the epochs 0..{epochs - 1} in order, it holds {epoch_numbers}"
    frequency = rows.column("frequency")
    if frequency.null_count or (n and int(pa.compute.min(frequency).as_py()) < 0):
        return "a frequency is negative or missing"
    sizes = plans.column("size").to_pylist()
    lists = plans.column("rows").combine_chunks()
    if lists.null_count or len(sizes) != epochs or None in sizes:
        return "a plan or its size is missing"
    offsets = lists.offsets.to_numpy()
    offsets = offsets - offsets[0]  # as `flatten()` counts them
    values = lists.flatten().to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    for epoch in range(epochs):
        indices = values[offsets[epoch] : offsets[epoch + 1]]
        if indices.size != sizes[epoch]:
            return f"the plan of epoch {epoch} holds {indices.size} rows, its size says {sizes[epoch]}"
        outside = (indices < 0) | (indices >= n)
        if outside.any():
            return f"the plan of epoch {epoch} holds row {int(indices[outside][0])}, outside 0..{n - 1}"
        if np.unique(indices).size != indices.size:
            return f"the plan of epoch {epoch} holds a row more than once"
    if metadata.get("plan_sizes") is not None and metadata["plan_sizes"] != sizes:
        return f"plan_sizes {metadata['plan_sizes']} differ from the plans' sizes {sizes}"
    return None


# ---------------------------------------------------------------------- the training dataset
def trained_plans(state: PruningState) -> list[torch.Tensor]:
    """Each epoch's rows that trained, in training order: the plan, less the rows an early stop, `max_steps` or
    `dataloader_drop_last` left out (`metadata["trained_rows"]`: epoch -> how many of the plan's first rows ran)."""
    trained = state.metadata.get("trained_rows") or {}
    return [plan[: int(trained.get(str(epoch), len(plan)))] for epoch, plan in enumerate(state.plans)]


def source_rows(dataset: Any, record: PruningRecord) -> list[int] | None:
    """For a record whose training rows the trainer derived from the user's dataset (TRL tokenizes and filters
    it; `metadata["source_dataset"]`): the user's row of each training row, if `dataset` is that user dataset (its
    fingerprint, else its length); None otherwise."""
    source = record.metadata.get("source_dataset")
    if not source:
        return None
    fingerprint = getattr(dataset, "_fingerprint", None)
    if source.get("fingerprint") and fingerprint:
        if fingerprint != source["fingerprint"]:
            return None
    elif len(dataset) != source.get("num_rows") or len(dataset) == record.num_rows:
        return None
    rows = source.get("rows")
    return list(range(record.num_rows)) if rows is None else [int(r) for r in rows]


def check_dataset(dataset: Any, record: PruningRecord) -> None:
    """Raise `DatasetMismatchError` unless `dataset` has the record's length and (if both are known) its
    `datasets` fingerprint."""
    if len(dataset) != record.num_rows:
        raise DatasetMismatchError(
            f"The dataset has {len(dataset)} rows but the pruning record was made on a training dataset "
            f"of {record.num_rows} rows: its row indices do not apply. Pass the training dataset, or "
            "check=False."
        )
    expected = record.dataset_fingerprint
    actual = getattr(dataset, "_fingerprint", None)
    if expected and actual and expected != actual:
        raise DatasetMismatchError(
            f"The dataset's fingerprint {actual!r} differs from the training dataset's {expected!r} in the "
            "pruning record: it is not the same data (or was processed differently). Pass check=False if you "
            "know its rows are the training rows in the same order."
        )


# ---------------------------------------------------------------------- summary and card
def summarize_pruning_record(record: PruningRecord) -> dict[str, Any]:
    """Rows, epochs, method, realised saving, frequency quantiles and the rows pruning never came back to.

    `never_revisited_after_warmup` counts the rows that no pruned epoch (one with fewer than N rows) trained
    on: a warm-up or anneal epoch trains on every row. It is None when no epoch was pruned.
    """
    frequency = record.column("frequency")
    kept = record.kept_matrix()
    sizes = record.plan_sizes
    pruned = [e for e, size in enumerate(sizes) if size < record.num_rows]
    quantiles = np.quantile(frequency, QUANTILES) if len(frequency) else [math.nan] * len(QUANTILES)
    return {
        "rows": record.num_rows,
        "epochs": record.num_epochs,
        "method": record.metadata.get("pruning_method"),
        "prune_ratio": record.metadata.get("prune_ratio"),
        "realized_saving": record.realized_saving,
        "plan_sizes": sizes,
        "pruned_epochs": len(pruned),
        "model": record.metadata.get("model_name"),
        "dataset_fingerprint": record.dataset_fingerprint,
        "frequency_mean": float(frequency.mean()) if len(frequency) else math.nan,
        "frequency_quantiles": {label: float(q) for label, q in zip(QUANTILE_LABELS, quantiles, strict=True)},
        "never_visited": int((frequency == 0).sum()),
        "never_revisited_after_warmup": int((~kept[pruned].any(axis=0)).sum()) if pruned else None,
        "in_every_epoch": int(kept.all(axis=0).sum()) if record.num_epochs else 0,
        "nonfinite_losses": record.metadata.get("nonfinite_losses"),
        "likely_mislabelled": likely_mislabelled(record),
        "emp_hf_version": record.metadata.get("emp_hf_version"),
    }


def likely_mislabelled(record: PruningRecord, k: int = LIKELY_MISLABELLED_ROWS) -> dict[str, Any] | None:
    """The `k` rows most likely mislabelled, most likely first: `{"statistic", "rows"}`, by the lowest area under
    the margin when the record has it (`pruning_track_margin`), else by the largest last loss; None when the record
    has neither (a run that recorded visits only)."""
    for statistic, largest in (("margin", False), ("loss", True)):
        if statistic not in record.rows.column_names:
            continue
        observed = int(np.isfinite(record.column(statistic).astype(np.float64)).sum())
        if observed:
            return {"statistic": statistic, "rows": record.top_k(min(k, observed), by=statistic, largest=largest)}
    return None


def build_card(metadata: Mapping[str, Any], plots: Sequence[str] = ()) -> DatasetCard:
    """The dataset card of a record: YAML metadata (configs `rows` and `plans`, tags, an `emp_hf` block)
    and a short description with a usage snippet."""
    dataset = metadata.get("dataset", {})
    method = metadata.get("pruning_method")
    data_name = dataset.get("name") or dataset.get("fingerprint") or f"{metadata['num_rows']} rows"
    data = DatasetCardData(
        pretty_name=f"Pruning record: {method} on {data_name}",
        tags=["emp-hf", "data-pruning", "pruning-record"],
        configs=[
            {"config_name": "rows", "data_files": ROWS_FILE, "default": True},
            {"config_name": "plans", "data_files": PLANS_FILE},
        ],
        emp_hf=_jsonable(
            {
                key: metadata.get(key)
                for key in (
                    "format_version",
                    "emp_hf_version",
                    "pruning_method",
                    "prune_ratio",
                    "realized_saving",
                    "num_rows",
                    "num_epochs",
                    "plan_sizes",
                    "model_name",
                    "dataset",
                    "options",
                )
            }
        ),
    )
    saving = metadata.get("realized_saving")
    facts = [
        ("pruning method", f"`{method}`"),
        ("prune ratio", metadata.get("prune_ratio")),
        ("realised saving", f"{saving:.4f}" if isinstance(saving, (int, float)) else saving),
        ("epochs", metadata.get("num_epochs")),
        ("rows trained per epoch", ", ".join(str(s) for s in metadata.get("plan_sizes", []))),
        ("model", metadata.get("model_name")),
        ("training dataset", dataset.get("name")),
        ("dataset fingerprint", f"`{dataset.get('fingerprint')}`"),
        ("dataset rows", metadata.get("num_rows")),
        ("emp_hf version", metadata.get("emp_hf_version")),
    ]
    options = used_options(metadata)
    lines = [
        f"# Pruning record: `{method}` on {data_name}",
        "",
        "Which rows of the training dataset each epoch of a dynamic data pruning run trained on, and the",
        "per-row statistics the pruning decisions were made from. Written by `emp_hf`.",
        "",
        "| | |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in facts if value is not None),
        "",
    ]
    if options:
        lines += ["## Options", "", "| option | value |", "|---|---|"]
        lines += [f"| `{key}` | `{value}` |" for key, value in sorted(options.items())] + [""]
    lines += [
        "## Files",
        "",
        f"- `{ROWS_FILE}` (config `rows`): one row per training example: `row_index`, `frequency`",
        "  (epochs trained), `score` (what the method ranked by at its last decision), `loss` and",
        "  `entropy` (last observed), `ema_mean`, `last_epoch`, `kept_epochs` (the epochs whose plan",
        "  contained the row).",
        *(
            [
                "  `margin`: the area under the margin (the mean over the row's visits of its label's logit minus",
                "  the largest other logit); the lowest are the likely mislabelled rows.",
            ]
            if (metadata.get("options") or {}).get("pruning_track_margin")
            else []
        ),
        f"- `{PLANS_FILE}` (config `plans`): one row per epoch: `epoch`, `rows` (row indices in training",
        "  order), `size`, `kept_fraction`.",
        f"- `{RECORD_FILE}`: the metadata above.",
        "",
        "## Usage",
        "",
        "```python",
        "from emp_hf import load_pruning_record, select_rows",
        "",
        'record = load_pruning_record("<this repo id>")',
        "last_epoch_subset = select_rows(train_dataset, record, epoch=-1)",
        'coreset = select_rows(train_dataset, record, top_k=1000, by="score")',
        "```",
        "",
    ]
    if plots:
        lines += ["## Pictures", ""] + [f"![{os.path.basename(p)}]({p})" for p in plots] + [""]
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))


# ---------------------------------------------------------------------- helpers
def _to_dataset(table: pa.Table) -> datasets.Dataset:
    return datasets.Dataset(InMemoryTable(table))


def _write_parquet(dataset: datasets.Dataset, path: str) -> None:
    table = dataset.with_format("arrow")[:]  # respects an indices mapping; no progress bar
    table = table.replace_schema_metadata(dataset.features.arrow_schema.metadata)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def _dataset_identity(dataset: Any) -> dict[str, Any]:
    if dataset is None:
        return {}
    identity: dict[str, Any] = {"fingerprint": getattr(dataset, "_fingerprint", None)}
    info = getattr(dataset, "info", None)
    if info is not None:
        identity["name"] = getattr(info, "dataset_name", None) or getattr(info, "builder_name", None)
        identity["config"] = getattr(info, "config_name", None)
    split = getattr(dataset, "split", None)
    identity["split"] = str(split) if split is not None else None
    return identity


def _options_dict(options: Any) -> dict[str, Any]:
    if options is None:
        return {}
    if hasattr(options, "strategy_options") and hasattr(options, "pruning_method"):  # an EMPConfig
        config = {name: getattr(options, name) for name in PRUNING_ARG_FIELDS if hasattr(options, name)}
        return _jsonable({**config, **dataclasses.asdict(options.strategy_options)})
    if dataclasses.is_dataclass(options) and not isinstance(options, type):
        return _jsonable(dataclasses.asdict(options))
    if isinstance(options, Mapping):
        return _jsonable(dict(options))
    raise TypeError(f"options must be an EMPConfig, a dataclass or a mapping, got {type(options).__name__}.")


def _jsonable(value: Any) -> Any:
    """`value` with tensors, numpy values and tuples turned into JSON/YAML types (others into strings)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
