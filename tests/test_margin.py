"""The area under the margin (AUM, `pruning_track_margin`): the margin of a batch, its running mean in the tracker,
the refusals, the record's `margin` column and `emp-hf inspect`'s likely mislabelled rows."""

import json

import numpy as np
import pytest
import torch
from transformers import BertForTokenClassification

from emp_hf import EMPTrainer
from emp_hf.cli import main
from emp_hf.core.tracker import ALL_TABLES, PruningState
from emp_hf.integration.losses import margins, per_example_margin
from emp_hf.records.record import PruningRecord, read_record_dir
from emp_hf_dev.fixtures import make_args, make_bert, make_text_dataset


def numpy_margins(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Pleiss et al.'s margin: the assigned label's logit minus the largest other logit."""
    out = np.full(len(labels), np.nan, dtype=np.float64)
    for i, (row, label) in enumerate(zip(logits, labels, strict=True)):
        if label != -100:
            out[i] = row[label] - np.delete(row, label).max()
    return out


def test_margins_match_numpy_on_a_hand_computed_batch():
    logits = np.array(
        [
            [2.0, 1.0, -1.0],  # label 0 is the top logit: 2 - 1 = 1
            [2.0, 1.0, -1.0],  # label 2 is the lowest: -1 - 2 = -3
            [0.5, 0.5, 0.0],  # a tie with another class: 0
            [3.0, -2.0, 4.0],  # unlabelled: NaN
        ],
        dtype=np.float32,
    )
    labels = np.array([0, 2, 1, -100])
    expected = np.array([1.0, -3.0, 0.0, np.nan])
    np.testing.assert_array_equal(numpy_margins(logits, labels), expected)
    got = margins(torch.tensor(logits), torch.tensor(labels))
    assert got.dtype == torch.float32 and got.shape == (4,)
    np.testing.assert_array_equal(got.numpy(), expected.astype(np.float32))
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(16, 5)).astype(np.float32), rng.integers(0, 5, 16)
    got = per_example_margin({"logits": torch.tensor(logits, dtype=torch.bfloat16)}, torch.tensor(labels))
    expected = numpy_margins(torch.tensor(logits, dtype=torch.bfloat16).float().numpy(), labels)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-6)


def test_a_batch_without_single_labels_has_no_margin():
    logits = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="single-label classification batches"):
        per_example_margin({"logits": logits}, torch.zeros(4, 3))  # multi-label targets
    with pytest.raises(ValueError, match="single-label classification batches"):
        per_example_margin({"logits": torch.zeros(4, 1)}, torch.zeros(4, dtype=torch.long))  # one logit


def test_the_tracker_keeps_the_running_mean_over_visits():
    state = PruningState(num_rows=5, track={"loss", "margin"}, buffer_rows=8)
    assert state.tracks_margin and state.margin.dtype == torch.float32
    assert torch.isnan(state.margin).all() and (state.margin_visits == 0).all()
    ones = torch.ones(4)
    # epoch 0: row 3 twice (the first counts), row 4 padding-only; epoch 1: row 2's loss is non-finite
    state.update(torch.tensor([0, 1, 3, 3]), ones, ones, 0, margin=torch.tensor([1.0, -2.0, 0.5, 9.0]))
    state.update(torch.tensor([2, -1]), ones[:2], ones[:2], 0, margin=torch.tensor([4.0, 7.0]))
    state.update(
        torch.tensor([0, 1, 2, 3]),
        torch.tensor([1.0, 1.0, float("nan"), 1.0]),
        ones,
        1,
        margin=torch.tensor([3.0, 1.0, -8.0, float("inf")]),
    )
    expected = [(1.0 + 3.0) / 2, (-2.0 + 1.0) / 2, 4.0, 0.5, float("nan")]
    np.testing.assert_array_equal(state.margin.numpy(), np.array(expected, dtype=np.float32))
    assert state.margin_visits.tolist() == [2, 2, 1, 1, 0]
    assert state.frequency.tolist() == [2, 2, 2, 2, 0]  # non-finite visits still count as visits
    state.update(torch.tensor([0]), ones[:1], ones[:1], 2, margin=torch.tensor([-7.0]))
    assert state.margin[0].item() == pytest.approx((1.0 + 3.0 - 7.0) / 3)
    restored = PruningState(num_rows=5, track={"loss", "margin"})
    restored.load_state_dict(state.state_dict())
    assert torch.equal(restored.margin_visits, state.margin_visits)
    np.testing.assert_array_equal(restored.margin.numpy(), state.margin.numpy())


def test_the_margin_is_opt_in_and_update_says_when_it_is_missing():
    default = PruningState(num_rows=6, track={"loss", "entropy"}, buffer_rows=8)
    assert "margin" not in ALL_TABLES and not PruningState(num_rows=6).tracks_margin  # no strategy keeps it
    assert default.tracked == {"loss", "entropy", "frequency", "last_epoch"}
    assert default.table_bytes() == 7 * (4 + 4 + 2 + 2)
    default.update(torch.tensor([0, 1]), torch.ones(2), torch.ones(2), 0)
    assert default._buffer.values.shape == (2, 8)  # loss and entropy, as before
    with pytest.raises(ValueError, match="keeps no 'margin' table"):
        default.update(torch.tensor([0]), torch.ones(1), torch.ones(1), 0, margin=torch.ones(1))
    with pytest.raises(AttributeError, match="pruning_track_margin=True keeps it"):
        default.margin  # noqa: B018
    tracked = PruningState(num_rows=6, track={"loss", "entropy", "margin"}, buffer_rows=8)
    assert tracked.table_bytes() == default.table_bytes() + 7 * (4 + 4)
    with pytest.raises(ValueError, match="pass margin="):
        tracked.update(torch.tensor([0]), torch.ones(1), torch.ones(1), 0)
    tracked.update(torch.tensor([0]), torch.ones(1), torch.ones(1), 0, margin=torch.ones(1))
    assert tracked._buffer.values.shape == (3, 8)


def _train(tmp_path, name, **kwargs):
    args = make_args(tmp_path / name, num_train_epochs=3, **kwargs)
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset(n=32))
    trainer.train()
    return trainer


@pytest.mark.parametrize("method", ["emp", "infobatch"])  # the forward-hook and the reweighted compute_loss paths
def test_tracking_the_margin_leaves_training_and_the_other_tables_unchanged(tmp_path, method, one_thread):
    off = _train(tmp_path, "off", pruning_method=method)
    on = _train(tmp_path, "on", pruning_method=method, pruning_track_margin=True)
    assert "margin" not in off.pruning_state.tracked
    for (name, a), b in zip(off.model.state_dict().items(), on.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    tables_off, tables_on = off.pruning_state.cpu_tables(), on.pruning_state.cpu_tables()
    assert set(tables_on) == set(tables_off) | {"margin", "margin_visits"}
    for name, table in tables_off.items():
        assert torch.equal(table.view(torch.uint8), tables_on[name].view(torch.uint8)), name
    assert torch.equal(tables_on["margin_visits"], tables_on["frequency"].to(torch.int32))
    assert torch.isfinite(tables_on["margin"]).all()


@pytest.mark.parametrize("smoothing", [0.0, 0.1])  # label smoothing changes the loss, not the margin of the logits
def test_the_margin_is_the_mean_over_the_epochs_of_the_training_forward(tmp_path, smoothing, one_thread):
    """Every row once per epoch in one batch: the mean of the margins of the logits the training forward gave."""
    dataset = make_text_dataset(n=16)
    args = make_args(
        tmp_path,
        pruning_method="none",
        prune_ratio=None,
        num_train_epochs=3,
        per_device_train_batch_size=16,
        pruning_track_margin=True,
        label_smoothing_factor=smoothing,
    )
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=dataset)
    seen = []  # (input_ids, logits) of each training forward (with label smoothing the model gets no labels)
    trainer.model.register_forward_hook(
        lambda module, args, kwargs, outputs: (
            seen.append((kwargs["input_ids"].clone(), outputs.logits.detach())) if module.training else None
        ),
        with_kwargs=True,
    )
    trainer.train()
    row_of = {tuple(ids): i for i, ids in enumerate(dataset["input_ids"])}
    per_row = [[] for _ in range(len(dataset))]
    for ids, logits in seen:
        rows = [row_of[tuple(x.tolist())] for x in ids]
        labels = np.array([dataset["labels"][r] for r in rows])
        for row, m in zip(rows, numpy_margins(logits.numpy(), labels), strict=True):
            per_row[row].append(m)
    assert all(len(m) == 3 for m in per_row)
    expected = np.array([np.mean(m) for m in per_row])
    np.testing.assert_allclose(trainer.pruning_state.margin.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_heads_without_a_margin_are_refused_before_training(tmp_path):
    dataset = make_text_dataset(n=16)
    args = make_args(tmp_path, pruning_track_margin=True)
    token_model = make_bert(model_class=BertForTokenClassification)
    with pytest.raises(ValueError, match="pruning_track_margin=True needs a single-label classification head.*token"):
        EMPTrainer(model=token_model, args=args, train_dataset=dataset)
    with pytest.raises(ValueError, match="a regression head has no classes"):
        EMPTrainer(model=make_bert(num_labels=1), args=args, train_dataset=dataset)
    with pytest.raises(ValueError, match="per_example_loss_func returns losses, not the logits"):
        EMPTrainer(
            model=make_bert(),
            args=args,
            train_dataset=dataset,
            per_example_loss_func=lambda outputs, labels: outputs.logits[:, 0],
        )
    with pytest.raises(ValueError, match="pruning_track_margin=1 is invalid: it must be True or False"):
        make_args(tmp_path, pruning_track_margin=1)


def test_a_checkpoint_without_the_margin_is_not_resumed_with_it(tmp_path, one_thread):
    args = make_args(tmp_path, num_train_epochs=2, save_strategy="epoch")
    EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset(n=16)).train()
    args = make_args(tmp_path, num_train_epochs=3, save_strategy="epoch", pruning_track_margin=True)
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset(n=16))
    with pytest.raises(ValueError, match="pruning_track_margin: checkpoint None, now True"):
        trainer.train(resume_from_checkpoint=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two finished runs, with and without the margin, saved with their models."""
    tmp_path = tmp_path_factory.mktemp("margin-runs")
    torch.set_num_threads(1)
    out = {}
    for name, track in (("with", True), ("without", False)):
        trainer = _train(tmp_path, name, pruning_method="emp", pruning_track_margin=track)
        trainer.save_model()
        out[name] = trainer
    return out


def test_the_record_ranks_rows_by_margin(runs, tmp_path):
    state = runs["with"].pruning_state
    record = PruningRecord.from_state(state)
    margin = state.margin.numpy()
    np.testing.assert_array_equal(record.column("margin"), margin)
    np.testing.assert_array_equal(read_record_dir(record.save(tmp_path / "record")).column("margin"), margin)
    assert record.top_k(5, by="margin", largest=False) == np.argsort(margin, kind="stable")[:5].tolist()
    assert record.top_k(3, by="margin") == np.argsort(-margin, kind="stable")[:3].tolist()
    plain = PruningRecord.from_state(runs["without"].pruning_state)
    assert "margin" not in plain.rows.column_names
    with pytest.raises(ValueError, match="when trained with pruning_track_margin=True"):
        plain.top_k(5, by="margin", largest=False)
    assert "`margin`: the area under the margin" in str(record.card())
    assert "`margin`" not in str(plain.card())


def test_inspect_names_the_likely_mislabelled_rows(runs, capsys):
    with_margin, without = runs["with"], runs["without"]
    lowest = np.argsort(with_margin.pruning_state.margin.numpy(), kind="stable")[:10].tolist()
    assert main(["inspect", with_margin.args.output_dir]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "likely mislabelled" in x)
    assert line.split("likely mislabelled")[1].strip() == (
        f"rows {', '.join(map(str, lowest))} (by the lowest area under the margin (AUM))"
    )
    assert main(["inspect", with_margin.args.output_dir, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["likely_mislabelled"] == {"statistic": "margin", "rows": lowest}
    largest = np.argsort(-without.pruning_state.loss.numpy(), kind="stable")[:10].tolist()
    assert main(["inspect", without.args.output_dir, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["likely_mislabelled"] == {"statistic": "loss", "rows": largest}
    assert main(["inspect", without.args.output_dir]) == 0
    assert "(by the largest last loss)" in capsys.readouterr().out
