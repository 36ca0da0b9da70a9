"""The training step: statistics come from the one training forward pass whatever `compute_loss` does, the row
index never reaches the model, and a reweighted loss is on the Trainer's own scale (issue 21, items 1, 5, 9, 13)."""

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import (
    BertForSequenceClassification,
    BertForTokenClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    default_data_collator,
)

from emp_hf import EMPTrainer
from emp_hf_dev.fixtures import make_args, make_bert, make_text_dataset, make_tiny_llama


class WeightedLossTrainer(EMPTrainer):
    """The weighted-loss pattern of HF's docs: the model is called directly, `super().compute_loss` never."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = F.cross_entropy(outputs.logits, labels, weight=torch.tensor([1.0, 2.0]))
        return (loss, outputs) if return_outputs else loss


def _train(trainer_class, tmp_path, name, **kwargs):
    args = make_args(tmp_path / name, learning_rate=0.0, **kwargs)
    trainer = trainer_class(model=make_bert(), args=args, train_dataset=make_text_dataset(n=32))
    trainer.train()
    return trainer


def test_statistics_are_recorded_when_compute_loss_skips_super(tmp_path):
    """With lr 0 the model never changes: the override records exactly the losses of a plain EMPTrainer run."""
    plain = _train(EMPTrainer, tmp_path, "plain", pruning_method="emp", num_train_epochs=3)
    custom = _train(WeightedLossTrainer, tmp_path, "custom", pruning_method="emp", num_train_epochs=3)
    state = custom.pruning_state
    assert torch.isfinite(state.loss).all()
    torch.testing.assert_close(state.loss, plain.pruning_state.loss)
    assert custom.pruning_state.epoch_plan_sizes == plain.pruning_state.epoch_plan_sizes
    assert torch.equal(state.frequency, plain.pruning_state.frequency)


class StrictBert(BertForSequenceClassification):
    """A model whose forward takes no `**kwargs`: any extra batch key is a TypeError."""

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None):
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, labels=labels)


def _logits_stats(outputs, labels):
    loss = F.cross_entropy(outputs.logits, labels, reduction="none")
    return loss, torch.zeros_like(loss)


def test_the_row_index_never_reaches_the_model(tmp_path):
    args = make_args(tmp_path, pruning_method="emp", num_train_epochs=3)
    model = StrictBert(make_bert().config)
    trainer = WeightedLossTrainer(
        model=model, args=args, train_dataset=make_text_dataset(n=32), per_example_loss_func=_logits_stats
    )
    trainer.train()
    assert torch.isfinite(trainer.pruning_state.loss).all()


def test_a_weighted_strategy_refuses_a_compute_loss_that_skips_super(tmp_path):
    with pytest.raises(RuntimeError, match="reweights each example's loss.*super\\(\\).compute_loss"):
        _train(WeightedLossTrainer, tmp_path, "w", pruning_method="infobatch", num_train_epochs=3)


def test_one_forward_pass_per_training_step(tmp_path):
    calls = []
    args = make_args(tmp_path, pruning_method="infobatch", num_train_epochs=3, max_steps=4)
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset(n=32))
    trainer.model.register_forward_hook(lambda module, args, output: calls.append(module.training))
    trainer.train()
    assert calls.count(True) == 4


# ---------------------------------------------------------------- per_example_loss_func (item 9)
def test_per_example_loss_func_gets_the_label_names_column_and_may_omit_entropy(tmp_path):
    seen = []

    def stats(outputs, labels):
        seen.append(labels)
        return F.cross_entropy(outputs.logits, labels, reduction="none"), None

    class TargetsTrainer(EMPTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            targets = inputs.pop("targets")
            outputs = model(**inputs)
            loss = F.cross_entropy(outputs.logits, targets)
            return (loss, outputs) if return_outputs else loss

    data = make_text_dataset(n=32).rename_column("labels", "targets")
    args = make_args(tmp_path, pruning_method="emp", num_train_epochs=2, label_names=["targets"])
    trainer = TargetsTrainer(model=make_bert(), args=args, train_dataset=data, per_example_loss_func=stats)
    trainer.train()
    assert seen and all(torch.is_tensor(labels) for labels in seen)
    state = trainer.pruning_state
    assert torch.isfinite(state.loss).all() and (state.entropy == 0).all()


def test_per_example_loss_func_returning_something_else_is_a_clear_error(tmp_path):
    args = make_args(tmp_path, pruning_method="emp", num_train_epochs=2)
    trainer = EMPTrainer(
        model=make_bert(),
        args=args,
        train_dataset=make_text_dataset(n=32),
        per_example_loss_func=lambda outputs, labels: "x",
    )
    with pytest.raises(TypeError, match="must return \\(loss, entropy\\)"):
        trainer.train()


def test_a_training_set_without_labels_names_the_missing_column(tmp_path):
    data = make_text_dataset(n=32).remove_columns("labels")
    args = make_args(tmp_path, pruning_method="emp", num_train_epochs=2)
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=data)
    began = []

    class OnTrainBegin(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            began.append(True)

    trainer.add_callback(OnTrainBegin())
    with pytest.raises(ValueError, match="no 'labels'.*Add a 'labels' column"):
        trainer.train()
    assert not began, "refused before training starts, not at the first step"


def test_the_label_check_leaves_every_random_state_as_it_was(tmp_path):
    """The check collates one row; a collator that draws random numbers (masking) must not shift training's."""
    drawn = []

    def masking_collator(rows):
        drawn.append((torch.rand(1).item(), random.random(), np.random.rand()))
        return default_data_collator(rows)

    args = make_args(tmp_path, pruning_method="emp", num_train_epochs=2)
    trainer = EMPTrainer(
        model=make_bert(), args=args, train_dataset=make_text_dataset(n=8), data_collator=masking_collator
    )
    torch.manual_seed(3), random.seed(3), np.random.seed(3)
    expected = (torch.rand(1).item(), random.random(), np.random.rand())
    torch.manual_seed(3), random.seed(3), np.random.seed(3)
    trainer._check_training_labels()
    assert len(drawn) == 1, "the check collates the first row"
    assert (torch.rand(1).item(), random.random(), np.random.rand()) == expected


# ---------------------------------------------------------------- the reweighted loss's scale (item 5)
def _token_batch(n=8, seq_len=10):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(6, 64, (n, seq_len), generator=g)
    labels = torch.randint(0, 2, (n, seq_len), generator=g)
    labels[:, -3:] = -100
    labels[2] = -100  # a row without any labelled token
    return {"input_ids": ids, "labels": labels}


def _causal_batch(n=8, seq_len=10):
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(2, 64, (n, seq_len), generator=g)
    labels = ids.clone()
    labels[:, :4] = -100
    labels[1, 7:] = -100
    return {"input_ids": ids, "labels": labels}


def _sequence_batch(n=8):
    data = make_text_dataset(n=n)
    return {"input_ids": torch.tensor(data["input_ids"]), "labels": torch.tensor(data["labels"])}


CASES = {
    "sequence": (lambda: make_bert(), _sequence_batch),
    "token": (lambda: make_bert(model_class=BertForTokenClassification), _token_batch),
    "causal_lm": (lambda: make_tiny_llama(64), _causal_batch),
}


def _step(trainer, batch, num_items_in_batch, accumulation):
    trainer.create_optimizer_and_scheduler(num_training_steps=1)
    trainer.current_gradient_accumulation_steps = accumulation
    trainer.model.zero_grad()
    torch.manual_seed(0)
    loss = trainer.training_step(trainer.model, dict(batch), num_items_in_batch)
    return loss, [p.grad.clone() for p in trainer.model.parameters() if p.grad is not None]


@pytest.mark.parametrize("head", sorted(CASES))
@pytest.mark.parametrize("num_items", [None, "count"])
def test_a_reweighted_loss_with_unit_weights_is_the_trainers_loss(tmp_path, head, num_items):
    """InfoBatch with every weight 1 gives the loss and gradients of a plain Trainer, with gradient accumulation
    (the Trainer divides by the accumulation steps, or not, by its own rule) and with `num_items_in_batch`."""
    make_model, make_batch = CASES[head]
    batch = make_batch()
    labels = batch["labels"][:, 1:] if head == "causal_lm" else batch["labels"]
    count = None if num_items is None else 2 * int((labels != -100).sum())  # as over 2 accumulated batches
    common = dict(output_dir=str(tmp_path / "t"), report_to=[], use_cpu=True, gradient_accumulation_steps=2)
    plain = Trainer(model=make_model(), args=TrainingArguments(**common))
    expected_loss, expected_grads = _step(plain, batch, count, 2)
    args = make_args(tmp_path, pruning_method="infobatch", gradient_accumulation_steps=2, num_train_epochs=4)
    pruned = EMPTrainer(model=make_model(), args=args, train_dataset=make_text_dataset(n=8))
    pruned.pruning_state.set_weights(torch.ones(8))
    indexed = {**batch, args.pruning_index_column: torch.arange(8)}
    loss, grads = _step(pruned, indexed, count, 2)
    torch.testing.assert_close(loss, expected_loss)
    for grad, expected in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected)


def test_a_reweighted_sequence_loss_weights_each_row(tmp_path):
    batch = _sequence_batch()
    args = make_args(tmp_path, pruning_method="infobatch", gradient_accumulation_steps=2, num_train_epochs=4)
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset(n=8))
    weight = torch.linspace(1.0, 3.0, 8)
    trainer.pruning_state.set_weights(weight)
    loss, _ = _step(trainer, {**batch, args.pruning_index_column: torch.arange(8)}, None, 2)
    trainer.model.train()
    torch.manual_seed(0)
    logits = trainer.model(input_ids=batch["input_ids"]).logits
    expected = (weight * F.cross_entropy(logits, batch["labels"], reduction="none")).mean() / 2
    torch.testing.assert_close(loss, expected.detach())
