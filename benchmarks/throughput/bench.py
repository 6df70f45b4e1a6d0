"""Env steps per second of this project's files next to CleanRL's, whole processes, alternating, on one thread.

    CLEANRL_DIR=/tmp/cleanrl CLEANRL_PYTHON=/tmp/venv-cleanrl/bin/python python benchmarks/throughput/bench.py
    BENCH_GROUPS="sac" python benchmarks/throughput/bench.py   (re-measure one group; the other groups' rows are kept)
    python benchmarks/throughput/bench.py --from-csv     (re-make results.md from the committed results.csv)
    python benchmarks/throughput/bench.py --add-steady /tmp/throughput_runs/runs   (see add_steady())

CLEANRL_DIR holds CleanRL's `sac_continuous_action.py`, `ppo_continuous_action.py` and `cleanrl_utils/buffers.py`
(with an empty `cleanrl_utils/__init__.py`), taken from github.com/vwxyzjn/cleanrl; CLEANRL_PYTHON is a venv with
CleanRL's stack (gymnasium 0.29.1, mujoco 2.3.3; see the README's throughput section). Nothing of CleanRL is
committed here. Every command runs REPS times, the commands of a group one after the other in each round
(alternating), with OMP_NUM_THREADS=1 and no evaluation during training. Nothing else should run meanwhile.
"""
import csv
import glob
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
REPS = int(os.environ.get("REPS", 3))
CLEANRL_DIR = os.environ.get("CLEANRL_DIR", "/tmp/cleanrl")
CLEANRL_PY = os.environ.get("CLEANRL_PYTHON", "/tmp/venv-cleanrl/bin/python")
PY = sys.executable
NO_EVAL = ["--eval-every", str(10**9)]

# SAC: Hopper-v4, 10,000 env steps of which the last 5,000 learn; 2 critics, 2 x 256, batch 256, UTD 1.
SAC_STEPS = 10_000
RLPD_SAC = [PY, f"{ROOT}/rlpd.py", "--env-id", "Hopper-v4", "--offline-ratio", "0", "--num-qs", "2", "--utd", "1",
            "--total-timesteps", str(SAC_STEPS), "--start-training", "5000", "--threads", "1", *NO_EVAL]
# PPO: Hopper-v4, 1 env, 2,048 steps per rollout, 32 minibatches, 10 epochs, 24 rollouts; no BC, no critic warm-up,
# no KL early stop (CleanRL has none), 1 evaluation episode at the start and end (the file always evaluates there).
PPO_STEPS = 24 * 2048
INRIL_PPO = ["--env-id", "Hopper-v4", "--il-mode", "none", "--num-envs", "1", "--num-steps", "2048",
             "--num-minibatches", "32", "--update-epochs", "10", "--total-timesteps", str(PPO_STEPS), "--bc-steps", "0",
             "--critic-warmup-iters", "0", "--target-kl", "1e9", "--eval-episodes", "1", "--threads", "1", *NO_EVAL]
GROUPS = {
    "sac": [("CleanRL sac_continuous_action.py", [CLEANRL_PY, f"{CLEANRL_DIR}/sac_continuous_action.py", "--env-id",
                                                  "Hopper-v4", "--total-timesteps", str(SAC_STEPS), "--learning-starts",
                                                  "5000", "--no-track", "--no-cuda"], SAC_STEPS),
            ("rlpd.py (SAC setting)", RLPD_SAC, SAC_STEPS),
            ("rlpd.py (SAC setting) --compile", RLPD_SAC + ["--compile"], SAC_STEPS),
            ("rlpd.py (SAC setting) --no-critic-layer-norm", RLPD_SAC + ["--no-critic-layer-norm"], SAC_STEPS)],
    "ppo": [("CleanRL ppo_continuous_action.py", [CLEANRL_PY, f"{CLEANRL_DIR}/ppo_continuous_action.py", "--env-id",
                                                  "Hopper-v4", "--total-timesteps", str(PPO_STEPS), "--no-track",
                                                  "--no-capture-video", "--no-cuda"], PPO_STEPS),
            ("inril_pcgrad.py --il-mode none", [PY, f"{ROOT}/inril_pcgrad.py", *INRIL_PPO], PPO_STEPS),
            ("inril_pcgrad.py --il-mode none --compile", [PY, f"{ROOT}/inril_pcgrad.py", *INRIL_PPO, "--compile"],
             PPO_STEPS)],
}
# RLPD's cost knobs: 300 learning env steps after 1,000 random ones; the time of a random-only run is subtracted.
COST_LEARN = 300


def cost_cmd(e, u, total):
    return [PY, f"{ROOT}/rlpd.py", "--env-id", "Hopper-v4", "--offline-ratio", "0", "--start-training", "1000",
            "--threads", "1", "--num-qs", str(e), "--utd", str(u), "--total-timesteps", str(total), *NO_EVAL]


GROUPS["rlpd_cost"] = [("rlpd.py random steps only", cost_cmd(2, 1, 1000), 1000)] + [
    (f"rlpd.py E={e} UTD={u}", cost_cmd(e, u, 1000 + COST_LEARN), 1000 + COST_LEARN) for e, u in ((2, 1), (10, 1), (2, 20))]


RUNS = "/tmp/throughput_runs"
STEADY = {"sac": (6000, SAC_STEPS), "ppo": (2 * 2048, PPO_STEPS)}  # env-step window of the steady-state rate


def steady_sps(group, folder):
    """Env steps per second between two logged steps of a run, read from the wall times of its TensorBoard events:
    after the burn-in (start-up, random steps, the first updates, compilation) and before the end. SAC: from the
    first logged step >= 6,000 (1,000 steps into learning) to the last <= 10,000; PPO: from the end of the 2nd
    rollout to the last. Both files log at least every 1,000 steps (CleanRL SAC every 100, PPO every rollout)."""
    if group not in STEADY:
        return ""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    wall = {}
    for run_dir in glob.glob(os.path.join(folder, "runs", "*")):
        ea = EventAccumulator(run_dir, size_guidance={"scalars": 0})
        ea.Reload()
        for tag in ea.Tags()["scalars"]:
            for e in ea.Scalars(tag):
                wall[e.step] = max(wall.get(e.step, 0.0), e.wall_time)
    lo, hi = STEADY[group]
    steps = sorted(s for s in wall if lo <= s <= hi)
    if len(steps) < 2:
        return ""
    return round((steps[-1] - steps[0]) / (wall[steps[-1]] - wall[steps[0]]), 1)


def run(cmd, folder):
    os.makedirs(folder, exist_ok=True)
    t = time.perf_counter()
    out = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    wall = time.perf_counter() - t
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return wall


def measure():
    rows, only = [], os.environ.get("BENCH_GROUPS", "").split()  # BENCH_GROUPS="sac": re-measure that group only
    for group, cases in GROUPS.items():
        if only and group not in only:
            continue
        for rep in range(REPS):
            for name, cmd, steps in cases:
                folder = os.path.join(RUNS, f"{len(rows):03d}")  # each run's runs/<run_name>/ lands here
                wall = run(cmd, folder)
                rows.append({"group": group, "name": name, "rep": rep, "env_steps": steps, "wall_s": round(wall, 2),
                             "steady_sps": steady_sps(group, folder)})
                print(f"{group} rep {rep}: {name}: {wall:.1f} s, steady {rows[-1]['steady_sps']} steps/s", flush=True)
    path = os.path.join(HERE, "results.csv")
    if only and os.path.exists(path):
        rows = [r for r in csv.DictReader(open(path)) if r["group"] not in only] + rows
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return rows


def table(rows):
    by = {}
    for r in rows:
        by.setdefault((r["group"], r["name"]), []).append(float(r["wall_s"]))
    steps = {(r["group"], r["name"]): int(r["env_steps"]) for r in rows}
    sps = {k: [] for k in by}
    for r in rows:
        if str(r.get("steady_sps", "")) not in ("", "nan"):
            sps[(r["group"], r["name"])].append(float(r["steady_sps"]))
    lines = [f"Median of {REPS} alternating runs, 1 thread, this machine (2 CPU cores); command lines in "
             "benchmarks/throughput/bench.py. Whole run: env steps / whole-process wall time (start-up, random steps, "
             "compilation and the final evaluation included). Steady state: env steps / s between two logged steps "
             "after the burn-in (SAC: from step 6,000 to 10,000, learning from 5,000; PPO: from the 2nd rollout to the "
             "end), from the wall times of each run's TensorBoard events.", ""]
    for group, title in (("sac", f"SAC, Hopper-v4, {SAC_STEPS:,} env steps (5,000 learning), 2 critics 2 x 256, "
                                 "batch 256, UTD 1"),
                         ("ppo", f"PPO, Hopper-v4, {PPO_STEPS:,} env steps, 1 env x 2,048, 32 minibatches, 10 epochs")):
        names = [n for g, n in by if g == group]
        if not names:
            continue
        ref, ref_sps = np.median(by[(group, names[0])]), np.median(sps[(group, names[0])] or [np.nan])
        lines += [f"**{title}**", "", "| command | wall s (runs) | env steps / s, whole run | speed vs CleanRL | "
                  "env steps / s, steady state | speed vs CleanRL |", "|---|---|---|---|---|---|"]
        for n in names:
            med, med_sps = np.median(by[(group, n)]), np.median(sps[(group, n)] or [np.nan])
            runs = ", ".join(f"{x:.1f}" for x in by[(group, n)])
            lines.append(f"| `{n}` | {med:.1f} ({runs}) | {steps[(group, n)] / med:.0f} | {ref / med:.2f}x | "
                         f"{med_sps:.0f} | {med_sps / ref_sps:.2f}x |")
        lines.append("")
    names = [n for g, n in by if g == "rlpd_cost"]
    if names:
        base = np.median(by[("rlpd_cost", names[0])])  # the random-only run
        per = {n: (np.median(by[("rlpd_cost", n)]) - base) / COST_LEARN * 1e3 for n in names[1:]}
        ref = per[names[1]]
        lines += [f"**RLPD's cost knobs**: ms per learning env step ({COST_LEARN} learning steps after 1,000 random ones; "
                  "the time of a random-only run subtracted), 2 x 256, batch 256, LayerNorm critics", "",
                  "| setting | ms per env step | cost vs E=2 UTD=1 |", "|---|---|---|"]
        lines += [f"| {n.replace('rlpd.py ', '')} | {per[n]:.1f} | {per[n] / ref:.1f}x |" for n in names[1:]]
    with open(os.path.join(HERE, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def add_steady(runs_dir):
    """For results.csv measured before runs had folders of their own: every run wrote runs/<name>__<unix time>/
    into one runs_dir; their start times order them as the rows. Adds steady_sps to results.csv."""
    path = os.path.join(HERE, "results.csv")
    rows = list(csv.DictReader(open(path)))
    dirs = sorted(glob.glob(os.path.join(runs_dir, "*")), key=lambda d: int(d.rsplit("__", 1)[1]))
    if len(dirs) != len(rows):
        raise SystemExit(f"{runs_dir} holds {len(dirs)} runs for {len(rows)} rows: they cannot be matched.")
    for i, (r, d) in enumerate(zip(rows, dirs)):
        folder = os.path.join(RUNS, "matched", f"{i:03d}")
        os.makedirs(os.path.join(folder, "runs"), exist_ok=True)
        link = os.path.join(folder, "runs", os.path.basename(d))
        if not os.path.exists(link):
            os.symlink(os.path.abspath(d), link)
        r["steady_sps"] = steady_sps(r["group"], folder)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return rows


if __name__ == "__main__":
    if "--add-steady" in sys.argv:
        table(add_steady(sys.argv[sys.argv.index("--add-steady") + 1]))
    elif "--from-csv" in sys.argv:
        with open(os.path.join(HERE, "results.csv")) as f:
            table(list(csv.DictReader(f)))
    else:
        table(measure())
