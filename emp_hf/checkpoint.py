"""Save and load the pruning state next to the Trainer's checkpoint files (atomically, verified), and find it."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import zipfile

import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from .tracker import PruningState

logger = logging.get_logger(__name__)

TRAINER_STATE_NAME = "trainer_state.json"  # transformers.trainer.TRAINER_STATE_NAME

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


def read_manifest(checkpoint_dir: str) -> dict:
    """The manifest of `checkpoint_dir`'s pruning state; a truncated, empty or edited one is a one-line error."""
    path = os.path.join(checkpoint_dir, MANIFEST_FILE)
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{path} is not valid JSON ({error}): the save was interrupted or the file damaged. "
            "Use another checkpoint."
        ) from None
    valid = (
        isinstance(manifest, dict)
        and isinstance(manifest.get("bytes"), int)
        and isinstance(manifest.get("sha256"), str)
    )
    if not valid:
        raise ValueError(
            f"{path} is not a pruning-state manifest (it needs 'bytes' and 'sha256'; got {str(manifest)[:80]}): "
            "the file was edited or damaged. Use another checkpoint."
        )
    return manifest


def load_state_payload(data: bytes | str, source: str) -> dict:
    """`torch.load` a pruning state (`weights_only=True`, always); a truncated or damaged file is a one-line error.

    Never load a pruning state with `weights_only=False`: it is plain tensors and lists, and a file that needs more
    is not one emp_hf wrote.
    """
    try:
        payload = torch.load(
            io.BytesIO(data) if isinstance(data, bytes) else data, map_location="cpu", weights_only=True
        )
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, zipfile.BadZipFile) as error:
        reason = (
            str(error).splitlines()[0][:120] if not isinstance(error, pickle.UnpicklingError) else "unpickling failed"
        )
        raise ValueError(
            f"{source} cannot be read ({type(error).__name__}: {reason}): it is truncated, damaged or not written by "
            "emp_hf. Use another checkpoint; do not load it with weights_only=False."
        ) from None
    if not isinstance(payload, dict) or "num_rows" not in payload or "tables" not in payload:
        raise ValueError(
            f"{source} is not a pruning state written by emp_hf (no 'num_rows'/'tables'). Use another checkpoint."
        )
    return payload


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
    manifest = read_manifest(checkpoint_dir)
    if len(payload) != manifest["bytes"] or hashlib.sha256(payload).hexdigest() != manifest["sha256"]:
        raise ValueError(
            f"The pruning state in {checkpoint_dir} does not match its manifest: it is corrupted (truncated or "
            "changed after saving). Resume from another checkpoint."
        )
    state.load_state_dict(load_state_payload(payload, path))


def has_complete_pruning_state(checkpoint_dir: str) -> bool:
    """Whether `checkpoint_dir` holds a pruning state that matches its manifest (written last on save)."""
    try:
        manifest = read_manifest(checkpoint_dir)
        with open(os.path.join(checkpoint_dir, STATE_FILE), "rb") as f:
            payload = f.read()
    except (OSError, ValueError):
        return False
    return len(payload) == manifest["bytes"] and hashlib.sha256(payload).hexdigest() == manifest["sha256"]


def _has_trainer_state(checkpoint_dir: str) -> bool:
    """Whether the Trainer finished its part of the save: `trainer_state.json`, written after the model and
    optimizer (and after the pruning state, which `EMPTrainer` writes first), parses."""
    try:
        with open(os.path.join(checkpoint_dir, TRAINER_STATE_NAME)) as f:
            return isinstance(json.load(f), dict)
    except (OSError, ValueError):
        return False


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
        if has_complete_pruning_state(path) and _has_trainer_state(path):
            return path
        logger.warning(f"Skipping {path}: its save did not finish (no complete pruning state or trainer state).")
    return None


# ---------------------------------------------------------------------- training output directories
def find_pruning_state(path: str | os.PathLike, checkpoint: str | None = None) -> str:
    """The `pruning_state.pt` of a training output: `path` itself (a file), `checkpoint` (a directory, a
    name like `checkpoint-30`, or a step), a `pruning_state.pt` at the top level of `path`, else the latest
    `checkpoint-*` directory whose save finished."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path} is neither a training output directory nor a {STATE_FILE} file.")
    if checkpoint is not None:
        candidates = [
            checkpoint,
            os.path.join(path, checkpoint),
            os.path.join(path, f"checkpoint-{checkpoint}"),
        ]
        for candidate in candidates:
            if os.path.isfile(os.path.join(candidate, STATE_FILE)):
                return os.path.join(candidate, STATE_FILE)
        raise FileNotFoundError(f"Checkpoint {checkpoint!r} of {path} has no {STATE_FILE}.")
    if os.path.isfile(os.path.join(path, STATE_FILE)):
        return os.path.join(path, STATE_FILE)
    latest = latest_complete_checkpoint(path)  # skips checkpoints whose save did not finish
    if latest is None:
        raise FileNotFoundError(
            f"{path} has no complete {STATE_FILE}, at its top level or in a checkpoint-* directory: it is not the "
            "output of an EMPTrainer run that saved checkpoints (set save_strategy), nor a pruning record."
        )
    return os.path.join(latest, STATE_FILE)


def read_pruning_state(path: str | os.PathLike) -> PruningState:
    """Load a `pruning_state.pt` (verified against its manifest when there is one) without knowing N."""
    path = os.fspath(path)
    payload = torch.load(path, map_location="cpu", weights_only=True)
    state = PruningState(int(payload["num_rows"]))
    directory = os.path.dirname(path) or "."
    if os.path.basename(path) == STATE_FILE and os.path.isfile(os.path.join(directory, MANIFEST_FILE)):
        load_pruning_state(state, directory)
    else:
        state.load_state_dict(payload)
    return state
