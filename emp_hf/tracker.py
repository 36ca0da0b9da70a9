"""Per-row training statistics: the memory every pruning strategy decides from.

`PruningState` holds one entry per row of the training dataset. Its hot path, `update`, is a handful of
tensor operations on the training device with no host synchronisation: rows that must not be updated
(padding, duplicates, non-finite values) are redirected to a spare "trash" slot at index `N` instead of
being filtered out with boolean indexing (which would sync with the host).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

STATE_FORMAT_VERSION = 1

# Per-row tables: name -> (dtype, initial value). Each has N + 1 entries (slot N is the trash slot).
_TABLES: dict[str, tuple[torch.dtype, float]] = {
    "loss": (torch.float32, float("nan")),
    "entropy": (torch.float32, float("nan")),
    "ema_mean": (torch.float32, float("nan")),
    "ema_var": (torch.float32, 0.0),
    "score": (torch.float32, float("nan")),
    "weight": (torch.float32, 1.0),
    "frequency": (torch.int64, 0),
    "last_epoch": (torch.int64, -1),
}


@dataclass
class PruningState:
    """Per-example statistics of a pruning run (one entry per training row) and its per-epoch record.

    Attributes (per row, length `num_rows`): `loss`, `entropy` (last observed), `ema_mean`, `ema_var`
    (exponential moving statistics of the loss), `score` (what the strategy ranked by at the last plan),
    `weight` (loss weight of the current epoch), `frequency` (visits so far), `last_epoch` (epoch of the
    last visit, -1 if never visited). Per epoch: `plans` (row indices trained, in order) and
    `epoch_plan_sizes`.
    """

    num_rows: int
    ema_decay: float = 0.9
    device: torch.device | str = "cpu"
    tables: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    plans: list[torch.Tensor] = field(default_factory=list, repr=False)
    nonfinite_count: torch.Tensor | None = field(default=None, repr=False)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_rows <= 0:
            raise ValueError(f"PruningState needs at least one row, got num_rows={self.num_rows}.")
        if not self.tables:
            self.tables = {
                name: torch.full((self.num_rows + 1,), value, dtype=dtype, device=self.device)
                for name, (dtype, value) in _TABLES.items()
            }
        if self.nonfinite_count is None:
            self.nonfinite_count = torch.zeros((), dtype=torch.int64, device=self.device)

    # ------------------------------------------------------------------ per-row views (without the trash slot)
    def __getattr__(self, name: str) -> torch.Tensor:
        tables = self.__dict__.get("tables")
        if tables is not None and name in tables:
            return tables[name][:-1]
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    @property
    def seen(self) -> torch.Tensor:
        """Boolean mask of rows observed at least once."""
        return self.frequency > 0

    @property
    def epoch_plan_sizes(self) -> list[int]:
        return [len(plan) for plan in self.plans]

    def realized_saving(self, num_epochs: int | None = None) -> float:
        """`1 - (sum of plan sizes) / (N * epochs)`, over `num_epochs` (default: the epochs planned so far)."""
        epochs = len(self.plans) if num_epochs is None else num_epochs
        if epochs == 0:
            return 0.0
        return 1.0 - sum(self.epoch_plan_sizes) / (self.num_rows * epochs)

    # ------------------------------------------------------------------ hot path
    def update(self, rows: torch.Tensor, loss: torch.Tensor, entropy: torch.Tensor, epoch: int) -> None:
        """Record one observation per row.

        `rows` may contain `-1` (padding) and repeated rows: only the first occurrence of a row that was not
        already visited in `epoch` counts, so the padding and the loop-back duplicates that Accelerate's
        `even_batches` adds are neither lost nor double-counted. Non-finite `loss`/`entropy` values count as a
        visit but leave the row's statistics unchanged (they are tallied in `nonfinite_count`).
        """
        n = self.num_rows
        rows = rows.to(self.device, torch.int64)
        loss = loss.to(self.device, torch.float32)
        entropy = entropy.to(self.device, torch.float32)
        safe_rows = rows.clamp(-1, n).masked_fill(rows < 0, n)  # padding -> trash slot
        t = self.tables
        keep = (rows >= 0) & (rows < n) & (t["last_epoch"][safe_rows] != epoch) & _first_occurrence(safe_rows)
        visit = torch.where(keep, safe_rows, n)
        finite = keep & torch.isfinite(loss) & torch.isfinite(entropy)
        target = torch.where(finite, safe_rows, n)

        t["frequency"].index_add_(0, visit, keep.to(torch.int64))
        t["last_epoch"].index_fill_(0, visit, epoch)
        self.nonfinite_count += (keep & ~finite).sum()

        d = self.ema_decay
        old_mean = t["ema_mean"][target]
        first = torch.isnan(old_mean)
        new_mean = torch.where(first, loss, d * old_mean + (1 - d) * loss)
        new_var = torch.where(first, 0.0, d * t["ema_var"][target] + (1 - d) * (loss - old_mean) ** 2)
        t["ema_mean"][target] = new_mean
        t["ema_var"][target] = new_var
        t["loss"][target] = loss
        t["entropy"][target] = entropy

    # ------------------------------------------------------------------ plans
    def record_plan(self, epoch: int, plan: torch.Tensor, weight: torch.Tensor | None = None) -> None:
        """Store the plan of `epoch` (which must be the next unplanned epoch) and its per-row loss weights."""
        if epoch != len(self.plans):
            raise RuntimeError(f"Epoch {epoch} planned out of order: {len(self.plans)} epochs are planned.")
        dtype = torch.int32 if self.num_rows < 2**31 else torch.int64
        self.plans.append(plan.to("cpu", dtype))
        w = self.tables["weight"]
        if weight is None:
            w.fill_(1.0)
        else:
            w[:-1] = weight.to(w.device, torch.float32)

    def set_scores(self, score: torch.Tensor) -> None:
        self.tables["score"][:-1] = score.to(self.tables["score"].device, torch.float32)

    def kept_in_epoch(self) -> torch.Tensor:
        """Boolean matrix `[epochs, N]`: whether row i was in the plan of epoch e."""
        kept = torch.zeros(len(self.plans), self.num_rows, dtype=torch.bool)
        for e, plan in enumerate(self.plans):
            kept[e, plan.long()] = True
        return kept

    def cpu_tables(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the per-row tables (without the trash slot): what strategies decide from."""
        return {name: table[:-1].to("cpu", copy=True) for name, table in self.tables.items()}

    # ------------------------------------------------------------------ (de)serialisation
    def state_dict(self) -> dict[str, Any]:
        return {
            "format_version": STATE_FORMAT_VERSION,
            "num_rows": self.num_rows,
            "ema_decay": self.ema_decay,
            "tables": {name: t.cpu() for name, t in self.tables.items()},
            "plans": list(self.plans),
            "nonfinite_count": self.nonfinite_count.cpu(),
            "metadata": dict(self.metadata),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format_version") != STATE_FORMAT_VERSION:
            raise ValueError(f"Unsupported pruning-state format {state.get('format_version')!r}.")
        if state["num_rows"] != self.num_rows:
            raise ValueError(
                f"The saved pruning state has {state['num_rows']} rows but the training dataset has "
                f"{self.num_rows}: resume with the dataset the checkpoint was trained on."
            )
        self.ema_decay = state["ema_decay"]
        self.tables = {name: t.to(self.device, copy=True) for name, t in state["tables"].items()}
        self.plans = list(state["plans"])
        self.nonfinite_count = state["nonfinite_count"].to(self.device)
        self.metadata = dict(state["metadata"])

    def to(self, device: torch.device | str) -> PruningState:
        self.device = device
        self.tables = {name: t.to(device) for name, t in self.tables.items()}
        self.nonfinite_count = self.nonfinite_count.to(device)
        return self


def _first_occurrence(rows: torch.Tensor) -> torch.Tensor:
    """Mask of the entries of `rows` that are the first occurrence of their value (sort-based, no sync)."""
    if rows.numel() <= 1:
        return torch.ones_like(rows, dtype=torch.bool)
    order = torch.sort(rows, stable=True).indices
    sorted_rows = rows[order]
    first_sorted = torch.ones_like(sorted_rows, dtype=torch.bool)
    first_sorted[1:] = sorted_rows[1:] != sorted_rows[:-1]
    return torch.empty_like(first_sorted).scatter_(0, order, first_sorted)
