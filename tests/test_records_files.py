"""Records and states on disk: the newest one is read and named, tampered files and full disks are one-line
errors, a plain Trainer's checkpoints are called what they are (issue 21, items 4, 10, 11, 12)."""

import errno
import json
import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from transformers import Trainer, TrainingArguments

import emp_hf.integration.checkpoint
import emp_hf.records.record
from emp_hf import EMPTrainer, PruningState
from emp_hf.cli import main
from emp_hf.integration.checkpoint import MANIFEST_FILE, STATE_FILE, save_pruning_state
from emp_hf.records.export import save_pruning_record
from emp_hf.records.hub import _record_dir
from emp_hf.records.load import load_pruning_record, select_rows
from emp_hf.records.record import PLANS_FILE, RECORD_FILE, RecordFormatError
from emp_hf_dev.fixtures import TRAINING_DEFAULTS, make_args, make_bert, make_text_dataset

N = 32


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Four epochs of `random` at ratio 0.5, a checkpoint after every epoch (steps 4, 6, 8, 10)."""
    tmp_path = tmp_path_factory.mktemp("files-run")
    dataset = make_text_dataset(n=N)
    args = make_args(tmp_path, num_train_epochs=4, prune_ratio=0.5, save_strategy="epoch")
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=dataset)
    trainer.train()
    trainer.save_model()  # the final state beside the model, at the top of output_dir
    checkpoints = sorted((d for d in os.listdir(args.output_dir) if d.startswith("checkpoint-")), key=len)
    return args.output_dir, dataset, sorted(checkpoints, key=lambda d: int(d.split("-")[1]))


def copy_run(run, tmp_path) -> str:
    output_dir, _, _ = run
    target = str(tmp_path / "out")
    shutil.copytree(output_dir, target)  # keeps the modification times
    return target


def set_top_level_state(out: str, checkpoint: str, age_s: float = 0.0) -> None:
    """Put `checkpoint`'s pruning state at the top of `out` (as a run that stopped there left it)."""
    for name in (STATE_FILE, MANIFEST_FILE):
        shutil.copy(os.path.join(out, checkpoint, name), os.path.join(out, name))
        if age_s:
            stamp = os.path.getmtime(os.path.join(out, checkpoint, name)) - age_s
            os.utime(os.path.join(out, name), (stamp, stamp))


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# ---------------------------------------------------------------------- item 4: the newest complete state
def test_a_stale_top_level_state_loses_to_a_newer_checkpoint(run, tmp_path, capsys):
    """A resumed 2 -> 4 epoch run that crashed: the top-level state of the first run is older than the checkpoints."""
    out = copy_run(run, tmp_path)
    checkpoints = run[2]
    set_top_level_state(out, checkpoints[1], age_s=60)  # written when the 2-epoch run ended, before the resume
    record = load_pruning_record(out)
    assert record.num_epochs == 4 and record.metadata["source"]["checkpoint"] == checkpoints[-1]
    assert record.source_path == os.path.join(out, checkpoints[-1], STATE_FILE)
    assert main(["inspect", out]) == 0
    captured = capsys.readouterr()
    assert "epochs                                 4 (" in captured.out
    assert f"emp-hf inspect: read {os.path.join(out, checkpoints[-1], STATE_FILE)} (global step 10)" in captured.err


def test_the_global_step_decides_before_the_modification_time(run, tmp_path):
    out = copy_run(run, tmp_path)
    checkpoints = run[2]
    newest = os.path.join(out, checkpoints[-1])
    state = emp_hf.integration.checkpoint.read_pruning_state(os.path.join(out, checkpoints[1], STATE_FILE))
    state.metadata["global_step"] = 6
    save_pruning_state(state, out)  # written last, but at step 6
    assert emp_hf.integration.checkpoint.newest_pruning_state(out) == (newest, 10)
    assert load_pruning_record(out).num_epochs == 4
    state = emp_hf.integration.checkpoint.read_pruning_state(os.path.join(newest, STATE_FILE))
    state.metadata["global_step"] = 12  # e.g. the final save after the last checkpoint
    save_pruning_state(state, out)
    assert emp_hf.integration.checkpoint.newest_pruning_state(out) == (out, 12)


def test_a_record_exported_into_the_output_dir_does_not_hide_later_training(run, tmp_path, capsys):
    out = copy_run(run, tmp_path)
    checkpoints = run[2]
    later = [*checkpoints[2:], STATE_FILE, MANIFEST_FILE]  # what the last two epochs wrote
    later = [name for name in later if os.path.exists(os.path.join(out, name))]  # a final state, if written
    for name in later:  # the run so far: two epochs
        os.rename(os.path.join(out, name), os.path.join(tmp_path, name))
    assert main(["export", out, "--checkpoint", checkpoints[1], "--to", out]) == 0
    assert load_pruning_record(out).num_epochs == 2
    for name in later:  # training went on
        os.rename(os.path.join(tmp_path, name), os.path.join(out, name))
        os.utime(os.path.join(out, name))
    capsys.readouterr()
    assert load_pruning_record(out).num_epochs == 4
    assert main(["inspect", out]) == 0
    captured = capsys.readouterr()
    assert "epochs                                 4 (" in captured.out
    assert captured.err.startswith(f"emp-hf inspect: read {out}") and STATE_FILE in captured.err  # the final state
    pushed = load_pruning_record(_record_dir(out, str(tmp_path / "scratch"), plots=False))  # what push uploads
    assert pushed.num_epochs == 4

    # a record without a step: the modification times decide, and a newer record is kept
    with open(os.path.join(out, RECORD_FILE)) as f:
        metadata = json.load(f)
    metadata.pop("source")
    metadata.pop("global_step", None)
    with open(os.path.join(out, RECORD_FILE), "w") as f:
        json.dump(metadata, f)
    assert load_pruning_record(out).source_path == out
    old = os.path.getmtime(os.path.join(out, checkpoints[-1], STATE_FILE)) - 60
    os.utime(os.path.join(out, RECORD_FILE), (old, old))
    assert load_pruning_record(out).num_epochs == 4


# ---------------------------------------------------------------------- item 10: tampered records
@pytest.fixture
def record_dir(run, tmp_path):
    output_dir, _, _ = run
    return save_pruning_record(load_pruning_record(output_dir), tmp_path / "record")


def edit_plans(directory, edit) -> None:
    path = os.path.join(directory, PLANS_FILE)
    table = pq.read_table(path)
    plans = table.column("rows").to_pylist()
    edit(plans)
    index = table.schema.get_field_index("rows")
    pq.write_table(table.set_column(index, "rows", pa.array(plans, type=table.schema.field("rows").type)), path)


def edit_json(directory, edit) -> None:
    path = os.path.join(directory, RECORD_FILE)
    with open(path) as f:
        metadata = json.load(f)
    metadata = edit(metadata)
    with open(path, "w") as f:
        json.dump(metadata, f)


def _set(plans, epoch, position, value):
    plans[epoch][position] = value


TAMPERINGS = {
    "negative row": (lambda d: edit_plans(d, lambda p: _set(p, 1, 0, -1)), "holds row -1, outside 0..31"),
    "row >= N": (lambda d: edit_plans(d, lambda p: _set(p, 1, 0, N)), "holds row 32, outside 0..31"),
    "huge row": (lambda d: edit_plans(d, lambda p: _set(p, 1, 0, 2**62)), "outside 0..31"),
    "repeated row": (lambda d: edit_plans(d, lambda p: _set(p, 1, 1, p[1][0])), "holds a row more than once"),
    "list for the metadata": (lambda d: edit_json(d, lambda m: [m]), "JSON list, where an object belongs"),
    "list for the dataset": (
        lambda d: edit_json(d, lambda m: {**m, "dataset": [m["dataset"]]}),
        "dataset holds a JSON list, where an object belongs",
    ),
    "list for the options": (lambda d: edit_json(d, lambda m: {**m, "options": []}), "options holds a JSON list"),
    "format version as a string": (
        lambda d: edit_json(d, lambda m: {**m, "format_version": "1"}),
        "format_version must be a whole number >= 1, got '1'",
    ),
    "epochs that disagree": (lambda d: edit_json(d, lambda m: {**m, "num_epochs": 3}), "epochs 0..2 in order"),
    "no num_rows": (  # was a KeyError, reported as a damaged "pruning state ... weights_only=False"
        lambda d: edit_json(d, lambda m: {k: v for k, v in m.items() if k != "num_rows"}),
        "num_rows must be a whole number > 0, got None",
    ),
    "truncated rows.parquet": (
        lambda d: os.truncate(os.path.join(d, "rows.parquet"), 100),
        "rows.parquet cannot be read",
    ),
}


@pytest.mark.parametrize("case", list(TAMPERINGS))
def test_a_tampered_record_is_a_one_line_error(record_dir, run, case, capsys):
    tamper, message = TAMPERINGS[case]
    tamper(record_dir)
    with pytest.raises(RecordFormatError, match="damaged|edited") as raised:
        load_pruning_record(record_dir)
    assert message in str(raised.value) and len(lines(str(raised.value))) == 1
    assert "upgrade emp_hf" not in str(raised.value) and "weights_only" not in str(raised.value)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        select_rows(run[1], record_dir, epoch=1)  # never an IndexError or OverflowError
    assert main(["inspect", str(record_dir)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    err = lines(captured.err)
    assert len(err) == 1 and err[0].startswith("emp-hf inspect: error:") and message in err[0]
    assert "Traceback" not in captured.err and "weights_only" not in captured.err


def test_a_newer_format_asks_for_an_upgrade(record_dir):
    edit_json(record_dir, lambda m: {**m, "format_version": 2})
    with pytest.raises(ValueError, match="upgrade emp_hf"):
        load_pruning_record(record_dir)


def test_a_tampered_state_with_a_matching_manifest_is_a_one_line_error(tmp_path, capsys):
    state = PruningState(8)
    state.record_plan(0, torch.arange(8))
    state.record_plan(1, torch.tensor([3, -1, 5]))  # as an edited file would hold it
    state.update(torch.arange(8), torch.rand(8), torch.rand(8), 0)
    save_pruning_state(state, str(tmp_path))  # the manifest matches the edited file
    with pytest.raises(ValueError, match=r"plan of epoch 1 in the pruning state is invalid: it holds row -1") as e:
        load_pruning_record(tmp_path)
    assert len(lines(str(e.value))) == 1
    assert main(["inspect", str(tmp_path)]) == 1
    err = lines(capsys.readouterr().err)
    assert len(err) == 1 and "holds row -1, outside 0..7" in err[0]


# ---------------------------------------------------------------------- item 11: misleading messages
def test_the_checkpoints_of_a_plain_trainer_are_said_to_hold_no_pruning_state(tmp_path, capsys):
    defaults = {**TRAINING_DEFAULTS, "num_train_epochs": 1, "save_strategy": "epoch"}
    args = TrainingArguments(output_dir=str(tmp_path / "plain"), **defaults)
    Trainer(model=make_bert(), args=args, train_dataset=make_text_dataset(n=16)).train()
    assert emp_hf.integration.checkpoint._checkpoint_problem(str(tmp_path / "plain" / "checkpoint-2")) == (
        "it has no pruning state (it was saved by a plain Trainer, not EMPTrainer)"
    )
    assert main(["inspect", str(tmp_path / "plain")]) == 1
    err = capsys.readouterr().err
    assert "checkpoint-2: it has no pruning state (it was saved by a plain Trainer, not EMPTrainer)" in err
    assert "did not finish" not in err


# ---------------------------------------------------------------------- item 12: a full disk
def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def leftovers(directory) -> list[str]:
    return [name for _, _, files in os.walk(directory) for name in files if ".tmp-" in name]


def test_a_full_disk_while_saving_the_state_names_the_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    state = PruningState(8)
    state.record_plan(0, torch.arange(8))
    monkeypatch.setattr(emp_hf.integration.checkpoint.os, "fsync", no_space)
    with pytest.raises(OSError) as raised:
        save_pruning_state(state, str(tmp_path))
    assert raised.value.errno == errno.ENOSPC
    assert raised.value.filename == str(tmp_path / STATE_FILE) and str(tmp_path / STATE_FILE) in str(raised.value)
    assert leftovers(tmp_path) == []


def test_a_full_disk_while_saving_a_record_names_the_file_and_leaves_no_temporary_file(run, tmp_path, monkeypatch):
    record = load_pruning_record(run[0])
    real_write = pq.write_table

    def half_written(table, where, **kwargs):
        real_write(table.slice(0, 1), where, **kwargs)  # some bytes reach the disk, then it is full
        no_space()

    monkeypatch.setattr(emp_hf.records.record.pq, "write_table", half_written)
    with pytest.raises(OSError) as raised:
        record.save(tmp_path / "record")
    assert raised.value.filename == str(tmp_path / "record" / "rows.parquet")
    assert leftovers(tmp_path) == []
    monkeypatch.undo()

    monkeypatch.setattr(emp_hf.integration.checkpoint.os, "fsync", no_space)  # the metadata and the card
    with pytest.raises(OSError) as raised:
        record.save(tmp_path / "record")
    assert raised.value.filename == str(tmp_path / "record" / RECORD_FILE)
    assert leftovers(tmp_path) == []


def test_emp_hf_export_on_a_full_disk_is_one_line_naming_the_file(run, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(emp_hf.integration.checkpoint.os, "fsync", no_space)
    assert main(["export", run[0], "--to", str(tmp_path / "record")]) == 1
    err = lines(capsys.readouterr().err)
    assert err[-1].startswith("emp-hf export: error: [Errno 28] No space left on device")
    assert str(tmp_path / "record" / RECORD_FILE) in err[-1] and leftovers(tmp_path) == []


def test_a_full_disk_while_drawing_names_the_picture_and_leaves_no_temporary_file(run, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from emp_hf.records.plots import save_pruning_plots

    def half_drawn(self, where, **kwargs):
        with open(where, "wb") as f:
            f.write(b"\x89PNG")
        no_space()

    monkeypatch.setattr(Figure, "savefig", half_drawn)
    with pytest.raises(OSError) as raised:
        save_pruning_plots(load_pruning_record(run[0]), tmp_path / "plots")
    assert raised.value.filename == str(tmp_path / "plots" / "frequency_histogram.png")
    assert leftovers(tmp_path) == [] and os.listdir(tmp_path / "plots") == []


def test_a_record_built_from_edited_tables_refuses_its_bad_plan(run):
    from emp_hf.records.record import PruningRecord

    record = load_pruning_record(run[0])
    plans = record.plans.map(lambda row: {"rows": [-1, *row["rows"][1:]]} if row["epoch"] == 1 else row)
    edited = PruningRecord(rows=record.rows, plans=plans, metadata=record.metadata)  # e.g. from load_dataset
    with pytest.raises(RecordFormatError, match="The plan of epoch 1 of this pruning record holds row -1"):
        select_rows(run[1], edited, epoch=1)
    with pytest.raises(RecordFormatError, match="holds row -1"):
        edited.summary()  # never a wrapped index and a wrong summary
    plans = record.plans.map(lambda row: {"rows": [row["rows"][0], *row["rows"][:-1]]})
    with pytest.raises(RecordFormatError, match="holds a row more than once"):
        select_rows(run[1], PruningRecord(rows=record.rows, plans=plans, metadata=record.metadata), epoch=0)


def test_a_checkpoint_whose_trainer_state_is_a_json_list_is_skipped_as_unfinished(run, tmp_path):
    out = copy_run(run, tmp_path)
    newest = run[2][-1]
    for name in (STATE_FILE, MANIFEST_FILE):
        if os.path.exists(os.path.join(out, name)):
            os.remove(os.path.join(out, name))
    with open(os.path.join(out, newest, "trainer_state.json"), "w") as f:
        json.dump([{"global_step": 10}], f)
    assert emp_hf.integration.checkpoint._checkpoint_problem(os.path.join(out, newest)) == (
        "its save did not finish (no valid trainer_state.json)"
    )
    assert load_pruning_record(out).metadata["source"]["checkpoint"] == run[2][-2]
