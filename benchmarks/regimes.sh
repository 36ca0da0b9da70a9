#!/usr/bin/env bash
# The regime suite of docs/benchmarks.md#regimes: five regimes, paired by seed, at 50% and 70% saving.
#   bash benchmarks/regimes.sh fashion      # or: sentiment (each on one core; both at once on two)
# Seeds 0-2 of every arm in $ALL, then seeds 3-4 of the arms the targets depend on ($CORE), seed by seed across the
# regimes, so an interrupted suite has every regime on its first seeds. Results are appended to
# benchmarks/results/regimes_<task>_<regime>.jsonl; a rerun skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 PYTHONPATH="$PWD:$PWD/recipes${PYTHONPATH:+:$PYTHONPATH}"  # this checkout
task=${1:?fashion or sentiment}
ALL=${ALL:-none,fewer_steps,random,emp_sample,small_loss}
CORE=${CORE:-fewer_steps,random,emp_sample,small_loss}
if [ "$task" = fashion ]; then
  common=(--task fashion --arch resnet --max-train 400 --max-test 1000 --batch-size 64 --lr 2e-3)
  epochs=12; short=6
else
  common=(--task sentiment --arch tiny-bert --max-train 600 --max-test 400 --batch-size 32 --lr 1e-3 --seq-len 32)
  epochs=6; short=3
fi
common+=(--threads 1 --ratios 0.5 0.7)
regimes=("clean" "noise --noise-rate 0.2" "noise --noise-rate 0.4" "long_tail" "duplicates")
for seed in ${SEEDS:-0 1 2 3 4}; do
  methods=$ALL; [ "$seed" -ge 3 ] && methods=$CORE
  for regime in "${regimes[@]}"; do
    e=$epochs; [ "${regime%% *}" = duplicates ] && e=$short  # a short budget, where repetition matters
    # shellcheck disable=SC2086
    nice -n 10 python benchmarks/frontier.py "${common[@]}" --regime $regime --epochs "$e" --first-seed "$seed" \
      --seeds 1 --methods "$methods"
  done
done
