#!/usr/bin/env bash
# IN-RIL dense-reward control: the 8 variants of run_metaworld.sh x {Hopper-v4, Walker2d-v4} x 3 seeds, BC from the
# shipped medium demos, then STEPS env steps of fine-tuning with the files' defaults of today (critic warm-up 5
# rollouts, separate IL/RL optimizers, the residual's MuJoCo scale and std; results.csv here was made with ResiP's, the
# defaults of ca0b60a) and --project-step for the two IN-RIL pcgrad variants (the file's default until issue 25's 1M
# benchmark; off since).
# Each run gets --exp-name <variant>; then summarize.py -> results.csv, diagnostics.csv, results.md, plot.png.
#   bash benchmarks/inril/run.sh [STEPS]        (default 300000 env steps per run)
# JOBS runs in parallel (1 torch thread each); LAUNCH prefixes every job (e.g. LAUNCH=/tmp/coord/slot.sh).
set -euo pipefail
cd "$(dirname "$0")"
python -c "import gymnasium, matplotlib, tyro" 2>/dev/null || { echo "Activate the project's environment first (pip install -r requirements.txt)." >&2; exit 1; }
STEPS=${STEPS:-${1:-300000}}
ENVS=${ENVS:-"Hopper-v4 Walker2d-v4"}
SEEDS=${SEEDS:-"1 2 3"}
JOBS=${JOBS:-2}
LAUNCH=${LAUNCH:-}
VARIANTS=${VARIANTS:-"rl_only bc_reg pcgrad_m10 pcgrad_dyn res_rl_only res_bc_reg residual_m10 residual_dyn"}
declare -A CMD=(
  [rl_only]="inril_pcgrad.py --il-mode none"
  [bc_reg]="inril_pcgrad.py --il-mode regularize --bc-coef 0.1"
  [pcgrad_m10]="inril_pcgrad.py --m 10 --project-step"
  [pcgrad_dyn]="inril_pcgrad.py --m 10 --dynamic-m --project-step"
  [res_rl_only]="inril_residual.py --il-mode none"
  [res_bc_reg]="inril_residual.py --il-mode regularize --bc-coef 0.1"
  [residual_m10]="inril_residual.py --m 10"
  [residual_dyn]="inril_residual.py --m 10 --dynamic-m"
)
COMMON="--total-timesteps $STEPS --eval-every 20000 --eval-episodes 5 --threads 1"
jobs=()
for env in $ENVS; do for seed in $SEEDS; do for v in $VARIANTS; do
  set -- ${CMD[$v]}
  jobs+=("$LAUNCH python -W ignore ../../$* --env-id $env --seed $seed --exp-name $v $COMMON")
done; done; done
mkdir -p logs
export OMP_NUM_THREADS=1
printf '%s\n' "${jobs[@]}" | xargs -P "$JOBS" -I{} sh -c \
  '{} > "logs/$(echo "{}" | md5sum | cut -c1-8).log" 2>&1 && echo "done: {}" || echo "FAILED: {}"'
python summarize.py
