"""Collect the ConRFT / SAC fine-tuning / consistency-BC runs into results.csv, then results.md and plot.png.

    python benchmarks/conrft/summarize.py             (after run.sh)
    python benchmarks/conrft/summarize.py --from-csv  (re-make the table and plot from the committed results.csv)
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

KEYS = ("eval/success", "eval/return", "offline/eval_success", "charts/intervention_rate", "charts/success")
ALGOS = ("conrft", "sac", "bc-only")


def collect():
    rows = [(a["env_id"], a["algo"], a["seed"], step, key, value) for a, step, key, value in read_runs(HERE, KEYS)]
    with open(os.path.join(HERE, "results.csv"), "w", newline="") as out:
        w = csv.writer(out)
        w.writerow(["env", "algo", "seed", "step", "key", "value"])
        w.writerows(rows)
    return rows


def load():
    with open(os.path.join(HERE, "results.csv")) as f:
        return [(e, al, int(s), int(st), k, float(v)) for e, al, s, st, k, v in list(csv.reader(f))[1:]]


def main():
    rows = load() if "--from-csv" in sys.argv else collect()
    runs = defaultdict(lambda: defaultdict(dict))
    for env, algo, seed, step, key, value in rows:
        runs[(env, algo, seed)][key][step] = value
    env = sorted({k[0] for k in runs})[0]
    steps = sorted({s for r in runs.values() for s in r["eval/success"]})
    pct = lambda xs: f"{100 * np.mean(xs):.0f}% +- {100 * np.std(xs):.0f}" if len(xs) else "-"  # noqa: E731
    out = [f"{env}: eval/success (10 deterministic episodes), mean +- std over seeds (percentage points). Step 0 = after Stage I "
           "(4,000 offline steps); then Stage II env steps (one update each; batch 128, 4 actions per kind in Cal-QL, scripted "
           "interventions p 0.02 x 10 steps; see run.sh). consistency-BC alone has no Stage II.", "",
           "| algo | seeds | " + " | ".join("after Stage I" if s == 0 else f"{s // 1000}k online" for s in steps) +
           " | intervention rate (mean over Stage II) |", "|---|---|" + "---|" * len(steps) + "---|"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for algo in ALGOS:
        keys = [k for k in sorted(runs) if k[:2] == (env, algo)]
        if not keys:
            continue
        mat = np.array([[runs[k]["eval/success"].get(s, np.nan) for s in steps] for k in keys])
        cells = [pct(mat[:, j][~np.isnan(mat[:, j])]) for j in range(len(steps))]
        iv = [list(runs[k]["charts/intervention_rate"].values()) for k in keys]
        rate = [np.mean(v) for v in iv if v]
        out.append(f"| {algo} | {len(keys)} | " + " | ".join(cells) + f" | {pct(rate) if rate else '-'} |")
        if algo == "bc-only":
            axes[0].axhline(np.nanmean(mat[:, 0]), color="gray", ls="--", label="consistency BC alone")
            continue
        mean, std = np.nanmean(mat, 0), np.nanstd(mat, 0)
        axes[0].plot(steps, mean, marker="o", label=algo)
        axes[0].fill_between(steps, mean - std, mean + std, alpha=0.2)
        isteps = sorted({s for k in keys for s in runs[k]["charts/intervention_rate"]})
        imat = np.array([[runs[k]["charts/intervention_rate"].get(s, np.nan) for s in isteps] for k in keys])
        axes[1].plot(isteps, np.nanmean(imat, 0), label=algo)
    ref = os.path.join(HERE, "bc_reference.csv")  # plain BC references from bc_reference.py (same demos, budget, eval)
    if os.path.exists(ref):
        with open(ref) as f:
            refs = defaultdict(list)
            for r in list(csv.DictReader(f)):
                refs[r["policy"]].append(float(r["eval_success"]))
        out += ["", "BC references (bc_reference.py: 4,000 steps, batch 128, same eval), success mean +- std over seeds:", "",
                "| BC policy | seeds | success |", "|---|---|---|"]
        out += [f"| {k} | {len(v)} | {pct(v)} |" for k, v in refs.items()]
        if "gaussian-mse" in refs:
            axes[0].axhline(np.mean(refs["gaussian-mse"]), color="black", ls=":", label="Gaussian MSE BC (bc_reference.py)")
    axes[0].set_title(f"{env}: eval/success (0 = after Stage I)")
    axes[0].set_xlabel("Stage II env steps")
    axes[1].set_title("intervention rate (fraction of expert steps per 1k)")
    axes[1].set_xlabel("Stage II env steps")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, "plot.png"), dpi=100)
    text = "\n".join(out)
    with open(os.path.join(HERE, "results.md"), "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
