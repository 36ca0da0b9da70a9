"""The buffered tracker inside `EMPTrainer`: nothing pending after training, checkpoints hold every observation,
old (format 1) checkpoints resume exactly, and the plan history stays compact."""

from __future__ import annotations

import hashlib
import io
import json

import pytest
import torch
from transformers import TrainerCallback

from emp_hf import EMPTrainer
from emp_hf.core.tracker import TABLE_SPECS
from emp_hf.integration.checkpoint import MANIFEST_FILE, STATE_FILE
from emp_hf_dev.fixtures import make_args, make_bert


class StopAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_save = True
            control.should_training_stop = True


def run(tmp_path, text_dataset, out, method="emp", callbacks=(), resume=None):
    args = make_args(
        tmp_path, output_dir=str(tmp_path / out), pruning_method=method, num_train_epochs=4, save_strategy="no"
    )
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=text_dataset, callbacks=list(callbacks))
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def test_nothing_is_pending_after_training_and_the_saved_state_has_every_visit(tmp_path, text_dataset):
    trainer = run(tmp_path, text_dataset, "out")
    trainer.save_model()  # writes the final pruning state beside the model
    state = trainer.pruning_state
    assert state.pending == 0
    saved = torch.load(tmp_path / "out" / STATE_FILE, weights_only=True)
    assert saved["format_version"] == 2
    assert int(saved["tables"]["frequency"][:-1].sum()) == sum(state.epoch_plan_sizes)
    assert set(saved["tables"]) == {"loss", "entropy", "score", "frequency", "last_epoch"}  # emp's tables
    n = len(text_dataset)
    assert [p["bitmap"] is None for p in saved["plans"]] == [True, False, False, False]  # warm-up: no bitmap
    assert all(p["bitmap"].numel() == -(-n // 8) for p in saved["plans"][1:])  # N/8 bytes per pruned epoch


def as_format_1(payload: bytes) -> bytes:
    """Rewrite a saved state as emp_hf wrote it before issue 15: eight tables, int64 counters, explicit plans."""
    from emp_hf.core.plan_history import PlanHistory

    state = torch.load(io.BytesIO(payload), weights_only=True)
    n = state["num_rows"]
    tables = {}
    for name, (dtype, value) in TABLE_SPECS.items():
        dtype = torch.int64 if name in ("frequency", "last_epoch") else dtype
        saved = state["tables"].get(name)
        tables[name] = torch.full((n + 1,), value, dtype=dtype) if saved is None else saved.to(dtype)
    history = PlanHistory(n)
    history.load_state_dict(state["plans"])
    old = {**state, "format_version": 1, "tables": tables, "plans": [plan.clone() for plan in history]}
    buffer = io.BytesIO()
    torch.save(old, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("method", ["emp", "infobatch"])
def test_a_format_1_checkpoint_resumes_exactly(tmp_path, text_dataset, method):
    full = run(tmp_path, text_dataset, "full", method)
    run(tmp_path, text_dataset, "split", method, callbacks=[StopAt(15)])  # inside the first pruned epoch
    checkpoint = tmp_path / "split" / "checkpoint-15"
    payload = as_format_1((checkpoint / STATE_FILE).read_bytes())
    (checkpoint / STATE_FILE).write_bytes(payload)
    manifest = json.loads((checkpoint / MANIFEST_FILE).read_text())
    manifest.update(sha256=hashlib.sha256(payload).hexdigest(), bytes=len(payload))
    (checkpoint / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert torch.load(checkpoint / STATE_FILE, weights_only=True)["format_version"] == 1

    resumed = run(tmp_path, text_dataset, "split", method, resume=str(checkpoint))
    a, b = full.pruning_state, resumed.pruning_state
    assert resumed.state.global_step == full.state.global_step
    assert [p.tolist() for p in a.plans] == [p.tolist() for p in b.plans]
    assert a.tracked == b.tracked
    for name in a.tracked:
        torch.testing.assert_close(getattr(a, name), getattr(b, name), equal_nan=True, msg=name)
