#!/usr/bin/env bash
# iRe-VLA lite benchmark: {ire-vla, plain-rl, freeze} x seeds 1 2 3, 2 iterations (stage 0 SFT,
# then RL / SFT twice), 60k RL env steps per RL stage, 10 evaluation episodes per task per stage, JOBS runs at a time
# (one torch thread each). Jobs go through $SLOT (a CPU-slot wrapper) if set; then summarize.py.
set -euo pipefail
cd "$(dirname "$0")"
SEEDS=${SEEDS:-1 2 3}; ITERS=${ITERS:-2}; RL_STEPS=${RL_STEPS:-60000}; JOBS=${JOBS:-2}
jobs=()
for seed in $SEEDS; do for mode in ire-vla plain-rl freeze; do
  jobs+=("../../ire_vla_lite.py --mode $mode --seed $seed --num-iterations $ITERS --rl-steps $RL_STEPS --eval-episodes 10 --threads 1")
done; done
rm -rf logs runs && mkdir -p logs
printf '%s\n' "${jobs[@]}" | xargs -P $JOBS -I{} ${SLOT:-} sh -c 'python -W ignore {} > "logs/$(echo "{}" | md5sum | cut -c1-8).log" 2>&1 && echo "done: {}"'
python summarize.py
