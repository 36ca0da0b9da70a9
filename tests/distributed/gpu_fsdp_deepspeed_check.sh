#!/usr/bin/env bash
# One short prepared device check (issue 14): plain Trainer beside EMPTrainer under the shipped FSDP2 and
# ZeRO-2 configs, one process each. Run from the repository root on a machine with one GPU:
#     bash tests/distributed/gpu_fsdp_deepspeed_check.sh 2>&1 | tee /tmp/gpu_check.log
# Each run prints one `RESULT {...}` line (ok, global step, loss, plan sizes or the error). ZeRO-2 needs
# `pip install deepspeed` first; without it those two runs report the import error.
set -u
export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
for config in fsdp deepspeed_zero2; do
  for trainer in plain emp; do
    echo "== $config / $trainer"
    timeout 240 accelerate launch --config_file "recipes/configs/$config.yaml" --num_processes 1 \
      tests/distributed/fsdp_probe.py --trainer "$trainer" --output_dir "/tmp/emp_gpu_check/$config" 2>&1 \
      | grep -E "^RESULT|Error" | tail -3
  done
done
