#!/usr/bin/env bash
# IN-RIL in the paper's regime: MetaWorld with the sparse success reward (--sparse-reward: 1 on the step of success,
# where the episode ends), BC from the first DEMOS scripted demos (so the BC start is below 100% success), then PPO
# fine-tuning. 8 variants (the same grid as run.sh) x TASKS x SEEDS; each run gets --exp-name <variant>.
# Evaluation: 10 deterministic episodes every 10k env steps (eval/success); diagnostics rho, m(t), demo MSE, IL MSE,
# conflict rates every rollout. Then summarize.py --metaworld writes $OUT/results.csv (long format: env, variant,
# seed, step, key, value), $OUT/results.md and $OUT/plot.png (success, rho and m(t) over steps).
#   bash benchmarks/inril/run_metaworld.sh
#   STEPS=30000 TASKS=pick-place-v3 SEEDS=1 VARIANTS="rl_only residual_dyn" OUT=/tmp/x bash .../run_metaworld.sh
# pcgrad_m10 and pcgrad_dyn pass --project-step (the file's default until the 1M benchmark below, which then set it
# off: the committed results keep their commands). The 1M-step benchmark (issue 25; pcgrad_m10_noproj is
# --no-project-step, the surgery on the gradients alone, now the file's default):
#   STEPS=1000000 EVAL_EVERY=50000 TASKS=pick-place-v3 VARIANTS="rl_only bc_reg pcgrad_m10 pcgrad_m10_noproj
#   pcgrad_dyn residual_m10" OUT=metaworld_1m bash benchmarks/inril/run_metaworld.sh   (about 26 min per run alone)
# JOBS runs in parallel (1 torch thread each); LAUNCH prefixes every job (e.g. LAUNCH=/tmp/coord/slot.sh).
set -euo pipefail
cd "$(dirname "$0")"
python -c "import gymnasium, matplotlib, tyro" 2>/dev/null || { echo "Activate the project's environment first (pip install -r requirements.txt)." >&2; exit 1; }
STEPS=${STEPS:-100000}
TASKS=${TASKS:-"pick-place-v3 push-v3"}
SEEDS=${SEEDS:-"1 2 3"}
DEMOS=${DEMOS:-5}
EVAL_EVERY=${EVAL_EVERY:-10000}
JOBS=${JOBS:-2}
LAUNCH=${LAUNCH:-}
OUT=${OUT:-metaworld}
VARIANTS=${VARIANTS:-"rl_only bc_reg pcgrad_m10 pcgrad_dyn res_rl_only res_bc_reg residual_m10 residual_dyn"}
HERE=$(pwd)
declare -A CMD=(
  [rl_only]="inril_pcgrad.py --il-mode none"
  [bc_reg]="inril_pcgrad.py --il-mode regularize --bc-coef 0.1"
  [pcgrad_m10]="inril_pcgrad.py --m 10 --project-step"
  [pcgrad_m10_noproj]="inril_pcgrad.py --m 10 --no-project-step"
  [pcgrad_dyn]="inril_pcgrad.py --m 10 --dynamic-m --project-step"
  [res_rl_only]="inril_residual.py --il-mode none"
  [res_bc_reg]="inril_residual.py --il-mode regularize --bc-coef 0.1"
  [residual_m10]="inril_residual.py --m 10"
  [residual_dyn]="inril_residual.py --m 10 --dynamic-m"
)
COMMON="--sparse-reward --num-demo-episodes $DEMOS --bc-steps 3000 --total-timesteps $STEPS --eval-every $EVAL_EVERY \
--eval-episodes 10 --threads 1"
jobs=()
for task in $TASKS; do for seed in $SEEDS; do for v in $VARIANTS; do
  set -- ${CMD[$v]}
  jobs+=("$LAUNCH python -W ignore $HERE/../../$* --env-id metaworld/$task --seed $seed --exp-name $v $COMMON")
done; done; done
mkdir -p "$OUT/logs"
cd "$OUT"
export OMP_NUM_THREADS=1
printf '%s\n' "${jobs[@]}" | xargs -P "$JOBS" -I{} sh -c \
  '{} > "logs/$(echo "{}" | md5sum | cut -c1-8).log" 2>&1 && echo "done: {}" || echo "FAILED: {}"'
cd "$HERE"
python summarize.py --metaworld "$OUT"
