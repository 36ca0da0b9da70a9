"""EMPTrainer under 2 CPU processes (torchrun, gloo): identical trackers, exact sharding, resume, no hang.

Each launch runs `run_pruning.py` (a tiny BERT, N=203 rows, per-device batch 8, gradient accumulation 2, so
no epoch's plan is a multiple of processes * batch * accumulation) and reads the JSON every rank writes.
Five launches cover everything (about 1.5 minutes on 2 cores):

- all six methods under 2 processes: (a) tracker hashes equal across ranks after every epoch, (b) the
  batches of the two ranks tile each epoch's plan (duplicates only from `even_batches` loop-back) and
  `frequency` counts plans, (d) every launch finishes within its timeout;
- `random` under 1 process with the same global batch: (c) the same plans and frequencies;
- `emp`, `ucb` and `none` interrupted after a mid-epoch checkpoint, then resumed with 2 processes: (e) the
  final state equals the uninterrupted run's, and the two halves of the interrupted epoch tile it;
- `accelerator_config.even_batches=False` with an odd batch count: (d) fails fast instead of hanging.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from emp_hf_dev.launching import run_processes, torchrun_cmd

pytestmark = pytest.mark.distributed

SCRIPT = Path(__file__).with_name("run_pruning.py")
ROOT = SCRIPT.parents[2]
METHODS = ("none", "random", "epsilon_greedy", "ucb", "infobatch", "emp")
RESUME_METHODS = ("emp", "ucb", "none")
WORLD = 2
BATCH = 8
GA = 2
N = 203
EPOCHS = 4
STOP_AT = 9  # epoch 0 takes 7 optimizer steps; step 9 is inside epoch 1, after 2 of its 4 steps


def launch(args: list[str], *, nproc: int, timeout: float, expect_failure: bool = False) -> str:
    """Run `run_pruning.py` under `nproc` processes; fail the test if it outlives `timeout`."""
    code, out = run_processes(torchrun_cmd(SCRIPT, *args, nproc=nproc), timeout=timeout, what="launch")
    if expect_failure:
        assert code != 0, f"the launch was expected to fail:\n{out[-4000:]}"
    else:
        assert code == 0, f"launch failed with exit code {code}:\n{out[-6000:]}"
    return out


def load(out: Path, method: str, world: int = WORLD) -> list[dict]:
    return [json.loads((out / method / f"rank{r}.json").read_text()) for r in range(world)]


def table(values: list) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def interleave(per_rank_batches: list[list[list[int]]]) -> list[int]:
    """The global batch sequence Accelerate's BatchSamplerShard split: rank r got batches r, r+W, ..."""
    rows: list[int] = []
    for batches in zip(*per_rank_batches, strict=True):
        for batch in batches:
            rows.extend(batch)
    return rows


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("distributed")
    common = ["--num_rows", str(N), "--num_train_epochs", str(EPOCHS)]
    common += ["--gradient_accumulation_steps", str(GA)]
    full, single, interrupted = base / "full", base / "single", base / "interrupted"
    methods = ",".join(METHODS)
    launch(
        [*common, f"--output_dir={full}", f"--methods={methods}", f"--per_device_train_batch_size={BATCH}"],
        nproc=WORLD,
        timeout=240,
    )
    single_batch = f"--per_device_train_batch_size={WORLD * BATCH}"  # the same global batch in one process
    launch([*common, f"--output_dir={single}", "--methods=random", single_batch], nproc=1, timeout=120)
    resume_args = [*common, "--output_dir", str(interrupted), "--methods", ",".join(RESUME_METHODS)]
    launch([*resume_args, "--stop_at_step", str(STOP_AT)], nproc=WORLD, timeout=180)
    (interrupted / "first").mkdir()
    for method in RESUME_METHODS:  # keep the first half's records; the resumed launch rewrites them
        for r in range(WORLD):
            (interrupted / method / f"rank{r}.json").rename(interrupted / "first" / f"{method}.rank{r}.json")
    launch([*resume_args, "--resume"], nproc=WORLD, timeout=180)
    return {"full": full, "single": single, "interrupted": interrupted}


@pytest.mark.parametrize("method", METHODS)
def test_ranks_agree_and_tile_every_plan(runs, method):
    ranks = load(runs["full"], method)
    r0, r1 = ranks
    assert [r["world_size"] for r in ranks] == [WORLD, WORLD]
    assert r0["backend"] == "gloo"
    # (a) identical tracker state on both ranks after every epoch, and at the end
    assert [rec["epoch"] for rec in r0["records"]] == list(range(EPOCHS))
    assert [rec["hash"] for rec in r0["records"]] == [rec["hash"] for rec in r1["records"]]
    assert r0["final_hash"] == r1["final_hash"]
    assert r0["global_step"] == r1["global_step"]
    # during training each rank keeps the tables of its block of rows only (sharded; whole again after train())
    for rank, r in enumerate(ranks):
        assert r["held_rows"] == [[rank * N // WORLD, (rank + 1) * N // WORLD]] * EPOCHS
    plans = r0["plans"]
    assert len(plans) == EPOCHS and plans == r1["plans"]
    assert all(len(p) % (WORLD * BATCH * GA) for p in plans), "the layout must exercise uneven last batches"
    steps = 0
    for epoch, plan in enumerate(plans):
        batches = [r["trained"][str(epoch)] for r in ranks]
        micro = math.ceil(math.ceil(len(plan) / BATCH) / WORLD)
        steps += math.ceil(micro / GA)
        # (d) exact per-process step counts: each rank draws the same number of full batches
        assert [len(b) for b in batches] == [micro, micro]
        assert all(len(batch) == BATCH for b in batches for batch in b)
        # (b) the union of the rows trained equals the plan; extras are even_batches loop-back duplicates
        trained = [row for b in batches for batch in b for row in batch]
        assert set(trained) == set(plan)
        assert len(plan) == len(set(plan))
        if method != "none":  # `none` keeps the Trainer's sampler: its order is not the recorded plan
            sequence = interleave(batches)
            assert sequence[: len(plan)] == plan  # rank r trained global batches r, r + W, ...
            assert set(sequence[len(plan) :]) <= set(plan)
    assert r0["global_step"] == steps
    # each plan row is counted once per epoch, padding and duplicates never
    frequency = np.array(r0["frequency"])
    in_plans = np.zeros(N, dtype=np.int64)
    for plan in plans:
        in_plans[plan] += 1
    np.testing.assert_array_equal(frequency, in_plans)
    last = np.full(N, -1)
    for epoch, plan in enumerate(plans):
        last[plan] = epoch
    np.testing.assert_array_equal(np.array(r0["last_epoch"]), last)
    assert np.isfinite(table(r0["loss"])).all() and r0["nonfinite_count"] == 0
    if method in ("none", "infobatch"):
        assert len(plans[0]) == N and len(plans[-1]) == N
    else:
        assert [len(p) for p in plans] == [N] + [N - math.floor(0.5 * N)] * (EPOCHS - 1)


def test_random_matches_single_process_with_same_global_batch(runs):
    (single,) = load(runs["single"], "random", world=1)
    r0, _ = load(runs["full"], "random")
    assert single["world_size"] == 1 and single["per_device_train_batch_size"] == WORLD * BATCH
    assert single["plans"] == r0["plans"]
    assert single["frequency"] == r0["frequency"]
    assert single["last_epoch"] == r0["last_epoch"]
    assert single["global_step"] == r0["global_step"]
    # one process trains the same global batches in the same order
    for epoch, plan in enumerate(single["plans"]):
        assert [row for batch in single["trained"][str(epoch)] for row in batch][: len(plan)] == plan


@pytest.mark.parametrize("method", RESUME_METHODS)
def test_resume_mid_epoch_with_two_processes(runs, method):
    first_dir = runs["interrupted"] / "first"
    first = [json.loads((first_dir / f"{method}.rank{r}.json").read_text()) for r in range(WORLD)]
    resumed = load(runs["interrupted"], method)
    full = load(runs["full"], method)
    assert [r["global_step"] for r in first] == [STOP_AT, STOP_AT]
    assert (runs["interrupted"] / method / "trainer" / f"checkpoint-{STOP_AT}" / "pruning_state.pt").is_file()
    assert all(r["resumed"] for r in resumed)
    # (e) the final state equals the uninterrupted run's, on both ranks
    for r in range(WORLD):
        assert resumed[r]["global_step"] == full[r]["global_step"]
        assert resumed[r]["plans"] == full[r]["plans"]
        assert resumed[r]["frequency"] == full[r]["frequency"]
        assert resumed[r]["last_epoch"] == full[r]["last_epoch"]
        for name in ("loss", "entropy", "ema_mean", "ema_var", "weight"):
            if full[r][name] is None:  # a table this method does not keep
                assert resumed[r][name] is None, name
                continue
            np.testing.assert_allclose(
                table(resumed[r][name]), table(full[r][name]), rtol=1e-5, atol=1e-6, equal_nan=True
            )
    assert resumed[0]["final_hash"] == resumed[1]["final_hash"]
    # after resuming, the per-epoch hashes agree across ranks too
    assert [x["hash"] for x in resumed[0]["records"]] == [x["hash"] for x in resumed[1]["records"]]
    # the interrupted epoch: what was trained before the stop plus after the resume is the full run's epoch
    epoch = first[0]["records"][-1]["epoch"]
    assert epoch == 1 and resumed[0]["records"][0]["epoch"] == epoch
    key = str(epoch)
    for r in range(WORLD):
        assert first[r]["trained"][key] + resumed[r]["trained"][key] == full[r]["trained"][key]


def test_uneven_batch_counts_fail_fast_instead_of_hanging(tmp_path):
    """(d) even_batches=False with an odd number of global batches (13 in a pruned epoch): one process would
    run out of batches while the other waits in the gather. The run must stop with an error, not hang."""
    out = launch(
        ["--output_dir", str(tmp_path), "--methods", "random", "--uneven_batches", "--num_rows", str(N)],
        nproc=WORLD,
        timeout=120,
        expect_failure=True,
    )
    assert "even_batches" in out or "batches per process" in out, out[-4000:]
