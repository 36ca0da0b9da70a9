"""`EMPTrainer(pruning_method="none")` in place of `Trainer`, as transformers' own Trainer tests use it (issue 21,
causes A-G), and a training set that changes under the trainer (items 3 and 8)."""

import logging
import os

import datasets
import pytest
import torch
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

from emp_hf import EMPConfig, EMPTrainer
from emp_hf_dev.fixtures import make_args, make_bert, make_text_dataset


class RegressionModel(nn.Module):
    """Like transformers' test RegressionModel: y = a * x + b, its own MSE loss; a head emp_hf does not know."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.5))
        self.b = nn.Parameter(torch.tensor(0.0))

    def forward(self, input_x, labels=None):
        y = input_x * self.a + self.b
        return (y,) if labels is None else (nn.functional.mse_loss(y, labels), y)


def regression_dataset(n: int = 64, seed: int = 0) -> datasets.Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g)
    return datasets.Dataset.from_dict({"input_x": x.tolist(), "labels": (2.0 * x + 3.0).tolist()})


COMMON = dict(
    num_train_epochs=2,
    per_device_train_batch_size=8,
    learning_rate=0.1,
    report_to=[],
    logging_steps=3,
    disable_tqdm=True,
    use_cpu=True,
    seed=0,
    save_strategy="no",
)


def _pair(tmp_path, dataset, model_factory=RegressionModel, eval_dataset=None, **kwargs):
    """A plain Trainer run and an EMPTrainer(none) run of the same model, data and arguments."""
    plain_args = TrainingArguments(output_dir=str(tmp_path / "plain"), **{**COMMON, **kwargs})
    plain = Trainer(model=model_factory(), args=plain_args, train_dataset=dataset, eval_dataset=eval_dataset)
    none_args = EMPConfig(output_dir=str(tmp_path / "none"), pruning_method="none", **{**COMMON, **kwargs})
    none = EMPTrainer(model=model_factory(), args=none_args, train_dataset=dataset, eval_dataset=eval_dataset)
    return plain, none


def _assert_same_training(plain, none):
    for p, q in zip(plain.model.parameters(), none.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert plain.state.global_step == none.state.global_step


def test_none_trains_a_model_emp_hf_does_not_know_and_records_visits(tmp_path, caplog):
    """Cause A: a head without per-example losses is no reason to refuse `none`: visits are recorded."""
    with caplog.at_level(logging.WARNING):
        plain, none = _pair(tmp_path, regression_dataset())
    assert "records each row's visits only" in caplog.text
    plain.train()
    none.train()
    _assert_same_training(plain, none)
    assert none.pruning_state.frequency.tolist() == [2] * 64
    assert none.pruning_summary()["pruning/never_visited"] == 0


def test_a_pruning_method_still_refuses_a_model_it_cannot_score(tmp_path):
    args = make_args(tmp_path, pruning_method="emp")
    with pytest.raises(ValueError, match="cannot split the loss of a RegressionModel"):
        EMPTrainer(model=RegressionModel(), args=args, train_dataset=regression_dataset())


class OutOfMemoryOnce(RegressionModel):
    """Fails its first forward pass at the first batch size as a GPU out-of-memory error would."""

    failed = False

    def forward(self, input_x, labels=None):
        if not OutOfMemoryOnce.failed and input_x.shape[0] == 8:
            OutOfMemoryOnce.failed = True
            raise RuntimeError("CUDA out of memory.")
        return super().forward(input_x, labels)


def test_none_takes_auto_find_batch_size_and_does_not_count_the_failed_attempt(tmp_path):
    """Cause B: the retried attempt's visits are the only ones counted."""
    OutOfMemoryOnce.failed = False
    plain, none = _pair(tmp_path, regression_dataset(), OutOfMemoryOnce, auto_find_batch_size=True)
    none.train()
    assert OutOfMemoryOnce.failed and none._train_batch_size < 8
    assert none.pruning_state.frequency.tolist() == [2] * 64
    with pytest.raises(ValueError, match="auto_find_batch_size=True is not supported with pruning_method='emp'"):
        make_args(tmp_path, pruning_method="emp", auto_find_batch_size=True)


class Stream(torch.utils.data.IterableDataset):
    def __iter__(self):
        data = regression_dataset()
        for row in data:
            yield {"input_x": torch.tensor(row["input_x"]), "labels": torch.tensor(row["labels"])}


def test_none_trains_a_streamed_dataset_as_trainer(tmp_path, caplog):
    """Cause C: `none` on an IterableDataset trains as Trainer does, without statistics (one warning)."""
    with caplog.at_level(logging.WARNING):
        plain, none = _pair(tmp_path, Stream(), max_steps=10)
    assert "IterableDataset" in caplog.text
    plain.train()
    output = none.train()
    _assert_same_training(plain, none)
    assert none.pruning_state is None and output.global_step == 10
    with pytest.raises(ValueError, match="pruning_num_rows"):  # a pruned stream needs its number of rows
        EMPTrainer(model=RegressionModel(), args=make_args(tmp_path, pruning_method="emp"), train_dataset=Stream())


def test_log_history_has_the_trainers_entries(tmp_path):
    """Cause D: no log entry of its own; the pruning summary rides on the training logs (the ones with `loss`)."""
    evaluation = regression_dataset(16, seed=1)
    plain, none = _pair(
        tmp_path, regression_dataset(), eval_dataset=evaluation, eval_strategy="epoch", logging_strategy="epoch"
    )
    plain.train()
    none.train()
    assert len(none.state.log_history) == len(plain.state.log_history)
    for ours, theirs in zip(none.state.log_history, plain.state.log_history, strict=True):
        extra = set(ours) - set(theirs)
        assert extra == ({k for k in ours if k.startswith("pruning/")} if "loss" in theirs else set())
        assert set(theirs) <= set(ours)
    logged = [h for h in none.state.log_history if "loss" in h]
    assert [h["pruning/kept_fraction"] for h in logged] == [1.0, 1.0]


def test_train_leaves_output_dir_as_trainer_does_and_save_model_writes_the_state(tmp_path):
    """Cause E: the final pruning state is written with the model (`save_model`), not by `train()` itself."""
    plain, none = _pair(tmp_path, make_text_dataset(32), model_factory=make_bert)
    plain.train()
    none.train()
    listing = sorted(os.listdir(plain.args.output_dir)) if os.path.isdir(plain.args.output_dir) else []
    ours = sorted(os.listdir(none.args.output_dir)) if os.path.isdir(none.args.output_dir) else []
    assert ours == listing
    none.save_model()
    saved = set(os.listdir(none.args.output_dir))
    assert {"pruning_state.pt", "pruning_state.json", "model.safetensors"} <= saved


def test_a_missing_checkpoint_gets_the_trainers_message(tmp_path):
    """Cause F."""
    for method in ("none", "emp"):
        args = make_args(tmp_path / method, pruning_method=method, prune_ratio=None)
        trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset(32))
        with pytest.raises(ValueError, match="Can't find a valid checkpoint at"):
            trainer.train(resume_from_checkpoint=str(tmp_path / "no-such-checkpoint"))
        with pytest.raises(ValueError, match="No valid checkpoint found in output directory"):
            trainer.train(resume_from_checkpoint=True)


def test_none_resumes_with_other_data_as_trainer_and_starts_the_statistics_afresh(tmp_path, caplog):
    """Cause G: `none` resumes where Trainer would (it only warns); the statistics it cannot trust are not used."""
    args = make_args(tmp_path, pruning_method="none", prune_ratio=None, save_strategy="epoch", num_train_epochs=1)
    EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset(32)).train()
    checkpoint = os.path.join(args.output_dir, "checkpoint-4")
    assert os.path.isdir(checkpoint)
    args = make_args(tmp_path, pruning_method="none", prune_ratio=None, save_strategy="no", num_train_epochs=2)
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset(48))
    with caplog.at_level(logging.WARNING):
        trainer.train(resume_from_checkpoint=checkpoint)
    assert "start afresh" in caplog.text
    # epoch 0 resumes after its 4th step (2 of 6 batches left), then epoch 1: only this run's visits count
    assert trainer.pruning_state.num_rows == 48 and int(trainer.pruning_state.frequency.sum()) == 2 * 8 + 48
    pruned = make_args(tmp_path, pruning_method="emp", save_strategy="no", num_train_epochs=2)
    with pytest.raises(ValueError, match="rows"):
        EMPTrainer(model=make_bert(), args=pruned, train_dataset=make_text_dataset(48)).train(checkpoint)


# ---------------------------------------------------------------- the training set changes (items 3 and 8)
def test_a_train_dataset_assigned_after_construction_is_indexed_and_recorded(tmp_path):
    args = make_args(tmp_path, pruning_method="emp", num_train_epochs=3, learning_rate=0.0)
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset(32))
    other = make_text_dataset(48, seed=3)
    trainer.train_dataset = other
    trainer.train()
    state = trainer.pruning_state
    assert state.num_rows == 48 and torch.isfinite(state.loss).all()
    assert state.metadata["dataset_fingerprint"] == other._fingerprint
    assert state.epoch_plan_sizes == [48, 24, 24]


class GrowingList(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = list(rows)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


@pytest.mark.parametrize("change", ["grow", "shrink"])
def test_a_training_set_that_changes_length_mid_run_is_a_clear_error(tmp_path, change):
    data = GrowingList(make_text_dataset(32))

    class Change(TrainerCallback):
        def on_epoch_end(self, args, state, control, **kwargs):
            if change == "grow":
                data.rows.extend(data.rows[:8])
            else:
                del data.rows[-8:]

    args = make_args(tmp_path, pruning_method="emp", num_train_epochs=3)
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=data, callbacks=[Change()])
    with pytest.raises(RuntimeError, match="changed length during training: (40|24) rows at epoch 1, 32"):
        trainer.train()
