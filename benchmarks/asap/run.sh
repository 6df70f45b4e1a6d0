#!/usr/bin/env bash
# ASAP benchmark: Hopper-v4, two physics gaps x {finetune-sim, sysid, asap} x 3 seeds (direct transfer is every
# run's step-0 real evaluation); SysID iterates its coordinate search until the scales stop changing (>= 4 rounds).
# Two jobs at a time (through $SLOT, a CPU-slot wrapper, if set); then summarize.py -> results.csv, results.md, plot.png
# (rows of gaps not run this time are kept from the committed results.csv).
# GAPS (one gap's flags per line) picks the gaps (--mass-scale defaults to 1.5: give --mass-scale 1.0 for a gap without
# it). The actuator gaps were run as
#   GAPS=$'--dead-zone 0.2\n--action-lowpass 0.5' bash benchmarks/asap/run.sh    (with the heavier torso: "mass x1.5, ...")
#   GAPS='--mass-scale 1.0 --dead-zone 0.2' JOBS=1 bash benchmarks/asap/run.sh     (the dead zone alone)
set -euo pipefail
cd "$(dirname "$0")"
GAPS=${GAPS:-$'--mass-scale 1.5\n--mass-scale 1.0 --gear-scale 0.8'}
mapfile -t GAP_LIST <<< "$GAPS"
COMMON="--env-id Hopper-v4 --delta-steps 100000 --finetune-steps 200000 --eval-every 50000 --eval-episodes 5 --threads 1"
jobs=()
for gap in "${GAP_LIST[@]}"; do for seed in 1 2 3; do for m in asap sysid finetune-sim; do
  jobs+=("../../asap_delta.py --method $m --seed $seed $gap $COMMON")
done; done; done
rm -rf logs runs && mkdir -p logs
printf '%s\n' "${jobs[@]}" | xargs -P "${JOBS:-2}" -I{} ${SLOT:-} sh -c 'python -W ignore {} > "logs/$(echo "{}" | md5sum | cut -c1-8).log" 2>&1 && echo "done: {}"'
python summarize.py
