#!/usr/bin/env bash
# Which per-row statistic of the record finds the flipped labels: the last loss or the area under the margin (AUM),
# from the same runs (docs/benchmarks.md#regimes, "The record finds the wrong labels").
#   bash benchmarks/mislabel_flags.sh fashion      # or: sentiment
# The regime suite's flags (benchmarks/regimes.sh), with --track-margin, arms fewer_steps and emp_sample; results go to
# benchmarks/results/mislabel_<task>_<regime>.jsonl (not the suite's files), and each run prints the precision table.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
task=${1:?fashion or sentiment}
if [ "$task" = fashion ]; then
  common=(--task fashion --arch resnet --max-train 400 --max-test 1000 --batch-size 40 --lr 2e-3 --epochs 12)
  rates=${RATES:-0.2 0.4}; seeds=${SEEDS:-0 1 2 3 4}
else
  common=(--task sentiment --arch tiny-bert --max-train 2000 --max-test 600 --batch-size 40 --lr 1e-3 --seq-len 32
    --epochs 10)
  rates=${RATES:-0.2}; seeds=${SEEDS:-0 1 2 3 4}
fi
common+=(--threads 1 --ratios 0.5 0.7 --track-margin --methods fewer_steps,emp_sample)
for seed in $seeds; do
  for rate in $rates; do
    out=benchmarks/results/mislabel_${task}_noise$(python -c "print(round(100 * $rate))")
    nice -n 10 python -m benchmarks.frontier "${common[@]}" --regime noise --noise-rate "$rate" --first-seed "$seed" \
      --seeds 1 --out "$out"
  done
done
