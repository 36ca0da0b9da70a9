"""Issue 14: defects that corrupted a run in silence or crashed with a traceback, each pinned by a test."""

import datasets
import pytest
import torch
import torch.nn.functional as F
from conftest import VOCAB, make_args, make_bert, make_text_dataset
from transformers import BertConfig, BertForTokenClassification

from emp_hf import EMPTrainer
from emp_hf.data import add_row_index

pytestmark = pytest.mark.usefixtures("one_thread")


def _train_none(tmp_path, dataset, name="out", **kwargs) -> EMPTrainer:
    args = make_args(tmp_path / name, pruning_method="none", prune_ratio=None, num_train_epochs=1, **kwargs)
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=dataset)
    trainer.train()
    return trainer


# ---------------------------------------------------------------- 1. a stale row-index column
@pytest.mark.parametrize("stale", ["shuffle", "filter"])
def test_stale_index_column_is_rebuilt(tmp_path, stale):
    indexed = add_row_index(make_text_dataset())
    if stale == "shuffle":
        dataset = indexed.shuffle(seed=1)
    else:
        dataset = indexed.filter(lambda row: row["emp_row_index"] % 3 != 0)
    fresh = dataset.remove_columns("emp_row_index")
    with_stale = _train_none(tmp_path, dataset, "stale")
    reference = _train_none(tmp_path, fresh, "fresh")
    assert with_stale.train_dataset["emp_row_index"] == list(range(len(dataset)))
    state, expected = with_stale.pruning_state, reference.pruning_state
    assert torch.equal(state.frequency, torch.ones(len(dataset), dtype=state.frequency.dtype))
    assert torch.equal(state.loss, expected.loss)


def test_index_column_that_is_already_the_row_index_is_kept():
    indexed = add_row_index(make_text_dataset())
    assert add_row_index(indexed) is indexed


@pytest.mark.parametrize("column", ["input_ids", "labels", "attention_mask"])
def test_index_column_naming_a_model_input_is_refused(tmp_path, column):
    args = make_args(tmp_path, pruning_index_column=column)
    with pytest.raises(ValueError, match="pruning_index_column='.*' names a model input"):
        EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset())


# ---------------------------------------------------------------- 2 and 9. rows without a label
def _token_dataset(n: int = 32, seq_len: int = 8, unlabelled=(3, 10)) -> datasets.Dataset:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(6, VOCAB, (n, seq_len), generator=g)
    labels = (ids % 2).masked_fill(torch.rand(n, seq_len, generator=g) < 0.3, -100)
    labels[list(unlabelled)] = -100
    return datasets.Dataset.from_dict({"input_ids": ids.tolist(), "labels": labels.tolist()})


def _token_model() -> BertForTokenClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=2,
    )
    return BertForTokenClassification(config)


@pytest.mark.parametrize(("method", "extra"), [("infobatch", {}), ("emp", {"emp_selection": "soft"})])
def test_weighted_strategies_ignore_rows_without_labelled_tokens(tmp_path, method, extra):
    dataset = _token_dataset()
    args = make_args(tmp_path, pruning_method=method, num_train_epochs=4, **extra)
    trainer = EMPTrainer(model=_token_model(), args=args, train_dataset=dataset)
    trainer.train()
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    state = trainer.pruning_state
    labelled = torch.ones(len(dataset), dtype=torch.bool)
    labelled[[3, 10]] = False
    assert torch.isnan(state.loss[~labelled]).all()  # visited, never recorded
    assert torch.isfinite(state.loss[labelled & state.seen]).all()


def test_weighted_loss_is_the_mean_over_labelled_rows(tmp_path):
    dataset = _token_dataset(n=8, unlabelled=(2, 5))
    args = make_args(tmp_path, pruning_method="infobatch", num_train_epochs=4)
    trainer = EMPTrainer(model=_token_model(), args=args, train_dataset=dataset)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(8)])
    trainer.pruning_state.tables["weight"][:8] = torch.linspace(1.0, 2.0, 8)
    trainer.model.train()
    torch.manual_seed(0)
    loss = trainer.compute_loss(trainer.model, dict(batch))
    torch.manual_seed(0)
    logits = trainer.model(input_ids=batch["input_ids"]).logits
    labels = batch["labels"]
    token_loss = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none", ignore_index=-100)
    count = (labels != -100).sum(1)
    keep = count > 0
    per_row = token_loss.sum(1)[keep] / count[keep]
    expected = (torch.linspace(1.0, 2.0, 8)[keep] * per_row).mean()
    torch.testing.assert_close(loss, expected)


def test_sequence_rows_labelled_minus_100_are_not_recorded(tmp_path):
    dataset = make_text_dataset(n=32)
    labels = list(dataset["labels"])
    labels[5] = labels[17] = -100
    dataset = dataset.remove_columns("labels").add_column("labels", labels)
    trainer = _train_none(tmp_path, dataset)
    state = trainer.pruning_state
    assert state.frequency.tolist() == [1] * 32  # visited
    assert torch.isnan(state.loss[[5, 17]]).all() and torch.isnan(state.entropy[[5, 17]]).all()
    others = torch.ones(32, dtype=torch.bool)
    others[[5, 17]] = False
    assert torch.isfinite(state.loss[others]).all()


# ---------------------------------------------------------------- 3. a user's compute_loss_func
def _mse_loss(outputs, labels, num_items_in_batch=None):
    return outputs.logits.float().pow(2).mean()


def test_compute_loss_func_with_a_weighted_strategy_is_refused(tmp_path):
    args = make_args(tmp_path, pruning_method="infobatch", num_train_epochs=4)
    with pytest.raises(ValueError, match="per_example_loss_func"):
        EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset(), compute_loss_func=_mse_loss)


def test_weighted_strategy_weights_the_users_per_example_loss(tmp_path):
    def per_example(outputs, labels):
        loss = outputs.logits.float().pow(2).mean(-1)
        return loss, torch.zeros_like(loss)

    args = make_args(tmp_path, pruning_method="infobatch", num_train_epochs=4)
    trainer = EMPTrainer(
        model=make_bert(),
        args=args,
        train_dataset=make_text_dataset(n=8),
        compute_loss_func=_mse_loss,
        per_example_loss_func=per_example,
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(8)])
    trainer.pruning_state.tables["weight"][:8] = torch.linspace(1.0, 2.0, 8)
    trainer.model.train()
    torch.manual_seed(0)
    loss = trainer.compute_loss(trainer.model, dict(batch))
    torch.manual_seed(0)
    logits = trainer.model(input_ids=batch["input_ids"]).logits
    torch.testing.assert_close(loss, (torch.linspace(1.0, 2.0, 8) * logits.float().pow(2).mean(-1)).mean())
