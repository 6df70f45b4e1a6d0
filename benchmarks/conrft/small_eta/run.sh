#!/usr/bin/env bash
# ConRFT's Stage II with a small Q weight (--eta ETA, default 0.01; official 1) from the reduced-budget Stage I of
# ../run.sh (pick-place-v3, 4,000 offline steps at batch 256, 4 Cal-QL actions per kind: consistency BC well below
# 100%, so Stage II has room to improve on it), seeds SEEDS (default 1 2 3), random takeovers (p 0.02, 10 steps),
# ONLINE env steps (default 20,000) of 500-step episodes, 10 evaluation episodes every 2,500. Stage I is trained into
# ../stage_one/runs as run.sh does (and reused from there); Stage II goes to small_eta/runs, exp-name eta<ETA>.
# The question: does a Q term weak enough not to pull the policy off the demos (official regime, docs/conrft.md)
# still improve on BC? Then: python benchmarks/conrft/small_eta/summarize.py > benchmarks/conrft/small_eta/results.md
# Cost on 2 cores, JOBS=2: Stage I about 11 min per seed, Stage II about 15-25 min per seed.
set -euo pipefail
cd "$(dirname "$0")"
export ETA="${ETA:-0.01}" ONLINE="${ONLINE:-20000}" OMP_NUM_THREADS=1
chain() {  # seed
  local common="--env-id metaworld/pick-place-v3 --algo conrft --seed $1 --batch-size 256 --cql-n-actions 4"
  common="$common --eval-every 2500 --eval-episodes 10 --threads 1"
  local pat="../stage_one/runs/metaworld_pick-place-v3__stage1__conrft__$1__*/model.pt"
  if ! ls $pat > /dev/null 2>&1; then
    (cd ../stage_one && python -W ignore ../../../conrft.py $common --offline-steps 4000 --online-steps 0 \
      --exp-name stage1)
  fi
  python -W ignore ../../../conrft.py $common --online-steps "$ONLINE" --intervene-prob 0.02 --eta "$ETA" \
    --exp-name "eta$ETA" --stage-one "$PWD/$(ls $pat | head -1)"
}
export -f chain
for seed in ${SEEDS:-1 2 3}; do echo "$seed"; done | xargs -P "${JOBS:-2}" -I{} bash -c 'chain {} > "s{}_eta$ETA.log" 2>&1'
