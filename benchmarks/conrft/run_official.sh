#!/usr/bin/env bash
# ConRFT in the official regime (cccedric/conrft, task1 config + pre-training script), pick-place-v3, seeds SEEDS
# (default 1 2), and critic_probe.py on its Stage I checkpoints:
#   Stage I  (STAGE=1): 20,000 steps at batch 256, Cal-QL with 10 sampled actions per kind, eta 0 / beta 1, the
#            state embeddings (--state-embed 64: Dense 64 -> LayerNorm -> tanh, the critic's and the policy's) and
#            --episode-steps 100 (Stage I reads no env transitions: all 20 demos end in success, so masks and MC
#            returns are the same with or without it; it is stored in the checkpoint for Stage II and the probe).
#            Each finished model.pt is copied to official/stage1_s<seed>.pt (1.7 MB, committed), so Stage II can run
#            in a later session.
#   Stage II (STAGE=2): from official/stage1_s<seed>.pt, 20,000 env steps, 100-step training episodes whose time
#            limit is done (mask 0), eta 1 / beta 0.1, the plain TD critic, random takeovers by the scripted expert
#            (p 0.02 per step, 10 steps), 10 evaluation episodes of at most 100 steps (as official; every other ConRFT
#            row evaluates at the env's 500) every 2,500 env steps; then critic_probe.py on the same checkpoints (its
#            frozen-critic Stage II and evaluations take --episode-steps 100 from them) into official/critic_probe.csv
#            and .md. --state-embed 64 gives the critic one embedding and the policy its own (official).
#   STAGE="1 2" (default) does both. Summaries: python benchmarks/conrft/summarize_official.py
#   Stage II variants from the same checkpoints: VARIANT=_name EXTRA="conrft.py flags" (exp-name official_name, log
#   stage2_name_s<seed>.log), PROBE=0 skips the probe, e.g.
#   STAGE=2 VARIANT=_online_cql EXTRA=--online-cql ONLINE=10000 PROBE=0 bash benchmarks/conrft/run_official.sh
# Cost on this 2-core machine, one thread per job: Stage I about 0.5 s per step alone (two critic updates of
# 256 x 31 rows each), so 20k steps take about 2 h 50 min; --compile gained 8% (not used). Start STAGE=1 at the very
# beginning of a session with JOBS=2 (both seeds at once). Stage II about 10-15 min per seed, the probe about 10 min.
# Stage I over sessions: STOP_AFTER=2h (a `timeout` duration; 0: never) stops it by SIGTERM and saves the run to
# official/stage1_s<seed>_stopped.pt (parameters, Adam states, RNGs: commit it); the next STAGE=1 goes on from there
# (conrft.py --resume, the same result as a run never stopped) and appends to stage1_s<seed>_metrics.csv.
# Quick check of the plumbing: OFFLINE=30 ONLINE=300 FROZEN=200 OUT=/tmp/off bash benchmarks/conrft/run_official.sh
set -euo pipefail
cd "$(dirname "$0")"
export HERE=$PWD
export SEEDS="${SEEDS:-1 2}" STAGE="${STAGE:-1 2}" OFFLINE="${OFFLINE:-20000}" ONLINE="${ONLINE:-20000}"
export VARIANT="${VARIANT:-}" EXTRA="${EXTRA:-}" PROBE="${PROBE:-1}"
export FROZEN="${FROZEN:-5000}" OUT="${OUT:-$HERE/official}" STOP_AFTER="${STOP_AFTER:-0}" OMP_NUM_THREADS=1
export COMMON="--env-id metaworld/pick-place-v3 --algo conrft --batch-size 256 --cql-n-actions 10 --state-embed 64
--episode-steps 100 --eval-every 2500 --eval-episodes 10 --threads 1"
mkdir -p "$OUT"
stage_one() {  # seed; goes on from official/stage1_s<seed>_stopped.pt when there is one (--resume)
  local dir resume=()
  [[ -f "$OUT/stage1_s$1_stopped.pt" ]] && resume=(--resume "$OUT/stage1_s$1_stopped.pt")
  (cd "$OUT" && timeout -s TERM "$STOP_AFTER" python -W ignore "$HERE/../../conrft.py" $COMMON --seed "$1" \
    --offline-steps "$OFFLINE" --online-steps 0 --exp-name stage1_official "${resume[@]}" >> "stage1_s$1.log" 2>&1) \
    || true  # 124 / 143: stopped by STOP_AFTER, saved
  dir=$(ls -d "$OUT"/runs/metaworld_pick-place-v3__stage1_official__conrft__"$1"__* | tail -1)
  if [[ ${#resume[@]} -eq 0 ]]; then cp "$dir/metrics.csv" "$OUT/stage1_s$1_metrics.csv"
  else tail -n +2 "$dir/metrics.csv" >> "$OUT/stage1_s$1_metrics.csv"; fi  # one csv over all parts
  if python -c "import sys, torch; sys.exit(torch.load(sys.argv[1], weights_only=False)['stage_one']['done'] \
      < int(sys.argv[2]))" "$dir/model.pt" "$OFFLINE"; then
    cp "$dir/model.pt" "$OUT/stage1_s$1.pt" && rm -f "$OUT/stage1_s$1_stopped.pt"
  else
    cp "$dir/model.pt" "$OUT/stage1_s$1_stopped.pt"  # 3.9 MB (Adam states): commit it, the next session goes on
  fi
}
stage_two() {  # seed
  (cd "$OUT" && python -W ignore "$HERE/../../conrft.py" $COMMON --seed "$1" --online-steps "$ONLINE" \
    --intervene-prob 0.02 --stage-one "$OUT/stage1_s$1.pt" --exp-name "official$VARIANT" $EXTRA \
    > "stage2${VARIANT}_s$1.log" 2>&1)
}
export -f stage_one stage_two
if [[ " $STAGE " == *" 1 "* ]]; then
  printf '%s\n' $SEEDS | xargs -P "${JOBS:-2}" -I{} bash -c 'stage_one {}'
fi
if [[ " $STAGE " == *" 2 "* ]]; then
  printf '%s\n' $SEEDS | xargs -P "${JOBS:-2}" -I{} bash -c 'stage_two {}'
  [[ "$PROBE" == 1 ]] || exit 0
  specs=()
  for seed in $SEEDS; do specs+=("20k_s$seed=$OUT/stage1_s$seed.pt"); done
  python critic_probe.py "${specs[@]}" --frozen-steps "$FROZEN" --out "$OUT/critic_probe.csv" | tee "$OUT/critic_probe.md"
fi
