#!/usr/bin/env bash
# IN-RIL benchmark: 4 variants x {Hopper-v4, Walker2d-v4} x 3 seeds, from the shipped medium demos.
# Runs two jobs at a time (2 cores, 1 torch thread each); writes runs/ here, then summarize.py -> results.csv.
#   bash benchmarks/inril/run.sh [STEPS]        (default 300000 env steps per run)
set -euo pipefail
cd "$(dirname "$0")"
STEPS=${STEPS:-${1:-300000}}
ENVS=${ENVS:-"Hopper-v4 Walker2d-v4"}
SEEDS=${SEEDS:-"1 2 3"}
COMMON="--total-timesteps $STEPS --eval-every 20000 --eval-episodes 5 --threads 1"
jobs=()
for env in $ENVS; do for seed in $SEEDS; do
  jobs+=("../../inril_residual.py --env-id $env --seed $seed --m 10 $COMMON")
  jobs+=("../../inril_pcgrad.py --env-id $env --seed $seed --m 10 $COMMON")
  jobs+=("../../inril_pcgrad.py --env-id $env --seed $seed --il-mode none $COMMON")
  jobs+=("../../inril_pcgrad.py --env-id $env --seed $seed --il-mode regularize --bc-coef 0.1 $COMMON")
done; done
mkdir -p logs
printf '%s\n' "${jobs[@]}" | xargs -P 2 -I{} sh -c 'python -W ignore {} > "logs/$(echo "{}" | md5sum | cut -c1-8).log" 2>&1 && echo "done: {}"'
python summarize.py
