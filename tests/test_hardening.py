"""Issue 14: defects that corrupted a run in silence or crashed with a traceback, each pinned by a test."""

import pytest
import torch
from conftest import make_args, make_bert, make_text_dataset

from emp_hf import EMPTrainer
from emp_hf.data import add_row_index

pytestmark = pytest.mark.usefixtures("one_thread")


def _train_none(tmp_path, dataset, name="out", **kwargs) -> EMPTrainer:
    args = make_args(tmp_path / name, pruning_method="none", prune_ratio=None, num_train_epochs=1, **kwargs)
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=dataset)
    trainer.train()
    return trainer


# ---------------------------------------------------------------- 1. a stale row-index column
@pytest.mark.parametrize("stale", ["shuffle", "filter"])
def test_stale_index_column_is_rebuilt(tmp_path, stale):
    indexed = add_row_index(make_text_dataset())
    if stale == "shuffle":
        dataset = indexed.shuffle(seed=1)
    else:
        dataset = indexed.filter(lambda row: row["emp_row_index"] % 3 != 0)
    fresh = dataset.remove_columns("emp_row_index")
    with_stale = _train_none(tmp_path, dataset, "stale")
    reference = _train_none(tmp_path, fresh, "fresh")
    assert with_stale.train_dataset["emp_row_index"] == list(range(len(dataset)))
    state, expected = with_stale.pruning_state, reference.pruning_state
    assert torch.equal(state.frequency, torch.ones(len(dataset), dtype=state.frequency.dtype))
    assert torch.equal(state.loss, expected.loss)


def test_index_column_that_is_already_the_row_index_is_kept():
    indexed = add_row_index(make_text_dataset())
    assert add_row_index(indexed) is indexed


@pytest.mark.parametrize("column", ["input_ids", "labels", "attention_mask"])
def test_index_column_naming_a_model_input_is_refused(tmp_path, column):
    args = make_args(tmp_path, pruning_index_column=column)
    with pytest.raises(ValueError, match="pruning_index_column='.*' names a model input"):
        EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset())
