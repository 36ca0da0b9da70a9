"""Per-example loss and entropy for every supported head, checked against the models' own losses."""

import math

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import (
    BertConfig,
    BertForTokenClassification,
    GPT2Config,
    GPT2LMHeadModel,
)

from emp_hf import EMPTrainer
from emp_hf.integration.losses import categorical_stats, infer_task, per_example_stats, sequence_stats, token_stats
from emp_hf_dev.fixtures import (
    VOCAB,
    make_args,
    make_bert,
    make_text_dataset,
    train_none,
)


def numpy_stats(logits: np.ndarray, labels: np.ndarray, eps: float = 0.0):
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    nll = -logp[np.arange(len(labels)), labels]
    loss = (1 - eps) * nll - eps * logp.mean(-1)
    return loss, -(np.exp(logp) * logp).sum(-1)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_categorical_matches_numpy(eps):
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(6, 5)).astype(np.float32), rng.integers(0, 5, 6)
    loss, entropy = categorical_stats(torch.tensor(logits), torch.tensor(labels), eps)
    ref_loss, ref_entropy = numpy_stats(logits.astype(np.float64), labels, eps)
    np.testing.assert_allclose(loss.numpy(), ref_loss, rtol=1e-5)
    np.testing.assert_allclose(entropy.numpy(), ref_entropy, rtol=1e-5)
    # uniform logits have entropy log C
    assert categorical_stats(torch.zeros(1, 5), torch.tensor([0]))[1].item() == pytest.approx(math.log(5))


def test_sequence_classification_mean_is_model_loss():
    model = make_bert(num_labels=3)
    ids = torch.randint(6, VOCAB, (5, 8))
    labels = torch.tensor([0, 1, 2, 1, 0])
    out = model(input_ids=ids, labels=labels)
    loss, entropy = per_example_stats(out, labels, infer_task(model))
    assert loss.mean().item() == pytest.approx(out.loss.item(), rel=1e-5)
    assert (entropy > 0).all() and (entropy <= math.log(3) + 1e-6).all()


def test_regression_and_multilabel():
    model = make_bert(num_labels=1)
    ids = torch.randint(6, VOCAB, (4, 8))
    labels = torch.tensor([0.5, 1.0, -1.0, 2.0])
    out = model(input_ids=ids, labels=labels)
    loss, entropy = per_example_stats(out, labels, "sequence")
    assert loss.mean().item() == pytest.approx(out.loss.item(), rel=1e-5)
    assert torch.equal(entropy, torch.zeros(4))

    model = make_bert(num_labels=3, problem_type="multi_label_classification")
    multi = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    out = model(input_ids=ids, labels=multi)
    loss, entropy = per_example_stats(out, multi, "sequence", problem_type="multi_label_classification")
    assert loss.mean().item() == pytest.approx(out.loss.item(), rel=1e-5)
    p = torch.sigmoid(out.logits.double())
    bernoulli = -(p * p.log() + (1 - p) * (1 - p).log()).mean(-1)
    torch.testing.assert_close(entropy.double(), bernoulli, rtol=1e-5, atol=1e-6)
    # multi-label is also inferred from float labels
    torch.testing.assert_close(sequence_stats(out.logits, multi)[0], loss)


def test_token_classification_ignores_padding_tokens():
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=4,
    )
    model = BertForTokenClassification(config)
    ids = torch.randint(6, VOCAB, (3, 7))
    labels = torch.randint(0, 4, (3, 7))
    labels[0, 4:] = -100
    labels[2, :2] = -100
    out = model(input_ids=ids, labels=labels)
    assert infer_task(model) == "token"
    loss, entropy = per_example_stats(out, labels, "token")
    counts = (labels != -100).sum(1).float()
    # the model's loss is the token mean: the count-weighted mean of per-example means
    assert ((loss * counts).sum() / counts.sum()).item() == pytest.approx(out.loss.item(), rel=1e-5)
    ref0, _ = numpy_stats(out.logits[0, :4].detach().double().numpy(), labels[0, :4].numpy())
    assert loss[0].item() == pytest.approx(ref0.mean(), rel=1e-5)
    assert torch.isfinite(entropy).all()


def test_causal_lm_shifts_labels():
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=1, n_head=2, n_positions=32))
    assert infer_task(model) == "causal_lm"
    ids = torch.randint(0, VOCAB, (3, 9))
    labels = ids.clone()
    labels[1, 6:] = -100
    out = model(input_ids=ids, labels=labels)
    loss, _ = per_example_stats(out, labels, "causal_lm")
    counts = (labels[:, 1:] != -100).sum(1).float()
    assert ((loss * counts).sum() / counts.sum()).item() == pytest.approx(out.loss.item(), rel=1e-5)
    # an example without any labelled token is NaN (counted as visited, statistics unchanged)
    empty = torch.full_like(labels, -100)
    assert torch.isnan(token_stats(out.logits, empty, shift=True)[0]).all()


def test_causal_lm_trains_with_pruning(tmp_path):
    import datasets

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=1, n_head=2, n_positions=32))
    ids = torch.randint(0, VOCAB, (40, 10)).tolist()
    data = datasets.Dataset.from_dict({"input_ids": ids, "labels": ids})
    trainer = EMPTrainer(model=model, args=make_args(tmp_path, pruning_method="emp"), train_dataset=data)
    trainer.train()
    state = trainer.pruning_state
    assert int(state.frequency.sum()) == sum(state.epoch_plan_sizes)
    assert torch.isfinite(state.loss).all()


def test_regression_emp_warns_once(tmp_path, caplog):
    data = make_text_dataset(32).map(lambda row: {"labels": float(row["labels"])})
    trainer = EMPTrainer(
        model=make_bert(num_labels=1), args=make_args(tmp_path, pruning_method="emp"), train_dataset=data
    )
    from transformers.utils import logging as hf_logging

    hf_logging.enable_propagation()
    with caplog.at_level("WARNING"):
        trainer.train()
    assert sum("reduces to loss-only" in r.message for r in caplog.records) == 1
    assert float(trainer.pruning_state.entropy.abs().max()) == 0.0


# ---- Rows without a label, and a user's per-example loss under the weighted strategies.
def _token_dataset(n: int = 32, seq_len: int = 8, unlabelled=(3, 10)) -> datasets.Dataset:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(6, VOCAB, (n, seq_len), generator=g)
    labels = (ids % 2).masked_fill(torch.rand(n, seq_len, generator=g) < 0.3, -100)
    labels[list(unlabelled)] = -100
    return datasets.Dataset.from_dict({"input_ids": ids.tolist(), "labels": labels.tolist()})


def _token_model() -> BertForTokenClassification:
    return make_bert(model_class=BertForTokenClassification)


@pytest.mark.usefixtures("one_thread")
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


@pytest.mark.usefixtures("one_thread")
def test_weighted_loss_is_the_mean_over_labelled_rows(tmp_path):
    """A token head's reweighted loss weights each labelled token by its row's weight, normalised as the model's
    own loss (over the micro-batch's labelled tokens): the Trainer's loss when every weight is 1."""
    dataset = _token_dataset(n=8, unlabelled=(2, 5))
    args = make_args(tmp_path, pruning_method="infobatch", num_train_epochs=4, learning_rate=0.0)
    trainer = EMPTrainer(model=_token_model(), args=args, train_dataset=dataset)
    trainer.create_optimizer_and_scheduler(num_training_steps=1)
    trainer.current_gradient_accumulation_steps = 1
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(8)])
    trainer.pruning_state.set_weights(torch.linspace(1.0, 2.0, 8))
    torch.manual_seed(0)
    loss = trainer.training_step(trainer.model, dict(batch))
    torch.manual_seed(0)
    logits = trainer.model(input_ids=batch["input_ids"]).logits
    labels = batch["labels"]
    token_loss = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none", ignore_index=-100)
    weight = torch.linspace(1.0, 2.0, 8)[:, None].expand_as(labels)
    expected = (weight * token_loss).sum() / (labels != -100).sum()
    torch.testing.assert_close(loss, expected)


@pytest.mark.usefixtures("one_thread")
def test_sequence_rows_labelled_minus_100_are_not_recorded(tmp_path):
    dataset = make_text_dataset(n=32)
    labels = list(dataset["labels"])
    labels[5] = labels[17] = -100
    dataset = dataset.remove_columns("labels").add_column("labels", labels)
    trainer = train_none(tmp_path, dataset)
    state = trainer.pruning_state
    assert state.frequency.tolist() == [1] * 32  # visited
    assert torch.isnan(state.loss[[5, 17]]).all() and torch.isnan(state.entropy[[5, 17]]).all()
    others = torch.ones(32, dtype=torch.bool)
    others[[5, 17]] = False
    assert torch.isfinite(state.loss[others]).all()


def _mse_loss(outputs, labels, num_items_in_batch=None):
    return outputs.logits.float().pow(2).mean()


@pytest.mark.usefixtures("one_thread")
def test_compute_loss_func_with_a_weighted_strategy_is_refused(tmp_path):
    args = make_args(tmp_path, pruning_method="infobatch", num_train_epochs=4)
    with pytest.raises(ValueError, match="per_example_loss_func"):
        EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset(), compute_loss_func=_mse_loss)


@pytest.mark.usefixtures("one_thread")
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
    trainer.pruning_state.set_weights(torch.linspace(1.0, 2.0, 8))
    trainer.model.train()
    torch.manual_seed(0)
    loss = trainer.compute_loss(trainer.model, dict(batch))
    torch.manual_seed(0)
    logits = trainer.model(input_ids=batch["input_ids"]).logits
    torch.testing.assert_close(loss, (torch.linspace(1.0, 2.0, 8) * logits.float().pow(2).mean(-1)).mean())
