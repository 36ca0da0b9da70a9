#!/usr/bin/env bash
# The GPU half of issue 15's measurements, in one short run (about 6-8 minutes on an H200); results in $OUT
# (default benchmarks/results/tracking_gpu). Usage: bash benchmarks/gpu_tracking_check.sh [OUT]
set -euo pipefail
OUT=${1:-benchmarks/results/tracking_gpu}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONPATH=${PYTHONPATH:-$PWD}
python -m pytest -q tests/test_tracker_buffer.py -k cuda 2>&1 | tail -3 | tee "$OUT/cuda_tests.txt"
python benchmarks/tracking_cost.py --device cuda --batch 32 --json "$OUT/tracking_cost_b32.json" | tee "$OUT/tracking_cost_b32.txt"
python benchmarks/tracker_scaling.py --device cuda --json "$OUT/tracker_scaling.json" | tee "$OUT/tracker_scaling.txt"
python benchmarks/overhead.py --device cuda --arms trainer,none --rows 8000 --hidden 384 --layers 6 --epochs 1 \
    --repeats 10 --json "$OUT/overhead.json" 2>&1 | tail -6 | tee "$OUT/overhead.txt"
