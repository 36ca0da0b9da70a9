"""The pruning state sharded across 2 and 4 CPU processes (torchrun, gloo) against a one-process run.

`run_sharding.py` plans and trains every pruning method's state under W processes (each keeps its block of rows)
next to a whole one-process state fed the same observations. Four launches, about 2.5 minutes on 2 shared cores:
2 processes saving a checkpoint mid-epoch and running on; 2 processes resuming it (the same world size); 4
processes resuming it and 1 process resuming it (other world sizes: the checkpoint holds every row, each process
takes its block). Global batches do not depend on W, so every launch must end in the one-process state.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emp_hf_dev.launching import run_processes, torchrun_cmd

pytestmark = pytest.mark.distributed

SCRIPT = Path(__file__).with_name("run_sharding.py")
N = 1003


def launch(args: list[str], nproc: int) -> None:
    code, out = run_processes(torchrun_cmd(SCRIPT, *args, nproc=nproc), timeout=240, what=f"{nproc}-process run")
    assert code == 0, f"launch failed with exit code {code}:\n{out[-6000:]}"


def load(out: Path, world: int) -> list[list[dict]]:
    """Per method, every rank's record."""
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]
    return [list(records) for records in zip(*ranks, strict=True)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, list[list[dict]]]:
    base = tmp_path_factory.mktemp("sharding")
    checkpoint = base / "checkpoint"
    launch(["--output_dir", str(base / "w2"), "--save_dir", str(checkpoint)], nproc=2)
    for world in (2, 4, 1):
        launch(["--output_dir", str(base / f"resumed_w{world}"), "--resume", str(checkpoint)], nproc=world)
    records = {"w2": load(base / "w2", 2)}
    records.update({f"resumed_w{w}": load(base / f"resumed_w{w}", w) for w in (2, 4, 1)})
    return records


def test_each_process_holds_its_block_of_rows(runs):
    for name, world in (("w2", 2), ("resumed_w4", 4), ("resumed_w1", 1)):
        for ranks in runs[name]:
            blocks = [r["rows"] for r in ranks]
            assert blocks == [[k * N // world, (k + 1) * N // world] for k in range(world)], (name, blocks)
            for r in ranks:
                size = r["rows"][1] - r["rows"][0]
                for table, rows in r["local_rows"].items():
                    assert rows == (N if table == "weight" else size), (name, r["method"], table)
                # the statistic tables scale with 1/W; the loss weights (read per batch for any row) stay whole
                assert r["table_bytes"] < r["ref_table_bytes"] or world == 1
                assert all(r["local_equal"].values()), (name, r["method"], r["local_equal"])


def test_totals_and_plans_equal_the_one_process_run(runs):
    for name, method_ranks in runs.items():
        for ranks in method_ranks:
            method = ranks[0]["method"]
            for r in ranks:  # nothing lost or double-counted, every plan the one-process plan
                assert r["frequency_total"] == r["ref_frequency_total"] > 0, (name, method)
                assert r["nonfinite"] == r["ref_nonfinite"] > 0, (name, method)
                assert r["plans"] == r["ref_plans"], (name, method)
                assert r["hash"] == r["ref_hash"], (name, method)
            assert len({r["hash"] for r in ranks}) == 1
            assert all(r["plans"] == ranks[0]["plans"] for r in ranks)  # identical on every process
            assert min(len(p) for p in ranks[0]["plans"]) < N  # pruned epochs were planned


def test_resume_is_exact_with_the_same_and_other_world_sizes(runs):
    fresh = {ranks[0]["method"]: ranks[0] for ranks in runs["w2"]}
    for name in ("resumed_w2", "resumed_w4", "resumed_w1"):
        for ranks in runs[name]:
            expected = fresh[ranks[0]["method"]]
            for r in ranks:
                assert r["hash"] == expected["hash"], (name, r["method"])
                assert r["plans"] == expected["plans"], (name, r["method"])
                assert r["nonfinite"] == expected["nonfinite"], (name, r["method"])
