#!/usr/bin/env bash
# RLIF alone for 60k env steps (3x run.sh's budget), medium intervening policy, Hopper-v4, seeds 1-3, otherwise as
# run.sh: does the learner start to act alone given more steps? Writes to long/runs/; summarize.py reads it.
# Run: bash benchmarks/rlif/run_long.sh   (JOBS and RUNNER as in run.sh)
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p long && cd long
COMMON="--total-timesteps 60000 --num-qs 2 --num-min-qs 2 --utd 1 --hidden 128 --num-layers 2 --batch-size 128 --eval-every 10000 --eval-episodes 10 --threads 1"
for seed in 1 2 3; do
  echo "python ../../../rlif.py --env-id Hopper-v4 --expert-level medium --algo rlif --seed $seed $COMMON"
done | xargs -P "${JOBS:-2}" -I{} sh -c "OMP_NUM_THREADS=1 ${RUNNER:-} {} 2>&1 | tail -n 2"
