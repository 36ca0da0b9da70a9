"""`StepBudget`: plan sizes to optimizer steps, without a Trainer (values by hand)."""

import math

import pytest
import torch

from emp_hf import EMPTrainer
from emp_hf.core.budget import StepBudget
from emp_hf.core.schedule import EpochSchedule, StepCounter
from emp_hf_dev.fixtures import (
    FIXED_SIZE_CASES,
    make_args,
    make_bert,
    make_text_dataset,
)


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


# ---- Through the Trainer: the budget is the steps taken (drop_last, max_steps, resume, InfoBatch's open budget).
@pytest.mark.usefixtures("one_thread")
def test_drop_last_budget_matches_the_steps_taken(tmp_path):
    args = make_args(tmp_path, prune_ratio=0.7, dataloader_drop_last=True, num_train_epochs=4)
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset(n=100))
    output = trainer.train()
    sizes = trainer.pruning_state.epoch_plan_sizes
    assert output.global_step == trainer.state.max_steps == sum(s // 8 for s in sizes)


@pytest.mark.usefixtures("one_thread")
def test_infobatch_open_budget_with_max_steps_ends_with_its_anneal_epoch(tmp_path):
    n = 96
    args = make_args(tmp_path, pruning_method="infobatch", max_steps=70, num_train_epochs=1)
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset(n=n))
    output = trainer.train()
    state = trainer.pruning_state
    assert output.global_step == 70
    planned = state.metadata["planned_epochs"]
    assert len(state.plans) == planned  # the run ends in the last planned epoch: the anneal epoch
    assert len(state.plans[-1]) == n and torch.equal(state.weight, torch.ones(n))
    assert all(len(plan) < n for plan in state.plans[1:-1])


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(("method", "extra"), FIXED_SIZE_CASES)
def test_resume_with_max_steps_equals_the_uninterrupted_run(tmp_path, method, extra):
    def run(name, resume=None):
        args = make_args(
            tmp_path / name,
            pruning_method=method,
            max_steps=45,
            num_train_epochs=1,
            save_strategy="steps",
            save_steps=20,
            logging_steps=100,
            **extra,
        )
        trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset())
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    full = run("full")
    resumed = run("full", resume=str(tmp_path / "full" / "out" / "checkpoint-20"))
    a, b = full.pruning_state, resumed.pruning_state
    assert [p.tolist() for p in a.plans] == [p.tolist() for p in b.plans]
    assert a.metadata["planned_epochs"] == b.metadata["planned_epochs"]
    assert a.tables.keys() == b.tables.keys()
    for name in a.tables:  # every table the strategy keeps
        torch.testing.assert_close(a.tables[name], b.tables[name], equal_nan=True, rtol=0, atol=0, msg=name)


@pytest.mark.usefixtures("one_thread")
def test_infobatch_open_budget_warmup_ratio_is_a_share_of_the_steps_taken(tmp_path):
    args = make_args(
        tmp_path, pruning_method="infobatch", num_train_epochs=6, lr_scheduler_type="linear", warmup_steps=0.2
    )
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset())
    output = trainer.train()
    keywords = trainer.lr_scheduler.lr_lambdas[0].keywords
    assert keywords["num_training_steps"] == output.global_step
    assert keywords["num_warmup_steps"] == math.ceil(0.2 * output.global_step)
