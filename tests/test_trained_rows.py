"""Rows that never ran are not recorded as trained: an early stop, `max_steps` and `dataloader_drop_last` (issue 21,
item 7)."""

import pytest
import torch

from emp_hf import EMPTrainer
from emp_hf.records.export import export_pruning_record
from emp_hf_dev.fixtures import StopAt, make_args, make_bert, make_text_dataset


class RowRecorder(EMPTrainer):
    """Records the rows of every training micro-batch, by epoch."""

    def training_step(self, model, inputs, *args, **kwargs):
        self.trained.setdefault(self._epoch, set()).update(inputs[self.args.pruning_index_column].tolist())
        return super().training_step(model, inputs, *args, **kwargs)


def _run(tmp_path, **kwargs):
    callbacks = kwargs.pop("callbacks", [])
    args = make_args(tmp_path, num_train_epochs=3, **kwargs)
    trainer = RowRecorder(model=make_bert(), args=args, train_dataset=make_text_dataset(100), callbacks=callbacks)
    trainer.trained = {}
    trainer.train()
    return trainer


def _recorded_rows(trainer, epoch):
    """The rows the run's pruning record says epoch `epoch` trained (and the state agrees)."""
    plan = trainer.pruning_state.plans[epoch]
    trained = trainer.pruning_state.metadata.get("trained_rows", {}).get(str(epoch), len(plan))
    record = export_pruning_record(trainer.pruning_state)
    assert record.plan(epoch) == plan[:trained].tolist()
    assert record.column("frequency").tolist() == trainer.pruning_state.frequency.tolist()
    kept = record.kept_matrix()[epoch]
    assert set(kept.nonzero()[0].tolist()) == set(record.plan(epoch))
    return set(record.plan(epoch))


@pytest.mark.parametrize("method", ["emp", "none"])
def test_an_early_stop_records_only_the_rows_that_ran(tmp_path, method):
    ratio = {"prune_ratio": None} if method == "none" else {}
    trainer = _run(tmp_path, pruning_method=method, callbacks=[StopAt(16)], **ratio)  # 13 steps, then 3 of 7
    assert trainer.state.global_step == 16
    last = max(trainer.trained)
    assert len(trainer.pruning_state.plans) == last + 1
    for epoch, rows in trainer.trained.items():
        assert _recorded_rows(trainer, epoch) == rows
    assert len(trainer.trained[last]) == 3 * 8
    assert int(trainer.pruning_state.frequency.sum()) == sum(len(rows) for rows in trainer.trained.values())


@pytest.mark.parametrize("method", ["emp", "none"])
def test_drop_last_records_only_the_rows_that_ran(tmp_path, method):
    ratio = {"prune_ratio": None} if method == "none" else {}
    trainer = _run(tmp_path, pruning_method=method, dataloader_drop_last=True, **ratio)
    for epoch, rows in trainer.trained.items():
        assert _recorded_rows(trainer, epoch) == rows
        assert len(rows) % 8 == 0
    assert len(trainer.trained[0]) == 96  # 100 rows: the last 4 never ran


def test_max_steps_mid_pass_records_only_the_rows_that_ran(tmp_path):
    trainer = _run(tmp_path, pruning_method="random", max_steps=20)
    for epoch, rows in trainer.trained.items():
        assert _recorded_rows(trainer, epoch) == rows
    assert torch.equal(
        trainer.pruning_state.frequency.sum(), torch.tensor(sum(len(r) for r in trainer.trained.values()))
    )
