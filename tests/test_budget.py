"""`StepBudget`: plan sizes to optimizer steps, without a Trainer (values by hand)."""

import pytest

from emp_hf.budget import StepBudget
from emp_hf.schedule import EpochSchedule, StepCounter


def budget(counter=None, anneal_fraction=0.0, **kwargs) -> StepBudget:
    options = EpochSchedule(num_rows=100, num_epochs=1, prune_ratio=0.5, anneal_fraction=anneal_fraction)
    return StepBudget(counter=counter or StepCounter(batch_size=8), options=options, **kwargs)


def test_a_fixed_budget_counts_num_keep_rows_per_pruned_epoch():
    b = budget()
    schedule = b.schedule(4)
    assert b.plan_sizes(schedule, []) == [100, 50, 50, 50]
    assert b.total_steps(schedule, []) == 13 + 3 * 7  # ceil(100 / 8), ceil(50 / 8)
    anneal = budget(anneal_fraction=0.25)
    assert anneal.plan_sizes(anneal.schedule(4), []) == [100, 50, 50, 100]


def test_an_open_budget_counts_undecided_epochs_as_the_latest_pruned_plan():
    b = budget(fixed_budget=False)
    schedule = b.schedule(4)
    assert b.plan_sizes(schedule, [100]) == [100, 100, 100, 100]  # nothing pruned yet: all rows (steps bound)
    assert b.plan_sizes(schedule, [100], upper=False) == [100, 50, 50, 50]  # ... or num_keep (epochs bound)
    assert b.plan_sizes(schedule, [100, 60]) == [100, 60, 60, 60]
    assert b.plan_sizes(schedule, [100, 60, 70]) == [100, 60, 70, 70]
    at_most = budget(fixed_budget=False, at_most_num_keep=True)
    assert at_most.plan_sizes(schedule, [100, 40]) == [100, 40, 50, 50]  # an upper bound: num_keep


def test_epochs_for_max_steps_are_the_fewest_that_reach_it():
    b = budget()
    # 13 steps in the warm-up epoch, then 7 per pruned epoch: 13, 20, 27, 34
    assert [b.epochs_for_max_steps(s) for s in (1, 13, 14, 20, 21, 30, 34, 35)] == [1, 1, 2, 2, 3, 4, 4, 5]
    accumulated = budget(counter=StepCounter(batch_size=8, gradient_accumulation_steps=2))
    assert accumulated.epochs_for_max_steps(11) == 2  # 7 + 4 steps
    open_budget = budget(fixed_budget=False)
    assert open_budget.epochs_for_max_steps(30, [100, 80]) == 3  # 13 + 10 + 10: undecided ones as the latest plan
    assert open_budget.epochs_for_max_steps(30, [100]) == 4  # 13 + 7 + 7 + 7: with none yet, as num_keep


def test_drop_last_and_processes_count_batches_as_accelerate_shards_them():
    b = budget(counter=StepCounter(batch_size=8, num_processes=2, drop_last=True))
    assert b.steps([100, 50]) == 6 + 3  # floor(floor(100 / 8) / 2), floor(floor(50 / 8) / 2)


@pytest.mark.parametrize(
    ("global_step", "position"), [(0, (0, 0)), (12, (0, 12)), (13, (1, 0)), (15, (1, 2)), (27, (3, 0))]
)
def test_resume_position_locates_the_step_in_epochs_of_different_lengths(global_step, position):
    assert budget().resume_position(global_step, [100, 50, 50]) == position
