"""Issue 21, item 19: under 2 processes `eval_loss` is doubled for a model whose loss ignores `num_items_in_batch`
(transformers' `average_tokens_across_devices` scaling, upstream): plain `Trainer` reports the same doubled value,
so it is not emp_hf's (docs/distributed.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emp_hf_dev.launching import run_processes, torchrun_cmd

pytestmark = pytest.mark.distributed

SCRIPT = Path(__file__).with_name("eval_loss_probe.py")


def _eval_losses(tmp_path: Path, nproc: int) -> dict[str, float]:
    out = tmp_path / f"n{nproc}"
    code, log = run_processes(torchrun_cmd(SCRIPT, str(out), nproc=nproc), timeout=300, what="eval probe")
    assert code == 0, log[-4000:]
    return json.loads((out / "eval_loss.json").read_text())


def test_eval_loss_under_two_processes_is_the_trainers(tmp_path):
    one = _eval_losses(tmp_path, 1)
    two = _eval_losses(tmp_path, 2)
    assert two["none"] == pytest.approx(two["trainer"], rel=1e-6)  # EMPTrainer reports what Trainer reports
    assert one["none"] == pytest.approx(one["trainer"], rel=1e-6)
    assert two["trainer"] == pytest.approx(2 * one["trainer"], rel=1e-4)  # the upstream doubling
