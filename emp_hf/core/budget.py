"""The step budget of a pruning run: how many optimizer steps its epochs take, from their plan sizes.

Pure arithmetic on plan sizes (no Trainer). A fixed budget knows every pruned epoch's size (`num_keep`) before it
is planned; an open budget (InfoBatch, SeTa's k-means bands) knows it only once the epoch is planned, and one rule
(`StepBudget.estimate`) stands in for the undecided epochs, with the bound each question needs: the LR schedule
counts them as large as they can be (so it only ever shortens), `max_steps` as small as they can be (so enough
epochs are planned to reach it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from .schedule import EpochSchedule, StepCounter


@dataclass(frozen=True)
class StepBudget:
    """Plan sizes to optimizer steps for one run's schedule options and batch geometry."""

    counter: StepCounter
    #: The run's schedule options (rows, ratio, warm-up, anneal); its `num_epochs` is each question's own.
    options: EpochSchedule
    #: Whether every pruned epoch visits exactly `num_keep` rows (see `StrategyTraits.fixed_budget`).
    fixed_budget: bool = True
    #: For an open budget: whether a pruned epoch visits at most `num_keep` rows.
    at_most_num_keep: bool = False

    def schedule(self, num_epochs: int) -> EpochSchedule:
        """The run's schedule over `num_epochs` epochs."""
        return dataclasses.replace(self.options, num_epochs=num_epochs)

    def estimate(self, schedule: EpochSchedule, known: Sequence[int], *, upper: bool = True) -> int:
        """The rows of an undecided pruned epoch of an open budget.

        `num_keep` for a strategy that visits at most that many; else as many as the latest pruned plan (the
        latest known plan smaller than the dataset); else, with nothing pruned yet, all rows when `upper` (a bound
        on the steps) or `num_keep`, the fewest an open budget visits (a bound on the epochs `max_steps` needs).
        """
        if self.at_most_num_keep:
            return schedule.num_keep
        latest = next((size for size in reversed(known) if size < schedule.num_rows), None)
        if latest is not None:
            return latest
        return schedule.num_rows if upper else schedule.num_keep

    def plan_sizes(self, schedule: EpochSchedule, known: Sequence[int], *, upper: bool = True) -> list[int]:
        """Every epoch's plan size: `known` for the epochs already planned, nominal or estimated for the rest."""
        sizes = list(known[: schedule.num_epochs])
        estimate = self.estimate(schedule, sizes, upper=upper)
        for epoch in range(len(sizes), schedule.num_epochs):
            undecided = not self.fixed_budget and schedule.phase(epoch) == "pruned"
            sizes.append(estimate if undecided else schedule.nominal_plan_size(epoch))
        return sizes

    def steps(self, sizes: Sequence[int]) -> int:
        """Optimizer steps of epochs with these plan sizes."""
        return sum(self.counter.update_steps(size) for size in sizes)

    def total_steps(self, schedule: EpochSchedule, known: Sequence[int]) -> int:
        """The run's optimizer steps (an upper bound while an open budget has undecided epochs)."""
        return self.steps(self.plan_sizes(schedule, known))

    def epochs_for_max_steps(self, max_steps: int, known: Sequence[int] = ()) -> int:
        """The fewest epochs whose steps reach `max_steps`, `known` plan sizes first (undecided ones as small as
        they can be)."""
        num_epochs = len(known) + 1
        while self.steps(self.plan_sizes(self.schedule(num_epochs), known, upper=False)) < max_steps:
            num_epochs += 1
        return num_epochs

    def resume_position(self, global_step: int, known: Sequence[int]) -> tuple[int, int]:
        """`(epoch, optimizer steps already taken in it)` of `global_step`, given the planned epochs' sizes
        (epochs have different lengths, which the Trainer's own arithmetic assumes they do not)."""
        done = 0
        for epoch, size in enumerate(known):
            steps = self.counter.update_steps(size)
            if global_step < done + steps:
                return epoch, global_step - done
            done += steps
        return len(known), 0
