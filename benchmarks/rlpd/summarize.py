"""Collect the RLPD vs SAC runs into results.csv (one row per evaluation), then results.md and plot.png.

    python benchmarks/rlpd/summarize.py             (after run.sh)
    python benchmarks/rlpd/summarize.py --from-csv  (re-make the table and plot from the committed results.csv)
"""
import csv
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

DEMO_RETURN = {"Hopper-v4": 1220, "Walker2d-v4": 1523}  # mean return of the medium demos (data/README.md)


def collect():
    rows = [(a["env_id"], "RLPD (offline ratio 0.5)" if a["offline_ratio"] > 0 else "SAC from scratch (offline ratio 0)",
             a["seed"], step, value) for a, step, key, value in read_runs(HERE, ("eval/return",))]
    with open(os.path.join(HERE, "results.csv"), "w", newline="") as out:
        w = csv.writer(out)
        w.writerow(["env", "method", "seed", "step", "eval_return"])
        w.writerows(rows)
    return rows


def load():
    with open(os.path.join(HERE, "results.csv")) as f:
        return [(e, m, int(s), int(st), float(v)) for e, m, s, st, v in list(csv.reader(f))[1:]]


def main():
    rows = load() if "--from-csv" in sys.argv else collect()
    curves = defaultdict(dict)
    for env, method, seed, step, value in rows:
        curves[(env, method, seed)][step] = value
    envs = sorted({k[0] for k in curves})
    methods = sorted({k[1] for k in curves})
    steps = sorted({s for c in curves.values() for s in c})
    cols = [s for s in (10_000, 30_000, 50_000, 100_000) if s in steps]
    out = ["eval/return (10 deterministic episodes), mean +- std over seeds; E=2 critics, UTD 1, hidden 128, batch 128, "
           "5,000 random steps first (see run.sh).", "",
           "| env | method | seeds | " + " | ".join(f"{s // 1000}k steps" for s in cols)
           + " | best eval (mean over seeds) | medium demos |",
           "|---|---|---|" + "---|" * len(cols) + "---|---|"]
    fig, axes = plt.subplots(1, len(envs), figsize=(6 * len(envs), 4), squeeze=False)
    for ax, env in zip(axes[0], envs):
        for method in methods:
            runs = [c for k, c in sorted(curves.items()) if k[0] == env and k[1] == method]
            mat = np.array([[c.get(s, np.nan) for s in steps] for c in runs])
            mean, std = np.nanmean(mat, 0), np.nanstd(mat, 0)
            cells = [f"{mean[steps.index(s)]:.0f} +- {std[steps.index(s)]:.0f}" for s in cols]
            best = np.nanmean(np.nanmax(mat, 1))
            out.append(f"| {env} | {method} | {len(runs)} | " + " | ".join(cells) + f" | {best:.0f} | {DEMO_RETURN.get(env, '-')} |")
            ax.plot(steps, mean, marker="o", label=method)
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
        if env in DEMO_RETURN:
            ax.axhline(DEMO_RETURN[env], color="gray", ls="--", label="medium demos")
        ax.set_title(env)
        ax.set_xlabel("env steps")
        ax.set_ylabel("eval/return")
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, "plot.png"), dpi=100)
    text = "\n".join(out)
    with open(os.path.join(HERE, "results.md"), "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
