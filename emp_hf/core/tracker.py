"""Per-row training statistics: the memory every pruning strategy decides from.

`PruningState` holds one entry per row of the training dataset, for the tables its strategy declares
(`StrategyTraits.required_tables`; `frequency` and `last_epoch` always), in the narrowest exact dtype.

Hot path: `update` appends a micro-batch's `(rows, loss, entropy)` to preallocated buffers on the state's device
(three copies, no host synchronisation, no collective). The buffer is applied to the tables in one vectorised
pass, the *flush*, when it is full, when the epoch changes, and whenever anything reads the tables: every read
(`state.tables`, `state.frequency`, `device_tables()`, `state_dict()`, ...) goes through a flush, so no reader
sees a stale table. With several processes, the flush first gathers every process's buffer (one collective per
flush, `emp_hf.integration.distributed.attach_process_group`); every process must then reach the flush together, which
the
trainer guarantees by flushing at the points every process passes (planning, checkpoint save, end of training).

Sharded rows (several processes, `PruningState.shard`): each process keeps the statistic tables of one contiguous
block of rows (`block`), and the flush applies only the gathered observations of the rows it owns. The loss
weights, set at planning and read per row by the per-batch path for any row a process trains, stay whole on every
process, at one byte a row (`emp_hf.core.weights.LossWeights`). A read of a statistic table assembles it from
every process (one collective: read on every process), and inside `with state.whole():` every process holds every
row's tables (planning, saving a checkpoint).

The flush redirects rows that must not be updated (padding, duplicates, non-finite values) to a spare "trash"
slot at index `N` instead of filtering them out with boolean indexing (which would synchronise with the host).
Its result is exactly that of applying the micro-batches one by one in order: within one epoch, the first
occurrence of a row counts and every later one (in the same micro-batch or a later one) is ignored.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import torch

from .plan_history import PlanHistory
from .weights import LossWeights

STATE_FORMAT_VERSION = 2
#: Versions `load_state_dict` reads (1: eight full tables and explicit plans, emp_hf <= 0.1).
READABLE_FORMAT_VERSIONS = (1, 2)

#: Per-row tables: name -> (dtype, initial value). Each has N + 1 entries (slot N is the trash slot).
#: `frequency` and `last_epoch` start as int16 (a row is counted at most once per epoch) and widen to int32
#: before an epoch number would overflow them.
TABLE_SPECS: dict[str, tuple[torch.dtype, float]] = {
    "loss": (torch.float32, float("nan")),
    "entropy": (torch.float32, float("nan")),
    "ema_mean": (torch.float32, float("nan")),
    "ema_var": (torch.float32, 0.0),
    "score": (torch.float32, float("nan")),
    "weight": (torch.float32, 1.0),
    "frequency": (torch.int16, 0),
    "last_epoch": (torch.int16, -1),
}
ALL_TABLES = frozenset(TABLE_SPECS)
#: Opt-in per-row tables, kept only when `track` names them (never a strategy's default): `margin`, the area under
#: the margin (AUM, Pleiss et al., NeurIPS'20): the running mean over a row's visits of its margin, the logit of its
#: label minus the largest other logit (`EMPConfig.pruning_track_margin`); `margin_visits`, how many it averages.
MARGIN_TABLES: dict[str, tuple[torch.dtype, float]] = {
    "margin": (torch.float32, float("nan")),
    "margin_visits": (torch.int32, 0),
}
_ALL_SPECS = {**TABLE_SPECS, **MARGIN_TABLES}
ALWAYS_TRACKED = frozenset({"frequency", "last_epoch"})
#: `weight` is not a table like the others: set at planning, it is kept apart (`PruningState._weights`), whole on
#: every process, one byte a row (`LossWeights`); every other table is a statistic, sharded across processes.
#: What `PruningState.score` is derived from when the state keeps no `score` table (see `derived_score`).
DERIVED_SCORE_TABLE = "loss"
#: Default capacity of the observation buffer, in rows (16 bytes each).
BUFFER_ROWS = 1 << 15

Gather = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class RowShards(Protocol):
    """The processes a sharded state's rows are split across (`emp_hf.integration.distributed.ProcessShards`).

    Process `rank` of `world` owns the contiguous block of rows `[rank*N//world, (rank+1)*N//world)`.
    """

    rank: int
    world: int

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every process's `tensor` (same shape everywhere), concatenated along dim 0 in rank order."""

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of `tensor` over every process."""


def block(num_rows: int, rank: int, world: int) -> tuple[int, int]:
    """`[start, stop)` of the rows process `rank` of `world` owns (contiguous blocks, sizes differ by <= 1)."""
    return rank * num_rows // world, (rank + 1) * num_rows // world


class ObservationBuffer:
    """Preallocated device buffers of `(row, loss, entropy)` (and `margin`, with `channels=3`): one epoch's
    observations waiting for a flush."""

    def __init__(self, capacity: int, device: torch.device | str, channels: int = 2) -> None:
        self.rows = torch.full((capacity,), -1, dtype=torch.int64, device=device)
        self.values = torch.zeros((channels, capacity), dtype=torch.float32, device=device)  # loss, entropy[, margin]
        self.size = 0
        self.epoch = 0

    @property
    def capacity(self) -> int:
        return self.rows.numel()

    def append(
        self, rows: torch.Tensor, loss: torch.Tensor, entropy: torch.Tensor, width: int, margin: torch.Tensor | None
    ) -> None:
        """Three device copies (four with `margin`); `width - len(rows)` slots stay padding (row -1)."""
        start, k = self.size, rows.numel()
        self.rows[start : start + k].copy_(rows.reshape(-1), non_blocking=True)
        self.values[0, start : start + k].copy_(loss.reshape(-1), non_blocking=True)
        self.values[1, start : start + k].copy_(entropy.reshape(-1), non_blocking=True)
        if margin is not None:
            self.values[2, start : start + k].copy_(margin.reshape(-1), non_blocking=True)
        self.size += width

    def clear(self) -> None:
        self.rows[: self.size].fill_(-1)
        self.size = 0


class PruningState:
    """Per-example statistics of a pruning run (one entry per training row) and its per-epoch record.

    Per row (length `num_rows`, read as attributes, each read flushes the buffered observations first):
    `loss`, `entropy` (last observed), `ema_mean`, `ema_var` (exponential moving statistics of the loss),
    `score` (what the strategy ranked by at the last plan; for a strategy that keeps no score table, the last
    observed loss, derived when read: see `derived_score`), `weight` (loss weight of the current epoch),
    `frequency` (visits so far), `last_epoch` (epoch of the last visit, -1 if never visited) — only the tables
    in `track` (default: all) plus `frequency` and `last_epoch`. Opt-in (`MARGIN_TABLES`, when `track` names
    `margin`): `margin`, the mean margin over the visits (the area under the margin), and `margin_visits`.
    Per epoch: `plans` (row indices trained, in order; stored compactly, see `emp_hf.core.plan_history`) and
    `epoch_plan_sizes`.

    Args:
        num_rows: rows of the training dataset.
        ema_decay: decay `d` of the loss EMA (`s <- d*s + (1-d)*loss`).
        device: where the tables and the observation buffer live (the training device).
        track: the tables to keep (e.g. `strategy.traits.required_tables`); `frequency` and `last_epoch` always.
        buffer_rows: capacity of the observation buffer (a flush happens when it is full).
    """

    def __init__(
        self,
        num_rows: int,
        ema_decay: float = 0.9,
        device: torch.device | str = "cpu",
        track: Iterable[str] | None = None,
        buffer_rows: int = BUFFER_ROWS,
    ) -> None:
        if num_rows <= 0:
            raise ValueError(f"PruningState needs at least one row, got num_rows={num_rows}.")
        names = ALL_TABLES if track is None else frozenset(track) | ALWAYS_TRACKED
        unknown = names - _ALL_SPECS.keys()
        if unknown:
            raise ValueError(f"Unknown per-row tables {sorted(unknown)}; choose from {sorted(_ALL_SPECS)}.")
        if "ema_var" in names:
            names |= {"ema_mean"}  # the variance update reads the mean
        if names & MARGIN_TABLES.keys():
            names |= MARGIN_TABLES.keys()  # the running mean needs its count
        self.num_rows = num_rows
        self.ema_decay = ema_decay
        self.device = torch.device(device)
        self.metadata: dict[str, Any] = {}
        # set for several processes (emp_hf.integration.distributed.attach_process_group)
        self.gather: Gather | None = None
        self.micro_batch_width: int | None = None  # with `gather`: every micro-batch padded to this many rows
        self.buffer_rows = buffer_rows
        self.shards: RowShards | None = None  # set with several processes (`shard`): this process's rows only
        self.row_start, self.row_stop = 0, num_rows  # the rows whose statistic tables this process keeps
        self._tables = {name: self._new_table(name) for name in _ALL_SPECS if name in names and name != "weight"}
        self._weights = LossWeights.ones(num_rows, self.device) if "weight" in names else None
        self._nonfinite = torch.zeros((), dtype=torch.int64, device=self.device)
        self._plans = PlanHistory(num_rows)
        self._buffer: ObservationBuffer | None = None

    def _new_table(self, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        spec_dtype, value = _ALL_SPECS[name]
        rows = self.row_stop - self.row_start
        return torch.full((rows + 1,), value, dtype=dtype or spec_dtype, device=self.device)

    # ------------------------------------------------------------------ sharding across processes
    def shard(self, shards: RowShards) -> None:
        """Keep only the statistic tables of this process's block of rows (the loss weights stay whole).

        Every process must call it (with its own rank); nothing is exchanged. The state must be whole."""
        if self.shards is not None:
            raise RuntimeError("This pruning state is sharded already.")
        self.flush()
        start, stop = block(self.num_rows, shards.rank, shards.world)
        for name, table in self._tables.items():
            self._tables[name] = torch.cat([table[start:stop], table[-1:]])  # own rows, then this process's trash slot
        if shards.rank != 0:  # the non-finite tally lives on process 0 (the sum over processes is the total)
            self._nonfinite = torch.zeros_like(self._nonfinite)
        self.shards, self.row_start, self.row_stop = shards, start, stop

    def unshard(self) -> None:
        """Every process holds every row's tables again (one collective: call it on every process)."""
        shards = self.shards
        if shards is None:
            self.flush()
            return
        tables = self._gathered(self._tables)
        self._nonfinite = self.nonfinite_count.clone()
        self._tables, self.shards, self.row_start, self.row_stop = tables, None, 0, self.num_rows

    @contextlib.contextmanager
    def whole(self) -> Iterator[PruningState]:
        """Inside, every process holds every row's tables (assembled on entry: call it on every process); its own
        rows' tables again on exit (nothing exchanged). What a main-process-only reader (saving, a record) needs."""
        shards = self.shards
        self.unshard()
        try:
            yield self
        finally:
            if shards is not None:
                self.shard(shards)

    def _gathered(self, names: Iterable[str]) -> dict[str, torch.Tensor]:
        """The flushed tables `names` of every row (`N + 1` entries; the trash slot is process 0's), assembled from
        every process with one all-gather of their bytes. A whole state returns its own tables; `weight` is always
        a new float32 tensor (decoded from `LossWeights`)."""
        self.flush()
        names = list(names)
        out = {"weight": self._weights.dense()} if "weight" in names and self._weights is not None else {}
        sharded = [name for name in self._tables if name in names]  # the same order on every process
        shards = self.shards
        if shards is None or not sharded:
            return {name: out[name] if name == "weight" else self._tables[name] for name in names}
        n, world = self.num_rows, shards.world
        sizes = [stop - start for start, stop in (block(n, r, world) for r in range(world))]
        # every process sends `width` entries a table (its rows, its trash slot, padding): a multiple of 8, so that
        # every table's bytes start aligned for any dtype
        width = -(-(max(sizes) + 1) // 8) * 8
        packed = []
        for name in sharded:
            table = self._tables[name]
            padded = table.new_zeros(width)
            padded[: table.numel()] = table
            packed.append(padded.view(torch.uint8))  # bytes: one collective for every dtype (gloo has no int16)
        gathered = shards.all_gather(torch.cat(packed)).view(world, -1)
        offset = 0
        for name in sharded:
            dtype = self._tables[name].dtype
            span = width * self._tables[name].element_size()
            parts = [gathered[r, offset : offset + span].view(dtype)[: sizes[r]] for r in range(world)]
            trash = gathered[0, offset : offset + span].view(dtype)[sizes[0] : sizes[0] + 1]
            out[name] = torch.cat([*parts, trash])
            offset += span
        del gathered
        return {name: out[name] for name in names}

    # ------------------------------------------------------------------ flushed views: the only way in
    @property
    def tracked(self) -> frozenset[str]:
        """Names of the per-row tables this state keeps."""
        return frozenset(self._tables) | ({"weight"} if self._weights is not None else set())

    @property
    def tables(self) -> dict[str, torch.Tensor]:
        """The per-row tables after a flush, each with `N + 1` entries (slot `N` is the trash slot). The statistic
        tables are the state's own (sharded: assembled copies, one collective); `weight` is always a copy (write
        weights with `set_weights`)."""
        if self.shards is None:
            self.flush()
            if self._weights is None:
                return self._tables
            return {**self._tables, "weight": self._weights.dense()}
        return self._gathered(self.tracked)

    def device_tables(self) -> dict[str, torch.Tensor]:
        """Views of the flushed statistic tables (without the trash slot and the loss weights, which strategies
        return rather than read) on the state's device: what strategies decide from. Sharded: every row's,
        assembled (one collective), held until the caller drops them."""
        return {name: table[:-1] for name, table in self._gathered(self._tables).items()}

    def cpu_tables(self) -> dict[str, torch.Tensor]:
        """A CPU copy of every flushed per-row table, the loss weights included (without the trash slot)."""
        return {name: table[:-1].to("cpu", copy=True) for name, table in self._gathered(self.tracked).items()}

    def __getattr__(self, name: str) -> torch.Tensor:
        tables = self.__dict__.get("_tables")
        if tables is not None and (name in tables or (name == "weight" and self.__dict__.get("_weights") is not None)):
            return self._gathered([name])[name][:-1]
        if tables is not None and name == "score" and DERIVED_SCORE_TABLE in tables:
            return self.derived_score()
        if tables is not None and name in _ALL_SPECS:
            why = "pruning_track_margin=True keeps it" if name in MARGIN_TABLES else "its strategy's `required_tables`"
            raise AttributeError(f"This pruning state does not keep {name!r}: it tracks {sorted(tables)} ({why}).")
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    def derived_score(self) -> torch.Tensor:
        """`score` of a state that keeps no score table (`infobatch`, `seta`, `random`, `none`): a copy of the
        last observed loss, NaN for rows never visited. It is computed when read and never stored.

        It is what `infobatch` and `seta` rank by (`PruningStrategy.score`'s default); `random` and `none` rank by
        nothing, and for them it is the same per-row difficulty, so a coreset (`select_rows(top_k=k)`) of any
        method ranks by a defined statistic."""
        return self._gathered([DERIVED_SCORE_TABLE])[DERIVED_SCORE_TABLE][:-1].clone()

    @property
    def nonfinite_count(self) -> torch.Tensor:
        """How many visits had a non-finite loss or entropy (a 0-d int64 tensor on the state's device; sharded: the
        sum over every process, one collective)."""
        self.flush()
        return self._nonfinite if self.shards is None else self.shards.sum(self._nonfinite)

    @property
    def seen(self) -> torch.Tensor:
        """Boolean mask of rows observed at least once."""
        return self.frequency > 0

    # ------------------------------------------------------------------ hot path
    @property
    def pending(self) -> int:
        """Buffered observation slots not yet applied to the tables."""
        return 0 if self._buffer is None else self._buffer.size

    @property
    def tracks_margin(self) -> bool:
        """Whether this state keeps the area under the margin (`MARGIN_TABLES`): `update` then takes `margin`."""
        return "margin" in self._tables

    def update(
        self,
        rows: torch.Tensor,
        loss: torch.Tensor,
        entropy: torch.Tensor,
        epoch: int,
        margin: torch.Tensor | None = None,
    ) -> None:
        """Record one micro-batch's observations (buffered: three device copies, no host synchronisation).

        `margin` (the logit of each row's label minus its largest other logit) is required by, and only taken by, a
        state that `tracks_margin`; each visit with finite statistics moves the row's mean margin.

        `rows` may contain `-1` (padding) and repeated rows: only the first occurrence of a row that was not
        already visited in `epoch` counts, so the padding and the loop-back duplicates that Accelerate's
        `even_batches` adds are neither lost nor double-counted. Non-finite `loss`/`entropy` values count as a
        visit but leave the row's statistics unchanged (they are tallied in `nonfinite_count`).
        """
        k = rows.numel()
        if loss.numel() != k or entropy.numel() != k:
            raise ValueError(f"update got {k} rows but {loss.numel()} losses and {entropy.numel()} entropies.")
        if (margin is None) == self.tracks_margin:
            raise ValueError(
                "This pruning state tracks the margin: pass margin=, one per row."
                if self.tracks_margin
                else "update got a margin, but this pruning state keeps no 'margin' table (track={'margin'} keeps it)."
            )
        if margin is not None and margin.numel() != k:
            raise ValueError(f"update got {k} rows but {margin.numel()} margins.")
        if epoch < 0:
            raise ValueError(f"Epochs count from 0, got epoch={epoch}.")
        width = k if self.micro_batch_width is None else self.micro_batch_width
        if k > width:
            raise ValueError(f"A micro-batch of {k} rows exceeds the per-device batch size {width}.")
        buffer = self._buffer
        if buffer is None or buffer.capacity < width:
            self.flush()
            channels = 3 if self.tracks_margin else 2
            buffer = self._buffer = ObservationBuffer(max(self.buffer_rows, width), self.device, channels)
        if buffer.size and (buffer.epoch != epoch or buffer.size + width > buffer.capacity):
            self.flush()
        if width == 0:
            return
        buffer.epoch = epoch
        buffer.append(rows, loss, entropy, width, margin)

    def flush(self) -> None:
        """Apply the buffered observations to the tables (one gather first with several processes)."""
        buffer = self._buffer
        if buffer is None or buffer.size == 0:
            return
        rows, values = buffer.rows[: buffer.size], buffer.values[:, : buffer.size]
        if self.gather is not None:
            rows, values = self.gather(rows, values)
        self._apply(rows, values[0], values[1], buffer.epoch, values[2] if values.shape[0] > 2 else None)
        buffer.clear()

    def _apply(
        self, rows: torch.Tensor, loss: torch.Tensor, entropy: torch.Tensor, epoch: int, margin: torch.Tensor | None
    ) -> None:
        """One vectorised update for observations of one epoch, in order (first occurrence wins). Sharded: only
        the rows this process owns; every other row goes to the trash slot, as padding does."""
        self._fit_epoch(epoch)
        t = self._tables
        n = self.row_stop - self.row_start  # the local index of the trash slot
        if self.row_start:
            rows = rows - self.row_start
        valid = (rows >= 0) & (rows < n)
        safe_rows = torch.where(valid, rows, n)  # padding, out-of-range and other processes' rows -> trash slot
        keep = valid & (t["last_epoch"][safe_rows] != epoch) & _first_occurrence(safe_rows)
        visit = torch.where(keep, safe_rows, n)  # unique apart from the trash slot
        finite = keep & torch.isfinite(loss) & torch.isfinite(entropy)
        target = torch.where(finite, safe_rows, n)

        frequency = t["frequency"]
        frequency.index_put_((visit,), frequency[visit] + keep.to(frequency.dtype))
        t["last_epoch"].index_fill_(0, visit, epoch)
        self._nonfinite += (keep & ~finite).sum()

        d = self.ema_decay
        if "ema_mean" in t:
            old_mean = t["ema_mean"][target]
            first = torch.isnan(old_mean)
            if "ema_var" in t:
                old_var = t["ema_var"][target]
                t["ema_var"][target] = torch.where(first, 0.0, d * old_var + (1 - d) * (loss - old_mean) ** 2)
            t["ema_mean"][target] = torch.where(first, loss, d * old_mean + (1 - d) * loss)
        if "loss" in t:
            t["loss"][target] = loss
        if "entropy" in t:
            t["entropy"][target] = entropy
        if margin is not None:
            self._apply_margin(torch.where(finite & torch.isfinite(margin), safe_rows, n), margin)

    def _apply_margin(self, target: torch.Tensor, margin: torch.Tensor) -> None:
        """Move the mean margin of each `target` row (unique apart from the trash slot) by one visit."""
        mean, visits = self._tables["margin"], self._tables["margin_visits"]
        count = visits[target] + 1
        old = mean[target]
        mean[target] = torch.where(count == 1, margin, old + (margin - old) / count)
        visits[target] = count

    def _fit_epoch(self, epoch: int) -> None:
        """Widen `frequency`/`last_epoch` before `epoch` (or a count up to `epoch + 1`) would overflow them."""
        for name in ALWAYS_TRACKED:
            table = self._tables[name]
            if epoch + 1 > torch.iinfo(table.dtype).max:
                self._tables[name] = table.to(torch.int32 if table.dtype == torch.int16 else torch.int64)

    def loss_weight(self, rows: torch.Tensor) -> torch.Tensor:
        """The loss weights of `rows` in the current epoch (set by the plan; needs no flush). All ones when the
        strategy keeps no weights."""
        rows = rows.to(self.device)
        if self._weights is None:
            return torch.ones(rows.shape, dtype=torch.float32, device=self.device)
        return self._weights[rows]

    # ------------------------------------------------------------------ plans
    @property
    def plans(self) -> PlanHistory:
        """The plan of every decided epoch (`plans[e]`: row indices trained in epoch `e`, in order, on the CPU)."""
        return self._plans

    @property
    def epoch_plan_sizes(self) -> list[int]:
        return self._plans.sizes

    def realized_saving(self, num_epochs: int | None = None) -> float:
        """`1 - (sum of plan sizes) / (N * epochs)`, over `num_epochs` (default: the epochs planned so far)."""
        epochs = len(self._plans) if num_epochs is None else num_epochs
        if epochs == 0:
            return 0.0
        return 1.0 - sum(self.epoch_plan_sizes) / (self.num_rows * epochs)

    def _check_next(self, epoch: int) -> None:
        if epoch != len(self._plans):
            raise RuntimeError(f"Epoch {epoch} planned out of order: {len(self._plans)} epochs are planned.")

    def record_plan(self, epoch: int, plan: torch.Tensor, weight: torch.Tensor | None = None) -> None:
        """Store the plan of `epoch` (the next unplanned epoch) as an explicit ordered list, and its loss weights."""
        self._check_next(epoch)
        self._plans.append_rows(plan)
        self.set_weights(weight)

    def record_selection(
        self,
        epoch: int,
        rows: torch.Tensor | None,
        order_seed: int | None,
        weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Store the plan of `epoch` compactly: the rows kept (None: every row), shuffled on the state's device by
        the keyed hash of `order_seed` (None: ascending order; see `emp_hf.core.plan_history`). Returns the ordered
        plan (on the CPU)."""
        self._check_next(epoch)
        order = self._plans.append_selection(rows, order_seed, self.device)
        self.set_weights(weight)
        return order

    def set_weights(self, weight: torch.Tensor | None) -> None:
        """Set the loss weights of the current epoch: `weight` (float32 per row, length N) or None for all ones."""
        if self._weights is None:
            if weight is not None and not bool((weight == 1).all()):
                raise ValueError(
                    "The strategy returned loss weights but this pruning state keeps no 'weight' table: add "
                    "'weight' to the `required_tables` of the strategy's traits."
                )
            return
        if weight is None:
            self._weights = LossWeights.ones(self.num_rows, self.device)
            return
        if weight.numel() != self.num_rows:
            raise ValueError(f"Got {weight.numel()} loss weights for a pruning state of {self.num_rows} rows.")
        self._weights = LossWeights.encode(weight, self.device)

    def set_scores(self, score: torch.Tensor) -> None:
        if "score" not in self._tables:
            raise ValueError(f"This pruning state keeps no 'score' table (it tracks {sorted(self._tables)}).")
        self._tables["score"][:-1] = score[self.row_start : self.row_stop].to(self.device, torch.float32)

    def kept_in_epoch(self) -> torch.Tensor:
        """Boolean matrix `[epochs, N]`: whether row i was in the plan of epoch e."""
        if not len(self._plans):
            return torch.zeros(0, self.num_rows, dtype=torch.bool)
        return torch.stack([self._plans.kept(e) for e in range(len(self._plans))])

    # ------------------------------------------------------------------ memory
    def table_bytes(self) -> int:
        """Bytes this process holds in per-row tables (the trash slot included; sharded: its own rows' statistic
        tables and the whole loss weights)."""
        weights = 0 if self._weights is None else self._weights.nbytes()
        return sum(t.numel() * t.element_size() for t in self._tables.values()) + weights

    def plan_bytes(self) -> int:
        """Bytes held by the plan history (bitmaps and explicit plans)."""
        return self._plans.stored_bytes()

    # ------------------------------------------------------------------ (de)serialisation
    def state_dict(self) -> dict[str, Any]:
        """Every row's state, whatever the sharding (sharded: assembled, one collective on every process)."""
        tables = self._gathered(self.tracked)
        return {
            "format_version": STATE_FORMAT_VERSION,
            "num_rows": self.num_rows,
            "ema_decay": self.ema_decay,
            "tables": {name: t.cpu() for name, t in tables.items()},
            "plans": self._plans.state_dict(),
            "nonfinite_count": self.nonfinite_count.cpu(),
            "metadata": dict(self.metadata),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a saved state (format 2, or format 1 of earlier versions); pending observations are dropped.

        Tables this state keeps but the saved one lacks start empty; saved tables it does not keep are ignored.
        A sharded state keeps its block of the saved rows, whatever the world size that saved them.
        """
        version = state.get("format_version")
        if version not in READABLE_FORMAT_VERSIONS:
            raise ValueError(
                f"Unsupported pruning-state format {version!r}: this emp_hf reads formats "
                f"{list(READABLE_FORMAT_VERSIONS)}. Resume with the emp_hf version that wrote the checkpoint."
            )
        if state["num_rows"] != self.num_rows:
            raise ValueError(
                f"The saved pruning state has {state['num_rows']} rows but the training dataset has "
                f"{self.num_rows}: resume with the dataset the checkpoint was trained on."
            )
        saved = state["tables"]
        tables = {}
        for name, current in self._tables.items():
            if name not in saved:
                tables[name] = self._new_table(name, current.dtype)
                continue
            table = saved[name]
            dtype = current.dtype
            if not dtype.is_floating_point and table.numel() and int(table.abs().max()) > torch.iinfo(dtype).max:
                dtype = torch.int32 if int(table.abs().max()) <= torch.iinfo(torch.int32).max else torch.int64
            if self.shards is not None:
                table = torch.cat([table[self.row_start : self.row_stop], table[-1:]])
            tables[name] = table.to(self.device, dtype, copy=True)
        if self._weights is not None:
            weight = saved.get("weight")
            self._weights = LossWeights.ones(self.num_rows, self.device)
            if weight is not None:
                self.set_weights(weight[: self.num_rows])
        self.ema_decay = state["ema_decay"]
        self._tables = tables
        if version == 1:
            self._plans.load_rows(list(state["plans"]))
        else:
            self._plans.load_state_dict(state["plans"])
        self._nonfinite = state["nonfinite_count"].to(self.device, torch.int64, copy=True)
        if self.shards is not None and self.shards.rank != 0:
            self._nonfinite.zero_()  # process 0 holds the tally
        self.metadata = dict(state["metadata"])
        self._buffer = None

    def to(self, device: torch.device | str) -> PruningState:
        self.flush()
        self.device = torch.device(device)
        self._tables = {name: t.to(self.device) for name, t in self._tables.items()}
        if self._weights is not None:
            self._weights = self._weights.to(self.device)
        self._nonfinite = self._nonfinite.to(self.device)
        self._buffer = None
        return self

    def __repr__(self) -> str:
        rows = "" if self.shards is None else f", rows=[{self.row_start}, {self.row_stop})"
        return (
            f"PruningState(num_rows={self.num_rows}{rows}, tracked={sorted(self.tracked)}, device={self.device}, "
            f"epochs={len(self._plans)})"
        )


def _first_occurrence(rows: torch.Tensor) -> torch.Tensor:
    """Mask of the entries of `rows` that are the first occurrence of their value (sort-based, no sync)."""
    if rows.numel() <= 1:
        return torch.ones_like(rows, dtype=torch.bool)
    sorted_rows, order = torch.sort(rows, stable=True)
    first_sorted = torch.ones_like(sorted_rows, dtype=torch.bool)
    first_sorted[1:] = sorted_rows[1:] != sorted_rows[:-1]
    return torch.empty_like(first_sorted).scatter_(0, order, first_sorted)
