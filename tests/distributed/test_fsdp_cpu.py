"""FSDP2 through Accelerate on CPU (gloo), the route forced as `fsdp_probe.py --force-fsdp-on-cpu` does it.

The shipped `recipes/configs/fsdp.yaml` must train plain `Trainer` and `EMPTrainer` alike; the config as it
was before issue 14 (wrapping the model's `_no_split_modules`, BertEmbeddings included) fails for both in
accelerate 1.15's `fully_shard(input_embed)`, so the failure is not emp_hf's.
"""

import json

import pytest

from emp_hf_dev.launching import ROOT, run_processes, torchrun_cmd

pytestmark = pytest.mark.distributed

PROBE = ROOT / "tests" / "distributed" / "fsdp_probe.py"
CONFIG = ROOT / "recipes" / "configs" / "fsdp.yaml"


def probe(trainer: str, *extra: str, nproc: int = 2) -> dict:
    args = ["--config", str(CONFIG), "--trainer", trainer, "--force-fsdp-on-cpu", *extra]
    _, out = run_processes(torchrun_cmd(PROBE, *args, nproc=nproc), timeout=240, what=f"FSDP probe ({trainer})")
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert lines, out[-4000:]
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.mark.parametrize("trainer", ["plain", "emp"])
def test_shipped_fsdp_config_trains_on_two_cpu_processes(trainer, tmp_path):
    result = probe(trainer, "--output_dir", str(tmp_path))
    assert result["ok"], result
    assert result["distributed_type"] == "DistributedType.FSDP" and result["world_size"] == 2
    if trainer == "emp":
        assert result["plan_sizes"] == [96, 48, 48] and result["global_step"] == 12  # 96/16 + 2 * 48/16 steps


def test_wrapping_the_embeddings_fails_for_plain_trainer_too(tmp_path):
    # the old config: no fsdp_transformer_layer_cls_to_wrap, so the model's _no_split_modules are wrapped
    result = probe(
        "plain", "--set", "FSDP_TRANSFORMER_CLS_TO_WRAP=BertEmbeddings,BertLayer", "--output_dir", str(tmp_path)
    )
    assert not result["ok"] and "Invariant encountered" in result["error"], result
