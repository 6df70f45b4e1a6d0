#!/usr/bin/env bash
# RLIF vs HG-DAgger vs DAgger (all in rlif.py) on Hopper-v4 and Walker2d-v4, with the medium and the expert policy
# as the intervening expert, seeds 1-3, 20k env steps. Value-based intervention model as the official code: alpha
# 0.99, beta 0.95, 4-step takeovers after which the learner acts one step unchecked, a_ref and Q_ref from the expert
# (reference) policy also when the medium one intervenes. Plus RLIF with --terminal drop (the official handling: an
# episode's last transition is never stored) beside the default --terminal penalty, medium policy, both envs.
# CPU setting: RL learner E = 2 critics, UTD 1, 2 x 128 (official: E = 10, 3 x 256), batch 128; demos (the
# intervening policy's 20 episodes) in the one replay buffer, offline ratio 0, start_training 0 (official). DAgger
# family: the same actor, 2,000 BC steps on the demos first, then 500 every 1,000 env steps.
# Run: bash benchmarks/rlif/run.sh   (42 runs, JOBS=2 at a time; RUNNER=<wrapper> prefixes every run, e.g. a CPU
# slot lock); then python benchmarks/rlif/summarize.py
set -euo pipefail
cd "$(dirname "$0")"
COMMON="--total-timesteps 20000 --num-qs 2 --num-min-qs 2 --utd 1 --hidden 128 --num-layers 2 --batch-size 128 --eval-every 5000 --eval-episodes 10 --threads 1"
{
  for seed in 1 2 3; do
    for env in Hopper-v4 Walker2d-v4; do
      for level in medium expert; do
        echo "python ../../rlif.py --env-id $env --expert-level $level --algo rlif --seed $seed $COMMON"
      done
      echo "python ../../rlif.py --env-id $env --expert-level medium --algo rlif --terminal drop --seed $seed $COMMON"
    done
  done
  for seed in 1 2 3; do
    for env in Hopper-v4 Walker2d-v4; do
      for level in medium expert; do
        for algo in hg-dagger dagger; do
          echo "python ../../rlif.py --env-id $env --expert-level $level --algo $algo --seed $seed $COMMON"
        done
      done
    done
  done
} | xargs -P "${JOBS:-2}" -I{} sh -c "OMP_NUM_THREADS=1 ${RUNNER:-} {} 2>&1 | tail -n 2"
