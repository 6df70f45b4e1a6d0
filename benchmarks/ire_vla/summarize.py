"""Collect the iRe-VLA lite runs into results.csv, then results.md (success per split after each stage) and plot.png.

    python benchmarks/ire_vla/summarize.py             (run.sh calls it at the end)
    python benchmarks/ire_vla/summarize.py --from-csv  (re-make the table and plot from the committed results.csv)
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
SPLITS = ("expert", "rl", "heldout")


def collect():
    rows = []
    for f in sorted(glob.glob(os.path.join(HERE, "runs", "*", "metrics.csv"))):
        _, _, mode, seed, _ = os.path.basename(os.path.dirname(f)).split("__")
        with open(f) as fh:
            for step, key, value in list(csv.reader(fh))[1:]:
                if key.startswith("eval/success_") or key == "charts/rl_success_rate" or key == "charts/d_rl_trajectories":
                    rows.append((mode, int(seed), int(step), key, float(value)))
    with open(os.path.join(HERE, "results.csv"), "w", newline="") as out:
        w = csv.writer(out)
        w.writerow(["mode", "seed", "stage", "key", "value"])
        w.writerows(rows)
    return rows


def load():
    with open(os.path.join(HERE, "results.csv")) as f:
        return [(m, int(s), int(st), k, float(v)) for m, s, st, k, v in list(csv.reader(f))[1:]]


def main():
    rows = load() if "--from-csv" in sys.argv else collect()
    by = defaultdict(list)
    for mode, _seed, stage, key, value in rows:
        by[(mode, stage, key)].append(value)
    modes = [m for m in ("ire-vla", "plain-rl", "freeze") if any(k[0] == m for k in by)]
    stages = sorted({k[1] for k in by if k[2].startswith("eval/")})
    ms = lambda xs: f"{np.mean(xs):.2f} +- {np.std(xs):.2f}" if xs else "-"  # noqa: E731
    lines = ["Budget (benchmarks/ire_vla/run.sh): MetaWorld v3, 8 expert / 2 RL / 2 held-out tasks, stage 0 SFT 3000 "
             "steps, 60k PPO env steps per RL stage (200-step episodes), 1000 SFT steps per even stage, 2 iterations; "
             "success = mean over the split's tasks of 10 deterministic 500-step episodes per task; 'seeds' = runs "
             "behind each cell (mean +- std over seeds).", "",
             "| mode | stage | seeds | expert tasks | RL tasks | held-out tasks | RL-stage success (rollouts) |",
             "|---|---|---|---|---|---|---|"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for mode in modes:
        for stage in stages:
            vals = {s: by.get((mode, stage, f"eval/success_{s}"), []) for s in SPLITS}
            if not vals["expert"]:
                continue
            rl = by.get((mode, stage, "charts/rl_success_rate"), [])
            lines.append(f"| {mode} | {stage} | {len(vals['expert'])} | " + " | ".join(ms(vals[s]) for s in SPLITS)
                         + f" | {ms(rl)} |")
        for ax, s in zip(axes, SPLITS):
            xs = [st for st in stages if by.get((mode, st, f"eval/success_{s}"))]
            ys = [np.mean(by[(mode, st, f"eval/success_{s}")]) for st in xs]
            ax.plot(xs, ys, marker="o", label=mode)
            ax.set_title(f"{s} tasks")
            ax.set_xlabel("stage (0: SFT; odd: RL; even: SFT)")
            ax.set_ylabel("success rate")
            ax.set_ylim(-0.05, 1.05)
            ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, "plot.png"), dpi=100)
    text = "\n".join(lines)
    with open(os.path.join(HERE, "results.md"), "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
