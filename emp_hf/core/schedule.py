"""Which epochs are pruned, how many rows each visits, and what that means in optimizer steps."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal


def floor_share(ratio: float, count: int) -> int:
    """`floor(ratio * count)`, reading `ratio` as the decimal it was written as (0.29 * 100 -> 29, not 28)."""
    return math.floor(Fraction(repr(float(ratio))) * count)


Phase = Literal["warmup", "pruned", "anneal"]


@dataclass(frozen=True)
class EpochSchedule:
    """Warm-up epochs train on all rows, then pruned epochs on `num_keep`, then anneal epochs on all rows."""

    num_rows: int
    num_epochs: int
    prune_ratio: float
    warmup_epochs: int = 1
    anneal_fraction: float = 0.0

    @property
    def num_keep(self) -> int:
        """`K = N - floor(p * N)`: the rows a pruned epoch visits."""
        return self.num_rows - floor_share(self.prune_ratio, self.num_rows)

    @property
    def anneal_epochs(self) -> int:
        return math.ceil(self.anneal_fraction * self.num_epochs - 1e-9)

    def phase(self, epoch: int) -> Phase:
        if epoch < self.warmup_epochs or self.prune_ratio == 0:
            return "warmup"
        if epoch >= self.num_epochs - self.anneal_epochs:
            return "anneal"
        return "pruned"

    def nominal_plan_size(self, epoch: int) -> int:
        return self.num_keep if self.phase(epoch) == "pruned" else self.num_rows


@dataclass(frozen=True)
class StepCounter:
    """Optimizer steps of an epoch from its plan size, exactly as Accelerate shards the batches."""

    batch_size: int  # per device
    num_processes: int = 1
    gradient_accumulation_steps: int = 1
    drop_last: bool = False

    def micro_batches(self, plan_size: int) -> int:
        """Batches each process draws: `ceil` (or `floor` with `drop_last`) of the global batches per process."""
        rounding = math.floor if self.drop_last else math.ceil
        batches = rounding(plan_size / self.batch_size)
        return rounding(batches / self.num_processes) if self.num_processes > 1 else batches

    def update_steps(self, plan_size: int) -> int:
        return max(math.ceil(self.micro_batches(plan_size) / self.gradient_accumulation_steps), 1)


@dataclass(frozen=True)
class EpochContext:
    """Where the epoch being planned stands in the run: what `select` and `score` may read besides the tables.

    The planner (`emp_hf.core.sampler.EpochPlanner`) builds one per epoch from its schedule (`EpochContext.of`) and
    hands it to `score` (every epoch, to record the scores) and to `select` (pruned epochs only). A rule that
    moves with the epoch (SeTa's window, UCB1's visit bonus, an annealing sharpness) reads it here; it is a
    frozen value, so a strategy keeps no epoch of its own and a call decides the same rows whenever it is made.
    """

    #: The epoch being planned, 0-based.
    epoch: int
    #: Its phase: `"warmup"` and `"anneal"` epochs train on every row, `"pruned"` ones on `num_keep`.
    phase: Phase
    #: The epochs the run is planned for (with `max_steps` and an open budget, the latest fit).
    num_epochs: int
    #: `N`, the rows of the training set.
    num_rows: int
    #: `K = N - floor(prune_ratio * N)`, the rows a pruned epoch visits (for an open budget, its nominal size).
    num_keep: int
    #: The full epochs at the start (`pruning_warmup_epochs`).
    warmup_epochs: int
    #: The full epochs at the end (`ceil(pruning_anneal_fraction * num_epochs)`).
    anneal_epochs: int

    @classmethod
    def of(cls, schedule: EpochSchedule, epoch: int) -> EpochContext:
        """The context of `epoch` under `schedule`."""
        return cls(
            epoch=epoch,
            phase=schedule.phase(epoch),
            num_epochs=schedule.num_epochs,
            num_rows=schedule.num_rows,
            num_keep=schedule.num_keep,
            warmup_epochs=schedule.warmup_epochs,
            anneal_epochs=schedule.anneal_epochs,
        )

    @property
    def epochs_since_warmup(self) -> int:
        """`epoch - warmup_epochs`: 0 at the first pruned epoch (SeTa's `t`)."""
        return self.epoch - self.warmup_epochs
