"""Killed with SIGKILL at several points (one inside a checkpoint save), then resumed: same final state."""

import os
import signal
import subprocess
import sys

import pytest
import torch

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
    from emp_hf.plan_history import PlanHistory

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
    from emp_hf.checkpoint import has_complete_pruning_state, latest_complete_checkpoint

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
