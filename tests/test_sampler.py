"""The epoch's order (`emp_hf.core.sampler` and the Trainer's sampling settings): `none` trains exactly as `Trainer` in
every setting, a pruned epoch keeps the sampling order inside its plan, and `data_seed` drives the plans."""

import datasets
import pytest
import torch
from transformers import Trainer, TrainingArguments

from emp_hf import EMPConfig, EMPTrainer
from emp_hf_dev.fixtures import (
    TRAINING_DEFAULTS,
    make_args,
    make_bert,
    make_text_dataset,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _plain_trainer(tmp_path, dataset, **kwargs) -> Trainer:
    args = TrainingArguments(output_dir=str(tmp_path / "plain"), **{**TRAINING_DEFAULTS, **kwargs})
    return Trainer(model=make_bert(), args=args, train_dataset=dataset)


def _lengths_dataset() -> datasets.Dataset:
    dataset = make_text_dataset(n=100)
    ids = [row[: 4 + i % 8] for i, row in enumerate(dataset["input_ids"])]  # ragged lengths
    return dataset.remove_columns("input_ids").add_column("input_ids", ids)


@pytest.mark.parametrize(
    "setting",
    [
        {"train_sampling_strategy": "batch_rebalance", "gradient_accumulation_steps": 2},
        {"train_sampling_strategy": "group_by_length"},
        {"train_sampling_strategy": "sequential"},
        {"num_train_epochs": 2.5},
        {"num_train_epochs": 0.5},
        {"num_train_epochs": 1.5, "gradient_accumulation_steps": 3},
    ],
)
def test_none_trains_exactly_like_trainer(tmp_path, setting):
    from transformers import DataCollatorWithPadding

    dataset = _lengths_dataset()
    collator = DataCollatorWithPadding(_Tokenizer())
    plain = _plain_trainer(tmp_path, dataset, **setting)
    plain.data_collator = collator
    plain_out = plain.train()
    args = make_args(tmp_path, pruning_method="none", prune_ratio=None, **setting)
    ours = EMPTrainer(model=make_bert(), args=args, train_dataset=dataset, data_collator=collator)
    out = ours.train()
    assert out.global_step == plain_out.global_step
    for a, b in zip(ours.model.parameters(), plain.model.parameters(), strict=True):
        assert torch.equal(a, b)


class _Tokenizer:
    """Just enough of a tokenizer for `DataCollatorWithPadding` (pads `input_ids` with 0)."""

    pad_token_id = 0
    padding_side = "right"
    model_input_names = ["input_ids"]

    def pad(self, features, padding=True, return_tensors="pt", **kwargs):
        width = max(len(f["input_ids"]) for f in features)
        batch = {key: [f[key] for f in features] for key in features[0] if key != "input_ids"}
        batch["input_ids"] = [f["input_ids"] + [0] * (width - len(f["input_ids"])) for f in features]
        batch["attention_mask"] = [[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"])) for f in features]
        return {key: torch.tensor(value) for key, value in batch.items()}


class _BatchRecorder(EMPTrainer):
    """Records the rows of every training micro-batch, in order."""

    def training_step(self, model, inputs, *args, **kwargs):
        self.batches.setdefault(self._epoch, []).append(inputs[self.args.pruning_index_column].tolist())
        return super().training_step(model, inputs, *args, **kwargs)


@pytest.mark.parametrize("strategy", ["group_by_length", "sequential"])
def test_pruning_methods_honour_the_sampling_order_inside_each_plan(tmp_path, strategy):
    from transformers import DataCollatorWithPadding

    from emp_hf.integration.data import length_grouped_order

    dataset = _lengths_dataset()
    lengths = torch.tensor([len(ids) for ids in dataset["input_ids"]])
    args = make_args(tmp_path, pruning_method="emp", num_train_epochs=3, train_sampling_strategy=strategy)
    trainer = _BatchRecorder(
        model=make_bert(), args=args, train_dataset=dataset, data_collator=DataCollatorWithPadding(_Tokenizer())
    )
    trainer.batches = {}
    trainer.train()
    plans = trainer.pruning_state.plans
    assert [len(p) for p in plans] == [100, 50, 50]
    for epoch, plan in enumerate(plans):
        rows = [row for batch in trainer.batches[epoch] for row in batch]
        if strategy == "sequential":
            assert rows == sorted(plan.tolist())
        else:
            assert rows == length_grouped_order(plan, lengths, 8).tolist()
            assert lengths[rows[0]] == lengths[plan.long()].max()


def test_data_seed_drives_the_plans_unless_pruning_seed_is_set(tmp_path):
    def plans(**seeds):
        args = make_args(tmp_path / str(seeds), num_train_epochs=3, **seeds)
        trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset())
        trainer.train()
        return [p.tolist() for p in trainer.pruning_state.plans]

    assert EMPConfig(output_dir=str(tmp_path), data_seed=7).effective_pruning_seed == 7
    assert EMPConfig(output_dir=str(tmp_path), data_seed=7, pruning_seed=3).effective_pruning_seed == 3
    base = plans()
    assert plans(data_seed=7) != base
    assert plans(data_seed=7, pruning_seed=0) == base
