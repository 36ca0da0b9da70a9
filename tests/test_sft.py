"""`EMPSFTTrainer`/`EMPSFTConfig` (TRL): per-example loss of completion-only and padding-free batches, pruning."""

import math

import pytest
import torch
from transformers import HfArgumentParser

from emp_hf_dev.fixtures import TRAINING_DEFAULTS, make_prompt_completion_dataset, make_tiny_llama, make_word_tokenizer

trl = pytest.importorskip("trl")

from emp_hf import select_rows  # noqa: E402
from emp_hf.core.schedule import StepCounter  # noqa: E402
from emp_hf.integration.sft import (  # noqa: E402
    _FUSED_LM_HEAD,
    EMPSFTConfig,
    EMPSFTTrainer,
    causal_lm_stats,
    fused_causal_lm_stats,
    is_fused_output,
)
from emp_hf.records.export import export_pruning_record  # noqa: E402
from emp_hf.records.record import DatasetMismatchError  # noqa: E402
from emp_hf_dev.offline_data import sentiment_available  # noqa: E402

SFT_DEFAULTS = dict(TRAINING_DEFAULTS, bf16=False, activation_checkpointing=False)  # SFTConfig: bf16 on


@pytest.fixture
def sft_data():
    data = make_prompt_completion_dataset(32)
    return data, make_word_tokenizer(list(data["prompt"]) + list(data["completion"]))


def make_sft_args(tmp_path, **kwargs) -> EMPSFTConfig:
    return EMPSFTConfig(**{"output_dir": str(tmp_path / "out"), **SFT_DEFAULTS, **kwargs})


def make_sft_trainer(tmp_path, sft_data, **kwargs) -> EMPSFTTrainer:
    data, tokenizer = sft_data
    args = make_sft_args(tmp_path, **kwargs)
    return EMPSFTTrainer(
        model=make_tiny_llama(len(tokenizer)), args=args, train_dataset=data, processing_class=tokenizer
    )


def hand_losses(trainer: EMPSFTTrainer, dft: bool = False) -> torch.Tensor:
    """Each row's loss from a forward pass over that row alone (labels as TRL built them)."""
    losses = []
    model = trainer.model.eval()
    with torch.no_grad():
        for row in trainer.train_dataset:
            ids, labels = torch.tensor([row["input_ids"]]), torch.tensor([row["labels"]])
            if not dft:
                losses.append(model(input_ids=ids, labels=labels).loss.item())
                continue
            log_probs = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
            targets, mask = labels[0, 1:], labels[0, 1:] != -100
            token_log_probs = log_probs[mask].gather(-1, targets[mask].unsqueeze(-1)).squeeze(-1)
            losses.append((-token_log_probs.exp() * token_log_probs).mean().item())
    return torch.tensor(losses)


@pytest.mark.skipif(not _FUSED_LM_HEAD, reason="TRL < 1.15: 'chunked_nll' builds no logits and is refused")
def test_chunked_nll_is_read_as_the_fused_nll_it_aliases(tmp_path):
    assert make_sft_args(tmp_path, loss_type="chunked_nll").loss_type == "nll"


def test_config_parses_with_hf_and_trl_parsers():
    flags = ["--output_dir", "x", "--pruning_method", "infobatch", "--prune_ratio", "0.3", "--max_length", "64"]
    (hf_args,) = HfArgumentParser(EMPSFTConfig).parse_args_into_dataclasses([*flags, "--use_cpu", "true"])
    (trl_args,) = trl.TrlParser(EMPSFTConfig).parse_args_and_config([*flags, "--use_cpu", "true"])
    for args in (hf_args, trl_args):
        assert (args.pruning_method, args.prune_ratio, args.max_length) == ("infobatch", 0.3, 64)
        assert args.pruning_anneal_fraction == 0.125  # the pruning defaults were resolved
        assert args.loss_type == "nll"  # TRL's chunked_nll has no logits to take per-example losses from


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("packing", True, "cannot be told apart"),
        pytest.param(
            "loss_type",
            "chunked_nll",
            "choose one of",
            marks=pytest.mark.skipif(_FUSED_LM_HEAD, reason="TRL >= 1.15: an alias of its fused 'nll'"),
        ),
        ("use_liger_kernel", True, "no logits"),
        ("prune_ratio", 1.5, "EMPSFTConfig.prune_ratio"),
    ],
)
def test_config_refuses_what_cannot_be_pruned(tmp_path, field, value, message):
    with pytest.raises(ValueError, match=message):
        make_sft_args(tmp_path, **{field: value})


def test_trainer_needs_its_config(tmp_path, sft_data):
    data, tokenizer = sft_data
    with pytest.raises(TypeError, match=r"EMPSFTConfig\(\.\.\.\)"):
        EMPSFTTrainer(
            model=make_tiny_llama(len(tokenizer)),
            args=trl.SFTConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False),
            train_dataset=data,
            processing_class=tokenizer,
        )


def test_causal_lm_stats_against_a_hand_computation():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 5, generator=g)
    labels = torch.tensor([[-100, -100, 2, 3, 4, -100], [-100, 1, 1, -100, -100, -100], [0, 1, 2, 3, 4, 0]])
    loss, entropy = causal_lm_stats(logits, labels)
    for b in range(3):
        terms = [
            (-logits[b, t - 1].log_softmax(-1)[labels[b, t]], torch.distributions.Categorical(logits=logits[b, t - 1]))
            for t in range(1, 6)
            if labels[b, t] != -100
        ]
        assert loss[b].item() == pytest.approx(sum(n.item() for n, _ in terms) / len(terms), rel=1e-5)
        assert entropy[b].item() == pytest.approx(sum(d.entropy().item() for _, d in terms) / len(terms), rel=1e-5)


def test_padding_free_stats_split_the_flattened_row_into_examples():
    """A padding-free row (examples back to back, pad at the end) gives each example its padded-batch stats."""
    g = torch.Generator().manual_seed(1)
    lengths, vocab = [4, 2, 5], 7
    logits = [torch.randn(n, vocab, generator=g) for n in lengths]
    labels = [torch.randint(0, vocab, (n,), generator=g) for n in lengths]
    labels[0][:2] = -100  # a prompt
    padded_logits = torch.zeros(3, 5, vocab)
    padded_labels = torch.full((3, 5), -100)
    for i, n in enumerate(lengths):
        padded_logits[i, :n], padded_labels[i, :n] = logits[i], labels[i]
    expected = causal_lm_stats(padded_logits, padded_labels)
    flat_labels = torch.cat([torch.cat([torch.tensor([-100]), lab[1:]]) for lab in labels] + [torch.full((2,), -100)])
    flat_logits = torch.cat([*logits, torch.zeros(2, vocab)])[None]
    position_ids = torch.cat([torch.arange(n) for n in lengths] + [torch.zeros(2, dtype=torch.long)])[None]
    got = causal_lm_stats(flat_logits, flat_labels[None], position_ids=position_ids, num_examples=3)
    for e, o in zip(expected, got, strict=True):
        torch.testing.assert_close(o, e)


def _fused_outputs(logits: torch.Tensor, labels: torch.Tensor):
    """What TRL's fused LM head returns for these logits (TRL >= 1.16): per-next-token log-probs of the labels,
    entropy and label mask, zero where no loss is taken; no logits."""
    from types import SimpleNamespace

    log_probs = logits[:, :-1].log_softmax(-1)
    targets = labels[:, 1:]
    mask = targets != -100
    chosen = log_probs.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1) * mask
    entropy = -(log_probs.exp() * log_probs).sum(-1) * mask
    return SimpleNamespace(log_probs=chosen, entropy=entropy, label_mask=mask, logits=None)


@pytest.mark.parametrize("dft", [False, True])
def test_fused_lm_head_stats_equal_the_logits_stats(dft):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 5, generator=g)
    labels = torch.tensor([[-100, -100, 2, 3, 4, -100], [-100, 1, 1, -100, -100, -100], [0, 1, 2, 3, 4, 0]])
    outputs = _fused_outputs(logits, labels)
    assert is_fused_output(outputs)
    expected = causal_lm_stats(logits, labels, dft=dft)
    for got, want in zip(fused_causal_lm_stats(outputs, dft=dft), expected, strict=True):
        torch.testing.assert_close(got, want)
    position_ids = torch.tensor([[0, 1, 2, 0, 1, 2]])  # one padding-free row holding two examples
    flat = _fused_outputs(logits[:1], labels[2:3])
    got = fused_causal_lm_stats(flat, dft=dft, position_ids=position_ids, num_examples=2)
    expected = causal_lm_stats(logits[:1], labels[2:3], dft=dft, position_ids=position_ids, num_examples=2)
    for g_, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g_, e)


def test_recorded_loss_is_each_rows_completion_loss(tmp_path, sft_data, one_thread):
    """With lr 0 the model never changes: every recorded loss equals that row's loss computed alone."""
    trainer = make_sft_trainer(tmp_path, sft_data, pruning_method="none", num_train_epochs=1, learning_rate=0.0)
    assert trainer.completion_only_loss
    trainer.train()
    state = trainer.pruning_state
    expected = hand_losses(trainer)
    torch.testing.assert_close(state.loss, expected, rtol=1e-4, atol=1e-5)
    first = trainer.train_dataset[0]
    assert sum(label != -100 for label in first["labels"]) == 2  # "positive"/"negative" and <eos>: prompt masked
    assert state.frequency.tolist() == [1] * len(expected)
    assert torch.isfinite(state.entropy).all() and (state.entropy > 0).all()


def test_dft_loss_is_recorded_per_example(tmp_path, sft_data, one_thread):
    trainer = make_sft_trainer(
        tmp_path, sft_data, pruning_method="none", num_train_epochs=1, learning_rate=0.0, loss_type="dft"
    )
    trainer.train()
    torch.testing.assert_close(trainer.pruning_state.loss, hand_losses(trainer, dft=True), rtol=1e-4, atol=1e-5)


def test_padding_free_batches_record_the_padded_runs_statistics(tmp_path, sft_data, one_thread):
    runs = {}
    for padding_free in (False, True):
        trainer = make_sft_trainer(
            tmp_path / str(padding_free),
            sft_data,
            pruning_method="emp",
            prune_ratio=0.5,
            padding_free=padding_free,
            max_length=None,
        )
        assert trainer.padding_free == padding_free
        trainer.train()
        runs[padding_free] = trainer.pruning_state
    padded, flat = runs[False], runs[True]
    assert flat.epoch_plan_sizes == [32, 16, 16]
    assert all(torch.equal(a, b) for a, b in zip(flat.plans, padded.plans, strict=True))
    torch.testing.assert_close(flat.loss, padded.loss, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(flat.entropy, padded.entropy, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["emp", "infobatch", "random"])
def test_sft_prunes_with_the_promised_steps(tmp_path, sft_data, method, one_thread):
    trainer = make_sft_trainer(tmp_path, sft_data, pruning_method=method, prune_ratio=0.5)
    output = trainer.train()
    state = trainer.pruning_state
    sizes = state.epoch_plan_sizes
    assert sizes[0] == 32 and sizes[1] < 32  # warm-up, then pruned (InfoBatch anneals the last epoch)
    assert int(state.frequency.sum()) == sum(sizes)  # every planned row visited once per epoch
    assert output.global_step == sum(StepCounter(8).update_steps(n) for n in sizes)
    assert output.metrics["train_realized_saving"] == pytest.approx(1 - sum(sizes) / (3 * 32))
    assert math.isfinite(output.training_loss)


@pytest.fixture
def sft_recipe():
    """`recipes/sft.py` as a module (its runtime and data come from `emp_hf_dev`, as when run as a script)."""
    import importlib.util
    import sys
    from pathlib import Path

    recipes = Path(__file__).resolve().parents[1] / "recipes"
    spec = importlib.util.spec_from_file_location("recipes_sft", recipes / "sft.py")
    recipe = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = recipe
    try:
        spec.loader.exec_module(recipe)
        yield recipe
    finally:
        sys.modules.pop("recipes_sft", None)


needs_sentiment = pytest.mark.skipif(not sentiment_available(), reason="sentiment sentences not installed")


@needs_sentiment
def test_sft_recipe_runs_offline(tmp_path, sft_recipe, one_thread, capsys):
    """`recipes/sft.py` on the real movie-review sentences as instructions, with a tiny Llama from a config."""
    import json

    out = tmp_path / "sft"
    results = sft_recipe.main(
        ["--output_dir", str(out), "--max_train_samples", "64", "--max_eval_samples", "32"]
        + ["--num_train_epochs", "2", "--per_device_train_batch_size", "8", "--learning_rate", "1e-3"]
        + ["--pruning_method", "emp", "--prune_ratio", "0.5", "--tiny_hidden_size", "16", "--tiny_num_layers", "1"]
        + ["--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true", "--use_cpu", "true"]
        + ["--bf16", "false", "--gradient_checkpointing", "false"]
    )
    saved = json.loads((out / "all_results.json").read_text())
    assert saved["plan_sizes"] == [64, 32]
    assert saved["realized_saving"] == pytest.approx(0.25)
    assert saved["optimizer_steps"] == 8 + 4 and saved["full_data_optimizer_steps"] == 16
    assert 0.0 <= saved["eval_accuracy"] <= 1.0 and results["eval_accuracy"] == saved["eval_accuracy"]
    printed = capsys.readouterr().out
    assert "realised saving    25.0%" in printed and "eval_accuracy" in printed


@needs_sentiment
def test_sft_recipe_accuracy_matches_one_prompt_at_a_time(sft_recipe, one_thread):
    """The batched (right-padded) accuracy equals the label ranking read off each unpadded prompt alone."""
    args = sft_recipe.ScriptArguments(max_train_samples=200, max_eval_samples=40, tiny_hidden_size=16)
    data, names = sft_recipe.load_data(args)
    assert names == ["negative", "positive"] and data["train"][0]["completion"] in (" negative", " positive")
    model, tokenizer = sft_recipe.tiny_model_and_tokenizer(args, data["train"], seed=0)
    label_ids = [tokenizer.convert_tokens_to_ids(name) for name in names]
    hits = []
    with torch.no_grad():
        for row in data["test"]:
            logits = model(input_ids=torch.tensor([tokenizer(row["prompt"])["input_ids"]])).logits[0, -1]
            hits.append(names[int(logits[label_ids].argmax())] == row["completion"].strip())
    accuracy = sft_recipe.label_accuracy(model, tokenizer, data["test"], names, batch_size=16)
    assert accuracy == pytest.approx(sum(hits) / len(hits))


def test_sft_resume_mid_epoch_reproduces_the_uninterrupted_run(tmp_path, sft_data, one_thread):
    """A run stopped inside a pruned epoch and resumed (TRL prepares the data again) ends where one run ends."""
    from transformers import TrainerCallback

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 5:  # epoch 0 has 4 steps: stop inside the first pruned epoch
                control.should_save = control.should_training_stop = True

    def run(out, callbacks=(), resume=None):
        data, tokenizer = sft_data
        args = make_sft_args(tmp_path / out, pruning_method="emp", save_strategy="steps", save_steps=1000)
        model = make_tiny_llama(len(tokenizer))
        trainer = EMPSFTTrainer(
            model=model, args=args, train_dataset=data, processing_class=tokenizer, callbacks=list(callbacks)
        )
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    full = run("full")
    run("split", callbacks=[StopAt()])
    resumed = run("split", resume=True)
    a, b = full.pruning_state, resumed.pruning_state
    assert resumed.state.global_step == full.state.global_step == 8
    assert [p.tolist() for p in a.plans] == [p.tolist() for p in b.plans]
    assert torch.equal(a.frequency, b.frequency)
    torch.testing.assert_close(a.loss, b.loss)


def test_none_trains_exactly_like_sft_trainer_with_one_forward_per_step(tmp_path, sft_data, one_thread):
    """Whatever the TRL release: the same parameters as `SFTTrainer`, from one forward pass per step."""
    from trl import SFTConfig, SFTTrainer

    data, tokenizer = sft_data
    common = dict(SFT_DEFAULTS, num_train_epochs=2, loss_type="nll")
    plain = SFTTrainer(
        model=make_tiny_llama(len(tokenizer)),
        args=SFTConfig(output_dir=str(tmp_path / "plain"), **common),
        train_dataset=data,
        processing_class=tokenizer,
    )
    ours = make_sft_trainer(tmp_path, sft_data, pruning_method="none", **common)
    forwards = []
    ours.model.register_forward_hook(lambda module, args, output: forwards.append(module.training))
    plain.train()
    ours.train()
    assert forwards.count(True) == ours.state.global_step
    for p, q in zip(plain.model.parameters(), ours.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert torch.isfinite(ours.pruning_state.loss).all()


def test_the_record_maps_trained_rows_back_to_the_users_dataset_after_trl_drops_rows(tmp_path, sft_data, one_thread):
    """Item 6: TRL drops the rows truncation leaves without a label; each training row still names its raw row."""
    data, _ = sft_data
    trainer = make_sft_trainer(tmp_path, sft_data, pruning_method="emp", num_train_epochs=3, max_length=9)
    assert len(trainer.train_dataset) < len(data)  # TRL dropped the fully masked rows
    trainer.train()
    source = trainer.pruning_state.metadata["source_dataset"]
    assert source["fingerprint"] == data._fingerprint and source["num_rows"] == len(data)
    assert len(source["rows"]) == len(trainer.train_dataset)
    for i, raw in enumerate(source["rows"]):
        assert trainer.train_dataset[i]["prompt"] == data[raw]["prompt"]
    record = export_pruning_record(trainer.pruning_state)
    for epoch in range(3):  # the user's raw dataset gets back exactly the rows each epoch trained
        selected = select_rows(data, record, epoch=epoch)
        trained = trainer.train_dataset.select(record.plan(epoch))
        assert selected["prompt"] == trained["prompt"] and len(selected) == len(trained)
    with pytest.raises(DatasetMismatchError):
        select_rows(data.select(range(20)), record, epoch=0)
    untouched = make_sft_trainer(tmp_path / "b", sft_data, pruning_method="emp", num_train_epochs=3)
    assert untouched._source_rows == {"fingerprint": data._fingerprint, "num_rows": len(data), "rows": None}
