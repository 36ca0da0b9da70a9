"""Save and load the pruning state next to the Trainer's checkpoint files, atomically and verified."""

from __future__ import annotations

import hashlib
import io
import json
import os

import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from .tracker import PruningState

logger = logging.get_logger(__name__)

STATE_FILE = "pruning_state.pt"
MANIFEST_FILE = "pruning_state.json"


def _atomic_write(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_pruning_state(state: PruningState, checkpoint_dir: str) -> None:
    """Write `pruning_state.pt` and its manifest (size and SHA-256) into `checkpoint_dir`."""
    os.makedirs(checkpoint_dir, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state.state_dict(), buffer)
    payload = buffer.getvalue()
    _atomic_write(os.path.join(checkpoint_dir, STATE_FILE), payload)
    manifest = {
        "sha256": hashlib.sha256(payload).hexdigest(),
        "bytes": len(payload),
        "epochs": len(state.plans),
    }
    _atomic_write(os.path.join(checkpoint_dir, MANIFEST_FILE), json.dumps(manifest).encode())


def load_pruning_state(state: PruningState, checkpoint_dir: str) -> None:
    """Restore `state` from `checkpoint_dir`; a missing, partial or corrupted file is an error, never skipped."""
    path = os.path.join(checkpoint_dir, STATE_FILE)
    manifest_path = os.path.join(checkpoint_dir, MANIFEST_FILE)
    if not os.path.isfile(path) or not os.path.isfile(manifest_path):
        raise FileNotFoundError(
            f"{checkpoint_dir} has no complete pruning state ({STATE_FILE} and {MANIFEST_FILE}): it was not "
            "written by EMPTrainer or its save was interrupted. Resume from another checkpoint."
        )
    with open(path, "rb") as f:
        payload = f.read()
    with open(manifest_path) as f:
        manifest = json.load(f)
    if len(payload) != manifest["bytes"] or hashlib.sha256(payload).hexdigest() != manifest["sha256"]:
        raise ValueError(f"The pruning state in {checkpoint_dir} does not match its manifest: it is corrupted.")
    state.load_state_dict(torch.load(io.BytesIO(payload), weights_only=True))


def has_complete_pruning_state(checkpoint_dir: str) -> bool:
    """Whether `checkpoint_dir` holds a pruning state that matches its manifest (written last on save)."""
    try:
        with open(os.path.join(checkpoint_dir, MANIFEST_FILE)) as f:
            manifest = json.load(f)
        with open(os.path.join(checkpoint_dir, STATE_FILE), "rb") as f:
            payload = f.read()
    except (OSError, ValueError):
        return False
    return len(payload) == manifest.get("bytes") and hashlib.sha256(payload).hexdigest() == manifest.get("sha256")


def latest_complete_checkpoint(output_dir: str) -> str | None:
    """The newest `checkpoint-N` of `output_dir` whose save finished; newer, interrupted ones are skipped."""
    if not os.path.isdir(output_dir):
        return None
    steps = sorted(
        (int(name.split("-")[-1]), name)
        for name in os.listdir(output_dir)
        if name.startswith(f"{PREFIX_CHECKPOINT_DIR}-") and name.split("-")[-1].isdigit()
    )
    for _, name in reversed(steps):
        path = os.path.join(output_dir, name)
        if has_complete_pruning_state(path):
            return path
        logger.warning(f"Skipping {path}: its save did not finish (no complete pruning state).")
    return None
