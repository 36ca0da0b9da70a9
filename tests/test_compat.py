"""The Trainer-internals canary (`emp_hf.integration.compat`): passes on the pinned transformers, fails loudly on a
change."""

import functools

import pytest
import transformers
from transformers import Trainer

from emp_hf import EMPTrainer
from emp_hf.integration.compat import (
    TESTED_TRANSFORMERS,
    TrainingValues,
    TransformersInternalsError,
    assert_trainer_internals,
    check_trainer_internals,
    ensure_trainer_internals,
)
from emp_hf_dev.fixtures import make_args, make_bert


def test_canary_passes_on_the_installed_transformers():
    assert check_trainer_internals() == []
    assert_trainer_internals()


def test_canary_fails_with_one_message_naming_the_tested_range(monkeypatch):
    def renamed(self, model, epoch, train_dataloader, steps_per_epoch, num_update_steps_per_epoch, **kwargs):
        raise AssertionError("never called")

    monkeypatch.setattr(Trainer, "_run_epoch", renamed)
    with pytest.raises(TransformersInternalsError) as error:
        assert_trainer_internals()
    message = str(error.value)
    assert f"transformers{TESTED_TRANSFORMERS}" in message
    assert transformers.__version__ in message
    assert "Trainer._run_epoch" in message and "steps_per_epoch" in message


def test_canary_checks_the_tuple_layout(monkeypatch):
    source = (
        "def _inner_training_loop(self):\n"
        "    (num_train_epochs, num_update_steps_per_epoch, num_examples, total_train_batch_size, num_train_samples,\n"
        "     steps_in_epoch, max_steps) = self.set_initial_training_values(args, train_dataloader)\n"
    )
    real_getsource = __import__("inspect").getsource
    monkeypatch.setattr(
        "emp_hf.integration.compat.inspect.getsource",
        lambda f: source if getattr(f, "__name__", "") == "_inner_training_loop" else real_getsource(f),
    )
    problems = check_trainer_internals()
    assert any("set_initial_training_values returns" in p for p in problems)
    assert any("_run_epoch is not called" in p for p in problems)


def test_canary_checks_the_lr_lambdas(monkeypatch):
    real = transformers.get_scheduler

    def plain_lambdas(name, optimizer, **kwargs):
        scheduler = real(name, optimizer, **kwargs)
        scheduler.lr_lambdas = [lambda step: 1.0 for _ in scheduler.lr_lambdas]
        return scheduler

    monkeypatch.setattr(transformers, "get_scheduler", plain_lambdas)
    assert any("num_training_steps keyword" in p for p in check_trainer_internals())


def test_training_refuses_to_start_on_changed_internals(tmp_path, text_dataset, monkeypatch):
    def changed(self, args, dataloader, extra):
        raise AssertionError("never called")

    monkeypatch.setattr(Trainer, "set_initial_training_values", changed)
    monkeypatch.setattr("emp_hf.integration.compat._checked", functools.cache(assert_trainer_internals))
    trainer = EMPTrainer(model=make_bert(), args=make_args(tmp_path), train_dataset=text_dataset)
    with pytest.raises(TransformersInternalsError, match="set_initial_training_values"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_the_checked_class_is_the_one_the_mixin_was_mixed_into(monkeypatch):
    from emp_hf.integration.seq2seq import EMPSeq2SeqTrainer

    seen = []
    monkeypatch.setattr("emp_hf.integration.compat._checked", seen.append)
    ensure_trainer_internals(EMPTrainer)
    ensure_trainer_internals(type("Sub", (EMPTrainer,), {}))
    ensure_trainer_internals(EMPSeq2SeqTrainer)
    assert seen == [Trainer, Trainer, transformers.Seq2SeqTrainer]


def test_training_values_name_the_tuple():
    values = TrainingValues(3, 10, 96, 288, 8, 12, 30)
    assert values._replace(max_steps=20) == (3, 10, 96, 288, 8, 12, 20)
    assert TrainingValues._fields[5] == "steps_in_epoch"


@pytest.mark.parametrize("attribute", ["_train_batch_size", "_signature_columns", "is_in_train"])
def test_canary_checks_the_private_attributes_the_mixin_reads(monkeypatch, attribute):
    import emp_hf.integration.compat as compat

    method = compat.EXPECTED_ATTRIBUTES[attribute]
    original = compat._source
    target = getattr(Trainer, method)

    def without(function):
        source = original(function)
        return source.replace(f"self.{attribute} =", "self.renamed =") if function is target else source

    monkeypatch.setattr(compat, "_source", without)
    assert check_trainer_internals() == [f"Trainer.{method} no longer sets self.{attribute}"]


@pytest.mark.parametrize("name", ["training_step", "log", "save_model", "_get_output_dir"])
def test_canary_checks_the_methods_the_mixin_overrides_or_calls(monkeypatch, name):
    monkeypatch.setattr(Trainer, name, lambda self, changed: None)
    assert any(f"Trainer.{name}" in problem for problem in check_trainer_internals())


def test_a_trainer_method_wrapped_by_other_code_is_not_blamed_on_the_transformers_version(monkeypatch):
    """A profiler or patch that wraps `Trainer.train` (without `functools.wraps`) leaves nothing to read: the
    attribute check is skipped there instead of refusing the installed transformers."""
    original = Trainer.train

    def wrapped(self, *args, **kwargs):
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train", wrapped)
    assert check_trainer_internals() == []
