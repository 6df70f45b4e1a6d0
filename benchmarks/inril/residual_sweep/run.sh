#!/usr/bin/env bash
# Residual scale and exploration noise of inril_residual.py on MuJoCo locomotion (absolute torques in [-1, 1]):
# the main command (`--m 10`, IN-RIL residual) on Hopper-v4, seeds 1-2, 300k env steps, with the residual's
# scale, its action-space std (scale * e^log_std) and its L2 penalty varied; ResiP's values (scale 0.1, log std -1.5,
# so std 0.022, L2 0.01) were made for small delta-pose corrections in manipulation. Then summarize.py.
#   bash benchmarks/inril/residual_sweep/run.sh      (JOBS runs at a time, one torch thread each)
set -euo pipefail
cd "$(dirname "$0")"
SEEDS=${SEEDS:-"1 2"}; STEPS=${STEPS:-300000}; JOBS=${JOBS:-2}
# name scale action-std l2
SETTINGS=${SETTINGS:-"resip,0.1,0.0223,0.01 s0.1_std0.1,0.1,0.1,0.01 s0.1_std0.5,0.1,0.5,0 s1_std0.1,1.0,0.1,0 s1_std0.3,1.0,0.3,0 s1_std0.5,1.0,0.5,0"}
jobs=()
for seed in $SEEDS; do for s in $SETTINGS; do
  IFS=, read -r name scale std l2 <<< "$s"
  logstd=$(python -c "import math; print(round(math.log($std / $scale), 4))")
  jobs+=("python -W ignore ../../../inril_residual.py --env-id Hopper-v4 --m 10 --seed $seed --exp-name $name \
--residual-scale $scale --residual-log-std $logstd --residual-l2 $l2 --total-timesteps $STEPS --eval-every 20000 \
--eval-episodes 5 --threads 1")
done; done
mkdir -p logs
export OMP_NUM_THREADS=1
printf '%s\n' "${jobs[@]}" | xargs -P "$JOBS" -I{} sh -c \
  '{} > "logs/$(echo "{}" | md5sum | cut -c1-8).log" 2>&1 && echo "done: {}" || echo "FAILED: {}"'
python summarize.py
