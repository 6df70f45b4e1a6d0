#!/usr/bin/env bash
# The claim at a longer budget: Hopper-v4, the medium intervening policy (return 1220), RLIF (E 2, UTD 1, 2 x 128,
# batch 128, as run.sh) vs HG-DAgger vs DAgger for 200k env steps each, seeds 1-3, eval every 10k (10 episodes),
# expert share per 1k steps in metrics.csv. Writes to long200k/runs/; summarize_200k.py reads it.
# Run: bash benchmarks/rlif/run_200k.sh   (JOBS at a time, default 2; RLIF runs first, they are the long ones)
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p long200k && cd long200k
COMMON="--total-timesteps 200000 --num-qs 2 --num-min-qs 2 --utd 1 --hidden 128 --num-layers 2 --batch-size 128 --eval-every 10000 --eval-episodes 10 --threads 1"
{
  for seed in 1 2 3; do echo "python -W ignore ../../../rlif.py --env-id Hopper-v4 --expert-level medium --algo rlif --seed $seed $COMMON"; done
  for algo in hg-dagger dagger; do for seed in 1 2 3; do
    echo "python -W ignore ../../../rlif.py --env-id Hopper-v4 --expert-level medium --algo $algo --seed $seed $COMMON"
  done; done
} | xargs -P "${JOBS:-2}" -I{} sh -c "OMP_NUM_THREADS=1 ${RUNNER:-} {} > /dev/null 2>&1 && echo 'done: {}' || echo 'FAILED: {}'"
