"""Push a pruning record to a Hub dataset repo, and pull one back.

Authentication and the Hub's address come from `huggingface_hub` itself (`token=`, else `HF_TOKEN` or the
saved login; `HF_ENDPOINT`). Loading a record (from a directory or, through `download_pruning_record`, the
Hub) is `emp_hf.records.load.load_pruning_record`. Which process pushes (rank 0 only) is the trainer's business, not
this module's.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from huggingface_hub import CommitInfo, HfApi, constants, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from ..core.tracker import PruningState
from ..integration.checkpoint import STATE_FILE
from .export import export_pruning_record, record_from_output_dir, record_from_trainer, save_pruning_record
from .record import RECORD_PATTERNS, PruningRecord, RecordOfflineError, resolve_record_source

DEFAULT_COMMIT_MESSAGE = "Upload pruning record (emp_hf)"
RECORD_REPO_SUFFIX = "-pruning-record"


def push_pruning_record(
    record_or_dir: PruningRecord | PruningState | str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    create_pr: bool = False,
    plots: bool = False,
) -> CommitInfo:
    """Upload a pruning record to the Hub dataset repo `repo_id` (created if missing) in one commit.

    Args:
        record_or_dir: a `PruningRecord`, a `PruningState`, a record directory (`save_pruning_record`) or a
            training output / checkpoint directory (its latest pruning state is exported).
        repo_id: `"namespace/name"`, or `"name"` for the token owner's namespace.
        private: visibility of a repo this call creates (None: the Hub's default); an existing repo keeps its own.
        revision: branch to commit to (created from the default branch if missing). Default: the main branch.
        token: Hub token; default `HF_TOKEN` or the saved login.
        commit_message, create_pr: as in `HfApi.upload_folder`.
        plots: also upload `plots/*.png` and embed them in the card (when the record is written here).

    Returns the `huggingface_hub.CommitInfo` of the upload (`.commit_url`, `.oid`, `.pr_url`).
    """
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="emp-hf-record-") as tmp:
        directory = _record_dir(record_or_dir, tmp, plots=plots)
        api.create_repo(repo_id, repo_type="dataset", exist_ok=True, private=private)
        if revision and revision != "main" and not create_pr and not revision.startswith("refs/"):
            api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=directory,
            repo_type="dataset",
            revision=revision,
            commit_message=commit_message,
            create_pr=create_pr,
            allow_patterns=RECORD_PATTERNS,
        )


def default_record_repo_id(args: Any) -> str:
    """`<hub_model_id>-pruning-record`, else `<output_dir name>-pruning-record`."""
    base = getattr(args, "hub_model_id", None) or os.path.basename(os.path.normpath(args.output_dir))
    return f"{base}{RECORD_REPO_SUFFIX}"


def push_trainer_pruning_record(
    trainer: Any,
    *,
    repo_id: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    commit_message: str | None = None,
    save_dir: str | os.PathLike | None = None,
) -> CommitInfo:
    """Export an `EMPTrainer`'s pruning record and push it (call it on the main process only).

    Unset arguments come from `trainer.args`: `pruning_record_repo_id` (default `default_record_repo_id`),
    `pruning_record_private` (else `hub_private_repo`), `hub_revision`, `hub_token`. With `save_dir` the
    record is first saved there (so a failed push can be retried with `emp-hf push save_dir ...`).
    """
    args = trainer.args
    repo_id = repo_id or getattr(args, "pruning_record_repo_id", None) or default_record_repo_id(args)
    if private is None:
        private = getattr(args, "pruning_record_private", None)
        if private is None:
            private = getattr(args, "hub_private_repo", None)
    revision = revision or getattr(args, "hub_revision", None)
    token = token if token is not None else getattr(args, "hub_token", None)
    state = getattr(trainer, "state", None)
    step = getattr(state, "global_step", None)
    record = record_from_trainer(trainer)
    if step is not None:
        record.metadata["source"] = {"global_step": step}
    message = commit_message or (
        f"Pruning record at step {step} (emp_hf)" if step is not None else DEFAULT_COMMIT_MESSAGE
    )
    source: PruningRecord | str = record if save_dir is None else save_pruning_record(record, save_dir)
    return push_pruning_record(
        source, repo_id, private=private, revision=revision, token=token, commit_message=message
    )


def _record_dir(obj: PruningRecord | PruningState | str | os.PathLike, scratch: str, *, plots: bool) -> str:
    if isinstance(obj, PruningState):
        obj = export_pruning_record(obj)
    if isinstance(obj, PruningRecord):
        return save_pruning_record(obj, scratch, plots=plots)
    kind, path = resolve_record_source(obj)
    if kind == "record_dir":
        return path
    return save_pruning_record(record_from_output_dir(path), scratch, plots=plots)  # a missing path raises there


# ---------------------------------------------------------------------- pull
def _offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE", "")
    return bool(constants.HF_HUB_OFFLINE) or value.upper() in {"1", "ON", "YES", "TRUE"}


def download_pruning_record(repo_id: str, *, revision: str | None = None, token: str | bool | None = None) -> str:
    """Download the record files of the Hub dataset repo `repo_id` and return the local snapshot directory.

    With `HF_HUB_OFFLINE=1` only the local Hub cache is tried and a miss raises `RecordOfflineError` at once.
    """
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise FileNotFoundError(
            f"{repo_id!r} is not a local directory, a {STATE_FILE} file, nor a valid Hub repo id."
        ) from None
    kwargs: dict[str, Any] = dict(repo_type="dataset", revision=revision, token=token, allow_patterns=RECORD_PATTERNS)
    where = f"the Hub dataset repo {repo_id!r}" + (f" (revision {revision!r})" if revision else "")
    if _offline():
        try:
            return snapshot_download(repo_id, local_files_only=True, **kwargs)
        except (LocalEntryNotFoundError, FileNotFoundError):
            raise RecordOfflineError(
                f"{repo_id!r} is not a local directory and {where} cannot be reached offline "
                "(HF_HUB_OFFLINE=1) nor is it in the local Hub cache. Pass the local directory of a saved "
                "pruning record (save_pruning_record / `emp-hf export`), or unset HF_HUB_OFFLINE."
            ) from None
    try:
        return snapshot_download(repo_id, **kwargs)
    except (RepositoryNotFoundError, GatedRepoError) as e:
        raise FileNotFoundError(
            f"{repo_id!r} is not a local directory, and {where} does not exist or is not accessible "
            "(a private repo needs token= or HF_TOKEN)."
        ) from e
    except RevisionNotFoundError as e:
        raise FileNotFoundError(f"{where}: revision not found.") from e
    except LocalEntryNotFoundError as e:
        raise ConnectionError(
            f"{repo_id!r} is not a local directory and {where} could not be downloaded from "
            f"{constants.ENDPOINT} (no network?). Pass the local directory of a saved pruning record, or set "
            "HF_HUB_OFFLINE=1 to use the local Hub cache."
        ) from e
