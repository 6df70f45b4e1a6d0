#!/usr/bin/env bash
# iRe-VLA lite benchmark as run for issue 14 (CPU-limited): {ire-vla, plain-rl, freeze} x seed 1, 1 iteration
# (stage 0 SFT, stage 1 RL, stage 2 SFT), 20k RL env steps per RL stage, 10 evaluation episodes per task per stage.
# The issue asks 3 seeds, 2 iterations and >= 60k RL steps: SEEDS="1 2 3" ITERS=2 RL_STEPS=60000 bash run.sh.
# Jobs go through $SLOT (a CPU-slot wrapper) if set; then summarize.py.
set -euo pipefail
cd "$(dirname "$0")"
SEEDS=${SEEDS:-1}; ITERS=${ITERS:-1}; RL_STEPS=${RL_STEPS:-20000}
jobs=()
for seed in $SEEDS; do for mode in ire-vla plain-rl freeze; do
  jobs+=("../../ire_vla_lite.py --mode $mode --seed $seed --num-iterations $ITERS --rl-steps $RL_STEPS --eval-episodes 10 --threads 1")
done; done
rm -rf logs runs && mkdir -p logs
printf '%s\n' "${jobs[@]}" | xargs -P 3 -I{} ${SLOT:-} sh -c 'python -W ignore {} > "logs/$(echo "{}" | md5sum | cut -c1-8).log" 2>&1 && echo "done: {}"'
python summarize.py
