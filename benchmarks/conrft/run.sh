#!/usr/bin/env bash
# ConRFT vs consistency-BC alone vs plain SAC fine-tuning from the same Stage I, on metaworld/pick-place-v3
# (sparse success reward, 20 scripted demos), 3 seeds.
# CPU setting (2 cores): Stage I 4,000 offline steps, Stage II 10,000 env steps (one update each), batch 128,
# 4 sampled actions per kind in the Cal-QL term, random interventions by the scripted policy (p 0.02 per
# learner step, 10-step takeovers). The paper-style defaults (20k offline, 50k online, batch 256, 10 actions) stay
# in conrft.py's Args.
# Run from this folder: bash run.sh   (9 runs, 2 at a time); then python summarize.py
set -euo pipefail
cd "$(dirname "$0")"
COMMON="--env-id metaworld/pick-place-v3 --offline-steps 4000 --online-steps 10000 --batch-size 128 --cql-n-actions 4 --intervene-prob 0.02 --eval-every 2000 --eval-episodes 10 --threads 1"
for seed in 1 2 3; do
  for algo in conrft sac bc-only; do
    echo "python ../../conrft.py --algo $algo --seed $seed $COMMON"
  done
done | xargs -P "${JOBS:-2}" -I{} sh -c '{} > /dev/null 2>&1'
