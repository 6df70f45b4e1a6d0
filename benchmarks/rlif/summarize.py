"""Collect the RLIF / HG-DAgger / DAgger runs into results.csv, then results.md (tables) and plot.png.

    python benchmarks/rlif/summarize.py             (after run.sh)
    python benchmarks/rlif/summarize.py --from-csv  (re-make the tables and plot from the committed results.csv)
"""
import csv
import glob
import os
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from runs_io import read_runs  # noqa: E402

KEYS = ("eval/return", "charts/intervention_rate", "charts/expert_steps")
# mean return of the intervening policies' 20-episode datasets (data/README.md)
EXPERT_RETURN = {("Hopper-v4", "expert"): 3267, ("Hopper-v4", "medium"): 1220, ("Walker2d-v4", "expert"): 4483,
                 ("Walker2d-v4", "medium"): 1523}
ALGOS = ("rlif", "rlif+hil-serl", "hg-dagger", "dagger")  # rlif+hil-serl: run_hilserl.sh
COLORS = dict(zip(ALGOS, ("tab:blue", "tab:purple", "tab:orange", "tab:green")))


def collect():
    rows = [(a["env_id"], a["expert_level"], a["algo"] + ("+hil-serl" if a.get("hil_serl") else ""), a["seed"], step, key, value)
            for a, step, key, value in read_runs(HERE, KEYS)]
    with open(os.path.join(HERE, "results.csv"), "w", newline="") as out:
        w = csv.writer(out)
        w.writerow(["env", "expert_level", "algo", "seed", "step", "key", "value"])
        w.writerows(rows)
    return rows


def load():
    with open(os.path.join(HERE, "results.csv")) as f:
        return [(e, lv, al, int(s), int(st), k, float(v)) for e, lv, al, s, st, k, v in list(csv.reader(f))[1:]]


def long_probe():
    """run_long.sh's probes (long/runs -> long_results.csv): eval/return and intervention rate every 10k steps."""
    path = os.path.join(HERE, "long_results.csv")
    long = os.path.join(HERE, "long")
    if "--from-csv" not in sys.argv and glob.glob(os.path.join(long, "runs", "*", "model.pt")):
        rows = [(f"{a['env_id']}, {a['total_timesteps'] // 1000}k steps, UTD {a['utd']}" + (", HIL-SERL buffers" if a["hil_serl"] else ""),
                 a["seed"], step, key, value) for a, step, key, value in read_runs(long, ("eval/return", "charts/intervention_rate"))
                if step % 10_000 == 0]
        with open(path, "w", newline="") as f:
            csv.writer(f).writerows([("run", "seed", "step", "key", "value")] + rows)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        rows = list(csv.reader(f))[1:]
    cols = sorted({int(r[2]) for r in rows if r[2] != "0"})
    out = ["", "Probes (run_long.sh: RLIF alone, medium intervening policy, seed 1), eval/return (expert share of the 1k "
           "steps before it):", "", "| run | " + " | ".join(f"{c // 1000}k" for c in cols) + " |", "|---|" + "---|" * len(cols)]
    for run in sorted({r[0] for r in rows}):
        v = {(int(r[2]), r[3]): float(r[4]) for r in rows if r[0] == run}
        out.append(f"| {run} | " + " | ".join(f"{v[(c, 'eval/return')]:.0f} ({100 * v[(c, 'charts/intervention_rate')]:.0f}%)"
                                              if (c, "eval/return") in v else "-" for c in cols) + " |")
    return out


def main():
    rows = load() if "--from-csv" in sys.argv else collect()
    runs = defaultdict(lambda: defaultdict(dict))
    for env, level, algo, seed, step, key, value in rows:
        runs[(env, level, algo, seed)][key][step] = value
    envs, levels = sorted({k[0] for k in runs}), ("medium", "expert")
    ms = lambda xs: f"{np.mean(xs):.0f} +- {np.std(xs):.0f}" if len(xs) else "-"  # noqa: E731
    pct = lambda xs: f"{100 * np.mean(xs):.0f}%" if len(xs) else "-"  # noqa: E731
    out = ["eval/return (10 deterministic episodes of the learner alone), mean +- std over seeds, and the fraction of env steps "
           "the intervening expert acted (value-based model, alpha 0.99, beta 0.95, 4-step takeovers); 20k env steps, RL learner "
           "E=2 critics, UTD 1, hidden 128, batch 128 (see run.sh). DAgger never hands control to the expert (rate 0).", "",
           "| env | intervening expert (its return) | algo | seeds | eval/return at 10k | at 20k (final) | best eval | "
           "intervention rate, first 5k steps | last 5k steps |", "|---|---|---|---|---|---|---|---|---|"]
    fig, axes = plt.subplots(len(envs), 4, figsize=(22, 4 * len(envs)), squeeze=False)
    for r, env in enumerate(envs):
        for c, level in enumerate(levels):
            for algo in ALGOS:
                keys = [k for k in sorted(runs) if k[:3] == (env, level, algo)]
                if not keys:
                    continue
                ev = [runs[k]["eval/return"] for k in keys]
                iv = [runs[k]["charts/intervention_rate"] for k in keys]
                steps = sorted({s for e in ev for s in e})
                mat = np.array([[e.get(s, np.nan) for s in steps] for e in ev])
                first = [np.mean([v for s, v in i.items() if s <= 5000]) for i in iv]
                last_step = max(s for i in iv for s in i)
                last = [np.mean([v for s, v in i.items() if s > last_step - 5000]) for i in iv]
                out.append(f"| {env} | {level} ({EXPERT_RETURN.get((env, level), '-')}) | {algo} | {len(keys)} | "
                           f"{ms([e.get(10_000, np.nan) for e in ev])} | {ms([e[max(e)] for e in ev])} | "
                           f"{ms(np.nanmax(mat, 1))} | {pct(first)} | {pct(last)} |")
                mean, std = np.nanmean(mat, 0), np.nanstd(mat, 0)
                ax = axes[r][c]
                ax.plot(steps, mean, marker="o", label=algo, color=COLORS[algo])
                ax.fill_between(steps, mean - std, mean + std, alpha=0.2, color=COLORS[algo])
                isteps = sorted({s for i in iv for s in i})
                imat = np.array([[i.get(s, np.nan) for s in isteps] for i in iv])
                axes[r][2 + c].plot(isteps, np.nanmean(imat, 0), label=algo, color=COLORS[algo])
            axes[r][c].axhline(EXPERT_RETURN.get((env, level), np.nan), color="gray", ls="--", label="intervening expert")
            axes[r][c].set_title(f"{env}, {level} policy intervenes: eval/return")
            axes[r][2 + c].set_title(f"{env}, {level} policy intervenes: intervention rate")
            axes[r][c].set_xlabel("env steps")
            axes[r][2 + c].set_xlabel("env steps")
            axes[r][c].legend()
            axes[r][2 + c].legend()
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, "plot.png"), dpi=90)
    out += long_probe()
    text = "\n".join(out)
    with open(os.path.join(HERE, "results.md"), "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
