"""Run a test script in fresh processes (for the tests): a clean environment, a hard timeout, no hang left behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]  # the repository: dev/emp_hf_dev/launching.py
CPU_2PROC_CONFIG = ROOT / "recipes" / "configs" / "cpu_2proc.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_launch_cmd(script: str | Path, *args: str) -> list[str]:
    """`accelerate launch` of `script` with the shipped 2-process CPU config, on a free port."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_2PROC_CONFIG)]
    return [*cmd, "--main_process_port", str(free_port()), str(script), *args]


def torchrun_cmd(script: str | Path, *args: str, nproc: int = 2) -> list[str]:
    """`torchrun --standalone` of `script` with `nproc` processes (1: plain `python`)."""
    if nproc == 1:
        return [sys.executable, str(script), *args]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return [*launcher, str(script), *args]


def run_processes(cmd: list[str], *, timeout: float, what: str) -> tuple[int, str]:
    """Run `cmd` offline with one thread per process; kill its whole process group if it outlives `timeout`.

    Returns the exit code and the combined output; a timeout fails the test (a hang never blocks the suite).
    """
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "ACCELERATE_USE_CPU"):
        env.pop(var, None)  # never inherit a surrounding launcher's rendezvous
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{what} did not finish within {timeout}s (hang?):\n{out[-4000:]}")
    return proc.returncode, out


def end_process_group() -> None:
    """End a launched process cleanly: wait for every process, then destroy the default process group (if any).

    Left to interpreter exit, gloo's threads are sometimes torn down while still joinable and the process aborts
    ("terminate called without an active exception", SIGABRT) after its work is done."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
