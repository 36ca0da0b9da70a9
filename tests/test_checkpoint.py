"""`emp_hf.integration.checkpoint`, the pruning state beside the Trainer's checkpoints: killed with SIGKILL at several
points (one
inside a checkpoint save), then resumed: same final state; who pushes at a save, and a damaged state on resume."""

import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from emp_hf import EMPTrainer
from emp_hf_dev.fixtures import (
    STATE_DAMAGES,
    damage_pruning_state,
    make_args,
    make_bert,
    make_text_dataset,
)

SCRIPT = os.path.join(os.path.dirname(__file__), "reliability", "crash_run.py")


def launch(output_dir, *flags):
    return subprocess.Popen(
        [sys.executable, SCRIPT, str(output_dir), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def run_to_end(output_dir, *flags):
    process = launch(output_dir, *flags)
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 0 and "DONE" in out
    return torch.load(os.path.join(output_dir, "final.pt"), weights_only=True)


def kill_when(output_dir, marker, *flags):
    """Start a run and SIGKILL it as soon as it prints `marker`."""
    process = launch(output_dir, *flags)
    for line in process.stdout:
        if line.strip() == marker:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=300)
    assert process.returncode == -signal.SIGKILL, f"the run ended before printing {marker!r}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return run_to_end(tmp_path_factory.mktemp("reference"))


def plans_of(state: dict) -> list[list[int]]:
    """The ordered plans of a saved state (stored as bitmaps and order seeds)."""
    from emp_hf.core.plan_history import PlanHistory

    history = PlanHistory(state["num_rows"])
    history.load_state_dict(state["plans"])
    return [p.tolist() for p in history]


def assert_same_state(a, b):
    assert plans_of(a) == plans_of(b)
    assert torch.equal(a["tables"]["frequency"], b["tables"]["frequency"])
    torch.testing.assert_close(a["tables"]["loss"], b["tables"]["loss"], equal_nan=True)
    torch.testing.assert_close(a["tables"]["score"], b["tables"]["score"], equal_nan=True)


@pytest.mark.slow
@pytest.mark.parametrize("marker", ["STEP 6", "STEP 15", "STEP 25"])
def test_killed_between_steps_resumes_exactly(tmp_path, reference, marker):
    kill_when(tmp_path, marker)
    assert_same_state(run_to_end(tmp_path, "--resume"), reference)


@pytest.mark.slow
def test_killed_during_pruning_state_save_is_detected_and_skipped(tmp_path, reference):
    from emp_hf.integration.checkpoint import has_complete_pruning_state, latest_complete_checkpoint

    # checkpoint-4 completes; the kill lands while checkpoint-8 writes its manifest
    kill_dir = tmp_path
    process = launch(kill_dir, "--slow-save")
    manifests = 0
    for line in process.stdout:
        if line.strip() == "WRITING pruning_state.json":
            manifests += 1
            if manifests == 2:
                process.send_signal(signal.SIGKILL)
                break
    process.wait(timeout=300)
    checkpoints = kill_dir / "out"  # crash_run.py trains into OUTPUT_DIR/out
    assert (checkpoints / "checkpoint-8" / "pruning_state.pt").exists()
    assert not has_complete_pruning_state(str(checkpoints / "checkpoint-8"))
    assert latest_complete_checkpoint(str(checkpoints)) == str(checkpoints / "checkpoint-4")
    assert_same_state(run_to_end(kill_dir, "--resume"), reference)


# ---- Checkpoint saves: who pushes, what survives a kill, a damaged state on resume.
def _checkpointing_trainer(tmp_path, **kwargs) -> EMPTrainer:
    args = make_args(tmp_path, num_train_epochs=4, save_strategy="steps", save_steps=4, logging_steps=100, **kwargs)
    return EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset(n=32))


@pytest.mark.usefixtures("one_thread")
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


@pytest.mark.usefixtures("one_thread")
def test_a_kill_while_writing_the_pruning_state_keeps_a_resumable_checkpoint(tmp_path, monkeypatch):
    import emp_hf.integration.checkpoint
    from emp_hf.integration.checkpoint import latest_complete_checkpoint

    trainer = _checkpointing_trainer(tmp_path, save_total_limit=1)
    write = emp_hf.integration.checkpoint._atomic_write

    def dies_at_the_second_save(path, data):
        if "checkpoint-8" in path:
            raise KeyboardInterrupt("killed while writing the pruning state")
        write(path, data)

    monkeypatch.setattr(emp_hf.integration.checkpoint, "_atomic_write", dies_at_the_second_save)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    output_dir = trainer.args.output_dir
    assert latest_complete_checkpoint(output_dir) == f"{output_dir}/checkpoint-4"
    monkeypatch.setattr(emp_hf.integration.checkpoint, "_atomic_write", write)
    resumed = _checkpointing_trainer(tmp_path, save_total_limit=1)
    output = resumed.train(resume_from_checkpoint=True)
    assert output.global_step == resumed.state.max_steps


@pytest.mark.usefixtures("one_thread")
def test_checkpoint_push_finds_the_pruning_state_written(tmp_path, monkeypatch):
    trainer = _checkpointing_trainer(tmp_path)
    seen = []

    def push_from_checkpoint(folder):
        seen.append(sorted(f for f in os.listdir(folder) if f.startswith("pruning_state")))

    monkeypatch.setattr(trainer, "_push_from_checkpoint", push_from_checkpoint)
    trainer.args.push_to_hub = True
    trainer.train()
    assert seen and all(files == ["pruning_state.json", "pruning_state.pt"] for files in seen)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("how", STATE_DAMAGES)
def test_damaged_pruning_state_is_a_clear_error_on_resume(finished_run, tmp_path, how):
    from emp_hf.core.tracker import PruningState
    from emp_hf.integration.checkpoint import latest_complete_checkpoint, load_pruning_state

    checkpoint = tmp_path / "out" / "checkpoint-8"
    shutil.copytree(finished_run / "checkpoint-8", checkpoint)
    shutil.copytree(finished_run / "checkpoint-4", tmp_path / "out" / "checkpoint-4")
    damage_pruning_state(checkpoint, how)
    with pytest.raises(ValueError, match="corrupted|not valid JSON|not a pruning-state manifest|cannot be read"):
        load_pruning_state(PruningState(32), str(checkpoint))
    assert latest_complete_checkpoint(str(tmp_path / "out")).endswith("checkpoint-4")
