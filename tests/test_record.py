"""Pruning records: export, save/load round trip, row selection, dataset checks, offline loading, plots."""

import ast
import json
import os
import time
from itertools import pairwise
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from huggingface_hub import DatasetCard, constants

import emp_hf
from emp_hf import EMPTrainer, PruningOptions, PruningState
from emp_hf.records.export import export_pruning_record, record_from_trainer, save_pruning_record
from emp_hf.records.load import load_pruning_record, select_rows
from emp_hf.records.record import RECORD_FILE, DatasetMismatchError, PruningRecord, RecordOfflineError
from emp_hf_dev.fixtures import make_args, make_bert, make_text_dataset

N = 20


def make_state(
    n: int = N, epochs: int = 4, keep: int = 8, seed: int = 0, fingerprint: str | None = "fp"
) -> PruningState:
    """A state as a run with one full warm-up epoch then `keep`-row epochs would leave it."""
    g = torch.Generator().manual_seed(seed)
    state = PruningState(n)
    state.metadata.update(pruning_method="emp", prune_ratio=1 - keep / n, dataset_fingerprint=fingerprint)
    for epoch in range(epochs):
        plan = torch.arange(n) if epoch == 0 else torch.randperm(n, generator=g)[:keep]
        state.record_plan(epoch, plan)
        state.update(plan, torch.rand(len(plan), generator=g), torch.rand(len(plan), generator=g), epoch)
        state.set_scores(state.tables["loss"][:-1] + state.tables["entropy"][:-1])
    return state


def make_dataset(n: int = N) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"x": list(range(100, 100 + n))})


def test_export_tables_match_the_state():
    state = make_state()
    record = export_pruning_record(state, model_name="tiny-bert", options={"memory_weight": 1.0})
    assert isinstance(record, PruningRecord)
    assert record.rows.column_names == [
        "row_index", "frequency", "score", "loss", "entropy", "ema_mean", "last_epoch", "kept_epochs"
    ]  # fmt: skip
    assert record.rows["row_index"][:] == list(range(N))
    assert record.rows["frequency"][:] == state.frequency.tolist()
    np.testing.assert_allclose(record.column("score"), state.score.numpy())
    kept = state.kept_in_epoch()
    assert record.rows["kept_epochs"][:] == [torch.nonzero(kept[:, i]).flatten().tolist() for i in range(N)]
    assert record.plans["epoch"][:] == [0, 1, 2, 3]
    assert record.plans["size"][:] == [N, 8, 8, 8]
    for epoch, plan in enumerate(state.plans):
        assert record.plan(epoch) == plan.tolist()  # training order kept
    assert record.plan(-1) == state.plans[-1].tolist()

    meta = record.metadata
    assert meta["pruning_method"] == "emp" and meta["prune_ratio"] == pytest.approx(0.6)
    assert meta["realized_saving"] == pytest.approx(state.realized_saving())
    assert meta["emp_hf_version"] == emp_hf.__version__
    assert meta["model_name"] == "tiny-bert"
    assert meta["options"] == {"pruning_method": "emp", "prune_ratio": pytest.approx(0.6), "memory_weight": 1.0}
    assert meta["dataset"] == {"fingerprint": "fp", "num_rows": N}
    assert set(record.to_dataset_dict()) == {"rows", "plans"}

    card = record.card()
    assert isinstance(card, DatasetCard)
    data = card.data.to_dict()
    assert [c["config_name"] for c in data["configs"]] == ["rows", "plans"]
    assert data["emp_hf"]["pruning_method"] == "emp"
    assert data["emp_hf"]["dataset"]["fingerprint"] == "fp"
    assert data["emp_hf"]["emp_hf_version"] == emp_hf.__version__
    assert "realised saving" in card.text


def test_options_from_config_or_dataclass(tmp_path):
    state = make_state()
    args = make_args(tmp_path, pruning_method="emp", prune_ratio=0.3, memory_weight=0.5)
    options = export_pruning_record(state, options=args).metadata["options"]
    assert options["memory_weight"] == 0.5 and options["prune_ratio"] == 0.3
    assert options["pruning_warmup_epochs"] == 1 and options["effective_pruning_seed"] == 0
    assert "ucb_c" not in options and options["emp_selection"] == "sample"  # the strategy's own options only
    json.dumps(options)
    options = export_pruning_record(state, options=PruningOptions(prune_ratio=0.2)).metadata["options"]
    assert options["prune_ratio"] == 0.2 and options["emp_selection"] == "sample"
    with pytest.raises(TypeError, match="options"):
        export_pruning_record(state, options=3)


def test_export_checks_the_dataset_length():
    with pytest.raises(ValueError, match="21 rows but the pruning state has 20"):
        export_pruning_record(make_state(), dataset=make_dataset(21))
    record = export_pruning_record(make_state(fingerprint=None), dataset=make_dataset())
    assert record.dataset_fingerprint == make_dataset()._fingerprint


def test_round_trip_selects_the_same_rows(tmp_path):
    state = make_state()
    dataset = make_dataset()
    state.metadata["dataset_fingerprint"] = dataset._fingerprint
    record = export_pruning_record(state, dataset=dataset, model_name="tiny-bert")
    directory = save_pruning_record(record, tmp_path / "record")
    assert sorted(os.listdir(directory)) == ["README.md", "plans.parquet", RECORD_FILE, "rows.parquet"]

    loaded = load_pruning_record(directory)
    assert loaded.metadata == json.loads(json.dumps(record.metadata))
    assert loaded.rows.features == record.rows.features
    assert loaded.rows[:] == record.rows[:] and loaded.plans[:] == record.plans[:]
    for epoch in range(record.num_epochs):
        assert select_rows(dataset, loaded, epoch=epoch)["x"] == select_rows(dataset, record, epoch=epoch)["x"]
    for by in ("score", "frequency", ("frequency", "loss")):
        assert select_rows(dataset, loaded, top_k=5, by=by)["x"] == select_rows(dataset, record, top_k=5, by=by)["x"]
    assert DatasetCard.load(os.path.join(directory, "README.md")).data.to_dict()["emp_hf"]["num_rows"] == N
    # the record can also be given as a path, or as the state itself
    assert select_rows(dataset, str(directory), epoch=2)["x"] == select_rows(dataset, state, epoch=2)["x"]
    assert load_pruning_record(os.path.join(directory, RECORD_FILE)).plan(1) == record.plan(1)


def test_select_by_epoch_and_top_k():
    state = make_state()
    dataset = make_dataset()
    record = export_pruning_record(state)
    subset = select_rows(dataset, record, epoch=1, check=False)
    assert subset["x"] == [100 + i for i in state.plans[1].tolist()]  # plan order
    assert select_rows(dataset, record, epoch=-1, check=False)["x"] == [100 + i for i in state.plans[-1].tolist()]

    score = state.score.clone()
    score[3] = float("nan")
    state.set_scores(score)
    record = export_pruning_record(state)
    top = record.top_k(N)
    assert top[-1] == 3  # NaN last
    finite = [i for i in range(N) if i != 3]
    assert top[:-1] == sorted(finite, key=lambda i: -score[i].item())
    assert record.top_k(3, largest=False) == sorted(finite, key=lambda i: score[i].item())[:3]
    assert select_rows(dataset, record, top_k=4, check=False)["x"] == [100 + i for i in top[:4]]

    frequency = state.frequency.tolist()
    by_freq = record.top_k(N, by="frequency")
    assert [frequency[i] for i in by_freq] == sorted(frequency, reverse=True)
    for a, b in pairwise(by_freq):  # ties go to the lower row index
        assert frequency[a] > frequency[b] or a < b
    by_freq_score = record.top_k(N, by=("frequency", "score"))
    for a, b in pairwise(by_freq_score):
        assert frequency[a] > frequency[b] or frequency[a] == frequency[b] and not score[b] > score[a]

    with pytest.raises(ValueError, match="exactly one"):
        select_rows(dataset, record, check=False)
    with pytest.raises(ValueError, match="exactly one"):
        select_rows(dataset, record, epoch=1, top_k=3, check=False)
    with pytest.raises(ValueError, match="top_k must be"):
        record.top_k(N + 1)
    with pytest.raises(ValueError, match="Cannot rank rows by"):
        record.top_k(3, by="kept_epochs")
    with pytest.raises(IndexError, match="4 epochs"):
        record.plan(4)


def test_select_rows_mismatch_errors():
    dataset = make_dataset()
    record = export_pruning_record(make_state(fingerprint=dataset._fingerprint))
    assert len(select_rows(dataset, record, epoch=1)) == 8  # same data: passes the check

    with pytest.raises(DatasetMismatchError, match="19 rows .* 20 rows"):
        select_rows(make_dataset(19), record, epoch=1)
    other = datasets.Dataset.from_dict({"x": list(range(N))})
    with pytest.raises(DatasetMismatchError, match="fingerprint"):
        select_rows(other, record, epoch=1)
    assert select_rows(other, record, epoch=1, check=False)["x"] == record.plan(1)

    # datasets without a fingerprint (torch datasets, lists) are checked by length and give a Subset
    rows = [{"x": i} for i in range(N)]
    subset = select_rows(rows, record, top_k=3)
    assert isinstance(subset, torch.utils.data.Subset) and [r["x"] for r in subset] == record.top_k(3)
    with pytest.raises(DatasetMismatchError, match="check=False"):
        select_rows(rows[:-1], record, top_k=3)
    # a record without a fingerprint checks the length only
    no_fp = export_pruning_record(make_state(fingerprint=None))
    assert len(select_rows(other, no_fp, epoch=2)) == 8


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nor a valid Hub repo id"):
        load_pruning_record(str(tmp_path / "missing" / "dir"))
    directory = save_pruning_record(export_pruning_record(make_state()), tmp_path / "record")
    meta_path = os.path.join(directory, RECORD_FILE)
    with open(meta_path) as f:
        meta = json.load(f)
    meta["format_version"] = 99
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    with pytest.raises(ValueError, match="upgrade emp_hf"):
        load_pruning_record(directory)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no complete pruning_state.pt"):
        load_pruning_record(empty)


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_offline_repo_id_fails_fast_with_a_clear_message(offline, tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    start = time.perf_counter()
    with pytest.raises(RecordOfflineError) as info:
        load_pruning_record("someone/pruning-record", revision="v1")
    assert time.perf_counter() - start < 2.0
    message = str(info.value)
    assert "someone/pruning-record" in message and "offline" in message and "HF_HUB_OFFLINE=1" in message
    assert "local directory" in message
    assert isinstance(info.value, ConnectionError)


def test_offline_repo_id_in_the_hub_cache_loads(offline, tmp_path, monkeypatch):
    """Offline, a record downloaded before is read from the local Hub cache."""
    cache = tmp_path / "hub-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    record = export_pruning_record(make_state())
    commit = "a" * 40
    repo = cache / "datasets--someone--pruning-record"
    save_pruning_record(record, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    loaded = load_pruning_record("someone/pruning-record")
    assert loaded.plan(2) == record.plan(2) and loaded.metadata["num_rows"] == N


# ---------------------------------------------------------------------- a real EMPTrainer run
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("run")
    dataset = make_text_dataset()
    args = make_args(tmp_path, num_train_epochs=3, pruning_method="emp", prune_ratio=0.5)
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=dataset)
    trainer.train()
    return trainer, dataset


def test_record_of_a_real_run_selects_its_plans(trained, tmp_path):
    trainer, dataset = trained
    state = trainer.pruning_state
    record = record_from_trainer(trainer)
    assert record.metadata["model_name"] == "BertForSequenceClassification"
    assert record.metadata["options"]["pruning_method"] == "emp"
    assert record.plan_sizes == [96, 48, 48]
    loaded = load_pruning_record(save_pruning_record(record, tmp_path / "record"))
    for epoch, plan in enumerate(state.plans):
        subset = select_rows(dataset, loaded, epoch=epoch)  # the fingerprint matches the training dataset
        assert subset["input_ids"] == dataset.select(plan.tolist())["input_ids"]
    coreset = select_rows(dataset, loaded, top_k=10)
    assert len(coreset) == 10
    with pytest.raises(DatasetMismatchError, match="fingerprint"):
        select_rows(make_text_dataset(seed=1), loaded, epoch=1)


def test_plots_are_written(trained, tmp_path):
    from emp_hf.records.plots import save_pruning_plots

    trainer, _ = trained
    paths = save_pruning_plots(trainer.pruning_state, tmp_path / "plots")
    assert [os.path.basename(p) for p in paths] == [
        "frequency_histogram.png", "score_distribution.png", "kept_fraction.png"
    ]  # fmt: skip
    for path in paths:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # a record without scores (e.g. pruning_method="none") and one without any observation still draw
    state = make_state()
    state.set_scores(torch.full((N,), float("nan")))
    assert len(save_pruning_plots(export_pruning_record(state), tmp_path / "no-scores")) == 3
    assert len(save_pruning_plots(PruningState(5), tmp_path / "empty")) == 3

    directory = save_pruning_record(export_pruning_record(make_state()), tmp_path / "record", plots=True)
    assert sorted(os.listdir(os.path.join(directory, "plots"))) == sorted(os.path.basename(p) for p in paths)
    assert (
        "![frequency_histogram.png](plots/frequency_histogram.png)"
        in open(os.path.join(directory, "README.md")).read()
    )


def test_one_function_decides_what_a_path_or_repo_id_is(tmp_path):
    from emp_hf.integration.checkpoint import save_pruning_state
    from emp_hf.records.hub import _record_dir
    from emp_hf.records.record import resolve_record_source

    record_dir = save_pruning_record(export_pruning_record(make_state()), tmp_path / "record")
    output_dir = tmp_path / "output"
    output_dir.mkdir()
    save_pruning_state(make_state(), str(output_dir))
    state_file = output_dir / "pruning_state.pt"
    assert resolve_record_source(record_dir) == ("record_dir", str(record_dir))
    assert resolve_record_source(tmp_path / "record" / RECORD_FILE) == ("record_dir", str(tmp_path / "record"))
    assert resolve_record_source(output_dir) == ("training_output", str(output_dir))
    assert resolve_record_source(state_file) == ("training_output", str(state_file))
    assert resolve_record_source("someone/pruning-record") == ("hub", "someone/pruning-record")
    # loading and pushing agree on it: the record file's directory is pushed as it is
    assert load_pruning_record(tmp_path / "record" / RECORD_FILE).plan(1) == load_pruning_record(state_file).plan(1)
    assert _record_dir(tmp_path / "record" / RECORD_FILE, str(tmp_path / "scratch"), plots=False) == record_dir


# ---------------------------------------------------------------------- module layering
LAYERS = ("record", "plots", "export", "hub", "load")  # each module imports only the ones before it


def _emp_hf_imports(path: Path) -> set[str]:
    """The `emp_hf` submodules a file imports anywhere (at the top or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "emp_hf." * (node.level > 0) + (node.module or "")
            names = [base] if node.module else [f"{base}{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name.split(".")[1] for name in names if name.startswith("emp_hf.") and "." in name)
    return found


def test_record_modules_import_only_the_layers_below_them():
    package = Path(emp_hf.__file__).parent / "records"
    for position, module in enumerate(LAYERS):
        above = _emp_hf_imports(package / f"{module}.py") & set(LAYERS[position + 1 :])
        assert not above, f"emp_hf/records/{module}.py imports {sorted(above)}: the order is {' < '.join(LAYERS)}"
