#!/usr/bin/env bash
# ConRFT and SAC fine-tuning on pick-place-v3 with corrections instead of random takeovers: the scripted expert takes
# over at step 100 of any online episode (about twice a demo's length) and acts to its end (--takeover-after 100,
# --intervene-prob 0), a stand-in for the paper's human who corrects failing attempts; everything else as the main
# benchmark's reduced budget (../run.sh with OFFLINE=4000 ONLINE=20000: Stage I 4k steps at batch 256, Cal-QL 4
# actions, Stage II 20k env steps, 10 evaluation episodes every 2.5k), seeds 1-3; plus one ablation of the main
# benchmark's seed 2 that keeps Cal-QL in Stage II (--online-cql, random takeovers as ../run.sh).
# Run from anywhere: bash benchmarks/conrft/corrections/run.sh; then python benchmarks/conrft/corrections/summarize.py
set -euo pipefail
cd "$(dirname "$0")"
COMMON="--env-id metaworld/pick-place-v3 --offline-steps 4000 --online-steps 20000 --batch-size 256 --cql-n-actions 4"
COMMON="$COMMON --eval-every 2500 --eval-episodes 10 --threads 1"
{
  for seed in ${SEEDS:-1 2 3}; do
    echo "python ../../../conrft.py $COMMON --algo conrft --seed $seed --exp-name correct --intervene-prob 0 --takeover-after 100"
  done
  echo "python ../../../conrft.py $COMMON --algo conrft --seed 2 --exp-name online_cql --intervene-prob 0.02 --online-cql"
  for seed in ${SEEDS:-1 2 3}; do
    echo "python ../../../conrft.py $COMMON --algo sac --seed $seed --exp-name correct --intervene-prob 0 --takeover-after 100"
  done
} | xargs -P "${JOBS:-2}" -I{} sh -c 'OMP_NUM_THREADS=1 {} > /dev/null 2>&1'
