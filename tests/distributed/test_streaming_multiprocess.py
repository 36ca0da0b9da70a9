"""A streamed training set under 2 CPU processes (torchrun, gloo): the map-style run's plans, every row once.

`run_streaming.py` trains a tiny BERT on N=203 rows (per-device batch 8, accumulation 2, 4 epochs, prune ratio 0.5)
from a stream of the rows in id order:

- a `datasets` stream with accelerate's default for an `IterableDataset` (process 0 reads it and dispatches each
  global batch), and a torch stream read by every process (`dispatch_batches=False`, accelerate's
  `IterableDatasetShard`) through 2 dataloader workers each;
- against one process on the map-style dataset with the same global batch (16): `random` ends with the same plans,
  frequencies and step count; for `emp` and `random` both ranks hold the same state after every epoch, their
  batches tile each epoch's plan in the stream's order (duplicates only from the loop-back that completes the last
  global batch), every rank takes `ceil(ceil(K/8)/2)` micro-batches and `frequency` counts the plans.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from emp_hf_dev.launching import run_processes, torchrun_cmd

pytestmark = pytest.mark.distributed

SCRIPT = Path(__file__).with_name("run_streaming.py")
WORLD, BATCH, N = 2, 8, 203
LAUNCHES = {  # name: (processes, arguments)
    "map": (1, ["--source", "map", "--methods", "random", "--per_device_train_batch_size", str(WORLD * BATCH)]),
    "dispatched": (WORLD, ["--source", "datasets"]),
    "each_reads": (WORLD, ["--source", "torch", "--each_process_reads", "--num_workers", "2"]),
}
STREAMED = ("dispatched", "each_reads")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("streaming")
    for name, (nproc, args) in LAUNCHES.items():
        cmd = torchrun_cmd(SCRIPT, "--output_dir", str(base / name), "--num_rows", str(N), *args, nproc=nproc)
        code, out = run_processes(cmd, timeout=300, what=f"the {name} launch")
        assert code == 0, f"the {name} launch failed ({code}):\n{out[-6000:]}"
    return {name: base / name for name in LAUNCHES}


def load(folder: Path, method: str, world: int = WORLD) -> list[dict]:
    return [json.loads((folder / method / f"rank{r}.json").read_text()) for r in range(world)]


@pytest.mark.parametrize("launch", STREAMED)
@pytest.mark.parametrize("method", ["random", "emp"])
def test_ranks_agree_and_tile_each_plan_in_stream_order(runs, launch, method):
    ranks = load(runs[launch], method)
    assert [r["world_size"] for r in ranks] == [WORLD, WORLD]
    assert ranks[0]["records"] == ranks[1]["records"]  # the same state hash after every epoch
    assert ranks[0]["final_hash"] == ranks[1]["final_hash"] and ranks[0]["plans"] == ranks[1]["plans"]
    plans = ranks[0]["plans"]
    assert [len(plan) for plan in plans] == [N, N - N // 2, N - N // 2, N - N // 2]
    for epoch, plan in enumerate(plans):
        batches = [r["trained"][str(epoch)] for r in ranks]
        expected = math.ceil(math.ceil(len(plan) / BATCH) / WORLD)
        assert [len(b) for b in batches] == [expected, expected]
        rows = [row for step in zip(*batches, strict=True) for batch in step for row in batch]
        assert sorted(rows[: len(plan)]) == sorted(plan)  # the plan's rows, once each
        if launch == "each_reads":  # in the stream's order (the torch stream's is by id; the 2-shard `datasets`
            assert rows[: len(plan)] == sorted(plan)  # stream swaps its shards in some epochs, as datasets does)
        assert set(rows[len(plan) :]) <= set(plan)  # the loop-back completing the last global batch
    frequency = [sum(row in set(plan) for plan in plans) for row in range(N)]
    assert ranks[0]["frequency"] == frequency


@pytest.mark.parametrize("launch", STREAMED)
def test_random_streamed_ends_with_the_one_process_map_style_plans(runs, launch):
    (mapped,) = load(runs["map"], "random", world=1)
    for rank in load(runs[launch], "random"):
        assert rank["plans"] == mapped["plans"]
        assert rank["frequency"] == mapped["frequency"] and rank["last_epoch"] == mapped["last_epoch"]
        assert rank["global_step"] == mapped["global_step"]
