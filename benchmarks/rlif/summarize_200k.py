"""The 200k-step runs (run_200k.sh: Hopper-v4, medium intervening policy, RLIF vs HG-DAgger vs DAgger, seeds 1-3):
long200k_results.csv, results_200k.md (eval/return every 20k, expert share per 20k, when each seed first passes the
intervening policy's return) and plot_200k.png.

    python benchmarks/rlif/summarize_200k.py             (after run_200k.sh)
    python benchmarks/rlif/summarize_200k.py --from-csv  (re-make the tables and plot from long200k_results.csv)
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

KEYS = ("eval/return", "charts/intervention_rate", "charts/takeovers", "charts/minus_one_labels", "charts/q_mean")
CSV = os.path.join(HERE, "long200k_results.csv")
INTERVENER = 1220  # mean return of the medium policy's 20-episode dataset (data/README.md)
ALGOS = ("rlif", "hg-dagger", "dagger")
COLORS = dict(zip(ALGOS, ("tab:blue", "tab:orange", "tab:green")))


def rows():
    if "--from-csv" in sys.argv:
        with open(CSV) as f:
            return [(a, int(s), int(st), k, float(v)) for a, s, st, k, v in list(csv.reader(f))[1:]]
    out = [(a["algo"], a["seed"], step, key, value) for a, step, key, value in read_runs(os.path.join(HERE, "long200k"), KEYS)]
    with open(CSV, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["algo", "seed", "step", "key", "value"])
        w.writerows(out)
    return out


def main():
    runs = defaultdict(lambda: defaultdict(dict))
    for algo, seed, step, key, value in rows():
        runs[(algo, seed)][key][step] = value
    ms = lambda xs: f"{np.nanmean(xs):.0f} +- {np.nanstd(xs):.0f}" if len(xs) else "-"  # noqa: E731
    cols = (10_000, 20_000, 50_000, 100_000, 150_000, 200_000)
    out = [f"Hopper-v4, the medium policy intervenes (its return {INTERVENER}); 200k env steps per run, seeds 1-3 "
           "(run_200k.sh: RL learner E = 2, UTD 1, 2 x 128, batch 128; value-based intervention alpha 0.99, beta 0.95, "
           "4-step takeovers; DAgger family 2,000 BC steps on the demos, then 500 every 1,000 env steps). eval/return: "
           "10 deterministic episodes of the learner alone, mean +- std over seeds.", "",
           "| algo | seeds | " + " | ".join(f"{c // 1000}k" for c in cols) + " | best | last 50k mean | "
           "first eval > 1220 (per seed) |", "|---|---|" + "---|" * (len(cols) + 3)]
    for algo in ALGOS:
        keys = [k for k in sorted(runs) if k[0] == algo]
        if not keys:
            continue
        ev = [runs[k]["eval/return"] for k in keys]
        first = [next((f"{s // 1000}k" for s in sorted(e) if e[s] > INTERVENER), "never") for e in ev]
        last = [np.mean([v for s, v in e.items() if s > 150_000]) for e in ev]
        out.append(f"| {algo} | {len(keys)} | " + " | ".join(ms([e.get(c, np.nan) for e in ev]) for c in cols)
                   + f" | {ms([max(e.values()) for e in ev])} | {ms(last)} | {', '.join(first)} |")
    wins = [(lo, lo + 20_000) for lo in range(0, 200_000, 20_000)]
    out += ["", "Expert share (fraction of env steps the intervening policy acted, mean over seeds) per 20k steps, and "
            "-1 labels / takeovers in total (mean over seeds). DAgger never hands control to the expert.", "",
            "| algo | " + " | ".join(f"{lo // 1000}-{hi // 1000}k" for lo, hi in wins) + " | -1 labels / takeovers |",
            "|---|" + "---|" * (len(wins) + 1)]
    for algo in ALGOS:
        keys = [k for k in sorted(runs) if k[0] == algo]
        if not keys:
            continue
        iv = [runs[k]["charts/intervention_rate"] for k in keys]
        sh = [np.mean([np.mean([v for s, v in i.items() if lo < s <= hi] or [np.nan]) for i in iv]) for lo, hi in wins]
        lab = np.mean([max(runs[k]["charts/minus_one_labels"].values()) for k in keys])
        tko = np.mean([max(runs[k]["charts/takeovers"].values()) for k in keys])
        out.append(f"| {algo} | " + " | ".join(f"{100 * x:.0f}%" for x in sh) + f" | {lab:.0f} / {tko:.0f} |")
    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    for algo in ALGOS:
        keys = [k for k in sorted(runs) if k[0] == algo]
        for ax, key in zip(axes, ("eval/return", "charts/intervention_rate")):
            curves = [runs[k][key] for k in keys]
            if not curves:
                continue
            steps = sorted({s for c in curves for s in c})
            mat = np.array([[c.get(s, np.nan) for s in steps] for c in curves])
            if key == "charts/intervention_rate":  # 1k windows, smoothed over 10k for the plot
                mat = np.array([np.convolve(r, np.ones(10), "same") / np.convolve(np.ones_like(r), np.ones(10), "same")
                                for r in mat])  # the edges averaged over the windows they have
            mean, std = np.nanmean(mat, 0), np.nanstd(mat, 0)
            ax.plot(steps, mean, label=algo, color=COLORS[algo], marker="o" if key == "eval/return" else None, ms=3)
            ax.fill_between(steps, mean - std, mean + std, alpha=0.15, color=COLORS[algo])
    axes[0].axhline(INTERVENER, color="gray", ls="--", label="intervening policy")
    axes[0].set_title("Hopper-v4, medium policy intervenes: eval/return (seeds 1-3)")
    axes[1].set_title("expert share (1k windows, 10k moving mean)")
    axes[1].set_ylim(0, 1)
    for ax in axes:
        ax.set_xlabel("env steps")
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, "plot_200k.png"), dpi=90)
    text = "\n".join(out)
    with open(os.path.join(HERE, "results_200k.md"), "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
