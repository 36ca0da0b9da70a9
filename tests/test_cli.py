"""`emp-hf export / inspect` on the output directory of a real (tiny) EMPTrainer run."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from emp_hf import EMPTrainer, cli
from emp_hf.cli import main
from emp_hf.integration.checkpoint import read_pruning_state, save_pruning_state
from emp_hf.records.load import load_pruning_record, select_rows
from emp_hf.records.record import RECORD_FILE
from emp_hf_dev.fixtures import (
    STATE_DAMAGES,
    damage_pruning_state,
    make_args,
    make_bert,
    make_text_dataset,
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Four epochs of EMP at ratio 0.5 with a checkpoint (and its pruning_state.pt) after every epoch."""
    tmp_path = tmp_path_factory.mktemp("cli-run")
    dataset = make_text_dataset()
    args = make_args(tmp_path, num_train_epochs=4, pruning_method="emp", prune_ratio=0.5, save_strategy="epoch")
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=dataset)
    trainer.train()
    trainer.save_model()  # the final pruning state beside the model, as a user saves it
    return trainer, dataset, args.output_dir


def test_checkpoints_hold_the_pruning_state(run):
    _, _, output_dir = run
    checkpoints = sorted(d for d in os.listdir(output_dir) if d.startswith("checkpoint-"))
    assert checkpoints == ["checkpoint-12", "checkpoint-18", "checkpoint-24", "checkpoint-30"]
    assert all(os.path.isfile(os.path.join(output_dir, d, "pruning_state.pt")) for d in checkpoints)


def test_inspect_output_dir_prints_the_summary_and_draws(run, tmp_path, capsys):
    trainer, _, output_dir = run
    assert main(["inspect", output_dir, "--plots", str(tmp_path / "plots")]) == 0
    out = capsys.readouterr().out
    state = trainer.pruning_state
    frequency = state.frequency
    pruned = state.kept_in_epoch()[1:].any(dim=0)
    expected = {
        "rows": "96",
        "epochs": "4 (3 pruned)",
        "method": "emp",
        "prune ratio": "0.5",
        "realised saving": "37.50%",
        "rows per epoch": "96, 48, 48, 48",
        "model": "BertForSequenceClassification",
        "never visited": "0 (0.0%)",
        "never revisited after warm-up": f"{int((~pruned).sum())} (",
        "frequency mean": f"{frequency.float().mean().item():.2f}",
    }
    lines = {line.strip().split("  ")[0]: line.strip() for line in out.splitlines()}
    for key, value in expected.items():
        assert key in lines and value in lines[key], (key, out)
    q = f"{int(frequency.min())} / "
    assert any(line.startswith("frequency min/p10/p25/p50/p75/p90/max") and q in line for line in lines.values())
    for name in ("frequency_histogram", "score_distribution", "kept_fraction"):
        assert os.path.getsize(tmp_path / "plots" / f"{name}.png") > 1000
        assert f"wrote {tmp_path / 'plots' / name}.png" in out


def test_export_final_state_then_load_and_select(run, tmp_path, capsys):
    trainer, dataset, output_dir = run
    target = tmp_path / "record"
    # save_model() wrote the final state to OUTPUT_DIR/pruning_state.pt: the newest complete state
    assert os.path.isfile(os.path.join(output_dir, "pruning_state.pt"))
    assert main(["export", output_dir, "--to", str(target), "--plots"]) == 0
    read = "out" if os.path.isfile(os.path.join(output_dir, "pruning_state.pt")) else "checkpoint-30"
    assert f"({read})" in capsys.readouterr().out
    assert sorted(os.listdir(target)) == ["README.md", "plans.parquet", "plots", RECORD_FILE, "rows.parquet"]
    record = load_pruning_record(target)
    state = trainer.pruning_state
    assert record.metadata["source"]["checkpoint"] == read
    assert record.column("frequency").tolist() == state.frequency.tolist()
    for epoch, plan in enumerate(state.plans):
        assert select_rows(dataset, record, epoch=epoch)["input_ids"] == dataset.select(plan.tolist())["input_ids"]

    assert main(["inspect", str(target), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 96 and summary["epochs"] == 4 and summary["method"] == "emp"
    assert summary["realized_saving"] == pytest.approx(state.realized_saving())
    assert summary["dataset_fingerprint"] == dataset._fingerprint


def test_export_a_chosen_checkpoint_or_the_top_level_state(run, tmp_path, capsys):
    _, _, output_dir = run
    assert main(["export", output_dir, "--checkpoint", "12", "--to", str(tmp_path / "a")]) == 0
    assert load_pruning_record(tmp_path / "a").plan_sizes == [96]  # after the warm-up epoch only
    checkpoint = os.path.join(output_dir, "checkpoint-18")
    assert main(["export", checkpoint, "--to", str(tmp_path / "b")]) == 0
    assert load_pruning_record(tmp_path / "b").plan_sizes == [96, 48]

    # a pruning_state.pt at the top level of the output directory is read when it is the newest
    top = tmp_path / "top"
    shutil.copytree(output_dir, top)
    state = read_pruning_state(os.path.join(top, "checkpoint-24", "pruning_state.pt"))
    state.metadata.pop("global_step", None)  # no step: the modification times decide
    save_pruning_state(state, str(top))
    assert main(["export", str(top), "--to", str(tmp_path / "c")]) == 0
    record = load_pruning_record(tmp_path / "c")
    assert record.plan_sizes == [96, 48, 48] and record.metadata["source"]["checkpoint"] == "top"
    # ... and not when a checkpoint is newer (by step, else by modification time)
    state.metadata["global_step"] = 24
    save_pruning_state(state, str(top))
    assert main(["export", str(top), "--to", str(tmp_path / "c2")]) == 0
    assert load_pruning_record(tmp_path / "c2").metadata["source"]["checkpoint"] == "checkpoint-30"

    # a checkpoint whose save did not finish (state and manifest disagree) is skipped
    for name in ("pruning_state.pt", "pruning_state.json"):
        os.remove(top / name)
    with open(top / "checkpoint-30" / "pruning_state.pt", "ab") as f:
        f.write(b"torn")
    assert main(["export", str(top), "--to", str(tmp_path / "d")]) == 0
    assert "checkpoint-24" in capsys.readouterr().out
    assert load_pruning_record(tmp_path / "d").plan_sizes == [96, 48, 48]
    capsys.readouterr()


def test_cli_errors_are_one_line_messages(run, tmp_path, capsys):
    _, _, output_dir = run
    assert main(["inspect", str(tmp_path / "nowhere" / "run")]) == 1
    assert "emp-hf inspect: error:" in capsys.readouterr().err
    empty = tmp_path / "no-checkpoints"
    empty.mkdir()
    assert main(["export", str(empty), "--to", str(tmp_path / "x")]) == 1
    assert "save_strategy" in capsys.readouterr().err
    assert main(["export", output_dir, "--checkpoint", "999", "--to", str(tmp_path / "x")]) == 1
    assert "999" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", output_dir])  # --to is required


@pytest.mark.subprocess
def test_console_script_inspects_a_record(run, tmp_path):
    _, _, output_dir = run
    command = [shutil.which("emp-hf")] if shutil.which("emp-hf") else [sys.executable, "-m", "emp_hf.cli"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def emp_hf(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([*command, *argv], env=env, capture_output=True, text=True, timeout=300)

    done = emp_hf("inspect", output_dir)
    assert done.returncode == 0, done.stderr
    assert "realised saving" in done.stdout and "37.50%" in done.stdout
    done = emp_hf("inspect", "someone/record")
    assert done.returncode == 1 and "cannot be reached offline" in done.stderr


# ---- One-line errors instead of tracebacks, a user's README, `python -m emp_hf`.
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("how", STATE_DAMAGES)
def test_damaged_pruning_state_is_a_one_line_cli_error(finished_run, tmp_path, capsys, how):
    checkpoint = tmp_path / "checkpoint-8"
    shutil.copytree(finished_run / "checkpoint-8", checkpoint)
    damage_pruning_state(checkpoint, how)
    assert cli.main(["inspect", str(checkpoint)]) == 1
    stderr = capsys.readouterr().err
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("emp-hf inspect: error:"), stderr
    assert "set to `False`" not in stderr  # torch's advice to load with weights_only=False: never


def _env(**extra):
    return {**os.environ, "PYTHONPATH": os.getcwd(), "HF_HUB_OFFLINE": "1", **extra}


@pytest.mark.usefixtures("one_thread")
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


@pytest.mark.usefixtures("one_thread")
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


@pytest.mark.usefixtures("one_thread")
def test_python_dash_m_runs_the_cli(finished_run):
    result = subprocess.run(
        [sys.executable, "-m", "emp_hf", "inspect", str(finished_run), "--json"],
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert result.returncode == 0, result.stderr
    assert '"rows": 32' in result.stdout
