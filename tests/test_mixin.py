"""`PruningMixin` on its own: a config that is not a pruning config, and per-example values of the wrong shape."""

import pytest
from transformers import Trainer, TrainingArguments

from emp_hf import EMPConfig, EMPTrainer, PruningArguments, PruningMixin
from emp_hf.integration.losses import per_example_stats
from emp_hf_dev.fixtures import make_args, make_bert


def test_per_example_values_of_the_wrong_shape_fail_instead_of_broadcasting(tmp_path, text_dataset):
    def batch_mean(outputs, labels):  # one value per batch, as a merged (padding-free) batch would give
        loss, entropy = per_example_stats(outputs, labels, "sequence")
        return loss.mean(0, keepdim=True), entropy.mean(0, keepdim=True)

    trainer = EMPTrainer(
        model=make_bert(), args=make_args(tmp_path), train_dataset=text_dataset, per_example_loss_func=batch_mean
    )
    with pytest.raises(ValueError, match=r"one value per example, shape \(8,\), got \(1,\)"):
        trainer.train()


def test_the_mixin_pairs_with_any_trainer_and_config(tmp_path, text_dataset):
    from dataclasses import dataclass

    @dataclass
    class MyConfig(PruningArguments, TrainingArguments):
        pass

    class MyTrainer(PruningMixin, Trainer):
        config_class = MyConfig

    args = MyConfig(**{**make_args(tmp_path).to_dict(), "pruning_method": "emp"})
    trainer = MyTrainer(model=make_bert(), args=args, train_dataset=text_dataset)
    trainer.train()
    assert trainer.pruning_state.epoch_plan_sizes == [96, 48, 48]
    with pytest.raises(TypeError, match=r"replace TrainingArguments\(\.\.\.\) with MyConfig\(\.\.\.\)"):
        MyTrainer(model=make_bert(), args=EMPConfig(output_dir=str(tmp_path)), train_dataset=text_dataset)
