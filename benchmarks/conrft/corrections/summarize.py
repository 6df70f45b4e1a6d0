"""Collect the runs of this folder (../run.sh with CORRECTIONS=1 or GAP=1) into results.csv, then results.md and plot.png:
eval/success by Stage II step per variant (mean +- std over seeds), beside the main benchmark's random-takeover rows
of ../results.csv; the share of online episodes that succeed, the intervention rate, and the mean Q of the policy's
actions.

    python benchmarks/conrft/corrections/summarize.py             (after run.sh)
    python benchmarks/conrft/corrections/summarize.py --from-csv  (re-make results.md and plot.png from results.csv)
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
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
from runs_io import read_runs  # noqa: E402

KEYS = ("eval/success", "charts/success", "charts/intervention_rate", "charts/q_policy")
LABELS = {("gap", "conrft"): "ConRFT, expert steps in at action gap > 1.5",
          ("correct", "conrft"): "ConRFT, corrections at step 100", ("correct", "sac"): "SAC, corrections at step 100",
          ("conrft", "conrft"): "ConRFT, random takeovers", ("conrft", "sac"): "SAC, random takeovers"}


def collect():
    """The runs under runs/ into results.csv; with none there (cleared, or a fresh clone) it keeps results.csv."""
    rows = [(a["exp_name"], a["algo"], a["seed"], step, key, value) for a, step, key, value in read_runs(HERE, KEYS)]
    if not rows and os.path.exists(os.path.join(HERE, "results.csv")):
        return load(os.path.join(HERE, "results.csv"))
    with open(os.path.join(HERE, "results.csv"), "w", newline="") as out:
        csv.writer(out).writerows([("variant", "algo", "seed", "step", "key", "value")] + rows)
    return rows


def load(path, variant_col=True):
    with open(path) as f:
        rows = list(csv.reader(f))[1:]
    if variant_col:
        return [(v, al, int(s), int(st), k, float(x)) for v, al, s, st, k, x in rows]
    return [("conrft", al, int(s), int(st), k, float(x)) for e, al, s, st, k, x in rows if e == "metaworld/pick-place-v3"]


def pct(xs):
    return f"{100 * np.mean(xs):.0f}% +- {100 * np.std(xs):.0f}" if len(xs) else "-"


def main():
    rows = load(os.path.join(HERE, "results.csv")) if "--from-csv" in sys.argv else collect()
    rows += load(os.path.join(os.path.dirname(HERE), "results.csv"), variant_col=False)  # the random-takeover rows
    runs = defaultdict(lambda: defaultdict(dict))
    for variant, algo, seed, step, key, value in rows:
        runs[(variant, algo, seed)][key][step] = value
    groups = [g for g in LABELS if any(k[:2] == g for k in runs)]
    steps = sorted({s for r in runs.values() for s in r["eval/success"]})
    out = ["metaworld/pick-place-v3, Stage I 4k steps at batch 256, Stage II 20k env steps (../run.sh): eval/success (10 "
           "episodes), mean +- std over seeds; step 0 = after Stage I.", "",
           "| variant | seeds | " + " | ".join("after Stage I" if s == 0 else f"{s / 1000:g}k" for s in steps) + " |",
           "|---|---|" + "---|" * len(steps)]
    fig, ax = plt.subplots(figsize=(7, 4))
    for g in groups:
        keys = [k for k in sorted(runs) if k[:2] == g]
        mat = np.array([[runs[k]["eval/success"].get(s, np.nan) for s in steps] for k in keys])
        out.append(f"| {LABELS[g]} | {', '.join(str(k[2]) for k in keys)} | "
                   + " | ".join(pct(mat[:, j][~np.isnan(mat[:, j])]) for j in range(len(steps))) + " |")
        mean = np.nanmean(mat, 0)
        ax.plot(steps, mean, marker="o", label=LABELS[g] + f" ({len(keys)} seeds)")
    out += ["", "Online episodes (training, with the expert's interventions): share that succeed, intervention rate "
            "(share of env steps the expert acted), mean Q of the policy's actions (charts/q_policy, logged every 1k "
            "steps; +10 is the largest possible return); mean over seeds, by Stage II window.", "",
            "| variant | window | episodes | succeed | intervention rate | Q of policy actions |", "|---|---|---|---|---|---|"]
    for g in groups:
        keys = [k for k in sorted(runs) if k[:2] == g]
        for lo in range(0, 20000, 5000):
            win = lambda d: [v for s, v in d.items() if lo <= s < lo + 5000]  # noqa: E731
            eps = [v for k in keys for v in win(runs[k]["charts/success"])]
            rate = [v for k in keys for v in win(runs[k]["charts/intervention_rate"])]
            q = [v for k in keys for v in win(runs[k]["charts/q_policy"]) if v != 0.0]
            out.append(f"| {LABELS[g]} | {lo // 1000}-{(lo + 5000) // 1000}k | {len(eps)} | {pct(eps)} | "
                       f"{pct(rate) if rate else '-'} | {np.mean(q) if q else float('nan'):.1f} |")
    ax.set_title("pick-place-v3: eval/success (0 = after Stage I)")
    ax.set_xlabel("Stage II env steps")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, "plot.png"), dpi=100)
    text = "\n".join(out)
    with open(os.path.join(HERE, "results.md"), "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
