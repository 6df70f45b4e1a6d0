#!/usr/bin/env bash
# ConRFT vs plain SAC fine-tuning from the same Stage I, on MetaWorld tasks (sparse success; the official task reward
# +10 at success, -0.05 per other step, on demos and online data; 20 scripted demos), 3 seeds, with conrft.py's
# official defaults (LayerNorm-tanh policy, Stage I eta 0 / beta 1 with Cal-QL, Stage II eta 1 / beta 0.1 with the
# plain TD loss and fresh optimizers, cta_ratio 2, discount 0.98, evaluation noise drawn).
# Each (task, seed, algo) runs Stage I once (--online-steps 0, into stage_one/runs), then Stage II from that checkpoint
# (--stage-one, as the official fine-tuning run restores the pre-training one): with random takeovers by the scripted
# policy (p 0.02 per step, 10 steps; into runs/), and with CORRECTIONS=1 also with corrections (the expert takes over
# at step 100 of any episode and acts to its end; into corrections/runs); TAKEOVERS=0 skips the random-takeover run
# (to add corrections to a (task, seed, algo) that has it); GAP=1 adds a run where the expert steps in (10 steps) when
# the L1 gap between the policy's action and its own exceeds 1.5 (--intervene-gap; into corrections/runs, exp-name
# gap; on pick-place the Stage I policy's gap stays below 1.5 in successful episodes and passes it by step 25 in
# failing ones: gap_calibration.py). The consistency-BC result is ConRFT's
# "after Stage I" column (Stage I has eta 0).
# Budget: Stage I OFFLINE steps (default 20,000, the official pre-training length) at batch BATCH (default 256, as
# official), 4 sampled actions per kind in the Cal-QL term (official: 10); Stage II ONLINE env steps (default 30,000);
# 10 evaluation episodes every 2,500 env steps. Cost measured here on one core: Stage I about 7.5 steps/s, Stage II
# about 40 env steps/s (slower when evaluations run 500-step failing episodes).
# Run so far (README), all with OFFLINE=4000 ONLINE=20000, in pieces over two sessions, 2-4 invocations at a time on
# 2 cores; together the same runs as: TASKS="pick-place-v3 peg-insert-side-v3" (ConRFT and SAC, seeds 1-3), then
# TASKS=pick-place-v3 ALGOS=conrft TAKEOVERS=0 CORRECTIONS=1 (seeds 1-3), then the same with GAP=1 for SEEDS="1 2"
# (seed 3 cut for time). Corrections and GAP were not run for SAC. The SAC rows were re-run after its std fix (commit
# 128b382; code of b59d982, 2026-12-02/03, one job per task at a time) with OFFLINE=4000 ONLINE=20000 ALGOS=sac
# TASKS="pick-place-v3 peg-insert-side-v3" (seeds 1-3), their old stage_one/runs cleared first.
# The random-takeover Stage II can take other flags into another folder: SUBDIR=small_eta EXP=eta0.01
# EXTRA="--eta 0.01" puts it into small_eta/runs with exp-name eta0.01 (small_eta/run.sh).
# stage_one/runs keeps one Stage I per (task, seed, algo), reused by later runs: clear it before changing OFFLINE/BATCH.
# Run from anywhere: bash benchmarks/conrft/run.sh; then python benchmarks/conrft/summarize.py (and
# corrections/summarize.py)
set -euo pipefail
cd "$(dirname "$0")"
export ONLINE="${ONLINE:-30000}" OFFLINE="${OFFLINE:-20000}" BATCH="${BATCH:-256}" CORRECTIONS="${CORRECTIONS:-0}"
export TAKEOVERS="${TAKEOVERS:-1}" GAP="${GAP:-0}" SUBDIR="${SUBDIR:-.}" EXP="${EXP:-}" EXTRA="${EXTRA:-}"
chain() {  # task seed algo: Stage I once, then each Stage II variant from it
  local task=$1 seed=$2 algo=$3 here=$PWD
  local common="--env-id metaworld/$task --algo $algo --seed $seed --batch-size $BATCH --cql-n-actions 4"
  common="$common --eval-every 2500 --eval-episodes 10 --threads 1"
  local pat="stage_one/runs/metaworld_${task}__stage1__${algo}__${seed}__*/model.pt"
  if ! ls $pat > /dev/null 2>&1; then
    (cd stage_one && python ../../../conrft.py $common --offline-steps "$OFFLINE" --online-steps 0 --exp-name stage1)
  fi
  local ckpt
  ckpt="$here/$(ls $pat | head -1)"
  if [ "$TAKEOVERS" = 1 ]; then  # into $SUBDIR/runs (default ./runs), with EXP's exp-name and EXTRA flags if given
    (cd "$SUBDIR" && python "$here/../../conrft.py" $common --online-steps "$ONLINE" --intervene-prob 0.02 \
      --stage-one "$ckpt" ${EXP:+--exp-name "$EXP"} $EXTRA)
  fi
  if [ "$CORRECTIONS" = 1 ]; then
    (cd corrections && python ../../../conrft.py $common --online-steps "$ONLINE" --intervene-prob 0 \
      --takeover-after 100 --exp-name correct --stage-one "$ckpt")
  fi
  if [ "$GAP" = 1 ]; then
    (cd corrections && python ../../../conrft.py $common --online-steps "$ONLINE" --intervene-prob 0 \
      --intervene-gap 1.5 --exp-name gap --stage-one "$ckpt")
  fi
}
export -f chain
mkdir -p stage_one corrections
for task in ${TASKS:-pick-place-v3 peg-insert-side-v3}; do
  for algo in ${ALGOS:-conrft sac}; do
    for seed in ${SEEDS:-1 2 3}; do echo "$task $seed $algo"; done
  done
done | xargs -P "${JOBS:-2}" -L 1 bash -c 'OMP_NUM_THREADS=1 chain $0 $1 $2 > /dev/null 2>&1'
