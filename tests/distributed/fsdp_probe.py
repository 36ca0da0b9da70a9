"""Run plain `Trainer` or `EMPTrainer` under an accelerate FSDP config, as `accelerate launch` would; report.

    torchrun --standalone --nproc_per_node 1 tests/distributed/fsdp_probe.py --config recipes/configs/fsdp.yaml \
        --trainer plain --force-fsdp-on-cpu
    accelerate launch --config_file recipes/configs/fsdp.yaml --num_processes 1 tests/distributed/fsdp_probe.py \
        --trainer emp            # on GPUs: the launcher sets the environment itself

`--config` sets the environment variables `accelerate launch --config_file CONFIG` would set (read with
accelerate's own launcher code). `--force-fsdp-on-cpu` makes Accelerate take its FSDP route on CPU (gloo),
where it otherwise silently falls back to DDP: it sets `AcceleratorState.distributed_type` to FSDP and keeps
the plugin. Prints one line `RESULT {...}` (JSON: trainer, ok, error or global step and final loss).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def launcher_env(config_file: str, num_processes: int) -> dict[str, str]:
    """The FSDP/accelerate variables `accelerate launch --config_file` exports for `config_file`."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    args = launch_command_parser().parse_args(
        ["--config_file", config_file, "--num_processes", str(num_processes), "probe.py"]
    )
    args = _validate_launch_command(args)[0]
    env = prepare_multi_gpu_env(args)
    return {k: v for k, v in env.items() if k.startswith(("FSDP_", "ACCELERATE_"))}


def force_fsdp_on_cpu() -> None:
    """Accelerate switches to DistributedType.FSDP only for accelerator devices; take that route on CPU too."""
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType

    init = AcceleratorState.__init__

    def patched(self, *args, fsdp_plugin=None, **kwargs):
        init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type in (DistributedType.MULTI_CPU, DistributedType.NO):
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin

    AcceleratorState.__init__ = patched


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="accelerate config file whose launcher environment to apply")
    parser.add_argument("--trainer", choices=["plain", "emp"], default="emp")
    parser.add_argument("--method", default="emp", help="pruning_method for --trainer emp")
    parser.add_argument("--force-fsdp-on-cpu", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="VAR=VALUE", help="override a variable")
    parser.add_argument("--output_dir", default="/tmp/emp_fsdp_probe")
    opts = parser.parse_args()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if opts.config:
        os.environ.update(launcher_env(opts.config, world))
    for item in opts.set:
        key, value = item.split("=", 1)
        os.environ[key] = value
    on_cpu = opts.force_fsdp_on_cpu
    if on_cpu:
        force_fsdp_on_cpu()
        if os.environ.get("ACCELERATE_MIXED_PRECISION") == "bf16":
            os.environ["ACCELERATE_MIXED_PRECISION"] = "no"  # CPU autocast is not what is being tested

    from transformers import Trainer, TrainingArguments

    from emp_hf import EMPConfig, EMPTrainer
    from emp_hf_dev.fixtures import TRAINING_DEFAULTS, make_bert, make_text_dataset

    settings = {**TRAINING_DEFAULTS, "use_cpu": on_cpu, "logging_steps": 100, "num_train_epochs": 3}
    out = os.path.join(opts.output_dir, opts.trainer)
    result: dict = {"trainer": opts.trainer, "world_size": world}
    result["env"] = {k: os.environ[k] for k in sorted(os.environ) if k.startswith("FSDP_")}
    try:
        if opts.trainer == "plain":
            args = TrainingArguments(output_dir=out, **settings)
            trainer = Trainer(model=make_bert(), args=args, train_dataset=make_text_dataset())
        else:
            args = EMPConfig(output_dir=out, pruning_method=opts.method, **settings)
            trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset())
        result["distributed_type"] = str(trainer.accelerator.distributed_type)
        output = trainer.train()
        result.update(ok=True, global_step=output.global_step, train_loss=round(output.training_loss, 6))
        if opts.trainer == "emp":
            result["plan_sizes"] = trainer.pruning_state.epoch_plan_sizes
    except Exception as error:  # report, do not hide: the error is the result
        frames = traceback.extract_tb(error.__traceback__)
        result.update(
            ok=False,
            error=f"{type(error).__name__}: {error}"[:300],
            where=[f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in frames[-16:-10]],
        )
    if int(os.environ.get("RANK", "0")) == 0:
        print("RESULT " + json.dumps(result), flush=True)
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
