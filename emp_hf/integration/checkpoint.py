"""Save and load the pruning state next to the Trainer's checkpoint files (atomically, verified), and find it."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import zipfile
from collections.abc import Callable

import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from ..core.tracker import PruningState

logger = logging.get_logger(__name__)

TRAINER_STATE_NAME = "trainer_state.json"  # transformers.trainer.TRAINER_STATE_NAME

STATE_FILE = "pruning_state.pt"
MANIFEST_FILE = "pruning_state.json"


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Write `path` through `write(tmp)` into a temporary file next to it, then rename it into place.

    On a failure (a full disk, a lost permission) the temporary file is removed and the `OSError` names `path`
    (its `filename`), so the user knows which file and where; the previous `path`, if any, is left as it was."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(error, OSError) and error.filename != path:
            if error.errno is None:
                raise OSError(f"{error} (writing {path!r})") from error
            raise OSError(error.errno, error.strerror or str(error), path) from error  # e.g. a PermissionError
        raise


def atomic_write_bytes(path: str, data: bytes) -> None:
    """`atomic_write` of `data`, synced to disk before the rename."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


def _atomic_write(path: str, data: bytes) -> None:
    """How the pruning state's files are written (a seam the crash tests wrap)."""
    atomic_write_bytes(path, data)


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
        "global_step": state.metadata.get("global_step"),  # which of several states is the newest
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


def _checkpoint_problem(checkpoint_dir: str) -> str | None:
    """Why `checkpoint_dir` cannot be resumed or read (None: its save finished and it holds a pruning state)."""
    has_state = any(os.path.exists(os.path.join(checkpoint_dir, name)) for name in (STATE_FILE, MANIFEST_FILE))
    finished = _has_trainer_state(checkpoint_dir)
    if not has_state:
        if finished:
            return "it has no pruning state (it was saved by a plain Trainer, not EMPTrainer)"
        return f"its save did not finish (no pruning state and no valid {TRAINER_STATE_NAME})"
    if not has_complete_pruning_state(checkpoint_dir):
        return "its save did not finish (its pruning state does not match its manifest)"
    if not finished:
        return f"its save did not finish (no valid {TRAINER_STATE_NAME})"
    return None


def latest_complete_checkpoint(output_dir: str) -> str | None:
    """The newest `checkpoint-N` of `output_dir` whose save finished; newer, interrupted ones are skipped (with a
    warning that says why: an interrupted save, or a checkpoint of a plain `Trainer` that holds no pruning state)."""
    if not os.path.isdir(output_dir):
        return None
    steps = sorted(
        (int(name.split("-")[-1]), name)
        for name in os.listdir(output_dir)
        if name.startswith(f"{PREFIX_CHECKPOINT_DIR}-") and name.split("-")[-1].isdigit()
    )
    for _, name in reversed(steps):
        path = os.path.join(output_dir, name)
        problem = _checkpoint_problem(path)
        if problem is None:
            return path
        logger.warning(f"Skipping {path}: {problem}.")
    return None


def state_step(directory: str) -> int | None:
    """The global step of the pruning state in `directory`: from its manifest (`global_step`, written by
    EMPTrainer), else the `trainer_state.json` beside it, else the `N` of a `checkpoint-N` directory; None if
    none says."""
    with contextlib.suppress(OSError, ValueError):
        step = read_manifest(directory).get("global_step")
        if isinstance(step, int) and not isinstance(step, bool):
            return step
    with contextlib.suppress(OSError, ValueError, AttributeError):
        with open(os.path.join(directory, TRAINER_STATE_NAME)) as f:
            step = json.load(f).get("global_step")
        if isinstance(step, int) and not isinstance(step, bool):
            return step
    name = os.path.basename(os.path.normpath(directory))
    if name.startswith(f"{PREFIX_CHECKPOINT_DIR}-") and name.split("-")[-1].isdigit():
        return int(name.split("-")[-1])
    return None


def newer(a: tuple[int | None, float], b: tuple[int | None, float]) -> bool:
    """Whether `a` is strictly newer than `b`, each `(global step or None, modification time)`: by the steps
    when both are known, else by the modification times."""
    if a[0] is not None and b[0] is not None:
        return a[0] > b[0]
    return a[1] > b[1]


def newest_pruning_state(path: str) -> tuple[str, int | None] | None:
    """`(directory, step)` of the newest complete pruning state of a training output directory: its top-level
    state (written at the end of training) or its newest complete `checkpoint-*`, compared by global step (else
    by modification time, see `newer`); None if it has neither. Passing over a stale top-level state is logged."""
    candidates = []
    if any(os.path.exists(os.path.join(path, name)) for name in (STATE_FILE, MANIFEST_FILE)):
        if has_complete_pruning_state(path):
            candidates.append(path)
        else:
            problem = (
                f"it has no {MANIFEST_FILE}"
                if not os.path.isfile(os.path.join(path, MANIFEST_FILE))
                else "it does not match its manifest"
            )
            logger.warning(f"Skipping the pruning state at the top of {path}: {problem} (its save did not finish).")
    checkpoint = latest_complete_checkpoint(path)
    if checkpoint is not None:
        candidates.append(checkpoint)
    if not candidates:
        return None
    keyed = [(c, state_step(c), os.path.getmtime(os.path.join(c, STATE_FILE))) for c in candidates]
    best = keyed[0]
    for other in keyed[1:]:
        if newer(other[1:], best[1:]):
            logger.warning(
                f"Reading {os.path.join(other[0], STATE_FILE)} ({_step_text(other[1])}): it is newer than "
                f"{os.path.join(best[0], STATE_FILE)} ({_step_text(best[1])})."
            )
            best = other
    return best[0], best[1]


def _step_text(step: int | None) -> str:
    return "step unknown" if step is None else f"step {step}"


# ---------------------------------------------------------------------- training output directories
def find_pruning_state(path: str | os.PathLike, checkpoint: str | None = None) -> str:
    """The `pruning_state.pt` of a training output: `path` itself (a file), `checkpoint` (a directory, a
    name like `checkpoint-30`, or a step), else the newest complete state among the one at the top level of
    `path` and its newest `checkpoint-*` whose save finished (`newest_pruning_state`)."""
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
    newest = newest_pruning_state(path)  # skips states whose save did not finish
    if newest is None:
        checkpoints = sorted(
            (name for name in os.listdir(path) if name.startswith(f"{PREFIX_CHECKPOINT_DIR}-")),
            key=lambda name: (len(name), name),
            reverse=True,
        )
        if not checkpoints:
            raise FileNotFoundError(
                f"{path} has no complete {STATE_FILE}, at its top level or in a checkpoint-* directory: it is not the "
                "output of an EMPTrainer run that saved checkpoints (set save_strategy), nor a pruning record."
            )
        problems = [f"{name}: {_checkpoint_problem(os.path.join(path, name))}" for name in checkpoints[:2]]
        more = f"; and {len(checkpoints) - 2} more" if len(checkpoints) > 2 else ""
        raise FileNotFoundError(
            f"{path} has no complete {STATE_FILE} to read ({'; '.join(problems)}{more}). Pass the output_dir of an "
            "EMPTrainer run, one of its checkpoints, or a pruning record."
        )
    return os.path.join(newest[0], STATE_FILE)


def read_pruning_state(path: str | os.PathLike) -> PruningState:
    """Load a `pruning_state.pt` (verified against its manifest when there is one) without knowing N."""
    path = os.fspath(path)
    payload = load_state_payload(path, path)
    num_rows = payload["num_rows"]
    if not isinstance(num_rows, int) or isinstance(num_rows, bool) or num_rows <= 0:
        raise ValueError(f"{path} is not a pruning state emp_hf can read: num_rows is {num_rows!r}.")
    directory = os.path.dirname(path) or "."
    try:
        state = PruningState(num_rows, track=list(payload["tables"]))  # the tables it was saved with: no empty ones
        if os.path.basename(path) == STATE_FILE and os.path.isfile(os.path.join(directory, MANIFEST_FILE)):
            load_pruning_state(state, directory)
        else:
            state.load_state_dict(payload)
    except (KeyError, TypeError, AttributeError, IndexError, RuntimeError) as error:  # ValueErrors say it already
        raise ValueError(
            f"{path} is not a pruning state emp_hf can read ({type(error).__name__}: {str(error)[:100]}): it was "
            "edited or damaged. Use another checkpoint."
        ) from None
    return state
