"""`benchmarks/frontier.py`: the fewer-steps baseline's step budget, the pairing by seed, and a tiny real run."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest

from emp_hf_dev.offline_data import fashion_mnist_available


def load_frontier():
    from benchmarks import frontier

    return frontier


@pytest.mark.parametrize(
    ("rows", "epochs", "warmup", "ratio", "batch", "expected"),
    [
        (2000, 30, 0, 0.5, 64, 30 * 16),  # K = 1000: ceil(1000 / 64) = 16 per epoch
        (2000, 30, 0, 0.7, 64, 30 * 10),  # K = 600: ceil(9.375) = 10
        (320, 3, 0, 0.3, 32, 3 * 7),  # K = 224: 7
        (100, 5, 1, 0.5, 16, 7 + 4 * 4),  # one full epoch (ceil(100 / 16) = 7), then K = 50: 4
    ],
)
def test_fewer_steps_gets_the_pruned_runs_steps(rows, epochs, warmup, ratio, batch, expected):
    frontier = load_frontier()
    args = argparse.Namespace(epochs=epochs, pruning_warmup_epochs=warmup, batch_size=batch)
    assert frontier.pruned_steps(args, rows, ratio) == expected


def test_paired_differences_match_by_seed_and_ratio():
    frontier = load_frontier()
    records = [
        {"method": "random", "ratio": 0.5, "seed": 0, "accuracy": 0.80},
        {"method": "random", "ratio": 0.5, "seed": 1, "accuracy": 0.70},
        {"method": "random", "ratio": 0.7, "seed": 0, "accuracy": 0.10},
        {"method": "seta", "ratio": 0.5, "seed": 1, "accuracy": 0.75},
        {"method": "seta", "ratio": 0.5, "seed": 0, "accuracy": 0.78},
        {"method": "seta", "ratio": 0.5, "seed": 2, "accuracy": 0.99},  # no random run on seed 2: left out
    ]
    diffs = frontier.paired(records, "seta", 0.5, "random")
    assert diffs == pytest.approx([0.75 - 0.70, 0.78 - 0.80])


def test_defaults_prune_from_epoch_zero_and_include_the_baselines():
    frontier = load_frontier()
    args = frontier.parse_args(["--task", "fashion"])
    assert args.pruning_warmup_epochs == 0
    assert {"random", "fewer_steps", "seta", "emp_window", "none"} <= {spec for spec, _ in args.method_specs}
    assert args.out.endswith("frontier_fashion")


@pytest.mark.skipif(not fashion_mnist_available(), reason="Fashion-MNIST is not installed (make setup)")
def test_tiny_frontier_run_matches_steps_and_saving(tmp_path):
    frontier = load_frontier()
    out = tmp_path / "frontier"
    argv = ["--task", "fashion", "--arch", "resnet", "--max-train", "96", "--max-test", "32", "--epochs", "3"]
    argv += ["--batch-size", "32", "--ratios", "0.5", "--seeds", "1", "--threads", "1", "--out", str(out)]
    argv += ["--methods", "none,random,fewer_steps,seta", "--plot", "--plot-dir", str(tmp_path / "img")]
    rows = frontier.main(argv)
    runs = {r["method"]: r for r in map(json.loads, open(f"{out}.jsonl"))}
    pruned_steps = 3 * math.ceil(48 / 32)
    assert runs["random"]["steps"] == runs["seta"]["steps"] == runs["fewer_steps"]["steps"] == pruned_steps
    assert runs["none"]["steps"] == 3 * 3 and len(runs["none"]["curve"]) == 3
    assert runs["seta"]["realized_saving"] == pytest.approx(0.5)
    assert runs["fewer_steps"]["realized_saving"] == pytest.approx(1 - pruned_steps / 9)
    seta = next(r for r in rows if r["method"] == "seta")
    expected = runs["seta"]["accuracy"] - runs["fewer_steps"]["accuracy"]
    assert seta["vs_fewer_steps_mean"] == pytest.approx(expected)
    assert (tmp_path / "img" / "frontier_fashion.png").exists()
    assert (tmp_path / "img" / "frontier_fashion_paired.png").exists()


def load_regimes():
    from benchmarks import regimes

    return regimes


def test_long_tail_keeps_every_head_row_and_a_share_of_each_tail_class():
    regimes = load_regimes()
    labels = np.repeat(np.arange(4), 20)  # classes 2 and 3 are the tail
    rows = regimes.long_tail_rows(labels, 4, 0.1)
    kept = np.bincount(labels[rows], minlength=4)
    assert kept.tolist() == [20, 20, 2, 2] and len(set(rows.tolist())) == len(rows)
    assert regimes.tail_classes(2) == [1] and regimes.tail_classes(10) == [5, 6, 7, 8, 9]


def test_noise_flips_the_share_to_another_class_uniformly():
    regimes = load_regimes()
    labels = np.repeat(np.arange(5), 200)
    noisy = regimes.flip_labels(labels, 5, 0.4)
    flipped = noisy != labels
    assert flipped.sum() == 400 and (noisy >= 0).all() and (noisy < 5).all()
    offsets = np.bincount(((noisy - labels) % 5)[flipped], minlength=5)
    assert offsets[0] == 0 and np.abs(offsets[1:] / 400 - 0.25).max() < 0.06  # each other class equally likely
    assert np.array_equal(regimes.flip_labels(labels, 5, 0.4), noisy)  # a fixed data seed: the same for every arm


def test_duplicates_repeat_few_distinct_rows_and_the_test_set_is_balanced():
    regimes = load_regimes()
    rows = regimes.duplicate_rows(100, 4)
    assert len(rows) == 100 and len(set(rows.tolist())) == 25
    assert set(np.bincount(rows).tolist()) <= {0, 4}
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    assert regimes.balanced_rows(labels, 3).tolist() == [0, 1, 3, 4, 5, 6]
    predictions = np.array([0, 1, 1, 1, 2, 2])
    assert regimes.class_accuracy(predictions, labels[[0, 1, 3, 4, 5, 6]], 3) == [0.5, 1.0, 1.0]


@pytest.mark.skipif(not fashion_mnist_available(), reason="Fashion-MNIST is not installed (make setup)")
def test_tiny_regime_run_reports_tail_and_worst_class_accuracy(tmp_path):
    frontier = load_frontier()
    out = tmp_path / "regime"
    argv = ["--task", "fashion", "--arch", "resnet", "--max-train", "120", "--max-test", "100", "--epochs", "2"]
    argv += ["--batch-size", "32", "--ratios", "0.5", "--seeds", "1", "--threads", "1", "--out", str(out)]
    argv += ["--methods", "fewer_steps,rs2", "--regime", "long_tail"]
    rows = frontier.main(argv)
    runs = {r["method"]: r for r in map(json.loads, open(f"{out}.jsonl"))}
    assert runs["rs2"]["setting"]["regime"] == "long_tail" and runs["rs2"]["setting"]["tail_share"] == 0.1
    per_class = runs["rs2"]["class_accuracy"]
    assert len(per_class) == 10 and runs["rs2"]["worst_accuracy"] == min(per_class)
    assert runs["rs2"]["tail_accuracy"] == pytest.approx(np.mean(per_class[5:]))
    rs2 = next(r for r in rows if r["method"] == "rs2")
    expected = runs["rs2"]["worst_accuracy"] - runs["fewer_steps"]["worst_accuracy"]
    assert rs2["worst_accuracy_vs_fewer_steps"][0] == pytest.approx(expected)
    assert runs["rs2"]["realized_saving"] == pytest.approx(0.5, abs=0.01)


def test_flag_precision_is_the_share_of_wrong_labels_among_the_largest_values():
    regimes = load_regimes()
    flipped = np.array([True, False, True, False, False])
    values = np.array([3.0, 2.5, np.nan, 1.0, 0.5])  # top 2: rows 0 and 1 (NaN last)
    assert regimes.flag_precision(values, flipped) == 0.5
    assert regimes.flag_precision(np.array([3.0, 0.0, 2.0, 1.0, 0.5]), flipped) == 1.0


def test_the_flag_table_pairs_the_margin_with_the_loss_run_by_run():
    frontier = load_frontier()
    records = [
        {"method": "emp_sample", "ratio": 0.5, "flag_precision": {"loss": 0.70, "score": 0.6, "margin": 0.75}},
        {"method": "emp_sample", "ratio": 0.5, "flag_precision": {"loss": 0.80, "score": 0.6, "margin": 0.79}},
        {"method": "fewer_steps", "ratio": 0.5, "flag_precision": {"loss": 0.50}},
        {"method": "none", "ratio": 0.0},  # clean data or no statistics: not a row
    ]
    lines = frontier.format_flag_table(records).splitlines()
    assert lines[0] == (
        "| method | prune ratio | seeds | precision by loss (%) | precision by score (%) | precision by margin (%) "
        "| margin − loss (points, wins) |"
    )
    assert lines[2] == "| emp_sample | 0.5 | 2 | 75.0 ± 7.1 | 60.0 ± 0.0 | 77.0 ± 2.8 | +2.0 ± 4.2 (1/2) |"
    assert lines[3] == "| fewer_steps | 0.5 | 1 | 50.0 ± 0.0 |  |  |  |"
    assert frontier.format_flag_table(records[3:]) == ""


def load_report():
    from benchmarks import regimes_report

    return regimes_report


def test_the_report_judges_the_targets_from_paired_differences():
    report = load_report()

    def run(method, seed, acc, ratio=0.5):
        return {"method": method, "ratio": ratio, "seed": seed, "accuracy": acc}

    noise = [run("fewer_steps", s, 0.70) for s in range(3)] + [run("random", s, 0.70 + 0.001 * s) for s in range(3)]
    noise += [run("small_loss", s, a) for s, a in enumerate([0.73, 0.74, 0.72])]  # +3, +4, +2 points
    noise += [run("emp_sample", s, a) for s, a in enumerate([0.70, 0.69, 0.70])]  # mean -0.33
    noise += [run("emp_sample", s, 0.69, 0.7) for s in range(3)] + [run("fewer_steps", s, 0.70, 0.7) for s in range(3)]
    clean = [run(m, s, 0.80) for m in ("fewer_steps", "random", "emp_sample") for s in range(3)]
    clean += [run("small_loss", s, a) for s, a in enumerate([0.79, 0.81, 0.80])]  # within noise: no win
    tail = [run(m, s, 0.60) for m in ("fewer_steps", "random", "emp_sample") for s in range(3)]
    tail += [run("small_loss", s, 0.62 + 0.005 * s) for s in range(3)]
    summary = report.summarise({"toy": {"noise20": noise, "clean": clean, "long_tail": tail}})
    entry = summary["toy"][("small_loss", 0.5)]["noise20"]
    assert entry["fewer_steps"]["mean"] == pytest.approx(3.0) and entry["fewer_steps"]["std"] == pytest.approx(1.0)
    assert entry["fewer_steps"]["wins"] == 3
    lines = report.targets(summary)
    assert "toy: safety of `emp_sample` (>= -0.5 vs fewer_steps everywhere): MISSED (noise20 at 0.7: -1.00)" in lines
    assert (
        "toy: `small_loss` at 0.5 above both baselines beyond the spread in: noise, long tail (2 of 3 uneven regimes)"
        in lines
    )
    assert "toy: `emp_sample` at 0.5 above both baselines beyond the spread in: none (0 of 3 uneven regimes)" in lines
