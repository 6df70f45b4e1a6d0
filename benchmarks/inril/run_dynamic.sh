#!/usr/bin/env bash
# IN-RIL residual with the dynamic m(t) rule, Hopper-v4, 3 seeds, same settings as run.sh; then summarize.py.
set -euo pipefail
cd "$(dirname "$0")"
STEPS=${STEPS:-300000}
mkdir -p logs
printf '%s\n' 1 2 3 | xargs -P 2 -I{} sh -c "python -W ignore ../../inril_residual.py --env-id Hopper-v4 --seed {} --m 10 --dynamic-m \
  --exp-name inril_residual_dyn --total-timesteps $STEPS --eval-every 20000 --eval-episodes 5 --threads 1 > logs/dyn_{}.log 2>&1 && echo done {}"
python summarize.py
