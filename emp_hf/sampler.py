"""Epoch plans: decided once per epoch from the pruning state, reproducible from (state, seed, epoch)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from .schedule import EpochSchedule
from .strategies import PruningStrategy
from .tracker import PruningState

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: spreads (seed, epoch) over the 64-bit seed space


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A private CPU generator seeded by `(seed, epoch)`; global RNG state is never touched."""
    return torch.Generator().manual_seed((seed * _MIX + epoch + 1) % 2**63)


class EpochPlanner:
    """Decides and records the plan (ordered row indices) of each epoch, at most once per epoch."""

    def __init__(self, state: PruningState, strategy: PruningStrategy, schedule: EpochSchedule, seed: int) -> None:
        self.state = state
        self.strategy = strategy
        self.schedule = schedule
        self.seed = seed

    def plan(self, epoch: int) -> torch.Tensor:
        """The plan of `epoch`; decided from the current state if it is the next unplanned epoch."""
        plans = self.state.plans
        if epoch < len(plans):
            return plans[epoch]
        if epoch > len(plans):
            raise RuntimeError(f"Cannot plan epoch {epoch} before epoch {len(plans)}.")
        generator = epoch_generator(self.seed, epoch)
        tables = self.state.cpu_tables()
        self.strategy.set_epoch(epoch, self.schedule)
        self.state.set_scores(self.strategy.score(tables))
        if self.schedule.phase(epoch) == "pruned":
            selection = self.strategy.select(tables, self.schedule.num_keep, generator)
            rows, weight = selection.rows, selection.weight
        else:
            rows, weight = torch.arange(self.state.num_rows), None
        order = rows[torch.randperm(rows.numel(), generator=generator)]
        self.state.record_plan(epoch, order, weight)
        return self.state.plans[epoch]

    def record_full_epoch(self, epoch: int) -> None:
        """Record an epoch that trains on every row in an order chosen elsewhere (`pruning_method='none'`)."""
        if epoch == len(self.state.plans):
            self.strategy.set_epoch(epoch, self.schedule)
            self.state.set_scores(self.strategy.score(self.state.cpu_tables()))
            self.state.record_plan(epoch, torch.arange(self.state.num_rows))


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
        return iter(self.planner.plan(self.epoch).tolist())

    def __len__(self) -> int:
        return len(self.planner.plan(self.epoch))
