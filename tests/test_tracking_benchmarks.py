"""Smoke tests of the tracking benchmarks (`benchmarks/tracking_cost.py`, `tracker_scaling.py`, `overhead.py`)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tracking_cost_counts_launches_of_each_path(tmp_path, one_thread):
    out = tmp_path / "cost.json"
    load("tracking_cost").main(["--rows", "2000", "--batch", "16", "--micro-batches", "40", "--repeats", "1"] + [
        "--json", str(out)
    ])  # fmt: skip
    results = {r["path"].split(" (")[0] + (" old" if "before" in r["path"] else ""): r for r in
               json.loads(out.read_text())["results"]}  # fmt: skip
    buffered, old = results["tracker"], results["tracker old"]
    assert 3 <= buffered["launches_per_micro_batch"] <= 6  # three copies, plus the flush amortised
    assert old["launches_per_micro_batch"] > 6 * buffered["launches_per_micro_batch"]
    assert buffered["operators"]["aten::copy_"] >= 3 * 40
    assert all(r["seconds_per_micro_batch"] > 0 for r in results.values())


def test_tracker_scaling_reports_bytes_and_plans(tmp_path, one_thread):
    out = tmp_path / "scaling.json"
    load("tracker_scaling").main(
        ["--sizes", "1000", "--strategies", "emp:sample,random,infobatch", "--plan-repeats", "1"]
        + ["--buffer-rows", "256", "--json", str(out)]
    )
    (row,) = json.loads(out.read_text())["results"]
    per_strategy = row["strategies"]
    assert per_strategy["emp:sample"]["table_bytes_per_row"] == pytest.approx(16 * 1001 / 1000)
    # loss, entropy (4 bytes), frequency, last_epoch (2) and a one-byte weight code, plus the weights' value table
    # (one or two float32 values: 1, then 1 / (1 - r))
    assert per_strategy["infobatch"]["table_bytes_per_row"] == pytest.approx(13 * 1001 / 1000, abs=0.01)
    assert per_strategy["random"]["table_bytes_per_row"] == pytest.approx(12 * 1001 / 1000)
    assert all(s["plan_bytes_per_epoch"] == 125 for s in per_strategy.values())  # a bitmap: N / 8 bytes
    assert all(s["plan_seconds"] > 0 for s in per_strategy.values())


def test_overhead_ratio_statistics_resist_one_slow_repeat():
    stats = load("overhead").ratio_stats([1.0, 1.01, 0.99, 1.02, 7.5, 1.0])
    assert stats["median"] == pytest.approx(1.005)
    assert stats["sem"] < 0.01  # the 7.5x repeat (another job) does not swamp the spread
    assert stats["min"] == 0.99 and stats["max"] == 7.5
