#!/usr/bin/env bash
# GRAPE lite benchmark: from one SFT start per seed, K iterations of sampling, ranking, pairing and a
# preference update, three ways: grape (GCPG ranking, whole-trajectory TPO), tpo-success (success-only ranking:
# lambda_self = lambda_ext = 0), step-dpo (GCPG ranking, one preference per step: --tpo-window 1). The SFT start is
# the same for the three variants of a seed (iteration 0). Success on the training and held-out tasks after every
# iteration (10 deterministic episodes per task). JOBS runs at a time, one torch thread each; then summarize.py.
#   bash benchmarks/grape/run.sh
#   SEEDS=1 ITERS=1 VARIANTS="grape" bash benchmarks/grape/run.sh        (a quick look)
set -euo pipefail
cd "$(dirname "$0")"
python -c "import gymnasium, matplotlib, tyro" 2>/dev/null || { echo "Activate the project's environment first (pip install -r requirements.txt)." >&2; exit 1; }
SEEDS=${SEEDS:-1 2 3}; ITERS=${ITERS:-3}; JOBS=${JOBS:-2}; VARIANTS=${VARIANTS:-"grape tpo-success step-dpo"}
EXTRA=${EXTRA:-}
declare -A FLAGS=([grape]="" [tpo-success]="--lambda-self 0 --lambda-ext 0" [step-dpo]="--tpo-window 1")
jobs=()
for seed in $SEEDS; do for v in $VARIANTS; do
  jobs+=("../../grape_tpo.py --exp-name $v ${FLAGS[$v]} --seed $seed --num-iterations $ITERS --eval-episodes 10 --threads 1 $EXTRA")
done; done
rm -rf logs runs && mkdir -p logs
export OMP_NUM_THREADS=1
printf '%s\n' "${jobs[@]}" | xargs -P "$JOBS" -I{} sh -c 'python -W ignore {} > "logs/$(echo "{}" | md5sum | cut -c1-8).log" 2>&1 && echo "done: {}" || echo "FAILED: {}"'
python summarize.py
