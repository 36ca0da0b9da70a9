"""What `emp-hf inspect`, the card and the plots show (issue 21, item 18): only the options the method reads, the
model's own class, a mean line off the bar labels, legends off the bars, a score axis that names its statistic."""

import os

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from emp_hf import EMPTrainer, PruningState
from emp_hf.cli import format_summary
from emp_hf.integration.losses import model_name_of
from emp_hf.records.export import export_pruning_record, record_from_trainer
from emp_hf.records.plots import plot_frequency_histogram, plot_kept_fraction, plot_score_distribution
from emp_hf.records.record import used_options
from emp_hf_dev.fixtures import make_args, make_bert, make_text_dataset


@pytest.fixture(scope="module")
def infobatch(tmp_path_factory):
    args = make_args(tmp_path_factory.mktemp("display"), pruning_method="infobatch", prune_ratio=0.5)
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset(n=32))
    trainer.train()
    return trainer


def options_line(record) -> str:
    text = format_summary(record, record.summary())
    return next(line for line in text.splitlines() if line.strip().startswith("options"))


def test_inspect_and_the_card_list_only_the_options_the_method_reads(infobatch):
    record = record_from_trainer(infobatch)
    assert used_options(record.metadata) == {
        "infobatch_match_budget": False,
        "pruning_anneal_fraction": 0.125,
        "pruning_seed": 0,
        "pruning_warmup_epochs": 1,
    }
    line = options_line(record)
    for absent in ("ema_decay", "model_name", "planned_epochs", "emp_selection", "num_train_epochs", "max_steps"):
        assert absent not in line, line
    card = str(record.card())
    assert "| `infobatch_match_budget` |" in card and "| `ema_decay` |" not in card
    assert "ema_decay" in record.metadata["options"]  # the record keeps everything it was given


def test_ema_decay_is_listed_where_the_method_keeps_the_loss_ema():
    metadata = {"pruning_method": "ucb", "options": {"ema_decay": 0.9, "ucb_c": 1.0, "memory_weight": 1.0}}
    assert used_options(metadata) == {"ema_decay": 0.9, "ucb_c": 1.0}
    metadata = {"pruning_method": "none", "options": {"pruning_warmup_epochs": 1, "ema_decay": 0.9}}
    assert used_options(metadata) == {}


def test_model_name_is_the_models_own_class_not_its_base_checkpoints(tmp_path):
    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, architectures=["BertModel"])  # fmt: skip
    model = BertForSequenceClassification(config)  # as from_pretrained of a BertModel base
    model.name_or_path = str(tmp_path / "bert-base")  # a local absolute path
    assert model_name_of(model) == "BertForSequenceClassification"
    (tmp_path / "bert-base").mkdir()
    model.name_or_path = "bert-base"
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert model_name_of(model) == "BertForSequenceClassification"  # a relative local path either
    finally:
        os.chdir(cwd)
    model.name_or_path = "google-bert/bert-base-uncased"
    assert model_name_of(model) == "google-bert/bert-base-uncased"  # a Hub id says what it is


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _state(n: int, epochs: int, keep: list[list[int]]) -> PruningState:
    state = PruningState(n, track=["loss", "entropy", "weight"])
    state.metadata.update(pruning_method="infobatch", prune_ratio=0.5)
    for epoch in range(epochs):
        plan = torch.tensor(keep[epoch])
        state.record_plan(epoch, plan)
        state.update(plan, torch.rand(len(plan)), torch.rand(len(plan)), epoch)
    return state


def test_the_mean_line_does_not_run_through_a_bar_label():
    # every row trained in 2 of 3 epochs: the mean, 2.0, is the centre of the bar (and its label) at 2
    n = 12
    plans = [list(range(n)), list(range(n)), []]
    record = export_pruning_record(_state(n, 3, plans))
    fig = plot_frequency_histogram(record)
    fig.draw_without_rendering()
    ax = fig.axes[0]
    (line,) = ax.get_lines()
    xs, ys = (np.asarray(v, dtype=np.float64) for v in line.get_data())
    points = line.get_transform().transform(np.column_stack([xs, ys])[~np.isnan(ys)])  # in pixels
    assert points[0, 0] == pytest.approx(ax.transData.transform((2.0, 0))[0])
    segments = points.reshape(-1, 2, 2)
    assert len(segments) >= 1
    for text in ax.texts:  # the bar labels
        box = text.get_window_extent()
        for (x0, y0), (_, y1) in segments:
            crosses = box.x0 <= x0 <= box.x1 and min(y0, y1) < box.y1 and box.y0 < max(y0, y1)
            assert not crosses, (text.get_text(), box, y0, y1)
    covered = [
        (box.y0, box.y1) for box in (t.get_window_extent() for t in ax.texts) if box.x0 <= points[0, 0] <= box.x1
    ]
    assert covered, "the case must put a label on the mean"


@pytest.mark.parametrize("plot", [plot_frequency_histogram, plot_kept_fraction, plot_score_distribution])
def test_the_legend_covers_no_bar(plot):
    # 3 rows trained k times for each k = 0..4: bars of one height across the whole plot, a legend has no free corner
    n, epochs = 15, 4
    frequency = [row // 3 for row in range(n)]
    plans = [[row for row in range(n) if frequency[row] > epoch] for epoch in range(epochs)]
    fig = plot(export_pruning_record(_state(n, epochs, plans)))
    fig.draw_without_rendering()
    legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    assert legends
    for legend in legends:
        box = legend.get_window_extent()
        for patch in fig.axes[0].patches:
            if patch.get_height() > 0:
                assert not _overlap(box, patch.get_window_extent()), plot.__name__


def test_the_score_axis_says_what_the_score_is(infobatch):
    fig = plot_score_distribution(record_from_trainer(infobatch))
    assert fig.axes[0].get_xlabel() == "score: last observed loss (what infobatch ranks by)"
    state = PruningState(8, track=["loss", "entropy", "score"])
    state.metadata.update(pruning_method="emp", memory_weight=0.5)
    state.record_plan(0, torch.arange(8))
    state.update(torch.arange(8), torch.rand(8), torch.rand(8), 0)
    state.set_scores(torch.rand(8))
    label = plot_score_distribution(export_pruning_record(state)).axes[0].get_xlabel()
    assert label == "score: EMP score: loss + 0.5 x predictive entropy"
