"""`emp_hf.integration.preflight`: settings the pruning cannot honour are refused, with one line, before training."""

import os

import pytest

from emp_hf import EMPTrainer
from emp_hf_dev.fixtures import (
    make_args,
    make_bert,
    make_text_dataset,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("column", ["input_ids", "labels", "attention_mask", "my_target"])
def test_index_column_naming_a_model_input_is_refused(tmp_path, column):
    args = make_args(
        tmp_path, pruning_index_column=column, label_names=["my_target"] if column == "my_target" else None
    )
    with pytest.raises(ValueError, match="pruning_index_column='.*' names a model input"):
        EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset())


def test_pruning_methods_refuse_batch_rebalance(tmp_path):
    args = make_args(tmp_path, train_sampling_strategy="batch_rebalance")
    with pytest.raises(ValueError, match="train_sampling_strategy='batch_rebalance' is not supported"):
        EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset())


def test_drop_last_with_a_plan_smaller_than_a_batch_is_refused_before_training(tmp_path):
    args = make_args(tmp_path, prune_ratio=0.95, dataloader_drop_last=True)
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset())
    with pytest.raises(ValueError, match="a pruned epoch's plan has 5 rows, fewer than one global batch of 8"):
        trainer.train()
    assert trainer.pruning_state.plans == []


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc (read-only even for root)")
def test_unwritable_output_dir_fails_before_training(tmp_path):
    args = make_args(tmp_path)
    args.output_dir = "/proc"  # exists, and nobody can create files in it
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset())
    with pytest.raises(PermissionError, match="output_dir='/proc' is not writable"):
        trainer.train()
    assert trainer.pruning_state.plans == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_output_dir_fails_before_training(tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    args = make_args(tmp_path)
    args.output_dir = str(out)
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset())
    with pytest.raises(PermissionError, match="is not writable"):
        trainer.train()
