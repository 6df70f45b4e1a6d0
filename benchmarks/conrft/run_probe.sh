#!/usr/bin/env bash
# critic_probe.py on pick-place-v3 Stage I checkpoints, seeds SEEDS (default 1 2), two Stage I regimes:
#   4k:  run.sh's Stage I (OFFLINE=4000, BATCH 256, 4 Cal-QL actions per kind), reused from run.sh's stage_one/runs
#        (or critic_probe/runs) when a finished one with these settings exists, else trained into critic_probe/:
#        python ../../../conrft.py --env-id metaworld/pick-place-v3 --algo conrft --seed S --batch-size 256
#          --cql-n-actions 4 --eval-every 2500 --eval-episodes 10 --threads 1 --offline-steps 4000 --online-steps 0
#          --exp-name stage1_4k                                                    (run from critic_probe/)
#   20k: the official Stage I (20,000 steps at batch 256, 10 Cal-QL actions per kind), the same way:
#        python ../../../conrft.py --env-id metaworld/pick-place-v3 --algo conrft --seed S --batch-size 256
#          --cql-n-actions 10 --eval-every 2500 --eval-episodes 10 --threads 1 --offline-steps 20000 --online-steps 0
#          --exp-name stage1_20k_cql10                                             (run from critic_probe/)
#        No --episode-steps 100: it does not change Stage I (the 20 demos all end in success, so demo_rows gives the
#        same masks and MC returns with or without it; Stage I reads the env only for its shapes and evaluation keeps
#        the env's 500-step limit), and critic_probe.py's frozen-critic Stage II takes it from the checkpoint, so
#        leaving it off keeps that Stage II the same (500-step episodes that bootstrap) for both regimes.
# Then, one process over all checkpoints (4k before 20k, seed by seed), writing critic_probe.csv:
#   python critic_probe.py 4k_s1=<ckpt> 4k_s2=<ckpt> 20k_s1=<ckpt> 20k_s2=<ckpt>
#     (defaults: 8 demo batches, 10 ascent steps of 0.1, frozen-critic Stage II 5,000 env steps with eta 1 and eta 0,
#     5 evaluation episodes every 500 steps)
# Cost measured on this 2-core machine beside two other jobs, one thread: Stage I 6.6 steps/s with 4 Cal-QL actions
# (4k: about 11 min with its evaluations), 2.5 steps/s with 10 (20k: about 2 h 15 min); the probe about 4 min per
# checkpoint. In all about 5 h with JOBS=1 (default), about 2.5-3 h with JOBS=2 (Stage I trainings two at a time).
# Run from anywhere: bash benchmarks/conrft/run_probe.sh   (REGIMES="4k" for the 4k checkpoints alone)
set -euo pipefail
cd "$(dirname "$0")"
export SEEDS="${SEEDS:-1 2}" REGIMES="${REGIMES:-4k 20k}" OMP_NUM_THREADS=1
find_ckpt() {  # seed offline_steps cql_n_actions: a finished pick-place Stage I model.pt with these settings
  python - "$@" <<'EOF' 2>/dev/null || true
import glob, sys, torch
seed, off, n = map(int, sys.argv[1:])
want = ("metaworld/pick-place-v3", "conrft", seed, off, 0, 256, n, 0, "", False)
for p in sorted(glob.glob("stage_one/runs/*/model.pt") + glob.glob("critic_probe/runs/*/model.pt")):
    c = torch.load(p, weights_only=False)
    a = c["args"]
    keys = ("env_id", "algo", "seed", "offline_steps", "online_steps", "batch_size", "cql_n_actions", "episode_steps",
            "stage_one")
    if tuple(a[k] for k in keys) + (bool(c.get("interrupted")),) == want:
        print(p)
        break
EOF
}
train() {  # seed offline_steps cql_n_actions name: train that Stage I into critic_probe/ unless find_ckpt has one
  local seed=$1 off=$2 n=$3 name=$4
  if [ -z "$(find_ckpt "$seed" "$off" "$n")" ]; then
    (cd critic_probe && python ../../../conrft.py --env-id metaworld/pick-place-v3 --algo conrft --seed "$seed" \
      --batch-size 256 --cql-n-actions "$n" --eval-every 2500 --eval-episodes 10 --threads 1 \
      --offline-steps "$off" --online-steps 0 --exp-name "$name" > "$name.$seed.log" 2>&1)
  fi
}
export -f find_ckpt train
mkdir -p critic_probe
for seed in $SEEDS; do
  [[ " $REGIMES " == *" 4k "* ]] && echo "$seed 4000 4 stage1_4k"
  [[ " $REGIMES " == *" 20k "* ]] && echo "$seed 20000 10 stage1_20k_cql10"
  true
done |
  xargs -P "${JOBS:-1}" -L 1 bash -c 'train $0 $1 $2 $3'
specs=()
for regime in "4k 4000 4" "20k 20000 10"; do
  set -- $regime
  [[ " $REGIMES " == *" $1 "* ]] || continue
  for seed in $SEEDS; do
    ckpt=$(find_ckpt "$seed" "$2" "$3")
    [ -n "$ckpt" ] || { echo "no Stage I checkpoint for $1 seed $seed (see critic_probe/*.log)" >&2; exit 1; }
    specs+=("$1_s$seed=$ckpt")
  done
done
python critic_probe.py "${specs[@]}" | tee critic_probe.md
