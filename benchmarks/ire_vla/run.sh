#!/usr/bin/env bash
# iRe-VLA lite benchmark: {ire-vla, plain-rl, freeze} x 3 seeds, the file's defaults (2 iterations, 20k RL env
# steps per RL stage, 5 evaluation episodes per task). Two jobs at a time; then summarize.py.
set -euo pipefail
cd "$(dirname "$0")"
jobs=()
for seed in 1 2 3; do for mode in ire-vla plain-rl freeze; do
  jobs+=("../../ire_vla_lite.py --mode $mode --seed $seed --threads 1")
done; done
mkdir -p logs
printf '%s\n' "${jobs[@]}" | xargs -P 2 -I{} sh -c 'python -W ignore {} > "logs/$(echo "{}" | md5sum | cut -c1-8).log" 2>&1 && echo "done: {}"'
python summarize.py
