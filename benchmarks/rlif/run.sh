#!/usr/bin/env bash
# RLIF vs HG-DAgger vs DAgger (all in rlif.py) on Hopper-v4 and Walker2d-v4, with the expert and the medium
# policy as the intervening expert (value-based intervention model, alpha 0.99, beta 0.95, 4-step takeovers,
# reference critic fitted in the file), 3 seeds.
# CPU setting (2 cores): 20k env steps; RL learner with E=2 critics, UTD 1, hidden 128, batch 128 (the DAgger
# baselines use the same actor size and the file's BC schedule: 500 BC steps every 1000 env steps).
# The paper's defaults (E=10, UTD 15, hidden 256, batch 256, 100k steps) stay in rlif.py's Args.
# Run from this folder: bash run.sh   (36 runs, 2 at a time); then python summarize.py
set -euo pipefail
cd "$(dirname "$0")"
COMMON="--total-timesteps 20000 --num-qs 2 --num-min-qs 2 --utd 1 --hidden 128 --batch-size 128 --eval-every 5000 --eval-episodes 10 --threads 1"
for seed in 1 2 3; do
  for env in Hopper-v4 Walker2d-v4; do
    for level in medium expert; do
      for algo in rlif hg-dagger dagger; do
        echo "python ../../rlif.py --env-id $env --expert-level $level --algo $algo --seed $seed $COMMON"
      done
    done
  done
done | xargs -P "${JOBS:-2}" -I{} sh -c '{} > /dev/null 2>&1'
