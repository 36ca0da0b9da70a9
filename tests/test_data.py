"""`emp_hf.integration.data`: the row-index column, the collator that carries it, and the length-grouped order."""

import pytest
import torch

from emp_hf import EMPTrainer
from emp_hf.integration.data import add_row_index
from emp_hf_dev.fixtures import (
    make_args,
    make_bert,
    make_text_dataset,
    train_none,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("stale", ["shuffle", "filter"])
def test_stale_index_column_is_rebuilt(tmp_path, stale):
    indexed = add_row_index(make_text_dataset())
    if stale == "shuffle":
        dataset = indexed.shuffle(seed=1)
    else:
        dataset = indexed.filter(lambda row: row["emp_row_index"] % 3 != 0)
    fresh = dataset.remove_columns("emp_row_index")
    with_stale = train_none(tmp_path, dataset, "stale")
    reference = train_none(tmp_path, fresh, "fresh")
    assert with_stale.train_dataset["emp_row_index"] == list(range(len(dataset)))
    state, expected = with_stale.pruning_state, reference.pruning_state
    assert torch.equal(state.frequency, torch.ones(len(dataset), dtype=state.frequency.dtype))
    assert torch.equal(state.loss, expected.loss)


def test_index_column_that_is_already_the_row_index_is_kept():
    indexed = add_row_index(make_text_dataset())
    assert add_row_index(indexed) is indexed


def test_length_grouped_order_is_transformers_order_of_the_same_permutation():
    from transformers.trainer_pt_utils import get_length_grouped_indices

    from emp_hf.integration.data import length_grouped_order

    lengths = torch.randint(1, 50, (1003,), generator=torch.Generator().manual_seed(1))
    for batch_size in (1, 8, 24):
        expected = get_length_grouped_indices(lengths.tolist(), batch_size, generator=torch.Generator().manual_seed(2))
        plan = torch.randperm(1003, generator=torch.Generator().manual_seed(2))
        assert length_grouped_order(plan, lengths, batch_size).tolist() == expected


def test_a_collator_returning_a_list_is_a_clear_error(tmp_path):
    def list_collator(features):
        return [f["input_ids"] for f in features]

    args = make_args(tmp_path)
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset(), data_collator=list_collator)
    with pytest.raises(TypeError, match="data collator returned a list; EMPTrainer .* needs a dict batch"):
        trainer.train()
