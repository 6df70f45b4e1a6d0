"""Collect the RLIF / HG-DAgger / DAgger runs into results.csv, then results.md (tables) and plot.png.

    python benchmarks/rlif/summarize.py             (after run.sh, and run_long.sh if it was run)
    python benchmarks/rlif/summarize.py --from-csv  (re-make the tables and plot from the committed CSV files)
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

KEYS = ("eval/return", "charts/intervention_rate", "charts/takeovers", "charts/minus_one_labels")
# mean return of the intervening policies' 20-episode datasets (data/README.md)
EXPERT_RETURN = {("Hopper-v4", "expert"): 3267, ("Hopper-v4", "medium"): 1220, ("Walker2d-v4", "expert"): 4483,
                 ("Walker2d-v4", "medium"): 1523}
ALGOS = ("rlif", "rlif-drop", "hg-dagger", "dagger")  # rlif-drop: RLIF with --terminal drop (the official handling)
COLORS = dict(zip(ALGOS, ("tab:blue", "tab:purple", "tab:orange", "tab:green")))
WINDOWS = ((0, 5000), (5000, 10_000), (10_000, 15_000), (15_000, 20_000))


def label(a):
    return a["algo"] + ("-" + a["terminal"] if a["algo"] == "rlif" and a["terminal"] != "penalty" else "")


def collect(folder, name):
    rows = [(a["env_id"], a["expert_level"], label(a), a["seed"], step, key, value) for a, step, key, value in read_runs(folder, KEYS)]
    with open(os.path.join(HERE, name), "w", newline="") as out:
        w = csv.writer(out)
        w.writerow(["env", "expert_level", "algo", "seed", "step", "key", "value"])
        w.writerows(rows)
    return rows


def load(name):
    path = os.path.join(HERE, name)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [(e, lv, al, int(s), int(st), k, float(v)) for e, lv, al, s, st, k, v in list(csv.reader(f))[1:]]


def by_run(rows):
    runs = defaultdict(lambda: defaultdict(dict))
    for env, level, algo, seed, step, key, value in rows:
        runs[(env, level, algo, seed)][key][step] = value
    return runs


def share(iv, lo, hi):
    """Share of env steps the expert acted in (lo, hi], from the 1k-step windows of charts/intervention_rate."""
    v = [x for s, x in iv.items() if lo < s <= hi]
    return np.mean(v) if v else np.nan


def main_table(runs):
    ms = lambda xs: f"{np.nanmean(xs):.0f} +- {np.nanstd(xs):.0f}" if len(xs) else "-"  # noqa: E731
    out = ["eval/return (10 deterministic episodes of the learner alone), mean +- std over seeds 1-3, after 20k env steps "
           "(run.sh: RL learner E=2, UTD 1, 2 x 128, batch 128; value-based intervention, alpha 0.99, beta 0.95, 4-step "
           "takeovers then one unchecked learner step). Expert share: the fraction of env steps the intervening policy "
           "acted, mean over seeds, per 5k steps; max 1k: the highest share in any 1k-step window of any seed. DAgger "
           "never hands control to the expert (0%). -1 labels / takeovers: totals over 20k steps, mean over seeds.", "",
           "| env | intervening policy (its return) | algo | seeds | eval/return at 10k | at 20k (final) | best eval | "
           "expert share 0-5k | 5-10k | 10-15k | 15-20k | max 1k | -1 labels / takeovers |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for env in sorted({k[0] for k in runs}):
        for level in ("medium", "expert"):
            for algo in ALGOS:
                keys = [k for k in sorted(runs) if k[:3] == (env, level, algo)]
                if not keys:
                    continue
                ev = [runs[k]["eval/return"] for k in keys]
                iv = [runs[k]["charts/intervention_rate"] for k in keys]
                best = [max(e.values()) for e in ev]
                shares = [f"{100 * np.mean([share(i, lo, hi) for i in iv]):.0f}%" for lo, hi in WINDOWS]
                mx = max(max(i.values()) for i in iv)
                lab = np.mean([max(runs[k]["charts/minus_one_labels"].values()) for k in keys])
                tko = np.mean([max(runs[k]["charts/takeovers"].values()) for k in keys])
                out.append(f"| {env} | {level} ({EXPERT_RETURN.get((env, level), '-')}) | {algo} | {len(keys)} | "
                           f"{ms([e.get(10_000, np.nan) for e in ev])} | {ms([e[max(e)] for e in ev])} | {ms(best)} | "
                           + " | ".join(shares) + f" | {100 * mx:.0f}% | {lab:.0f} / {tko:.0f} |")
    return out


def plot(runs):
    envs = sorted({k[0] for k in runs})
    fig, axes = plt.subplots(len(envs), 4, figsize=(22, 4 * len(envs)), squeeze=False)
    for r, env in enumerate(envs):
        for c, level in enumerate(("medium", "expert")):
            for algo in ALGOS:
                keys = [k for k in sorted(runs) if k[:3] == (env, level, algo)]
                if not keys:
                    continue
                for col, key in ((c, "eval/return"), (2 + c, "charts/intervention_rate")):
                    curves = [runs[k][key] for k in keys]
                    steps = sorted({s for e in curves for s in e})
                    mat = np.array([[e.get(s, np.nan) for s in steps] for e in curves])
                    mean, std = np.nanmean(mat, 0), np.nanstd(mat, 0)
                    axes[r][col].plot(steps, mean, marker="o" if col < 2 else None, label=algo, color=COLORS[algo])
                    axes[r][col].fill_between(steps, mean - std, mean + std, alpha=0.15, color=COLORS[algo])
            axes[r][c].axhline(EXPERT_RETURN.get((env, level), np.nan), color="gray", ls="--", label="intervening policy")
            axes[r][2 + c].axhline(0.8, color="gray", ls=":", label="ceiling 4/5")
            axes[r][c].set_title(f"{env}, {level} policy intervenes: eval/return")
            axes[r][2 + c].set_title(f"{env}, {level} policy: expert share (1k windows)")
            axes[r][2 + c].set_ylim(0, 1)
            for col in (c, 2 + c):
                axes[r][col].set_xlabel("env steps")
                axes[r][col].legend()
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, "plot.png"), dpi=90)


def long_table(rows):
    """run_long.sh (60k steps, RLIF, medium policy, Hopper): eval/return and expert share every 10k steps."""
    if not rows:
        return ["", "Longer run (run_long.sh, 60k steps): not run."]
    runs = by_run(rows)
    cols = sorted({s for k in runs for s in runs[k]["eval/return"]})
    out = ["", "Longer run (run_long.sh: RLIF, medium intervening policy, 60k env steps, otherwise as run.sh), eval/return "
           "(expert share of the 10k steps before it), one row per seed:", "",
           "| env | seed | " + " | ".join(f"{c // 1000}k" for c in cols) + " |", "|---|---|" + "---|" * len(cols)]
    for k in sorted(runs):
        ev, iv = runs[k]["eval/return"], runs[k]["charts/intervention_rate"]
        out.append(f"| {k[0]} | {k[3]} | " + " | ".join(f"{ev[c]:.0f} ({100 * share(iv, c - 10_000, c):.0f}%)" if c in ev else "-"
                                                          for c in cols) + " |")
    return out


def main():
    from_csv = "--from-csv" in sys.argv
    rows = load("results.csv") if from_csv else collect(HERE, "results.csv")
    long_dir = os.path.join(HERE, "long")
    if not from_csv and glob.glob(os.path.join(long_dir, "runs", "*", "model.pt")):
        collect(long_dir, "long_results.csv")
    runs = by_run(rows)
    plot(runs)
    text = "\n".join(main_table(runs) + long_table(load("long_results.csv")))
    with open(os.path.join(HERE, "results.md"), "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
