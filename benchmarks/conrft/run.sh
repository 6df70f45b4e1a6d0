#!/usr/bin/env bash
# ConRFT vs consistency-BC alone vs plain SAC fine-tuning from the same Stage I, on two MetaWorld tasks (sparse
# success; the official task reward +10 at success, -0.05 per other step, on demos and online data; 20 scripted
# demos), 3 seeds, with conrft.py's official defaults (LayerNorm-tanh policy, Stage I eta 0 / beta 1 with Cal-QL,
# Stage II eta 1 / beta 0.1 with the plain TD loss, cta_ratio 2, discount 0.98, evaluation noise drawn).
# Budget: Stage I OFFLINE (default 20,000, the official pre-training length) steps at batch BATCH (default 256, as
# official): at 4,000 steps x batch 128 the official tanh trunk reached only 50% as consistency BC on pick-place, at
# 20,000 x 256 it reached 100% (benchmarks/conrft/bc_trunk_ablation.csv); Stage II ONLINE (default 30,000) env steps;
# 4 sampled actions per kind in the Cal-QL term (official: 10); random interventions by the scripted policy (p 0.02
# per learner step, 10-step takeovers). Cost measured here on one core: Stage I about 7.5 steps/s alone (about 4.6
# with 3 jobs on 2 cores), Stage II about 23-40 env steps/s with 2-4 jobs on 2 cores: the defaults take about 1 h per
# conrft / sac run. Run so far (README): TASKS=pick-place-v3 ALGOS="conrft sac" OFFLINE=4000 ONLINE=20000, seeds 1-3,
# and three eta/beta ablations of seed 2 in ablation_eta/ (their commands are in ablation_eta/README.md).
# Run from anywhere: bash benchmarks/conrft/run.sh (18 runs, JOBS at a time); then python benchmarks/conrft/summarize.py
#   TASKS="pick-place-v3 peg-insert-side-v3" SEEDS="1 2 3" ALGOS="conrft sac bc-only" OFFLINE=20000 BATCH=256 ONLINE=30000 JOBS=2 bash run.sh
set -euo pipefail
cd "$(dirname "$0")"
TASKS="${TASKS:-pick-place-v3 peg-insert-side-v3}"
SEEDS="${SEEDS:-1 2 3}"
ALGOS="${ALGOS:-conrft sac bc-only}"
ONLINE="${ONLINE:-30000}"
OFFLINE="${OFFLINE:-20000}"
BATCH="${BATCH:-256}"
COMMON="--offline-steps $OFFLINE --online-steps $ONLINE --batch-size $BATCH --cql-n-actions 4 --intervene-prob 0.02"
COMMON="$COMMON --eval-every 2500 --eval-episodes 10 --threads 1"
for task in $TASKS; do
  for seed in $SEEDS; do
    for algo in $ALGOS; do
      echo "python ../../conrft.py --env-id metaworld/$task --algo $algo --seed $seed $COMMON"
    done
  done
done | xargs -P "${JOBS:-2}" -I{} sh -c 'OMP_NUM_THREADS=1 {} > /dev/null 2>&1'
