#!/usr/bin/env bash
# ConRFT's Stage II with a small Q weight (--eta ETA, default 0.01; official 1) from the reduced-budget Stage I of
# ../run.sh (pick-place-v3, 4,000 offline steps at batch 256, 4 Cal-QL actions per kind: consistency BC well below
# 100%, so Stage II has room to improve on it), seeds SEEDS (default 1 2 3), random takeovers (p 0.02, 10 steps),
# ONLINE env steps (default 20,000) of 500-step episodes, 10 evaluation episodes every 2,500: ../run.sh's chain with
# Stage II into small_eta/runs, exp-name eta<ETA> (Stage I trained into, or reused from, ../stage_one/runs).
# The question: does a Q term weak enough not to pull the policy off the demos (official regime, docs/conrft.md)
# still improve on BC? Then: python benchmarks/conrft/small_eta/summarize.py > benchmarks/conrft/small_eta/results.md
# The committed results (f47320e) ran the same conrft.py commands from an earlier copy of this script that repeated
# run.sh's chain. Cost on 2 cores, JOBS=2: Stage I about 11 min per seed, Stage II about 15-25 min per seed.
set -euo pipefail
cd "$(dirname "$0")"
ETA="${ETA:-0.01}"
SUBDIR=small_eta EXP="eta$ETA" EXTRA="--eta $ETA" OFFLINE=4000 ONLINE="${ONLINE:-20000}" TASKS=pick-place-v3 \
  ALGOS=conrft SEEDS="${SEEDS:-1 2 3}" bash ../run.sh
