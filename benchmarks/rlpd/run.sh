#!/usr/bin/env bash
# RLPD vs SAC from scratch (same file, --offline-ratio 0) on Hopper-v4 and Walker2d-v4 with the medium demos.
# CPU setting (2 cores): E=2 critics (min over both), UTD 1, hidden 128, batch 128, 100k env steps, 3 seeds;
# the paper's defaults (E=10, UTD 20, hidden 256, batch 256) stay in rlpd.py's Args.
# Run from this folder: bash run.sh   (12 runs, 2 at a time, about 10 min each here); then python summarize.py
set -euo pipefail
cd "$(dirname "$0")"
COMMON="--total-timesteps 100000 --num-qs 2 --num-min-qs 2 --utd 1 --hidden 128 --batch-size 128 --eval-every 10000 --eval-episodes 10 --threads 1"
for seed in 1 2 3; do
  for env in Hopper-v4 Walker2d-v4; do
    for off in 0.5 0.0; do
      echo "python ../../rlpd.py --env-id $env --offline-ratio $off --seed $seed $COMMON"
    done
  done
done | xargs -P "${JOBS:-2}" -I{} sh -c '{} > /dev/null 2>&1'
