#!/usr/bin/env bash
# RLIF with HIL-SERL buffers (--hil-serl: every expert step also goes to the demo buffer), medium intervening policy,
# Hopper-v4 and Walker2d-v4, seeds 1-3, otherwise as run.sh (20k steps, E=2, UTD 1, 2 x 128, batch 128).
# Run from this folder after run.sh: bash run_hilserl.sh; then python summarize.py (rows "rlif+hil-serl").
set -euo pipefail
cd "$(dirname "$0")"
COMMON="--total-timesteps 20000 --num-qs 2 --num-min-qs 2 --utd 1 --hidden 128 --batch-size 128 --eval-every 5000 --eval-episodes 10 --threads 1"
for seed in 1 2 3; do
  for env in Hopper-v4 Walker2d-v4; do
    echo "python ../../rlif.py --env-id $env --expert-level medium --algo rlif --hil-serl --seed $seed $COMMON"
  done
done | xargs -P "${JOBS:-2}" -I{} sh -c '{} > /dev/null 2>&1'
