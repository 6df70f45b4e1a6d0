#!/usr/bin/env bash
# Probes beyond run.sh. One longer RLIF probe per env (seed 1, 60k env steps, medium intervening expert, otherwise as run.sh): does the
# RLIF learner start to work alone when given 3x the main benchmark's steps? Writes to long/runs/.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p long && cd long
COMMON="--total-timesteps 60000 --num-qs 2 --num-min-qs 2 --utd 1 --hidden 128 --batch-size 128 --eval-every 10000 --eval-episodes 10 --threads 1"
for env in Hopper-v4 Walker2d-v4; do
  echo "python ../../../rlif.py --env-id $env --expert-level medium --algo rlif --seed 1 $COMMON"
done | xargs -P "${JOBS:-2}" -I{} sh -c '{} > /dev/null 2>&1'

# Two more probes on Hopper-v4 (medium intervening policy, seed 1, 20k steps): UTD 4 instead of 1, and --hil-serl
# (every expert step also goes to the demo buffer). Same folder; summarize.py tells them apart by their settings.
P="--env-id Hopper-v4 --expert-level medium --algo rlif --seed 1 --total-timesteps 20000 --num-qs 2 --num-min-qs 2 --hidden 128 --batch-size 128 --eval-every 10000 --eval-episodes 10 --threads 1"
printf '%s\n' "python ../../../rlif.py $P --utd 4" "python ../../../rlif.py $P --utd 1 --hil-serl" | xargs -P "${JOBS:-2}" -I{} sh -c '{} > /dev/null 2>&1'
