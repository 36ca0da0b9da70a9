"""A training run to a pruning record: from a `PruningState`, an `EMPTrainer` or a training output directory,
saved with its pictures on request."""

from __future__ import annotations

import json
import os
from typing import Any

from ..core.tracker import PruningState
from ..integration.checkpoint import STATE_FILE, find_pruning_state, read_pruning_state, state_step
from ..integration.losses import model_name_of
from .record import PLOTS_DIR, PruningRecord, check_record_target


def export_pruning_record(
    state: PruningState,
    *,
    dataset: Any = None,
    model_name: str | None = None,
    options: Any = None,
) -> PruningRecord:
    """Build the `PruningRecord` of a `PruningState` (e.g. `trainer.pruning_state`).

    `dataset` (the training dataset) adds its identity, `model_name` goes into the card, `options` (an
    `EMPConfig`, a `PruningOptions`, a dataclass or a mapping) are merged over the options the trainer stored in
    the state: see `PruningRecord.from_state`.
    """
    return PruningRecord.from_state(state, dataset=dataset, model_name=model_name, options=options)


def record_from_trainer(trainer: Any) -> PruningRecord:
    """The `PruningRecord` of an `EMPTrainer` (its `pruning_state`, model name and `EMPConfig` options)."""
    state = getattr(trainer, "pruning_state", None)
    if state is None:
        raise ValueError("The trainer has no pruning state: it was built without a train_dataset.")
    return export_pruning_record(state, model_name=model_name_of(trainer.model), options=trainer.args)


def record_from_output_dir(
    path: str | os.PathLike,
    checkpoint: str | None = None,
    *,
    model_name: str | None = None,
    options: Any = None,
    dataset: Any = None,
) -> PruningRecord:
    """Export the record of a training output directory, a checkpoint directory or a `pruning_state.pt`.

    The state is chosen by `find_pruning_state`; the model name is read from the `config.json` next to it
    when not given, and the global step from its `trainer_state.json`.
    """
    state_path = find_pruning_state(path, checkpoint)
    directory = os.path.dirname(state_path)
    state = read_pruning_state(state_path)
    if model_name is None:
        model_name = _model_name_from_config(os.path.join(directory, "config.json"))
    record = export_pruning_record(state, dataset=dataset, model_name=model_name, options=options)
    source: dict[str, Any] = {"checkpoint": os.path.basename(os.path.normpath(os.path.abspath(directory)))}
    step = state_step(directory) if os.path.basename(state_path) == STATE_FILE else None
    if step is None:
        step = state.metadata.get("global_step")
    if step is not None:
        source["global_step"] = step
    record.metadata["source"] = source
    record.source_path = state_path
    return record


def save_pruning_record(
    record: PruningRecord, directory: str | os.PathLike, *, plots: bool = False, overwrite: bool = False
) -> str:
    """Write `record` to `directory`: `rows.parquet`, `plans.parquet`, `pruning_record.json` and the dataset
    card `README.md` (and `plots/*.png`, embedded in the card, with `plots=True`). Returns the directory.

    A `README.md` that is not a pruning record's card (the directory holds no `pruning_record.json`) is never
    replaced unless `overwrite=True`."""
    directory = os.fspath(directory)
    images: list[str] = []
    if plots:
        from .plots import save_pruning_plots  # matplotlib is an optional extra

        check_record_target(directory, overwrite=overwrite)  # before drawing into the directory
        paths = save_pruning_plots(record, os.path.join(directory, PLOTS_DIR))
        images = [os.path.relpath(p, directory).replace(os.sep, "/") for p in paths]
    return record.save(directory, overwrite=overwrite, images=images)


def _model_name_from_config(path: str) -> str | None:
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except ValueError:  # not JSON: the model's name is only a label of the record
        return None
    if not isinstance(config, dict):
        return None
    name = config.get("_name_or_path")
    if name and not os.path.isabs(name):  # a local absolute path says nothing to others
        return name
    architectures = config.get("architectures")  # the class save_pretrained wrote
    if isinstance(architectures, list) and architectures and isinstance(architectures[0], str):
        return architectures[0]
    model_type = config.get("model_type")
    return model_type if isinstance(model_type, str) else None
