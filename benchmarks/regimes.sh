#!/usr/bin/env bash
# The regime suite of docs/benchmarks.md#regimes: both tasks, five regimes, paired by seed, at 50% and 70% saving.
#   bash benchmarks/regimes.sh fashion     # or: sentiment; both at once on two cores
#   PHASE=more bash benchmarks/regimes.sh fashion   # seeds 3-4 of the arms the targets depend on
# Results are appended to benchmarks/results/regimes_<task>_<regime>.jsonl; a rerun skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 PYTHONPATH="$PWD:$PWD/recipes${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's emp_hf
task=${1:?fashion or sentiment}
ALL=${ALL:-none,fewer_steps,random,rs2,emp_sample,small_loss,emp_window}
CORE=${CORE:-fewer_steps,random,emp_sample,small_loss}
if [ "$task" = fashion ]; then
  common=(--task fashion --arch resnet --max-train 600 --max-test 2000 --batch-size 64 --lr 2e-3)
  epochs=20; short=10
else
  common=(--task sentiment --arch tiny-bert --max-train 1500 --max-test 1000 --batch-size 32 --lr 1e-3 --seq-len 48)
  epochs=10; short=5
fi
common+=(--threads 1 --ratios 0.5 0.7 --plot)
regimes=("clean" "noise --noise-rate 0.2" "noise --noise-rate 0.4" "long_tail" "duplicates")
if [ "${PHASE:-first}" = first ]; then seeds=(--seeds 3); methods=$ALL; else seeds=(--first-seed 3 --seeds 2); methods=$CORE; fi
for regime in "${regimes[@]}"; do
  e=$epochs; [ "${regime%% *}" = duplicates ] && e=$short
  # shellcheck disable=SC2086
  nice -n 10 python benchmarks/frontier.py "${common[@]}" --regime $regime --epochs "$e" "${seeds[@]}" --methods "$methods"
done
