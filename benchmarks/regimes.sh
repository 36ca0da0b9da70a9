#!/usr/bin/env bash
# The regime suite of docs/benchmarks.md#regimes: five regimes, paired by seed, at 50% and 70% saving.
#   bash benchmarks/regimes.sh fashion      # or: sentiment (each on one core; both at once on two)
#   SUMMARY=1 SEEDS=0 ALL=<every arm> ALL_SENTIMENT=<every arm> bash benchmarks/regimes.sh fashion   # plots only
# Seeds 0-2 of every arm in $ALL, then seeds 3-4 of the arms the targets depend on ($CORE), seed by seed across the
# regimes, so an interrupted suite has every regime on its first seeds. Results are appended to
# benchmarks/results/regimes_<task>_<regime>.jsonl; a rerun skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout, and `python -m benchmarks.frontier` from its root
task=${1:?fashion or sentiment}
CORE=${CORE:-fewer_steps,random,rs2,emp_sample,small_loss}
ALL=${ALL:-none,$CORE}; LATER=$CORE  # seeds 0-2 / 3-4
if [ "$task" = fashion ]; then
  # batches of 40: the full (400 rows) and the pruned epochs (200 and 120 rows) are whole batches, so fewer_steps
  # trains on as many examples as the pruned runs
  common=(--task fashion --arch resnet --max-train 400 --max-test 1000 --batch-size 40 --lr 2e-3)
  epochs=12; short=6
  # a tail class keeps a quarter of its 40 rows (a tenth, 4 rows, leaves one class at 0% for every arm)
  regimes=("clean" "noise --noise-rate 0.2" "noise --noise-rate 0.4" "long_tail --tail-share 0.25" "duplicates")
else
  # the tiny BERT learns nothing in fewer than about 8000 row visits (3 epochs of 2000 rows: full data 69%, every
  # saving 50%), so 10 epochs; full data (`none`) on the first seed only (time), see docs/benchmarks.md#regimes
  common=(--task sentiment --arch tiny-bert --max-train 2000 --max-test 600 --batch-size 40 --lr 1e-3 --seq-len 32)
  epochs=10; short=5
  regimes=("clean" "noise --noise-rate 0.2" "long_tail" "noise --noise-rate 0.4" "duplicates")
  ALL=${ALL_SENTIMENT:-none,$CORE}
fi
common+=(--threads 1 --ratios 0.5 0.7)
# SUMMARY=1: tables and the per-regime plots from the results only (pass every arm in ALL / ALL_SENTIMENT, SEEDS=0)
[ -n "${SUMMARY:-}" ] && common+=(--summary-only --plot)
for seed in ${SEEDS:-0 1 2 3 4}; do
  methods=$ALL; [ "$seed" -ge 3 ] && methods=$LATER
  [ "$task" = sentiment ] && [ "$seed" -ge 1 ] && methods=$LATER
  for regime in "${regimes[@]}"; do
    e=$epochs; [ "${regime%% *}" = duplicates ] && e=$short  # a short budget, where repetition matters
    # shellcheck disable=SC2086
    nice -n 10 python -m benchmarks.frontier "${common[@]}" --regime $regime --epochs "$e" --first-seed "$seed" \
      --seeds 1 --methods "$methods"
  done
done
