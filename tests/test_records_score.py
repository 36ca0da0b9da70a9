"""`pruning_state.score` for every method, and coresets (`select_rows(top_k=k)`) ranked by a defined statistic."""

import numpy as np
import pytest
import torch

from emp_hf import EMPTrainer, PruningState
from emp_hf.records.export import export_pruning_record
from emp_hf.records.load import select_rows
from emp_hf.records.record import PruningRecord
from emp_hf_dev.fixtures import make_args, make_bert, make_text_dataset


@pytest.fixture(scope="module", params=["random", "infobatch", "seta", "none"])
def trained(request, tmp_path_factory):
    method = request.param
    ratio = {"prune_ratio": 0.0} if method == "none" else {"prune_ratio": 0.5}
    args = make_args(tmp_path_factory.mktemp(method), num_train_epochs=3, pruning_method=method, **ratio)
    dataset = make_text_dataset(n=32)
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=dataset)
    trainer.train()
    return method, trainer, dataset


def test_score_of_a_method_without_a_score_table_is_the_last_loss(trained):
    method, trainer, _ = trained
    state = trainer.pruning_state
    assert "score" not in state.tracked  # derived, never stored
    score = state.score
    torch.testing.assert_close(score, state.loss, equal_nan=True)
    assert torch.isfinite(score).all()  # every row was trained in the full first epoch
    score.fill_(0.0)  # a copy: the loss table is untouched
    assert torch.isfinite(state.loss).all() and not (state.loss == 0).all()
    assert "score" not in state.state_dict()["tables"]


def test_coreset_of_such_a_method_ranks_by_the_last_loss(trained):
    method, trainer, dataset = trained
    record = export_pruning_record(trainer.pruning_state)
    assert record.metadata["score_definition"].startswith("last observed loss")
    loss = trainer.pruning_state.loss.numpy()
    expected = np.argsort(-loss, kind="stable")[:5].tolist()
    top = select_rows(dataset, record, top_k=5)
    assert top["input_ids"] == dataset.select(expected)["input_ids"]
    assert expected != list(range(5))


def test_a_score_column_without_values_is_refused():
    state = PruningState(6, track=["score", "loss"])  # a strategy that stores a score but never set one
    state.record_plan(0, torch.arange(6))
    state.update(torch.arange(6), torch.rand(6), torch.rand(6), 0)
    record = export_pruning_record(state)
    with pytest.raises(ValueError, match=r"Cannot rank rows by 'score': no row of this record has a value"):
        record.top_k(3)
    assert record.top_k(3, by="loss") == np.argsort(-state.loss.numpy(), kind="stable")[:3].tolist()


def test_an_old_record_whose_score_is_nan_is_refused_not_ranked_by_index(trained):
    _, trainer, dataset = trained
    record = export_pruning_record(trainer.pruning_state)
    rows = record.rows.map(lambda row: {"score": float("nan")})  # as records written before the derived score
    old = PruningRecord(rows=rows, plans=record.plans, metadata=record.metadata)
    with pytest.raises(ValueError, match="all NaN"):
        select_rows(dataset, old, top_k=4)
