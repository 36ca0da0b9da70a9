"""`EMPSeq2SeqTrainer`/`EMPSeq2SeqConfig`: an encoder-decoder LM (tiny T5 from a config) pruned epoch by epoch."""

import pytest
import torch
from transformers import DataCollatorForSeq2Seq, HfArgumentParser

from emp_hf.core.schedule import StepCounter
from emp_hf.integration.seq2seq import EMPSeq2SeqConfig, EMPSeq2SeqTrainer
from emp_hf_dev.fixtures import TRAINING_DEFAULTS, make_prompt_completion_dataset, make_tiny_t5, make_word_tokenizer


@pytest.fixture
def seq2seq_data():
    data = make_prompt_completion_dataset(32)
    tokenizer = make_word_tokenizer(list(data["prompt"]) + list(data["completion"]))

    def tokenize(row):
        return {
            "input_ids": tokenizer(row["prompt"])["input_ids"],
            "labels": tokenizer(row["completion"] + " <eos>")["input_ids"],
        }

    return data.map(tokenize, remove_columns=["prompt", "completion"]), tokenizer


def make_trainer(tmp_path, seq2seq_data, **kwargs) -> EMPSeq2SeqTrainer:
    data, tokenizer = seq2seq_data
    args = EMPSeq2SeqConfig(**{"output_dir": str(tmp_path / "out"), **TRAINING_DEFAULTS, **kwargs})
    model = make_tiny_t5(len(tokenizer))
    return EMPSeq2SeqTrainer(
        model=model,
        args=args,
        train_dataset=data,
        eval_dataset=data,
        processing_class=tokenizer,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
    )


def test_config_parses_with_hf_argument_parser():
    flags = ["--output_dir", "x", "--pruning_method", "ucb", "--predict_with_generate", "true", "--use_cpu", "true"]
    (args,) = HfArgumentParser(EMPSeq2SeqConfig).parse_args_into_dataclasses(flags)
    assert (args.pruning_method, args.prune_ratio, args.predict_with_generate) == ("ucb", 0.5, True)
    with pytest.raises(ValueError, match="EMPSeq2SeqConfig.prune_ratio"):
        EMPSeq2SeqConfig(output_dir="x", prune_ratio=-0.1)


def test_recorded_loss_is_each_rows_decoder_loss(tmp_path, seq2seq_data, one_thread):
    """With lr 0 the model never changes: each recorded loss is the model's loss on that row alone."""
    trainer = make_trainer(tmp_path, seq2seq_data, pruning_method="none", num_train_epochs=1, learning_rate=0.0)
    trainer.train()
    model = trainer.model.eval()
    with torch.no_grad():
        expected = [
            model(input_ids=torch.tensor([row["input_ids"]]), labels=torch.tensor([row["labels"]])).loss.item()
            for row in trainer.train_dataset
        ]
    torch.testing.assert_close(trainer.pruning_state.loss, torch.tensor(expected), rtol=1e-4, atol=1e-5)
    assert (trainer.pruning_state.entropy > 0).all()


def test_seq2seq_prunes_and_still_evaluates_with_generate(tmp_path, seq2seq_data, one_thread):
    trainer = make_trainer(
        tmp_path, seq2seq_data, pruning_method="emp", prune_ratio=0.5, predict_with_generate=True,
        generation_max_length=4,
    )  # fmt: skip
    output = trainer.train()
    state = trainer.pruning_state
    assert state.epoch_plan_sizes == [32, 16, 16]
    assert int(state.frequency.sum()) == 64
    assert output.global_step == sum(StepCounter(8).update_steps(n) for n in state.epoch_plan_sizes)
    metrics = trainer.evaluate()
    assert metrics["eval_loss"] > 0
