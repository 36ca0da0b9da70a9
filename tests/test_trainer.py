"""EMPTrainer wiring: step budget, tracking, `none` identity with Trainer, resume, PEFT, images."""

import math

import numpy as np
import pytest
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from emp_hf import STRATEGIES, EMPConfig, EMPTrainer
from emp_hf_dev.fixtures import (
    PRUNING_CASES,
    TRAINING_DEFAULTS,
    make_args,
    make_bert,
    make_image_dataset,
    make_text_dataset,
    make_vit,
)

METHOD_CASES = [*PRUNING_CASES, ("none", {"prune_ratio": None})]


class LRRecorder(TrainerCallback):
    def __init__(self):
        self.lrs = []

    def on_step_end(self, args, state, control, **kwargs):
        self.lrs.append(kwargs["lr_scheduler"].get_last_lr()[0])


@pytest.mark.parametrize(("method", "extra"), METHOD_CASES)
def test_every_method_trains_and_accounts_visits(tmp_path, text_dataset, method, extra):
    args = make_args(tmp_path, pruning_method=method, num_train_epochs=4, **extra)
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=text_dataset)
    output = trainer.train()
    state = trainer.pruning_state
    n = len(text_dataset)
    sizes = state.epoch_plan_sizes
    assert len(sizes) == 4
    # every planned row is visited exactly once per epoch: frequencies sum to the visits
    assert int(state.frequency.sum()) == sum(sizes)
    kept = state.kept_in_epoch()
    assert torch.equal(state.frequency, kept.sum(0))
    # steps: one optimizer step per batch of each epoch's plan
    assert output.global_step == sum(math.ceil(s / 8) for s in sizes)
    assert math.isclose(output.metrics["train_realized_saving"], 1 - sum(sizes) / (4 * n))
    assert torch.isfinite(state.loss).all() and torch.isfinite(state.entropy).all()
    if method in ("none",):
        assert sizes == [n] * 4
    elif method == "infobatch" and not extra:
        assert sizes[0] == n and sizes[-1] == n  # warm-up and anneal (ceil(0.125 * 4) = 1 epoch)
        assert all(s < n for s in sizes[1:-1])
    elif extra.get("seta_grouping") == "kmeans":  # whole k-means bands of a K-row subset, uniform at t = 0 and after
        assert sizes[:2] == [n, n - math.floor(0.5 * n)] and sizes[3] == sizes[1] and 0 < sizes[2] <= sizes[1]
    else:
        assert sizes == [n] + [n - math.floor(0.5 * n)] * (3 if method != "infobatch" else 2) + (
            [n] if method == "infobatch" else []
        )


def test_pruned_run_takes_the_promised_steps_and_lr_schedule_ends(tmp_path, text_dataset):
    n = len(text_dataset)
    recorder = LRRecorder()
    args = make_args(tmp_path, num_train_epochs=5, prune_ratio=0.7, lr_scheduler_type="linear")
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=text_dataset, callbacks=[recorder])
    output = trainer.train()
    full_steps = 5 * math.ceil(n / 8)
    expected = math.ceil(n / 8) + 4 * math.ceil((n - math.floor(0.7 * n)) / 8)
    assert output.global_step == expected
    assert trainer.state.max_steps == expected
    assert expected / full_steps < 0.5  # ~ (1 + 4 * 0.3) / 5 of the full run
    assert recorder.lrs[-1] == pytest.approx(0.0, abs=1e-12)  # the schedule decays to its end
    assert len(recorder.lrs) == expected


@pytest.mark.parametrize(("method", "extra"), [("infobatch", {}), ("seta", {"seta_grouping": "kmeans"})])
def test_open_budget_lr_reaches_end(tmp_path, text_dataset, method, extra):
    recorder = LRRecorder()
    args = make_args(tmp_path, pruning_method=method, num_train_epochs=6, lr_scheduler_type="linear", **extra)
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=text_dataset, callbacks=[recorder])
    output = trainer.train()
    assert trainer.state.max_steps == output.global_step
    assert recorder.lrs[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(recorder.lrs, recorder.lrs[1:], strict=False))


def test_none_trains_identically_to_trainer(tmp_path, text_dataset):
    common = {**TRAINING_DEFAULTS, "output_dir": str(tmp_path / "plain"), "num_train_epochs": 2, "seed": 7}
    plain = Trainer(model=make_bert(seed=3), args=TrainingArguments(**common), train_dataset=text_dataset)
    plain.train()
    common["output_dir"] = str(tmp_path / "emp")
    emp = EMPTrainer(
        model=make_bert(seed=3), args=EMPConfig(**common, pruning_method="none"), train_dataset=text_dataset
    )
    emp.train()
    plain_losses = [h["loss"] for h in plain.state.log_history if "loss" in h]
    emp_losses = [h["loss"] for h in emp.state.log_history if "loss" in h]
    assert plain_losses == emp_losses
    for p, q in zip(plain.model.parameters(), emp.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert int(emp.pruning_state.frequency.min()) == 2


def test_tracked_loss_matches_the_models_loss(tmp_path, text_dataset):
    """The per-example losses recorded in one full epoch average to the loss the model trained with."""

    class Capture(EMPTrainer):
        batches = []

        def training_step(self, model, inputs, num_items_in_batch=None):
            rows = inputs["emp_row_index"].clone()
            loss = super().training_step(model, inputs, num_items_in_batch)
            self.batches.append((rows, loss.detach().clone()))
            return loss

    args = make_args(
        tmp_path,
        pruning_method="none",
        prune_ratio=None,
        num_train_epochs=1,
        learning_rate=0.0,
        label_smoothing_factor=0.1,
    )
    trainer = Capture(model=make_bert(), args=args, train_dataset=text_dataset)
    trainer.train()
    for rows, loss in trainer.batches:
        assert trainer.pruning_state.loss[rows].mean().item() == pytest.approx(loss.item(), rel=1e-5)


def test_gradient_accumulation(tmp_path, text_dataset):
    args = make_args(tmp_path, gradient_accumulation_steps=2, per_device_train_batch_size=4, num_train_epochs=3)
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=text_dataset)
    output = trainer.train()
    sizes = trainer.pruning_state.epoch_plan_sizes
    assert output.global_step == sum(math.ceil(math.ceil(s / 4) / 2) for s in sizes)
    assert int(trainer.pruning_state.frequency.sum()) == sum(sizes)


def test_max_steps_prunes_per_pass(tmp_path, text_dataset):
    args = make_args(tmp_path, max_steps=20, num_train_epochs=1)
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=text_dataset)
    output = trainer.train()
    assert output.global_step == 20
    sizes = trainer.pruning_state.epoch_plan_sizes
    assert sizes[0] == 96 and all(s == 48 for s in sizes[1:])
    assert int(trainer.pruning_state.frequency.sum()) <= sum(sizes)


@pytest.mark.parametrize("method", ["random", "emp", "infobatch"])
def test_vit_image_classification(tmp_path, method):
    data = make_image_dataset()
    args = make_args(tmp_path, pruning_method=method, num_train_epochs=3)
    trainer = EMPTrainer(model=make_vit(), args=args, train_dataset=data)
    trainer.train()
    state = trainer.pruning_state
    assert int(state.frequency.sum()) == sum(state.epoch_plan_sizes)
    assert torch.isfinite(state.entropy).all()
    assert float(state.entropy.max()) <= math.log(3) + 1e-5


def test_lora_model(tmp_path, text_dataset):
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(
        make_bert(),
        peft.LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value"]),
    )
    args = make_args(tmp_path, pruning_method="emp", num_train_epochs=3)
    trainer = EMPTrainer(model=model, args=args, train_dataset=text_dataset)
    trainer.train()
    state = trainer.pruning_state
    assert int(state.frequency.sum()) == sum(state.epoch_plan_sizes)
    assert state.epoch_plan_sizes == [96, 48, 48]


def test_evaluation_and_metrics_still_work(tmp_path, text_dataset):
    def compute_metrics(prediction):
        return {"accuracy": float((np.argmax(prediction.predictions, -1) == prediction.label_ids).mean())}

    args = make_args(tmp_path, eval_strategy="epoch", num_train_epochs=2)
    trainer = EMPTrainer(
        model=make_bert(),
        args=args,
        train_dataset=text_dataset,
        eval_dataset=make_text_dataset(32, seed=1),
        compute_metrics=compute_metrics,
    )
    trainer.train()
    evals = [h for h in trainer.state.log_history if "eval_accuracy" in h]
    assert len(evals) == 2
    # evaluation does not touch the training statistics
    assert int(trainer.pruning_state.frequency.sum()) == sum(trainer.pruning_state.epoch_plan_sizes)


def test_pruning_progress_is_logged(tmp_path, text_dataset):
    args = make_args(tmp_path, num_train_epochs=3)
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=text_dataset)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "pruning/kept_fraction" in h]
    assert logs == [h for h in trainer.state.log_history if "loss" in h]  # on the training logs, no entry of its own
    assert [h["pruning/kept_fraction"] for h in logs] == [1.0] * 12 + [0.5] * 12  # 96 rows, then 48, at 8 a step
    assert logs[-1]["pruning/realized_saving"] == pytest.approx(1 / 3)


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_save = True
            control.should_training_stop = True


@pytest.mark.parametrize(
    ("method", "extra"), [("emp", {}), ("infobatch", {}), ("ucb", {}), ("seta", {"seta_grouping": "kmeans"})]
)
def test_resume_mid_epoch_reproduces_the_uninterrupted_run(tmp_path, text_dataset, method, extra):
    def run(out, callbacks=(), resume=None):
        args = make_args(
            tmp_path,
            output_dir=str(tmp_path / out),
            pruning_method=method,
            num_train_epochs=4,
            save_strategy="steps",
            save_steps=1000,
            dataloader_drop_last=False,
            **extra,
        )
        trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=text_dataset, callbacks=list(callbacks))
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    full = run("full")
    # epoch 0 has 12 steps, epoch 1 (pruned) 6 or so: stop inside epoch 1
    run("split", callbacks=[StopAt(15)])
    resumed = run("split", resume=True)
    a, b = full.pruning_state, resumed.pruning_state
    assert resumed.state.global_step == full.state.global_step
    assert resumed.state.max_steps == full.state.max_steps
    assert [p.tolist() for p in a.plans] == [p.tolist() for p in b.plans]
    assert torch.equal(a.frequency, b.frequency)
    torch.testing.assert_close(a.loss, b.loss)
    assert a.tracked == b.tracked  # every table the strategy keeps (InfoBatch keeps no score: it is the loss)
    for name in a.tracked:
        torch.testing.assert_close(getattr(a, name), getattr(b, name), equal_nan=True, msg=name)


def test_resume_from_checkpoint_without_pruning_state_is_an_error(tmp_path, text_dataset):
    args = make_args(tmp_path, save_strategy="steps", save_steps=5, num_train_epochs=2)
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=text_dataset)
    trainer.train()
    checkpoint = tmp_path / "out" / "checkpoint-5"
    (checkpoint / "pruning_state.pt").unlink()
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=text_dataset)
    with pytest.raises(FileNotFoundError, match="no complete pruning state"):
        trainer.train(resume_from_checkpoint=str(checkpoint))


def test_set_transform_and_torch_datasets(tmp_path, text_dataset):
    transformed = text_dataset.with_transform(
        lambda batch: {"input_ids": batch["input_ids"], "labels": batch["labels"]}
    )
    trainer = EMPTrainer(model=make_bert(), args=make_args(tmp_path), train_dataset=transformed)
    trainer.train()
    assert int(trainer.pruning_state.frequency.sum()) == sum(trainer.pruning_state.epoch_plan_sizes)

    class TorchData(torch.utils.data.Dataset):
        def __len__(self):
            return len(text_dataset)

        def __getitem__(self, i):
            row = text_dataset[i]
            return {"input_ids": torch.tensor(row["input_ids"]), "labels": torch.tensor(row["labels"])}

    trainer = EMPTrainer(model=make_bert(), args=make_args(tmp_path), train_dataset=TorchData())
    trainer.train()
    assert int(trainer.pruning_state.frequency.sum()) == sum(trainer.pruning_state.epoch_plan_sizes)


def test_bad_inputs_fail_before_training(tmp_path, text_dataset):
    with pytest.raises(TypeError, match="EMPConfig"):
        EMPTrainer(model=make_bert(), args=TrainingArguments(output_dir=str(tmp_path)), train_dataset=text_dataset)
    with pytest.raises(ValueError, match="pruning_num_rows"):  # a stream whose number of rows is unknown
        EMPTrainer(model=make_bert(), args=make_args(tmp_path), train_dataset=text_dataset.to_iterable_dataset())

    class Custom(torch.nn.Module):
        def forward(self, input_ids, labels=None):
            return {"loss": torch.zeros(())}

    with pytest.raises(ValueError, match="per_example_loss_func"):
        EMPTrainer(model=Custom(), args=make_args(tmp_path), train_dataset=text_dataset)


def test_user_per_example_loss_hook(tmp_path, text_dataset):
    calls = []

    def hook(outputs, labels):
        calls.append(labels.shape[0])
        loss = torch.nn.functional.cross_entropy(outputs.logits, labels, reduction="none")
        return loss, torch.zeros_like(loss)

    trainer = EMPTrainer(
        model=make_bert(),
        args=make_args(tmp_path, pruning_method="emp"),
        train_dataset=text_dataset,
        per_example_loss_func=hook,
    )
    trainer.train()
    assert sum(calls) == sum(trainer.pruning_state.epoch_plan_sizes)
    assert float(trainer.pruning_state.entropy.abs().max()) == 0.0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("pruning_method", "magic", "choose one of"),
        ("prune_ratio", 1.0, r"\[0, 1\)"),
        ("prune_ratio", -0.1, r"\[0, 1\)"),
        ("prune_ratio", "0.5", "number"),
        ("memory_weight", -1.0, "memory_weight"),
        ("ema_decay", 1.0, "ema_decay"),
        ("epsilon", 1.5, "epsilon"),
        ("ucb_c", float("nan"), "ucb_c"),
        ("emp_selection", "best", "emp_selection"),
        ("emp_temperature", 0.0, r"emp_temperature=0.0 is invalid: it must be a number in \(0, inf\)"),
        ("emp_temperature", float("inf"), "emp_temperature"),
        ("emp_revisit_share", 0.0, "emp_revisit_share.*> 0"),
        ("emp_revisit_share", 1.5, "emp_revisit_share"),
        ("pruning_warmup_epochs", -1, "pruning_warmup_epochs"),
        ("pruning_warmup_epochs", 3, "no epoch to prune"),
        ("pruning_anneal_fraction", 1.0, "pruning_anneal_fraction"),
        ("pruning_seed", 1.5, "pruning_seed"),
    ],
)
def test_config_validation(tmp_path, field, value, message):
    with pytest.raises(ValueError, match=message):
        EMPConfig(**{"output_dir": str(tmp_path), "num_train_epochs": 3, "pruning_method": "emp", field: value})


def test_config_defaults_and_conflicts(tmp_path):
    assert set(STRATEGIES) == {
        "none",
        "random",
        "epsilon_greedy",
        "ucb",
        "infobatch",
        "emp",
        "seta",
        "rs2",
        "small_loss",
    }
    args = EMPConfig(output_dir=str(tmp_path), pruning_method="infobatch")
    assert args.prune_ratio == 0.5 and args.pruning_anneal_fraction == 0.125
    assert EMPConfig(output_dir=str(tmp_path), pruning_method="none").prune_ratio == 0.0
    with pytest.raises(ValueError, match="never prunes"):
        EMPConfig(output_dir=str(tmp_path), pruning_method="none", prune_ratio=0.3)


def test_hf_argument_parser_flags():
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(EMPConfig).parse_args_into_dataclasses(
        [
            "--output_dir",
            "x",
            "--pruning_method",
            "ucb",
            "--prune_ratio",
            "0.3",
            "--ucb_c",
            "2",
            "--infobatch_match_budget",
        ]
    )
    assert args.pruning_method == "ucb" and args.prune_ratio == 0.3 and args.ucb_c == 2.0
    assert args.infobatch_match_budget is True


def test_a_strategy_registered_after_import_is_a_command_line_choice(tmp_path):
    from transformers import HfArgumentParser

    from emp_hf import STRATEGIES, PruningStrategy, Selection, register_strategy

    @register_strategy
    class FirstRows(PruningStrategy):
        name = "first_rows"

        def select(self, tables, num_keep, generator, context):
            return Selection(rows=torch.arange(num_keep, device=tables["loss"].device))

    try:
        parser = HfArgumentParser(EMPConfig)
        (args,) = parser.parse_args_into_dataclasses(["--output_dir", str(tmp_path), "--pruning_method", "first_rows"])
        assert args.pruning_method == "first_rows" and args.prune_ratio == 0.5
    finally:
        del STRATEGIES["first_rows"]
    with pytest.raises(ValueError, match=r"pruning_method='first_rows' is invalid: choose one of \["):
        EMPConfig(output_dir=str(tmp_path), pruning_method="first_rows")


def test_resume_with_other_data_or_options_is_refused(tmp_path, text_dataset):
    args = make_args(tmp_path, save_strategy="steps", save_steps=5, num_train_epochs=2, pruning_method="emp")
    EMPTrainer(model=make_bert(), args=args, train_dataset=text_dataset).train()
    checkpoint = str(tmp_path / "out" / "checkpoint-5")
    other = make_text_dataset(seed=1)
    with pytest.raises(ValueError, match="dataset_fingerprint"):
        EMPTrainer(model=make_bert(), args=args, train_dataset=other).train(resume_from_checkpoint=checkpoint)
    with pytest.raises(ValueError, match="rows but the training dataset has 50"):
        EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset(50)).train(checkpoint)
    changed = make_args(tmp_path, save_strategy="steps", save_steps=5, num_train_epochs=2, pruning_method="ucb")
    with pytest.raises(ValueError, match="pruning_method: checkpoint 'emp', now 'ucb'"):
        EMPTrainer(model=make_bert(), args=changed, train_dataset=text_dataset).train(checkpoint)
    changed.ignore_pruning_state_mismatch = True
    trainer = EMPTrainer(model=make_bert(), args=changed, train_dataset=text_dataset)
    trainer.train(resume_from_checkpoint=checkpoint)
    assert trainer.pruning_state.metadata["pruning_method"] == "ucb"


def test_resume_from_a_checkpoint_without_newer_options(tmp_path, text_dataset):
    """Options added after a checkpoint was written (e.g. `emp_temperature`) count as their defaults."""
    from emp_hf.core.tracker import PruningState
    from emp_hf.integration.checkpoint import load_pruning_state, save_pruning_state

    args = make_args(tmp_path, save_strategy="steps", save_steps=5, num_train_epochs=2, pruning_method="emp")
    EMPTrainer(model=make_bert(), args=args, train_dataset=text_dataset).train()
    checkpoint = str(tmp_path / "out" / "checkpoint-5")
    old = PruningState(len(text_dataset))
    load_pruning_state(old, checkpoint)
    del old.metadata["emp_temperature"], old.metadata["emp_revisit_share"]
    save_pruning_state(old, checkpoint)
    EMPTrainer(model=make_bert(), args=args, train_dataset=text_dataset).train(resume_from_checkpoint=checkpoint)
    sharper = make_args(
        tmp_path, save_strategy="steps", save_steps=5, num_train_epochs=2, pruning_method="emp", emp_temperature=0.5
    )
    with pytest.raises(ValueError, match="emp_temperature: checkpoint 1.0, now 0.5"):
        EMPTrainer(model=make_bert(), args=sharper, train_dataset=text_dataset).train(checkpoint)


def test_nonfinite_per_example_losses_are_counted_not_recorded(tmp_path, text_dataset):
    def hook(outputs, labels):
        loss = torch.nn.functional.cross_entropy(outputs.logits, labels, reduction="none")
        return torch.where(labels == 1, float("nan"), loss), torch.zeros_like(loss)

    trainer = EMPTrainer(
        model=make_bert(),
        args=make_args(tmp_path, pruning_method="ucb", num_train_epochs=3),
        train_dataset=text_dataset,
        per_example_loss_func=hook,
    )
    trainer.train()
    state = trainer.pruning_state
    odd = torch.tensor(text_dataset["labels"]) == 1
    assert torch.isnan(state.loss[odd]).all() and torch.isfinite(state.loss[~odd]).all()
    assert int(state.nonfinite_count) == int(state.frequency[odd].sum())
    assert state.epoch_plan_sizes == [96, 48, 48]  # plans stay valid: unobserved rows rank first
    assert trainer.pruning_summary()["pruning/nonfinite_losses"] == int(state.frequency[odd].sum())


def test_corrupted_pruning_state_is_never_loaded(tmp_path, text_dataset):
    args = make_args(tmp_path, save_strategy="steps", save_steps=5, num_train_epochs=2)
    EMPTrainer(model=make_bert(), args=args, train_dataset=text_dataset).train()
    state_file = tmp_path / "out" / "checkpoint-5" / "pruning_state.pt"
    payload = bytearray(state_file.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    state_file.write_bytes(bytes(payload))
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=text_dataset)
    with pytest.raises(ValueError, match="does not match its manifest"):
        trainer.train(resume_from_checkpoint=str(state_file.parent))


@pytest.mark.parametrize(
    ("field", "value"),
    [("pruning_warmup_epochs", "1"), ("infobatch_match_budget", "yes"), ("memory_weight", None), ("epsilon", True)],
)
def test_config_rejects_wrong_types(tmp_path, field, value):
    with pytest.raises(ValueError, match=f"EMPConfig.{field}"):
        EMPConfig(**{"output_dir": str(tmp_path), "num_train_epochs": 3, field: value})


def test_other_rejected_settings(tmp_path):
    with pytest.raises(ValueError, match="auto_find_batch_size"):
        EMPConfig(output_dir=str(tmp_path), num_train_epochs=3, auto_find_batch_size=True)
    with pytest.raises(ValueError, match="whole number of epochs"):
        EMPConfig(output_dir=str(tmp_path), num_train_epochs=2.5)


def test_bf16_mixed_precision(tmp_path, text_dataset):
    args = make_args(tmp_path, pruning_method="emp", bf16=True, num_train_epochs=3)
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=text_dataset)
    trainer.train()
    state = trainer.pruning_state
    assert state.loss.dtype == torch.float32 and torch.isfinite(state.loss).all()
    assert int(state.frequency.sum()) == sum(state.epoch_plan_sizes)


def test_infobatch_open_budget_with_max_steps_reaches_max_steps(tmp_path, text_dataset):
    args = make_args(tmp_path, pruning_method="infobatch", max_steps=60, num_train_epochs=1)
    output = EMPTrainer(model=make_bert(), args=args, train_dataset=text_dataset).train()
    assert output.global_step == 60  # epochs planned for the smallest plans: max_steps is reached
