"""Loss weights at one byte a row (`emp_hf.core.weights.LossWeights`) and their place in the pruning state."""

import pytest
import torch

from emp_hf.core.tracker import PruningState
from emp_hf.core.weights import MAX_CODES, LossWeights
from emp_hf.strategies.base import soft_prune


@pytest.mark.parametrize(
    "weight",
    [
        torch.tensor([1.0, 2.0, 2.0, 1.0, 2.0]),  # InfoBatch at r = 0.5
        torch.tensor([1 / (1 - 0.3), 1.0, 1.0]),  # 1 / (1 - r) that float32 cannot write exactly
        torch.tensor([0.5, 0.25, 0.5]),  # two values, neither of them 1
        torch.tensor([2.0, 3.0, 1.0, 4.0]),  # more than two values
    ],
)
def test_weights_read_back_exactly_at_one_byte_a_row(weight):
    coded = LossWeights.encode(weight, "cpu")
    assert coded.codes.dtype == torch.uint8 and coded.codes.numel() == weight.numel() + 1
    dense = coded.dense()
    assert torch.equal(dense[:-1], weight) and dense[-1] == 1.0  # the trash slot weighs 1
    rows = torch.tensor([weight.numel() - 1, 0, weight.numel()])
    assert torch.equal(coded[rows], dense[rows])


def test_weights_with_more_distinct_values_than_codes_stay_float32():
    weight = torch.linspace(1.0, 2.0, MAX_CODES + 1)
    coded = LossWeights.encode(weight, "cpu")
    assert coded.values is None and coded.codes.dtype == torch.float32
    assert torch.equal(coded.dense()[:-1], weight)
    assert coded.nbytes() == 4 * (weight.numel() + 1)


def test_infobatch_weights_cost_one_byte_a_row_and_come_back_exactly():
    n = 1000
    state = PruningState(n, track=["loss", "entropy", "weight"])
    statistics = sum(state.tables[name].element_size() for name in ("loss", "entropy", "frequency", "last_epoch"))
    assert state.table_bytes() == (statistics + 1) * (n + 1) + 4  # + the one-entry value table
    loss = torch.rand(n, generator=torch.Generator().manual_seed(0))
    selection = soft_prune(loss, torch.Generator().manual_seed(1), ratio=0.3)
    state.record_selection(0, selection.rows, 7, selection.weight)
    assert torch.equal(state.weight, selection.weight)
    assert torch.equal(state.loss_weight(torch.arange(n)), selection.weight)
    assert state.table_bytes() == (statistics + 1) * (n + 1) + 8  # two values: 1 and 1 / (1 - 0.3)
    assert "weight" not in state.device_tables()  # strategies decide from statistics; weights are what they return
    assert torch.equal(state.cpu_tables()["weight"], selection.weight)


def test_saved_weights_are_dense_float32_and_load_back():
    n = 10
    state = PruningState(n, track=["loss", "weight"])
    weight = torch.ones(n).index_fill_(0, torch.tensor([2, 5]), 2.0)
    state.set_weights(weight)
    saved = state.state_dict()
    assert saved["tables"]["weight"].dtype == torch.float32 and saved["tables"]["weight"].numel() == n + 1
    restored = PruningState(n, track=["loss", "weight"])
    restored.load_state_dict(saved)
    assert torch.equal(restored.weight, weight)
    state.set_weights(None)
    assert torch.equal(state.weight, torch.ones(n))


def test_weights_of_the_wrong_length_are_refused():
    state = PruningState(4, track=["weight"])
    with pytest.raises(ValueError, match="3 loss weights for a pruning state of 4 rows"):
        state.set_weights(torch.ones(3))
