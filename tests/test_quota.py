"""Per-class quotas (`pruning_class_quota`): the budget split among the classes, the rule choosing within each."""

import datasets
import numpy as np
import pytest
import torch

from emp_hf import EMPConfig, EMPTrainer
from emp_hf.core.quota import class_quotas, select_by_class
from emp_hf.core.sampler import EpochPlanner
from emp_hf.core.schedule import EpochSchedule
from emp_hf.core.tracker import PruningState
from emp_hf.integration.data import row_classes
from emp_hf.strategies import PruningOptions, build_strategy
from emp_hf_dev.fixtures import make_args, make_bert, make_text_dataset


@pytest.mark.parametrize(
    "counts,num_keep,rule,expected",
    [
        # balanced: share 12 // 3 = 4; class 1 (3 rows) keeps all, the other two share 9: 5 and 4
        ([10, 3, 7], 12, "balanced", [5, 3, 4]),
        ([10, 3, 7], 30, "balanced", [10, 3, 7]),  # the budget exceeds the rows: every row
        ([1, 1, 50], 10, "balanced", [1, 1, 8]),
        ([4, 0, 4], 5, "balanced", [3, 0, 2]),  # an empty class gets nothing; the leftover row goes to class 0
        # proportional: 12 * (10, 3, 7) / 20 = 6, 1.8, 4.2 -> 6, 1, 4 and the leftover row to the largest remainder
        ([10, 3, 7], 12, "proportional", [6, 2, 4]),
        ([5, 5], 5, "proportional", [3, 2]),  # equal remainders: the lower class id
    ],
)
def test_class_quotas_by_hand(counts, num_keep, rule, expected):
    quotas = class_quotas(counts, num_keep, rule)
    assert quotas == expected
    assert sum(quotas) == min(num_keep, sum(counts))
    assert all(0 <= q <= n for q, n in zip(quotas, counts, strict=True))


def test_an_unknown_quota_rule_is_refused():
    with pytest.raises(ValueError, match="choose one of"):
        class_quotas([3, 3], 2, "equal")


def test_the_rule_chooses_within_each_class():
    # classes 0 (rows 0-9) and 1 (rows 10-13); a greedy rule over the score picks each class's highest rows
    classes = torch.tensor([0] * 10 + [1] * 4)
    score = torch.arange(14, dtype=torch.float32)
    tables = {"score": score}

    def highest(class_tables, quota):
        return torch.topk(class_tables["score"], quota).indices, None

    rows, weight = select_by_class(tables, classes, 6, "balanced", highest)
    assert sorted(rows.tolist()) == [7, 8, 9, 11, 12, 13]  # 3 per class, not the 6 highest overall (8..13)
    assert weight is None


def _planner(n: int, classes: torch.Tensor, quota: str, method: str = "emp") -> EpochPlanner:
    strategy = build_strategy(method, PruningOptions(prune_ratio=0.5))
    state = PruningState(n, track=strategy.traits.required_tables)
    g = torch.Generator().manual_seed(0)
    rows = torch.arange(n)
    state.update(rows, torch.rand(n, generator=g), torch.rand(n, generator=g), epoch=0)
    schedule = EpochSchedule(num_rows=n, num_epochs=3, prune_ratio=0.5, warmup_epochs=1)
    planner = EpochPlanner(state, strategy, schedule, seed=3, classes=classes, class_quota=quota)
    planner.plan(0)
    return planner


@pytest.mark.parametrize("method", ["emp", "random"])
def test_a_planned_epoch_meets_the_quotas_and_is_reproducible(method):
    n = 200
    classes = torch.tensor([0] * 150 + [1] * 30 + [2] * 20)  # a long tail
    plan = _planner(n, classes, "balanced", method).plan(1)
    counts = np.bincount(classes[plan].numpy(), minlength=3)
    # a share of 100 // 3 = 33: the two small classes keep every row, the large one takes the other 50
    assert counts.tolist() == class_quotas([150, 30, 20], 100, "balanced") == [50, 30, 20]
    assert plan.unique().numel() == plan.numel() == 100
    assert torch.equal(plan, _planner(n, classes, "balanced", method).plan(1))  # same seed, same plan


def test_the_planner_refuses_classes_of_another_length():
    state = PruningState(10)
    schedule = EpochSchedule(num_rows=10, num_epochs=3, prune_ratio=0.5)
    with pytest.raises(ValueError, match="9 row classes for a pruning state of 10 rows"):
        EpochPlanner(state, build_strategy("random", PruningOptions()), schedule, 0, torch.zeros(9).long(), "balanced")


def test_the_trainer_plans_balanced_epochs_from_the_label_column(tmp_path):
    base = make_text_dataset(n=60)
    labels = [0] * 48 + [1] * 12  # 4:1
    train = base.remove_columns("labels").add_column("labels", labels)
    args = make_args(
        tmp_path, pruning_method="emp", prune_ratio=0.5, num_train_epochs=3, pruning_class_quota="balanced"
    )
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=train)
    trainer.train()
    plans = trainer.pruning_state.plans
    for epoch in (1, 2):  # the pruned epochs: 30 rows, 12 of the small class (all of it) and 18 of the other
        assert np.bincount(np.asarray(labels)[plans[epoch].numpy()], minlength=2).tolist() == [18, 12]


def test_a_method_without_a_fixed_budget_is_refused(tmp_path):
    with pytest.raises(ValueError, match="pruning_class_quota.*fixed number of rows"):
        EMPConfig(output_dir=str(tmp_path), pruning_method="infobatch", pruning_class_quota="balanced")
    with pytest.raises(ValueError, match="pruning_class_quota.*choose one of"):
        EMPConfig(output_dir=str(tmp_path), pruning_method="emp", pruning_class_quota="even")


def test_the_row_classes_come_from_a_label_column_or_a_clear_error():
    train = datasets.Dataset.from_dict({"input_ids": [[1, 2]] * 4, "target": [2, 0, 1, 0]}).select([3, 2, 1, 0])
    assert row_classes(train, ["target"]).tolist() == [0, 1, 0, 2]  # in the dataset's (selected) order
    with pytest.raises(ValueError, match="has none of \\['labels', 'label'\\].*set label_names"):
        row_classes(train, None)
    with pytest.raises(ValueError, match="one class id .* per row"):
        row_classes(datasets.Dataset.from_dict({"labels": [0.5, 1.0]}), None)
    with pytest.raises(ValueError, match="needs the training set as a datasets.Dataset"):
        row_classes([{"labels": 0}], None)
