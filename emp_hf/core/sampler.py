"""Epoch plans: decided once per epoch from the pruning state, reproducible from (state, seed, epoch)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch.utils.data import Sampler

from .quota import select_by_class
from .schedule import EpochContext, EpochSchedule
from .tracker import PruningState

if TYPE_CHECKING:  # the core plans with any strategy; it imports none
    from ..strategies import PruningStrategy

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: spreads (seed, epoch) over the 64-bit seed space
_ORDER = 0x5851F42D4C957F2D  # a second stream for the training order of an epoch


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * _MIX + epoch + 1) % 2**63


def epoch_generator(seed: int, epoch: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A private generator on `device` seeded by `(seed, epoch)`; global RNG state is never touched."""
    return torch.Generator(device=device).manual_seed(_epoch_seed(seed, epoch))


def order_seed(seed: int, epoch: int) -> int:
    """The key of the hash that orders epoch `epoch`'s plan (kept with the plan to regenerate its order)."""
    return (_epoch_seed(seed, epoch) ^ _ORDER) % 2**63


class EpochPlanner:
    """Decides and records the plan (ordered row indices) of each epoch, at most once per epoch.

    Planning runs where the tables live (the training device), with a generator there seeded by
    `(seed, epoch)`: no table is copied to the host. The selected rows are stored as a bitmap and shuffled by a
    keyed hash of `order_seed(seed, epoch)` (the same order on every device). Plans are identical on every
    process (same state, seed and device type) and reproducible from `(state, seed, epoch)`. A sharded state is
    whole while an epoch is planned (`PruningState.whole`), so every process decides the one-process plan.
    """

    def __init__(
        self,
        state: PruningState,
        strategy: PruningStrategy,
        schedule: EpochSchedule,
        seed: int,
        classes: torch.Tensor | None = None,
        class_quota: str | None = None,
    ) -> None:
        """`classes` (each row's class id) and `class_quota` (`emp_hf.core.quota.QUOTA_RULES`): split each pruned
        epoch's rows among the classes first; the strategy then chooses within each class."""
        if (classes is None) != (class_quota is None):
            raise ValueError("Per-class quotas need both the rows' classes and a quota rule.")
        if classes is not None and classes.numel() != state.num_rows:
            raise ValueError(f"Got {classes.numel()} row classes for a pruning state of {state.num_rows} rows.")
        self.state = state
        self.strategy = strategy
        self.schedule = schedule
        self.seed = seed
        self.classes = classes
        self.class_quota = class_quota

    def reschedule(self, schedule: EpochSchedule) -> None:
        """Plan the epochs not yet planned by `schedule` (an open budget refitted to `max_steps`)."""
        self.schedule = schedule

    def context(self, epoch: int) -> EpochContext:
        """What the strategy is told of `epoch`: its place in the current schedule."""
        return EpochContext.of(self.schedule, epoch)

    def _begin_epoch(self, epoch: int) -> tuple[dict[str, torch.Tensor], EpochContext]:
        """The flushed tables and the epoch's context, the scores at that epoch recorded."""
        tables = self.state.device_tables()
        context = self.context(epoch)
        if "score" in tables:
            self.state.set_scores(self.strategy.score(tables, context))
        return tables, context

    def plan(self, epoch: int) -> torch.Tensor:
        """The plan of `epoch`; decided from the current state if it is the next unplanned epoch."""
        plans = self.state.plans
        if epoch < len(plans):
            return plans[epoch]
        if epoch > len(plans):
            raise RuntimeError(f"Cannot plan epoch {epoch} before epoch {len(plans)}.")
        with self.state.whole():  # sharded: every row's tables while planning (one collective), own rows after
            tables, context = self._begin_epoch(epoch)
            rows, weight = None, None
            if context.phase == "pruned":
                generator = epoch_generator(self.seed, epoch, self.state.device)
                if self.classes is None:
                    selection = self.strategy.select(tables, context.num_keep, generator, context)
                    rows, weight = selection.rows, selection.weight
                else:

                    def choose(class_tables: dict[str, torch.Tensor], quota: int) -> tuple:
                        selection = self.strategy.select(class_tables, quota, generator, context)
                        return selection.rows, selection.weight

                    rows, weight = select_by_class(tables, self.classes, context.num_keep, self.class_quota, choose)
            return self.state.record_selection(epoch, rows, order_seed(self.seed, epoch), weight)

    def plan_size(self, epoch: int) -> int:
        """The number of rows of `epoch`'s plan (decided first if it is the next unplanned epoch)."""
        if epoch >= len(self.state.plans):
            self.plan(epoch)
        return self.state.epoch_plan_sizes[epoch]

    def record_full_epoch(self, epoch: int, visited: torch.Tensor | None = None) -> None:
        """Record an epoch trained in an order chosen elsewhere (`pruning_method='none'`), once it has run:
        `visited` (a bool mask of the rows it trained; None: every row) becomes its plan, in ascending order."""
        if epoch != len(self.state.plans):
            return
        with self.state.whole():
            self._begin_epoch(epoch)
            if visited is None or bool(visited.all()):
                self.state.record_selection(epoch, None, order_seed=None)
            else:  # an early stop or `dataloader_drop_last`: the rows that never ran are not in the plan
                self.state.record_plan(epoch, torch.nonzero(visited).flatten().cpu())


class PruningSampler(Sampler[int]):
    """Yields the plan of the current epoch. `set_epoch` decides it; every process yields the same rows.

    Accelerate shards what this sampler yields across processes, so each process must hold the same
    state and seed; `__len__` is exact (and so identical on every process) as soon as `set_epoch` returns.
    """

    def __init__(self, planner: EpochPlanner) -> None:
        self.planner = planner
        self.epoch = max(len(planner.state.plans) - 1, 0)

    def set_epoch(self, epoch: int) -> None:
        self.planner.plan(epoch)
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        plan = self.planner.plan(self.epoch)
        for chunk in plan.split(1 << 16):  # Python ints a chunk at a time, not one list of N
            yield from chunk.tolist()

    def __len__(self) -> int:
        return self.planner.plan_size(self.epoch)
