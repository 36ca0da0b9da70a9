"""Issue 14: defects that corrupted a run in silence or crashed with a traceback, each pinned by a test."""

import math
import os
import shutil
import socket
import subprocess
import sys

import datasets
import pytest
import torch
import torch.nn.functional as F
from transformers import BertForTokenClassification, Trainer, TrainingArguments

from emp_hf import EMPConfig, EMPTrainer, cli
from emp_hf.data import add_row_index
from emp_hf_dev.fixtures import FIXED_SIZE_CASES, TRAINING_DEFAULTS, VOCAB, make_args, make_bert, make_text_dataset

pytestmark = pytest.mark.usefixtures("one_thread")


def _train_none(tmp_path, dataset, name="out", **kwargs) -> EMPTrainer:
    args = make_args(tmp_path / name, pruning_method="none", prune_ratio=None, num_train_epochs=1, **kwargs)
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=dataset)
    trainer.train()
    return trainer


# ---------------------------------------------------------------- 1. a stale row-index column
@pytest.mark.parametrize("stale", ["shuffle", "filter"])
def test_stale_index_column_is_rebuilt(tmp_path, stale):
    indexed = add_row_index(make_text_dataset())
    if stale == "shuffle":
        dataset = indexed.shuffle(seed=1)
    else:
        dataset = indexed.filter(lambda row: row["emp_row_index"] % 3 != 0)
    fresh = dataset.remove_columns("emp_row_index")
    with_stale = _train_none(tmp_path, dataset, "stale")
    reference = _train_none(tmp_path, fresh, "fresh")
    assert with_stale.train_dataset["emp_row_index"] == list(range(len(dataset)))
    state, expected = with_stale.pruning_state, reference.pruning_state
    assert torch.equal(state.frequency, torch.ones(len(dataset), dtype=state.frequency.dtype))
    assert torch.equal(state.loss, expected.loss)


def test_index_column_that_is_already_the_row_index_is_kept():
    indexed = add_row_index(make_text_dataset())
    assert add_row_index(indexed) is indexed


@pytest.mark.parametrize("column", ["input_ids", "labels", "attention_mask", "my_target"])
def test_index_column_naming_a_model_input_is_refused(tmp_path, column):
    args = make_args(
        tmp_path, pruning_index_column=column, label_names=["my_target"] if column == "my_target" else None
    )
    with pytest.raises(ValueError, match="pruning_index_column='.*' names a model input"):
        EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset())


# ---------------------------------------------------------------- 2 and 9. rows without a label
def _token_dataset(n: int = 32, seq_len: int = 8, unlabelled=(3, 10)) -> datasets.Dataset:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(6, VOCAB, (n, seq_len), generator=g)
    labels = (ids % 2).masked_fill(torch.rand(n, seq_len, generator=g) < 0.3, -100)
    labels[list(unlabelled)] = -100
    return datasets.Dataset.from_dict({"input_ids": ids.tolist(), "labels": labels.tolist()})


def _token_model() -> BertForTokenClassification:
    return make_bert(model_class=BertForTokenClassification)


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


def test_weighted_loss_is_the_mean_over_labelled_rows(tmp_path):
    """A token head's reweighted loss weights each labelled token by its row's weight, normalised as the model's
    own loss (over the micro-batch's labelled tokens): the Trainer's loss when every weight is 1."""
    dataset = _token_dataset(n=8, unlabelled=(2, 5))
    args = make_args(tmp_path, pruning_method="infobatch", num_train_epochs=4, learning_rate=0.0)
    trainer = EMPTrainer(model=_token_model(), args=args, train_dataset=dataset)
    trainer.create_optimizer_and_scheduler(num_training_steps=1)
    trainer.current_gradient_accumulation_steps = 1
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(8)])
    trainer.pruning_state.tables["weight"][:8] = torch.linspace(1.0, 2.0, 8)
    torch.manual_seed(0)
    loss = trainer.training_step(trainer.model, dict(batch))
    torch.manual_seed(0)
    logits = trainer.model(input_ids=batch["input_ids"]).logits
    labels = batch["labels"]
    token_loss = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none", ignore_index=-100)
    weight = torch.linspace(1.0, 2.0, 8)[:, None].expand_as(labels)
    expected = (weight * token_loss).sum() / (labels != -100).sum()
    torch.testing.assert_close(loss, expected)


def test_sequence_rows_labelled_minus_100_are_not_recorded(tmp_path):
    dataset = make_text_dataset(n=32)
    labels = list(dataset["labels"])
    labels[5] = labels[17] = -100
    dataset = dataset.remove_columns("labels").add_column("labels", labels)
    trainer = _train_none(tmp_path, dataset)
    state = trainer.pruning_state
    assert state.frequency.tolist() == [1] * 32  # visited
    assert torch.isnan(state.loss[[5, 17]]).all() and torch.isnan(state.entropy[[5, 17]]).all()
    others = torch.ones(32, dtype=torch.bool)
    others[[5, 17]] = False
    assert torch.isfinite(state.loss[others]).all()


# ---------------------------------------------------------------- 3. a user's compute_loss_func
def _mse_loss(outputs, labels, num_items_in_batch=None):
    return outputs.logits.float().pow(2).mean()


def test_compute_loss_func_with_a_weighted_strategy_is_refused(tmp_path):
    args = make_args(tmp_path, pruning_method="infobatch", num_train_epochs=4)
    with pytest.raises(ValueError, match="per_example_loss_func"):
        EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset(), compute_loss_func=_mse_loss)


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
    trainer.pruning_state.tables["weight"][:8] = torch.linspace(1.0, 2.0, 8)
    trainer.model.train()
    torch.manual_seed(0)
    loss = trainer.compute_loss(trainer.model, dict(batch))
    torch.manual_seed(0)
    logits = trainer.model(input_ids=batch["input_ids"]).logits
    torch.testing.assert_close(loss, (torch.linspace(1.0, 2.0, 8) * logits.float().pow(2).mean(-1)).mean())


# ---------------------------------------------------------------- 4 and 5. `none` is Trainer, in every setting
def _plain_trainer(tmp_path, dataset, **kwargs) -> Trainer:
    args = TrainingArguments(output_dir=str(tmp_path / "plain"), **{**TRAINING_DEFAULTS, **kwargs})
    return Trainer(model=make_bert(), args=args, train_dataset=dataset)


def _lengths_dataset() -> datasets.Dataset:
    dataset = make_text_dataset(n=100)
    ids = [row[: 4 + i % 8] for i, row in enumerate(dataset["input_ids"])]  # ragged lengths
    return dataset.remove_columns("input_ids").add_column("input_ids", ids)


@pytest.mark.parametrize(
    "setting",
    [
        {"train_sampling_strategy": "batch_rebalance", "gradient_accumulation_steps": 2},
        {"train_sampling_strategy": "group_by_length"},
        {"train_sampling_strategy": "sequential"},
        {"num_train_epochs": 2.5},
        {"num_train_epochs": 0.5},
        {"num_train_epochs": 1.5, "gradient_accumulation_steps": 3},
    ],
)
def test_none_trains_exactly_like_trainer(tmp_path, setting):
    from transformers import DataCollatorWithPadding

    dataset = _lengths_dataset()
    collator = DataCollatorWithPadding(_Tokenizer())
    plain = _plain_trainer(tmp_path, dataset, **setting)
    plain.data_collator = collator
    plain_out = plain.train()
    args = make_args(tmp_path, pruning_method="none", prune_ratio=None, **setting)
    ours = EMPTrainer(model=make_bert(), args=args, train_dataset=dataset, data_collator=collator)
    out = ours.train()
    assert out.global_step == plain_out.global_step
    for a, b in zip(ours.model.parameters(), plain.model.parameters(), strict=True):
        assert torch.equal(a, b)


class _Tokenizer:
    """Just enough of a tokenizer for `DataCollatorWithPadding` (pads `input_ids` with 0)."""

    pad_token_id = 0
    padding_side = "right"
    model_input_names = ["input_ids"]

    def pad(self, features, padding=True, return_tensors="pt", **kwargs):
        width = max(len(f["input_ids"]) for f in features)
        batch = {key: [f[key] for f in features] for key in features[0] if key != "input_ids"}
        batch["input_ids"] = [f["input_ids"] + [0] * (width - len(f["input_ids"])) for f in features]
        batch["attention_mask"] = [[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"])) for f in features]
        return {key: torch.tensor(value) for key, value in batch.items()}


def test_pruning_methods_refuse_batch_rebalance(tmp_path):
    args = make_args(tmp_path, train_sampling_strategy="batch_rebalance")
    with pytest.raises(ValueError, match="train_sampling_strategy='batch_rebalance' is not supported"):
        EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset())


def test_length_grouped_order_is_transformers_order_of_the_same_permutation():
    from transformers.trainer_pt_utils import get_length_grouped_indices

    from emp_hf.data import length_grouped_order

    lengths = torch.randint(1, 50, (1003,), generator=torch.Generator().manual_seed(1))
    for batch_size in (1, 8, 24):
        expected = get_length_grouped_indices(lengths.tolist(), batch_size, generator=torch.Generator().manual_seed(2))
        plan = torch.randperm(1003, generator=torch.Generator().manual_seed(2))
        assert length_grouped_order(plan, lengths, batch_size).tolist() == expected


class _BatchRecorder(EMPTrainer):
    """Records the rows of every training micro-batch, in order."""

    def training_step(self, model, inputs, *args, **kwargs):
        self.batches.setdefault(self._epoch, []).append(inputs[self.args.pruning_index_column].tolist())
        return super().training_step(model, inputs, *args, **kwargs)


@pytest.mark.parametrize("strategy", ["group_by_length", "sequential"])
def test_pruning_methods_honour_the_sampling_order_inside_each_plan(tmp_path, strategy):
    from transformers import DataCollatorWithPadding

    from emp_hf.data import length_grouped_order

    dataset = _lengths_dataset()
    lengths = torch.tensor([len(ids) for ids in dataset["input_ids"]])
    args = make_args(tmp_path, pruning_method="emp", num_train_epochs=3, train_sampling_strategy=strategy)
    trainer = _BatchRecorder(
        model=make_bert(), args=args, train_dataset=dataset, data_collator=DataCollatorWithPadding(_Tokenizer())
    )
    trainer.batches = {}
    trainer.train()
    plans = trainer.pruning_state.plans
    assert [len(p) for p in plans] == [100, 50, 50]
    for epoch, plan in enumerate(plans):
        rows = [row for batch in trainer.batches[epoch] for row in batch]
        if strategy == "sequential":
            assert rows == sorted(plan.tolist())
        else:
            assert rows == length_grouped_order(plan, lengths, 8).tolist()
            assert lengths[rows[0]] == lengths[plan.long()].max()


# ---------------------------------------------------------------- 6. drop_last and a plan below one batch
def test_drop_last_with_a_plan_smaller_than_a_batch_is_refused_before_training(tmp_path):
    args = make_args(tmp_path, prune_ratio=0.95, dataloader_drop_last=True)
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset())
    with pytest.raises(ValueError, match="a pruned epoch's plan has 5 rows, fewer than one global batch of 8"):
        trainer.train()
    assert trainer.pruning_state.plans == []


def test_drop_last_budget_matches_the_steps_taken(tmp_path):
    args = make_args(tmp_path, prune_ratio=0.7, dataloader_drop_last=True, num_train_epochs=4)
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset(n=100))
    output = trainer.train()
    sizes = trainer.pruning_state.epoch_plan_sizes
    assert output.global_step == trainer.state.max_steps == sum(s // 8 for s in sizes)


# ---------------------------------------------------------------- 7. InfoBatch's open budget with max_steps, resume
def test_infobatch_open_budget_with_max_steps_ends_with_its_anneal_epoch(tmp_path):
    n = 96
    args = make_args(tmp_path, pruning_method="infobatch", max_steps=70, num_train_epochs=1)
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset(n=n))
    output = trainer.train()
    state = trainer.pruning_state
    assert output.global_step == 70
    planned = state.metadata["planned_epochs"]
    assert len(state.plans) == planned  # the run ends in the last planned epoch: the anneal epoch
    assert len(state.plans[-1]) == n and torch.equal(state.weight, torch.ones(n))
    assert all(len(plan) < n for plan in state.plans[1:-1])


@pytest.mark.parametrize(("method", "extra"), FIXED_SIZE_CASES)
def test_resume_with_max_steps_equals_the_uninterrupted_run(tmp_path, method, extra):
    def run(name, resume=None):
        args = make_args(
            tmp_path / name,
            pruning_method=method,
            max_steps=45,
            num_train_epochs=1,
            save_strategy="steps",
            save_steps=20,
            logging_steps=100,
            **extra,
        )
        trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset())
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    full = run("full")
    resumed = run("full", resume=str(tmp_path / "full" / "out" / "checkpoint-20"))
    a, b = full.pruning_state, resumed.pruning_state
    assert [p.tolist() for p in a.plans] == [p.tolist() for p in b.plans]
    assert a.metadata["planned_epochs"] == b.metadata["planned_epochs"]
    assert a.tables.keys() == b.tables.keys()
    for name in a.tables:  # every table the strategy keeps
        torch.testing.assert_close(a.tables[name], b.tables[name], equal_nan=True, rtol=0, atol=0, msg=name)


def test_infobatch_open_budget_warmup_ratio_is_a_share_of_the_steps_taken(tmp_path):
    args = make_args(
        tmp_path, pruning_method="infobatch", num_train_epochs=6, lr_scheduler_type="linear", warmup_steps=0.2
    )
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset())
    output = trainer.train()
    keywords = trainer.lr_scheduler.lr_lambdas[0].keywords
    assert keywords["num_training_steps"] == output.global_step
    assert keywords["num_warmup_steps"] == math.ceil(0.2 * output.global_step)


# ---------------------------------------------------------------- 8. data_seed drives the plans, as Trainer's order
def test_data_seed_drives_the_plans_unless_pruning_seed_is_set(tmp_path):
    def plans(**seeds):
        args = make_args(tmp_path / str(seeds), num_train_epochs=3, **seeds)
        trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset())
        trainer.train()
        return [p.tolist() for p in trainer.pruning_state.plans]

    assert EMPConfig(output_dir=str(tmp_path), data_seed=7).effective_pruning_seed == 7
    assert EMPConfig(output_dir=str(tmp_path), data_seed=7, pruning_seed=3).effective_pruning_seed == 3
    base = plans()
    assert plans(data_seed=7) != base
    assert plans(data_seed=7, pruning_seed=0) == base


# ---------------------------------------------------------------- 10. the Hub token stays out of repr
@pytest.mark.parametrize("config_name", ["EMPConfig", "EMPSeq2SeqConfig", "EMPSFTConfig"])
def test_config_repr_redacts_the_hub_token(tmp_path, config_name):
    if config_name == "EMPSFTConfig":
        pytest.importorskip("trl")
    import emp_hf

    extra = {"bf16": False} if config_name == "EMPSFTConfig" else {}  # SFTConfig defaults to bf16
    config = getattr(emp_hf, config_name)(output_dir=str(tmp_path), hub_token="hf_SECRET_TOKEN", **extra)
    for text in (repr(config), str(config)):
        assert "hf_SECRET_TOKEN" not in text
        assert "hub_token=<HUB_TOKEN>" in text and "pruning_method=emp" in text


# ---------------------------------------------------------------- 11-13. checkpoint saves: who pushes, what survives
def _checkpointing_trainer(tmp_path, **kwargs) -> EMPTrainer:
    args = make_args(tmp_path, num_train_epochs=4, save_strategy="steps", save_steps=4, logging_steps=100, **kwargs)
    return EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset(n=32))


def test_only_global_rank_zero_pushes_the_pruning_record(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    trainer = _checkpointing_trainer(
        tmp_path, save_on_each_node=True, push_pruning_record=True, pruning_record_push_on_save=True
    )
    pushes = []
    monkeypatch.setattr(trainer, "_push_pruning_record", lambda *a, **k: pushes.append(trainer.args.process_index))
    trainer.train()
    assert pushes  # rank 0 pushes at every save
    pushes.clear()
    # the same save on a second node's local rank 0 (global rank 4): it saves, it does not push
    monkeypatch.setattr(type(trainer.args), "process_index", property(lambda self: 4))
    assert trainer.args.should_save and not trainer.is_world_process_zero()
    trainer._save_checkpoint(trainer.model, None)
    assert pushes == []


def test_a_kill_while_writing_the_pruning_state_keeps_a_resumable_checkpoint(tmp_path, monkeypatch):
    import emp_hf.checkpoint
    from emp_hf.checkpoint import latest_complete_checkpoint

    trainer = _checkpointing_trainer(tmp_path, save_total_limit=1)
    write = emp_hf.checkpoint._atomic_write

    def dies_at_the_second_save(path, data):
        if "checkpoint-8" in path:
            raise KeyboardInterrupt("killed while writing the pruning state")
        write(path, data)

    monkeypatch.setattr(emp_hf.checkpoint, "_atomic_write", dies_at_the_second_save)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    output_dir = trainer.args.output_dir
    assert latest_complete_checkpoint(output_dir) == f"{output_dir}/checkpoint-4"
    monkeypatch.setattr(emp_hf.checkpoint, "_atomic_write", write)
    resumed = _checkpointing_trainer(tmp_path, save_total_limit=1)
    output = resumed.train(resume_from_checkpoint=True)
    assert output.global_step == resumed.state.max_steps


def test_checkpoint_push_finds_the_pruning_state_written(tmp_path, monkeypatch):
    trainer = _checkpointing_trainer(tmp_path)
    seen = []

    def push_from_checkpoint(folder):
        seen.append(sorted(f for f in os.listdir(folder) if f.startswith("pruning_state")))

    monkeypatch.setattr(trainer, "_push_from_checkpoint", push_from_checkpoint)
    trainer.args.push_to_hub = True
    trainer.train()
    assert seen and all(files == ["pruning_state.json", "pruning_state.pt"] for files in seen)


# ---------------------------------------------------------------- 14. one-line errors instead of tracebacks
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("run")
    trainer = _checkpointing_trainer(tmp_path)
    trainer.train()
    return tmp_path / "out"


def _damage(path, how):
    if how == "truncated manifest":
        (path / "pruning_state.json").write_text('{"sha256": "ab')
    elif how == "empty-dict manifest":
        (path / "pruning_state.json").write_text("{}")
    elif how == "list manifest":
        (path / "pruning_state.json").write_text("[]")
    elif how == "truncated state":
        data = (path / "pruning_state.pt").read_bytes()
        (path / "pruning_state.pt").write_bytes(data[:300])
    elif how == "byte-flipped state":
        data = bytearray((path / "pruning_state.pt").read_bytes())
        data[60] ^= 0xFF
        data[200] ^= 0xFF
        (path / "pruning_state.pt").write_bytes(bytes(data))


DAMAGES = ["truncated manifest", "empty-dict manifest", "list manifest", "truncated state", "byte-flipped state"]


@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_pruning_state_is_a_one_line_cli_error(finished_run, tmp_path, capsys, how):
    checkpoint = tmp_path / "checkpoint-8"
    shutil.copytree(finished_run / "checkpoint-8", checkpoint)
    _damage(checkpoint, how)
    assert cli.main(["inspect", str(checkpoint)]) == 1
    stderr = capsys.readouterr().err
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("emp-hf inspect: error:"), stderr
    assert "set to `False`" not in stderr  # torch's advice to load with weights_only=False: never


@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_pruning_state_is_a_clear_error_on_resume(finished_run, tmp_path, how):
    from emp_hf.checkpoint import latest_complete_checkpoint, load_pruning_state
    from emp_hf.tracker import PruningState

    checkpoint = tmp_path / "out" / "checkpoint-8"
    shutil.copytree(finished_run / "checkpoint-8", checkpoint)
    shutil.copytree(finished_run / "checkpoint-4", tmp_path / "out" / "checkpoint-4")
    _damage(checkpoint, how)
    with pytest.raises(ValueError, match="corrupted|not valid JSON|not a pruning-state manifest|cannot be read"):
        load_pruning_state(PruningState(32), str(checkpoint))
    assert latest_complete_checkpoint(str(tmp_path / "out")).endswith("checkpoint-4")


def _env(**extra):
    return {**os.environ, "PYTHONPATH": os.getcwd(), "HF_HUB_OFFLINE": "1", **extra}


def test_push_to_an_unreachable_hub_is_a_one_line_error(finished_run, capsys, monkeypatch):
    from huggingface_hub import constants

    with socket.socket() as s:  # a port nobody listens on: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    assert cli.main(["push", str(finished_run), "--repo-id", "user/record", "--token", "hf_test"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"cannot reach the Hub at http://127.0.0.1:{port}" in lines[0], lines
    assert "ConnectError" in lines[0] or "Connection" in lines[0]


def test_a_collator_returning_a_list_is_a_clear_error(tmp_path):
    def list_collator(features):
        return [f["input_ids"] for f in features]

    args = make_args(tmp_path)
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset(), data_collator=list_collator)
    with pytest.raises(TypeError, match="data collator returned a list; EMPTrainer .* needs a dict batch"):
        trainer.train()


# ---------------------------------------------------------------- 15. export and output_dir
def test_export_does_not_replace_a_users_readme(finished_run, tmp_path, capsys):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "README.md").write_text("my notes\n")
    command = ["export", str(finished_run), "--to", str(target)]
    assert cli.main(command) == 1
    assert "README.md exists and is not a pruning record's card" in capsys.readouterr().err
    assert (target / "README.md").read_text() == "my notes\n"
    assert cli.main([*command, "--overwrite"]) == 0
    assert (target / "README.md").read_text() != "my notes\n"
    assert cli.main(command) == 0  # its own card: a re-export replaces it


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


# ---------------------------------------------------------------- 16. python -m emp_hf
def test_python_dash_m_runs_the_cli(finished_run):
    result = subprocess.run(
        [sys.executable, "-m", "emp_hf", "inspect", str(finished_run), "--json"],
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert result.returncode == 0, result.stderr
    assert '"rows": 32' in result.stdout
