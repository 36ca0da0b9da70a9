"""Streamed training sets: pruned by filtering the stream against each epoch's plan
(`emp_hf/integration/streaming.py`).

A streamed run of the same rows ends with the map-style run's plans: exactly for `random` (its plans do not read
the statistics), and for the statistics-driven rules (`emp`, `infobatch`) whenever the tables are the same (here:
learning rate 0 and no dropout, so every row's loss is the same whatever order it trains in). Each epoch trains
its plan's rows once each, in the stream's order, with the map-style run's step counts; dataloader workers give the
same batches as none. Bad streams fail with one line that says what to add.
"""

from collections import defaultdict

import datasets
import pytest
import torch
from datasets.distributed import split_dataset_by_node

from emp_hf import EMPTrainer
from emp_hf.integration.config import INDEX_COLUMN
from emp_hf.integration.streaming import PrunedStream
from emp_hf_dev.fixtures import StopAt, make_args, make_bert, make_text_dataset

N = 60  # with batch 8: no plan (60, 30) is a whole number of batches


class RecordingTrainer(EMPTrainer):
    """Records the row ids of every training micro-batch, per epoch."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.trained: dict[int, list[list[int]]] = defaultdict(list)
        self._current = 0

    def _run_epoch(self, **kwargs):
        self._current = kwargs["epoch"]
        return super()._run_epoch(**kwargs)

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.trained[self._current].append(inputs[self.args.pruning_index_column].tolist())
        return super().training_step(model, inputs, num_items_in_batch)


class TorchStream(torch.utils.data.IterableDataset):
    """A torch stream of a dataset's rows (no `__len__`: its size comes from `pruning_num_rows`)."""

    def __init__(self, dataset: datasets.Dataset, order: list[int] | None = None) -> None:
        self.dataset = dataset
        self.order = order

    def __iter__(self):
        for i in self.order if self.order is not None else range(len(self.dataset)):
            row = self.dataset[i]
            yield {key: torch.tensor(value) for key, value in row.items()}


def indexed(n: int = N) -> datasets.Dataset:
    data = make_text_dataset(n)
    return data.add_column(INDEX_COLUMN, list(range(n)))


def train(tmp_path, name: str, dataset, *, model_kwargs=None, **kwargs) -> RecordingTrainer:
    args = make_args(tmp_path / name, num_train_epochs=4, **kwargs)
    trainer = RecordingTrainer(model=make_bert(**(model_kwargs or {})), args=args, train_dataset=dataset)
    trainer.train()
    return trainer


def assert_same_plans(streamed: RecordingTrainer, mapped: RecordingTrainer) -> None:
    a, b = streamed.pruning_state, mapped.pruning_state
    assert a.epoch_plan_sizes == b.epoch_plan_sizes
    assert all(torch.equal(x, y) for x, y in zip(a.plans, b.plans, strict=True))
    assert torch.equal(a.frequency, b.frequency) and torch.equal(a.last_epoch, b.last_epoch)
    assert streamed.state.global_step == mapped.state.global_step
    assert dict(streamed.trained).keys() == dict(mapped.trained).keys()
    for epoch, batches in streamed.trained.items():  # the same micro-batch count and sizes every epoch
        assert [len(b) for b in batches] == [len(b) for b in mapped.trained[epoch]]


def assert_stream_order(trainer: RecordingTrainer, stream_order: list[int]) -> None:
    """Each epoch trains its plan's rows once each, in the stream's order (not the plan's shuffled order)."""
    position = {row: i for i, row in enumerate(stream_order)}
    for epoch, plan in enumerate(trainer.pruning_state.plans):
        rows = [row for batch in trainer.trained[epoch] for row in batch]
        assert rows == sorted(plan.tolist(), key=position.__getitem__)


@pytest.mark.parametrize("source", ["datasets", "torch"])
def test_random_streamed_ends_with_the_map_style_plans(tmp_path, one_thread, source):
    data = indexed()
    mapped = train(tmp_path, "map", data)
    order = torch.randperm(N, generator=torch.Generator().manual_seed(1)).tolist()  # the stream's own order
    stream = data.select(order).to_iterable_dataset() if source == "datasets" else TorchStream(data, order)
    streamed = train(tmp_path, "stream", stream, pruning_num_rows=N)
    assert isinstance(streamed.train_dataset, PrunedStream)
    assert_same_plans(streamed, mapped)
    assert streamed.pruning_state.epoch_plan_sizes == [N, N // 2, N // 2, N // 2]
    assert_stream_order(streamed, order)


@pytest.mark.parametrize(("method", "extra"), [("emp", {}), ("infobatch", {})])
def test_statistics_driven_plans_match_given_the_same_tables(tmp_path, one_thread, method, extra):
    """Learning rate 0 and no dropout: a row's loss does not depend on when it trains, so both runs hold the same
    tables at every planning point, and then decide the same plans (infobatch: the same open plan sizes too)."""
    data = indexed()
    still = dict(learning_rate=0.0, pruning_method=method, **extra)
    model_kwargs = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    mapped = train(tmp_path, "map", data, model_kwargs=model_kwargs, **still)
    streamed = train(
        tmp_path, "stream", data.to_iterable_dataset(), model_kwargs=model_kwargs, pruning_num_rows=N, **still
    )
    a, b = streamed.pruning_state, mapped.pruning_state
    for name in a.tracked:
        torch.testing.assert_close(getattr(a, name), getattr(b, name), equal_nan=True)
    assert_same_plans(streamed, mapped)
    assert_stream_order(streamed, list(range(N)))
    if method == "infobatch":
        assert a.epoch_plan_sizes[1] < N  # an open budget that pruned


def test_emp_streamed_trains_the_same_budget(tmp_path, one_thread):
    """With learning: the tables differ (other order, other model), but EMP's fixed budget gives the same plan
    sizes and step counts, and every epoch trains its plan's rows once each."""
    data = indexed()
    mapped = train(tmp_path, "map", data, pruning_method="emp")
    streamed = train(tmp_path, "stream", data.to_iterable_dataset(), pruning_method="emp", pruning_num_rows=N)
    a = streamed.pruning_state
    assert a.epoch_plan_sizes == mapped.pruning_state.epoch_plan_sizes
    assert streamed.state.global_step == mapped.state.global_step
    assert torch.equal(a.frequency, a.kept_in_epoch().sum(0))
    assert_stream_order(streamed, list(range(N)))


@pytest.mark.parametrize("source", ["datasets", "torch"])
def test_two_dataloader_workers_give_the_batches_of_none(tmp_path, one_thread, source):
    """Each worker reads the whole stream and yields its turns of the kept rows: the batches are those of
    `dataloader_num_workers=0`, in the same order (persistent workers see every new plan)."""
    data = indexed()
    stream = data.to_iterable_dataset(num_shards=2) if source == "datasets" else TorchStream(data)
    workers = dict(dataloader_num_workers=2, dataloader_persistent_workers=True)
    plain = train(tmp_path, "plain", stream, pruning_num_rows=N)
    parallel = train(tmp_path, "workers", stream, pruning_num_rows=N, **workers)
    assert_same_plans(parallel, plain)
    assert dict(parallel.trained) == dict(plain.trained)
    assert_same_plans(parallel, train(tmp_path, "map", data))


def test_unknown_row_count_or_missing_id_column_fails_before_training(tmp_path):
    data = indexed()
    args = make_args(tmp_path)
    with pytest.raises(ValueError, match="pruning_num_rows=N"):
        EMPTrainer(model=make_bert(), args=args, train_dataset=data.to_iterable_dataset())
    with pytest.raises(ValueError, match="pruning_num_rows=N"):
        EMPTrainer(model=make_bert(), args=args, train_dataset=TorchStream(data))
    with_rows = make_args(tmp_path, pruning_num_rows=N)
    for stream in (data.remove_columns(INDEX_COLUMN).to_iterable_dataset(), TorchStream(make_text_dataset(N))):
        with pytest.raises(ValueError, match=f"row id.*{INDEX_COLUMN!r} column.*pruning_index_column"):
            EMPTrainer(model=make_bert(), args=with_rows, train_dataset=stream)
    split = split_dataset_by_node(data.to_iterable_dataset(), rank=0, world_size=2)
    with pytest.raises(ValueError, match="split_dataset_by_node"):
        EMPTrainer(model=make_bert(), args=with_rows, train_dataset=split)
    with pytest.raises(ValueError, match="pruning_num_rows"):
        make_args(tmp_path, pruning_num_rows=0)


def test_the_split_size_in_the_info_is_the_row_count(tmp_path):
    data = indexed()
    stream = data.to_iterable_dataset()
    stream.info.splits = datasets.SplitDict({"train": datasets.SplitInfo("train", num_examples=N)})
    stream._split = datasets.NamedSplit("train")
    trainer = EMPTrainer(model=make_bert(), args=make_args(tmp_path), train_dataset=stream)
    assert trainer.pruning_state.num_rows == N


@pytest.mark.parametrize(
    ("num_rows", "rows", "message"),
    [
        (N + 4, list(range(N)), f"yielded {N} rows.*set pruning_num_rows={N}"),
        (N, [*range(N - 1), 3], "Row id 3 appears twice"),
        (N - 1, list(range(N)), f"Row id {N - 1}.*outside 0..{N - 2}"),
    ],
)
def test_a_stream_that_does_not_match_its_ids_stops_training(tmp_path, one_thread, num_rows, rows, message):
    data = indexed().select(rows)
    trainer = EMPTrainer(
        model=make_bert(), args=make_args(tmp_path, pruning_num_rows=num_rows), train_dataset=TorchStream(data)
    )
    with pytest.raises(ValueError, match=message):
        trainer.train()


@pytest.mark.parametrize("method", ["random", "emp"])
def test_a_resumed_streamed_run_equals_the_uninterrupted_one(tmp_path, one_thread, method):
    """Stopped at step 10 (inside epoch 1, after a checkpoint) and resumed: the resumed epoch's plan is read back
    and the Trainer skips the micro-batches already trained, which are the stream's first rows of that plan."""
    data = indexed()
    options = dict(pruning_method=method, pruning_num_rows=N, save_strategy="steps", save_steps=100)
    full = train(tmp_path, "full", data.to_iterable_dataset(num_shards=2), **options)
    args = make_args(tmp_path / "cut", num_train_epochs=4, **options)
    first = RecordingTrainer(
        model=make_bert(),
        args=args,
        train_dataset=data.to_iterable_dataset(num_shards=2),
        callbacks=[StopAt(10, True)],
    )
    first.train()
    resumed = RecordingTrainer(model=make_bert(), args=args, train_dataset=data.to_iterable_dataset(num_shards=2))
    resumed.train(resume_from_checkpoint=True)
    a, b = resumed.pruning_state, full.pruning_state
    assert all(torch.equal(x, y) for x, y in zip(a.plans, b.plans, strict=True))
    assert torch.equal(a.frequency, b.frequency) and torch.equal(a.last_epoch, b.last_epoch)
    for name in a.tracked:
        torch.testing.assert_close(getattr(a, name), getattr(b, name), equal_nan=True)
    assert resumed.state.global_step == full.state.global_step
    assert first.trained[1] + resumed.trained[1] == full.trained[1]  # the two halves of epoch 1 tile it


def test_the_sft_trainer_refuses_to_prune_a_stream(tmp_path):
    pytest.importorskip("trl")
    from emp_hf.integration.sft import EMPSFTConfig, EMPSFTTrainer
    from emp_hf_dev.fixtures import (
        TRAINING_DEFAULTS,
        make_prompt_completion_dataset,
        make_tiny_llama,
        make_word_tokenizer,
    )

    data = make_prompt_completion_dataset(16)
    tokenizer = make_word_tokenizer(list(data["prompt"]) + list(data["completion"]))
    args = EMPSFTConfig(output_dir=str(tmp_path), **dict(TRAINING_DEFAULTS, bf16=False), pruning_num_rows=16)
    with pytest.raises(ValueError, match="EMPSFTTrainer does not prune a streamed training set"):
        EMPSFTTrainer(
            model=make_tiny_llama(len(tokenizer)),
            args=args,
            train_dataset=data.to_iterable_dataset(),
            processing_class=tokenizer,
        )
